package api

// The daemon's side of the CNI plugin (internal/api/types/cni.go has the
// routes and shapes; the plugin binary is internal/cniplugin). One CNI
// attachment, a (container ID, interface name) pair, is an adopted sandbox
// with one endpoint whose interface has the CNI interface name, labelled
// with the pair; Tether's resolver is served in the runtime's namespace.

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"github.com/tether-net/tether/internal/api/types"
	"github.com/tether-net/tether/internal/engine"
	"github.com/tether-net/tether/internal/portmap"
)

// Labels of a CNI attachment's sandbox.
const (
	LabelCNIContainer = "tether.cni.container"
	LabelCNIIfName    = "tether.cni.ifname"
	// LabelCNIRoute: "true" on the attachment that carries the namespace's
	// default route (the container's first on a network with a way out).
	LabelCNIRoute = "tether.cni.defaultroute"
)

// containerIDRE: what CNI allows in a container ID (spec: alphanumerics,
// underscore, dot, hyphen; not empty).
var containerIDRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.\-]*$`)

// dnsLabel is what the engine takes as a name on a network.
var dnsLabel = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9_-]{0,61}[A-Za-z0-9])?$`)

func (s *Server) cniRoutes(m *http.ServeMux) {
	m.HandleFunc("POST /tether/v1/cni/attachments", s.cniAdd)
	m.HandleFunc("GET /tether/v1/cni/attachments", s.cniList)
	m.HandleFunc("GET /tether/v1/cni/attachments/{cid}/{ifname}", s.cniGet)
	m.HandleFunc("POST /tether/v1/cni/attachments/{cid}/{ifname}/check", s.cniCheck)
	m.HandleFunc("DELETE /tether/v1/cni/attachments/{cid}/{ifname}", s.cniDel)
	m.HandleFunc("POST /tether/v1/cni/gc", s.cniGC)
	m.HandleFunc("GET /tether/v1/cni/status", s.cniStatus)
}

func (s *Server) cniAdd(w http.ResponseWriter, r *http.Request) {
	var b types.CNIAttachRequest
	if !decode(w, r, &b) {
		return
	}
	if err := checkCNIKey(b.ContainerID, b.IfName); err != nil {
		writeError(w, http.StatusBadRequest, err)
		return
	}
	if b.NetNS == "" || !filepath.IsAbs(b.NetNS) {
		writeError(w, http.StatusBadRequest, fmt.Errorf("invalid NetNS %q: an absolute path of a network namespace is required", b.NetNS))
		return
	}
	if b.Network == "" {
		writeError(w, http.StatusBadRequest, errors.New("invalid Network: empty"))
		return
	}
	if err := checkCNIStatics(b.IP, b.IP6); err != nil {
		writeError(w, http.StatusBadRequest, err)
		return
	}
	var ports []portmap.Spec
	for i, p := range b.Ports {
		sp, err := cniPort(p)
		if err != nil {
			writeError(w, http.StatusBadRequest, fmt.Errorf("invalid Ports[%d]: %w", i, err))
			return
		}
		ports = append(ports, sp)
	}
	if s.cniFind(b.ContainerID, b.IfName) != nil {
		writeError(w, http.StatusConflict, fmt.Errorf("container %s already has an attachment on interface %s", b.ContainerID, b.IfName))
		return
	}
	// One default route per namespace: the container's first attachment on
	// a network with a way out carries it, later ones do not replace it.
	routed := false
	for _, sb := range s.eng.Sandboxes() {
		if sb.Labels[LabelCNIContainer] == b.ContainerID && s.cniView(sb).DefaultRoute {
			routed = true
		}
	}
	aliases := slices.Clone(b.Aliases)
	if dnsLabel.MatchString(b.Name) && !slices.Contains(aliases, b.Name) {
		// a pod name with dots (a DNS subdomain) is not a name on the
		// network; the attachment still works
		aliases = append([]string{b.Name}, aliases...)
	}
	spec := engine.SandboxSpec{NetNSPath: b.NetNS, ServeDNS: true,
		Labels: map[string]string{LabelCNIContainer: b.ContainerID, LabelCNIIfName: b.IfName},
		Networks: []engine.AttachSpec{{Network: b.Network, IP: b.IP, IP6: b.IP6, MAC: b.MAC, Aliases: aliases, Ports: ports, IfName: b.IfName,
			PortsUnheld: !b.HoldPorts, NoDefaultRoute: routed}}}
	if !routed {
		spec.Labels[LabelCNIRoute] = "true" // if the network gives one (cniView checks)
	}
	sb, err := s.cniCreate(r.Context(), spec, b)
	if err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, http.StatusCreated, s.cniView(sb))
}

