package cniplugin

// The ADD result: the attachment the daemon made, in the CNI result type of
// the current spec (types100), appended to the previous plugin's result
// when Tether is not first in a chain, and printed in the format of the
// configuration's cniVersion (cni's own converters: 0.3.x and 0.4.0 give
// each IP a "version" and drop the interface MTU).

import (
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"

	cnitypes "github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"

	apitypes "github.com/tether-net/tether/internal/api/types"
)

// attachmentResult describes attachment a: the host end of its veth pair
// (when the daemon names it), the interface in the runtime's namespace, one
// IPConfig per address family the attachment has (IPv4 first, each with
// its gateway), the default route of each family with a gateway when the
// attachment carries the namespace's (0.0.0.0/0, ::/0), and DNS.
func attachmentResult(a apitypes.CNIAttachment) (*types100.Result, error) {
	r := &types100.Result{CNIVersion: types100.ImplementedSpecVersion}
	if a.HostIfName != "" {
		r.Interfaces = append(r.Interfaces, &types100.Interface{Name: a.HostIfName})
	}
	r.Interfaces = append(r.Interfaces, &types100.Interface{Name: a.IfName, Mac: a.MAC, Mtu: a.MTU, Sandbox: a.NetNS})
	idx := len(r.Interfaces) - 1
	for _, f := range families(a) {
		ipc, err := f.ipConfig(idx)
		if err != nil {
			return nil, err
		}
		if ipc == nil {
			continue
		}
		r.IPs = append(r.IPs, ipc)
		if a.DefaultRoute && ipc.Gateway != nil {
			r.Routes = append(r.Routes, &cnitypes.Route{Dst: f.defaultDst, GW: ipc.Gateway})
		}
	}
	if len(r.IPs) == 0 {
		return r, nil
	}
	r.DNS = cnitypes.DNS{Nameservers: a.DNS, Search: a.Search}
	return r, nil
}

// family is one address family of an attachment as the daemon reports it.
type family struct {
	name               string // "IPv4", "IPv6"
	addrField, gwField string // the daemon's field names, for messages
	address, gateway   string
	defaultDst         net.IPNet
}

// families are a's IPv4 and IPv6 sides, in that order.
func families(a apitypes.CNIAttachment) []family {
	return []family{
		{name: "IPv4", addrField: "Address", gwField: "Gateway", address: a.Address, gateway: a.Gateway,
			defaultDst: net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}},
		{name: "IPv6", addrField: "Address6", gwField: "Gateway6", address: a.Address6, gateway: a.Gateway6,
			defaultDst: net.IPNet{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)}},
	}
}

// ipConfig is the family's IPConfig on interface idx; nil when the
// attachment has no address of the family. An address or gateway of the
// other family is the daemon's error.
func (f family) ipConfig(idx int) (*types100.IPConfig, error) {
	if f.address == "" {
		return nil, nil
	}
	p, err := netip.ParsePrefix(f.address)
	if err != nil {
		return nil, fmt.Errorf("the daemon's %s %q: %w", f.addrField, f.address, err)
	}
	if p.Addr().Is4() != (f.name == "IPv4") {
		return nil, fmt.Errorf("the daemon's %s %q: not an %s address", f.addrField, f.address, f.name)
	}
	ipc := &types100.IPConfig{Interface: types100.Int(idx),
		Address: net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}}
	if f.gateway != "" {
		gw, err := netip.ParseAddr(f.gateway)
		if err != nil || gw.Is4() != (f.name == "IPv4") || gw.Zone() != "" {
			return nil, fmt.Errorf("the daemon's %s %q: not an %s address", f.gwField, f.gateway, f.name)
		}
		ipc.Gateway = gw.AsSlice()
	}
	return ipc, nil
}

// prevResult is the configuration's prevResult in the current result type,
// nil when there is none (Tether first in the chain).
func prevResult(conf *netConf) (*types100.Result, *cnitypes.Error) {
	if conf.RawPrevResult == nil {
		return nil, nil
	}
	pc := &cnitypes.PluginConf{CNIVersion: conf.CNIVersion, RawPrevResult: conf.RawPrevResult}
	if err := version.ParsePrevResult(pc); err != nil {
		return nil, errorf(cnitypes.ErrDecodingFailure, "prevResult: %v", err)
	}
	r, err := types100.NewResultFromResult(pc.PrevResult)
	if err != nil {
		return nil, errorf(cnitypes.ErrDecodingFailure, "prevResult: %v", err)
	}
	return r, nil
}

// appendResult adds own after prev (spec: a plugin given prevResult
// outputs it with its own changes): interfaces, with own IPs' interface
// indexes moved past prev's, IPs, routes, and the DNS servers and search
// domains prev does not list.
func appendResult(prev, own *types100.Result) *types100.Result {
	out := &types100.Result{CNIVersion: types100.ImplementedSpecVersion, DNS: *prev.DNS.Copy()}
	out.Interfaces = append(slices.Clone(prev.Interfaces), own.Interfaces...)
	out.IPs = slices.Clone(prev.IPs)
	for _, ip := range own.IPs {
		c := ip.Copy()
		if c.Interface != nil {
			c.Interface = types100.Int(*c.Interface + len(prev.Interfaces))
		}
		out.IPs = append(out.IPs, c)
	}
	out.Routes = append(slices.Clone(prev.Routes), own.Routes...)
	out.DNS.Nameservers = appendMissing(out.DNS.Nameservers, own.DNS.Nameservers)
	out.DNS.Search = appendMissing(out.DNS.Search, own.DNS.Search)
	if out.DNS.Domain == "" {
		out.DNS.Domain = own.DNS.Domain
	}
	return out
}

func appendMissing(to, from []string) []string {
	for _, s := range from {
		if !slices.Contains(to, s) {
			to = append(to, s)
		}
	}
	return to
}

// printResult writes r in the format of cniVersion.
func printResult(w io.Writer, r *types100.Result, cniVersion string) *cnitypes.Error {
	v, err := r.GetAsVersion(cniVersion)
	if err != nil {
		return errorf(cnitypes.ErrIncompatibleCNIVersion, "result for cniVersion %q: %v", cniVersion, err)
	}
	if err := v.PrintTo(w); err != nil {
		return errorf(cnitypes.ErrIOFailure, "write the result: %v", err)
	}
	return nil
}

// checkPrevResult: prev lists the container interface ifName in netns
// with each of the attachment's addresses (IPv4 and IPv6 alike).
func checkPrevResult(prev *types100.Result, a apitypes.CNIAttachment, ifName, netns string) error {
	var want []netip.Prefix
	for _, f := range families(a) {
		if f.address == "" {
			continue
		}
		p, err := netip.ParsePrefix(f.address)
		if err != nil {
			return fmt.Errorf("the daemon's %s %q: %w", f.addrField, f.address, err)
		}
		want = append(want, p)
	}
	for i, intf := range prev.Interfaces {
		if intf.Name != ifName || intf.Sandbox != netns {
			continue
		}
		for _, w := range want {
			if !slices.ContainsFunc(prev.IPs, func(ip *types100.IPConfig) bool {
				return ip.Interface != nil && *ip.Interface == i && sameAddress(ip.Address, w)
			}) {
				return fmt.Errorf("prevResult gives interface %s no address %s, the attachment's", ifName, w)
			}
		}
		return nil
	}
	return fmt.Errorf("prevResult has no interface %s in %s", ifName, netns)
}

func sameAddress(n net.IPNet, want netip.Prefix) bool {
	got, err := netip.ParsePrefix(n.String())
	return err == nil && got.Addr().Unmap() == want.Addr().Unmap() && got.Bits() == want.Bits()
}
