// Package cniplugin is the tether binary as a CNI plugin (issue 16,
// docs/cni.md): run by a container runtime with CNI_COMMAND set, it is a
// thin client of the daemon's CNI routes (internal/api/types/cni.go) on
// the daemon's unix socket. The daemon does the work (sandbox, veth, IPAM,
// names, ports) and keeps the record; the plugin turns the CNI request into
// one API call and the answer into a CNI result or error.
//
// cni's skel parses the environment and stdin, answers VERSION and checks
// the configuration's cniVersion against the versions here; this package
// implements ADD, DEL, CHECK, STATUS and GC.
package cniplugin

import (
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	cnitypes "github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"

	apitypes "github.com/tether-net/tether/internal/api/types"
)

// Plugin-specific error codes (the spec leaves 100 and up to plugins).
const (
	// ErrDaemon: the daemon failed the request (an unexpected status or
	// answer); the message has the daemon's reason.
	ErrDaemon uint = 100
	// ErrCheckFailed: CHECK found the attachment not as ADD made it.
	ErrCheckFailed uint = 101
)

// Versions are the CNI versions the plugin answers, each result in its own
// format. 0.1.0 and 0.2.0 are not: their results have no interfaces.
var Versions = version.PluginSupports("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")

const apiPrefix = "/tether/v1/cni"

// Main runs one CNI command as skel reads it from the environment and
// stdin, printing the result or the CNI error on stdout; it returns the
// process's exit status.
func Main() int {
	p := &plugin{stdout: os.Stdout, log: slog.New(slog.NewTextHandler(os.Stderr, nil)), timeout: requestTimeout}
	if e := skel.PluginMainFuncsWithError(p.funcs(), Versions, "CNI plugin tether"); e != nil {
		if err := e.Print(); err != nil {
			p.log.Error("write the CNI error", "err", err)
		}
		return 1
	}
	return 0
}

// plugin runs the commands; tests give it their own stdout and timeout.
type plugin struct {
	stdout  io.Writer
	log     *slog.Logger
	timeout time.Duration
}

func (p *plugin) funcs() skel.CNIFuncs {
	return skel.CNIFuncs{Add: p.Add, Del: p.Del, Check: p.Check, Status: p.Status, GC: p.GC}
}

func (p *plugin) client(conf *netConf) *client {
	return newClient(conf.Socket, conf.socketPath, p.timeout)
}

// attachmentPath is the route of the attachment (container ID, ifname).
func attachmentPath(args *skel.CmdArgs) string {
	return apiPrefix + "/attachments/" + url.PathEscape(args.ContainerID) + "/" + url.PathEscape(args.IfName)
}

// Add attaches CNI_NETNS to the configuration's network through the daemon
// and prints the result (prevResult with the attachment appended, when
// there is one).
func (p *plugin) Add(args *skel.CmdArgs) error {
	conf, e := loadConf(args.StdinData, true)
	if e != nil {
		return e
	}
	prev, e := prevResult(conf)
	if e != nil {
		return e
	}
	req, e := attachRequest(args, conf)
	if e != nil {
		return e
	}
	var a apitypes.CNIAttachment
	if err := p.client(conf).do(http.MethodPost, apiPrefix+"/attachments", req, &a); err != nil {
		return commandError("ADD", err)
	}
	own, err := attachmentResult(a)
	if err != nil {
		return errorf(ErrDaemon, "ADD: %v", err)
	}
	if prev != nil {
		own = appendResult(prev, own)
	}
	return nilIfNone(printResult(p.stdout, own, conf.CNIVersion))
}

// Del removes the attachment. It succeeds when there is none (404), when
// the daemon is not running (it keeps no attachment then: it finds its
// records' namespaces gone or GC removes them), and whatever CNI_NETNS is.
func (p *plugin) Del(args *skel.CmdArgs) error {
	conf, e := loadConf(args.StdinData, false)
	if e != nil {
		return e
	}
	err := p.client(conf).do(http.MethodDelete, attachmentPath(args), nil, nil)
	if ue, ok := asUnreachable(err); ok && ue.down() {
		p.log.Warn("DEL: the tether daemon is not running; nothing to remove",
			"container", args.ContainerID, "ifname", args.IfName, "err", ue.err)
		return nil
	}
	if de, ok := asDaemonError(err); ok && de.status == http.StatusNotFound {
		return nil
	}
	if err != nil {
		return commandError("DEL", err)
	}
	return nil
}

// Check asks the daemon to compare the kernel with its record, then checks
// that prevResult gives the interface the attachment's address.
func (p *plugin) Check(args *skel.CmdArgs) error {
	conf, e := loadConf(args.StdinData, true)
	if e != nil {
		return e
	}
	prev, e := prevResult(conf)
	if e != nil {
		return e
	}
	if prev == nil {
		return errorf(cnitypes.ErrInvalidNetworkConfig, "CHECK: prevResult is required (the result of ADD)")
	}
	c := p.client(conf)
	if err := c.do(http.MethodPost, attachmentPath(args)+"/check", nil, nil); err != nil {
		return checkError(args, err)
	}
	var a apitypes.CNIAttachment
	if err := c.do(http.MethodGet, attachmentPath(args), nil, &a); err != nil {
		return checkError(args, err)
	}
	if err := checkPrevResult(prev, a, args.IfName, args.Netns); err != nil {
		return errorf(ErrCheckFailed, "CHECK of container %s interface %s: %v", args.ContainerID, args.IfName, err)
	}
	return nil
}

// Status: 50 when the daemon cannot be reached or fails, 51 when it says
// it is degraded (with its reason).
func (p *plugin) Status(args *skel.CmdArgs) error {
	conf, e := loadConf(args.StdinData, true)
	if e != nil {
		return e
	}
	var st apitypes.CNIStatus
	if err := p.client(conf).do(http.MethodGet, apiPrefix+"/status", nil, &st); err != nil {
		return errorf(cnitypes.ErrPluginNotAvailable, "STATUS: %v", err)
	}
	if st.Degraded {
		return errorf(cnitypes.ErrLimitedConnectivity, "STATUS: the tether daemon is degraded: %s", st.Reason)
	}
	return nil
}

// GC asks the daemon to remove every CNI attachment on the configuration's
// network that the valid set does not name. A configuration without the
// list (cnitool gc) has an empty valid set: everything goes.
func (p *plugin) GC(args *skel.CmdArgs) error {
	conf, e := loadConf(args.StdinData, true)
	if e != nil {
		return e
	}
	req := apitypes.CNIGCRequest{Valid: validAttachments(conf), Network: conf.Network}
	var out apitypes.CNIGCResponse
	if err := p.client(conf).do(http.MethodPost, apiPrefix+"/gc", req, &out); err != nil {
		return commandError("GC", err)
	}
	for _, k := range out.Removed {
		p.log.Info("GC removed a stale attachment", "container", k.ContainerID, "ifname", k.IfName, "network", conf.Network)
	}
	return nil
}

// nilIfNone keeps a nil *Error from becoming a non-nil error.
func nilIfNone(e *cnitypes.Error) error {
	if e == nil {
		return nil
	}
	return e
}