// cniCreate names the sandbox after the container when it can (b.Name, a
// DNS label not taken), else cni-<container ID 12>-<ifname>, else (that is
// taken too, or no DNS label: container IDs and interface names allow '.'
// and '_') cni-<20 hex of a hash of the whole key>.
func (s *Server) cniCreate(ctx context.Context, spec engine.SandboxSpec, b types.CNIAttachRequest) (*engine.Sandbox, error) {
	clean := strings.NewReplacer(".", "-", "_", "-")
	sum := sha256.Sum256([]byte(b.ContainerID + "/" + b.IfName))
	names := []string{"cni-" + clean.Replace(shortCID(b.ContainerID)) + "-" + clean.Replace(b.IfName), "cni-" + hex.EncodeToString(sum[:10])}
	if b.Name != "" {
		names = append([]string{b.Name}, names...)
	}
	var sb *engine.Sandbox
	var err error
	for _, name := range names {
		spec.Name = name
		sb, err = s.eng.CreateSandbox(ctx, spec)
		kind := engine.KindOf(err)
		if (kind != engine.KindConflict && kind != engine.KindInvalid) || !strings.Contains(err.Error(), "sandbox name") {
			return sb, err
		}
	}
	return sb, err
}

func shortCID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

func checkCNIKey(cid, ifname string) error {
	if !containerIDRE.MatchString(cid) {
		return fmt.Errorf("invalid ContainerID %q: letters, digits, '_', '.' or '-', not empty", cid)
	}
	if ifname == "" || len(ifname) > 15 || strings.ContainsAny(ifname, "/: \t\n") || ifname == "." || ifname == ".." {
		return fmt.Errorf("invalid IfName %q: an interface name of 1-15 characters", ifname)
	}
	return nil
}

// checkCNIStatics: IP, when given, is an IPv4 address and IP6 an IPv6 one
// (no zone, not IPv4-mapped); the engine checks they fit the network.
func checkCNIStatics(ip, ip6 string) error {
	if ip != "" {
		if a, err := netip.ParseAddr(ip); err != nil || !a.Is4() {
			return fmt.Errorf("invalid IP %q: not an IPv4 address (an IPv6 one goes in IP6)", ip)
		}
	}
	if ip6 != "" {
		if a, err := netip.ParseAddr(ip6); err != nil || !a.Is6() || a.Is4In6() || a.Zone() != "" {
			return fmt.Errorf("invalid IP6 %q: not an IPv6 address", ip6)
		}
	}
	return nil
}

func cniPort(p types.CNIPort) (portmap.Spec, error) {
	sp := portmap.Spec{HostPort: p.HostPort, ContainerPort: p.ContainerPort, Proto: strings.ToLower(p.Protocol)}
	if sp.Proto == "" {
		sp.Proto = "tcp"
	}
	if sp.Proto != "tcp" && sp.Proto != "udp" {
		return sp, fmt.Errorf("protocol %q: tcp or udp", p.Protocol)
	}
	if p.ContainerPort == 0 {
		return sp, errors.New("containerPort 0")
	}
	if p.HostIP != "" {
		a, err := netip.ParseAddr(p.HostIP)
		if err != nil || !a.Is4() {
			return sp, fmt.Errorf("hostIP %q: not an IPv4 address", p.HostIP)
		}
		sp.HostIP = a
	}
	return sp, nil
}

// cniFind is the sandbox of one attachment, nil when there is none.
func (s *Server) cniFind(cid, ifname string) *engine.Sandbox {
	for _, sb := range s.eng.Sandboxes() {
		if sb.Labels[LabelCNIContainer] == cid && sb.Labels[LabelCNIIfName] == ifname {
			return sb
		}
	}
	return nil
}

func (s *Server) cniView(sb *engine.Sandbox) types.CNIAttachment {
	a := types.CNIAttachment{ContainerID: sb.Labels[LabelCNIContainer], IfName: sb.Labels[LabelCNIIfName], NetNS: sb.NetNS,
		SandboxID: sb.ID, SandboxName: sb.Name}
	if len(sb.Endpoints) == 0 {
		return a
	}
	ep := sb.Endpoints[0]
	a.NetworkID, a.MAC, a.HostIfName = ep.NetworkID, ep.MAC, ep.HostIfName
	if ep.Address.IsValid() {
		a.Address = ep.Address.String()
	}
	if ep.Address6.IsValid() {
		a.Address6 = ep.Address6.String()
	}
	if n, err := s.eng.Network(ep.NetworkID); err == nil {
		a.Network, a.MTU = n.Name, n.MTU
		// an internal network gives no way out, an overlay none through
		// its gateway (the namespace's route is the runtime's)
		if !n.Internal && n.Scope != engine.ScopeGlobal {
			a.Gateway = sandboxGateway(ep.Gateway, n.SandboxGateway)
			if ep.Address6.IsValid() {
				a.Gateway6 = sandboxGateway(ep.Gateway6, n.SandboxGateway6)
			}
			a.DefaultRoute = (a.Gateway != "" || a.Gateway6 != "") && sb.Labels[LabelCNIRoute] == "true"
		}
		if !n.Default {
			a.DNS = []string{"127.0.0.11"}
		}
	}
	for _, p := range ep.Ports {
		a.Ports = append(a.Ports, types.CNIPort{HostIP: p.HostIP.String(), HostPort: p.HostPort, ContainerPort: p.ContainerPort, Protocol: p.Proto})
	}
	return a
}

// sandboxGateway is the gateway the sandbox routes through: the network's
// override (default-gateway, default-gateway-v6) when there is one and the
// endpoint has a gateway of that family; "" when it has none.
func sandboxGateway(gw, override netip.Addr) string {
	if !gw.IsValid() {
		return ""
	}
	if override.IsValid() {
		return override.String()
	}
	return gw.String()
}

func (s *Server) cniList(w http.ResponseWriter, r *http.Request) {
	out := []types.CNIAttachment{}
	for _, sb := range s.eng.Sandboxes() {
		if sb.Labels[LabelCNIContainer] != "" {
			out = append(out, s.cniView(sb))
		}
	}
	writeJSON(w, http.StatusOK, out)
}

// cniKey reads and checks the path's attachment key.
func cniKey(w http.ResponseWriter, r *http.Request) (string, string, bool) {
	cid, ifname := r.PathValue("cid"), r.PathValue("ifname")
	if err := checkCNIKey(cid, ifname); err != nil {
		writeError(w, http.StatusBadRequest, err)
		return "", "", false
	}
	return cid, ifname, true
}

// cniFound is the sandbox of the path's attachment; a bad key is 400 and
// no attachment 404 (answered here).
func (s *Server) cniFound(w http.ResponseWriter, r *http.Request) (*engine.Sandbox, bool) {
	cid, ifname, ok := cniKey(w, r)
	if !ok {
		return nil, false
	}
	sb := s.cniFind(cid, ifname)
	if sb == nil {
		writeError(w, http.StatusNotFound, fmt.Errorf("no attachment of container %s on interface %s", cid, ifname))
		return nil, false
	}
	return sb, true
}

func (s *Server) cniGet(w http.ResponseWriter, r *http.Request) {
	if sb, ok := s.cniFound(w, r); ok {
		writeJSON(w, http.StatusOK, s.cniView(sb))
	}
}

func (s *Server) cniCheck(w http.ResponseWriter, r *http.Request) {
	sb, ok := s.cniFound(w, r)
	if !ok {
		return
	}
	if err := s.eng.CheckSandbox(r.Context(), sb.ID); err != nil {
		s.fail(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// cniDel removes an attachment; one that is not there is success (CNI DEL
// is idempotent), and so is one whose namespace is already gone.
func (s *Server) cniDel(w http.ResponseWriter, r *http.Request) {
	cid, ifname, ok := cniKey(w, r)
	if !ok {
		return
	}
	if sb := s.cniFind(cid, ifname); sb != nil {
		if err := s.eng.RemoveSandbox(r.Context(), sb.ID, true); err != nil && engine.KindOf(err) != engine.KindNotFound {
			s.fail(w, err)
			return
		}
	}
	w.WriteHeader(http.StatusNoContent)
}

// cniGC removes every CNI attachment (of one network, when given) that
// the runtime's valid list does not name.
func (s *Server) cniGC(w http.ResponseWriter, r *http.Request) {
	var b types.CNIGCRequest
	if !decode(w, r, &b) {
		return
	}
	netID := ""
	if b.Network != "" {
		n, err := s.eng.Network(b.Network)
		if engine.KindOf(err) == engine.KindNotFound {
			// a network that is gone has no attachments left (it could not
			// be removed with any): nothing to collect
			writeJSON(w, http.StatusOK, types.CNIGCResponse{Removed: []types.CNIAttachmentKey{}})
			return
		}
		if err != nil {
			s.fail(w, err)
			return
		}
		netID = n.ID
	}
	valid := map[types.CNIAttachmentKey]bool{}
	for _, k := range b.Valid {
		valid[k] = true
	}
	out := types.CNIGCResponse{Removed: []types.CNIAttachmentKey{}}
	var errs []error
	for _, sb := range s.eng.Sandboxes() {
		k := types.CNIAttachmentKey{ContainerID: sb.Labels[LabelCNIContainer], IfName: sb.Labels[LabelCNIIfName]}
		if k.ContainerID == "" || valid[k] {
			continue
		}
		if netID != "" && (len(sb.Endpoints) == 0 || sb.Endpoints[0].NetworkID != netID) {
			continue
		}
		if err := s.eng.RemoveSandbox(r.Context(), sb.ID, true); err != nil && engine.KindOf(err) != engine.KindNotFound {
			errs = append(errs, err)
			continue
		}
		out.Removed = append(out.Removed, k)
	}
	if err := errors.Join(errs...); err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) cniStatus(w http.ResponseWriter, r *http.Request) {
	st := types.CNIStatus{}
	if err := s.eng.ClusterHealthy(r.Context()); err != nil {
		st.Degraded, st.Reason = true, err.Error()+": global networks cannot attach"
	}
	writeJSON(w, http.StatusOK, st)
}
