package cli

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"net/url"
	"strings"

	"github.com/moby/moby/api/types/network"
	"github.com/spf13/cobra"

	"github.com/tether-net/tether/internal/api/types"
)

func networkCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "network", Short: "Manage networks"}
	cmd.AddCommand(netCreateCmd(g), netLsCmd(g), inspectCmd(g, "inspect [OPTIONS] NETWORK [NETWORK...]", "Display detailed information on one or more networks", "/networks/"), netRmCmd(g), netPruneCmd(g), netConnectCmd(g), netDisconnectCmd(g), netGraphCmd(g))
	return cmd
}

func netCreateCmd(g *globals) *cobra.Command {
	var (
		driver, ipamDriver             string
		subnets, ranges, gateways, aux []string
		opts, labels, ipamOpts         []string
		internal, attachable, ipv6     bool
		ipv4                           bool
	)
	cmd := &cobra.Command{
		Use:   "create [OPTIONS] NETWORK",
		Short: "Create a network",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := map[string]any{"Name": args[0], "Driver": driver, "Internal": internal, "Attachable": attachable}
			if ipv6 {
				req["EnableIPv6"] = true
			}
			if cmd.Flags().Changed("ipv4") {
				req["EnableIPv4"] = ipv4
			}
			o, err := keyValues("--opt", opts)
			if err != nil {
				return err
			}
			l, err := keyValues("--label", labels)
			if err != nil {
				return err
			}
			io, err := keyValues("--ipam-opt", ipamOpts)
			if err != nil {
				return err
			}
			cfgs, err := ipamConfigs(subnets, ranges, gateways, aux)
			if err != nil {
				return err
			}
			req["Options"], req["Labels"] = o, l
			req["IPAM"] = map[string]any{"Driver": ipamDriver, "Options": io, "Config": cfgs}
			c, err := g.client()
			if err != nil {
				return err
			}
			var resp network.CreateResponse
			if err := c.do("POST", "/networks/create", nil, req, &resp); err != nil {
				return err
			}
			fmt.Println(resp.ID)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVarP(&driver, "driver", "d", "", "driver to manage the network (default: the daemon's, bridge)")
	f.StringVar(&ipamDriver, "ipam-driver", "default", "IP address management driver")
	f.StringArrayVar(&subnets, "subnet", nil, "subnet in CIDR format")
	f.StringArrayVar(&ranges, "ip-range", nil, "allocate container addresses from a sub-range")
	f.StringArrayVar(&gateways, "gateway", nil, "gateway of the subnet")
	f.StringArrayVar(&aux, "aux-address", nil, "auxiliary addresses the IPAM driver must not hand out (name=ip)")
	f.StringArrayVarP(&opts, "opt", "o", nil, "driver options (key=value)")
	f.StringArrayVar(&labels, "label", nil, "network labels (key=value)")
	f.StringArrayVar(&ipamOpts, "ipam-opt", nil, "IPAM driver options (key=value)")
	f.BoolVar(&internal, "internal", false, "restrict external access to the network")
	f.BoolVar(&attachable, "attachable", false, "enable manual attachment")
	f.BoolVar(&ipv6, "ipv6", false, "enable IPv6")
	f.BoolVar(&ipv4, "ipv4", true, "enable IPv4 (--ipv4=false with --ipv6: an IPv6-only network)")
	return cmd
}

// ipamConfigs pairs --ip-range, --gateway and --aux-address with the
// --subnet that contains them, as docker network create does.
func ipamConfigs(subnets, ranges, gateways, aux []string) ([]map[string]any, error) {
	if len(subnets) == 0 {
		if len(ranges)+len(gateways)+len(aux) > 0 {
			return nil, fmt.Errorf("--ip-range, --gateway and --aux-address need a --subnet")
		}
		return []map[string]any{}, nil
	}
	if len(subnets) > 2 {
		return nil, fmt.Errorf("at most two --subnet (one IPv4, one IPv6) are supported yet")
	}
	auxes, err := keyValues("--aux-address", aux)
	if err != nil {
		return nil, err
	}
	var out []map[string]any
	used := map[string]bool{}
	for _, s := range subnets {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			// the daemon names the field; with one subnet nothing needs pairing
			if len(subnets) == 1 {
				p = netip.Prefix{}
			} else {
				return nil, fmt.Errorf("invalid --subnet %q: not a CIDR", s)
			}
		}
		c := map[string]any{"Subnet": s}
		in := func(v string, addr bool) bool {
			if len(subnets) == 1 {
				return true
			}
			if addr {
				a, err := netip.ParseAddr(v)
				return err == nil && p.Contains(a)
			}
			r, err := netip.ParsePrefix(v)
			return err == nil && p.Contains(r.Addr())
		}
		for _, x := range []struct {
			flag, key string
			vals      []string
			addr      bool
		}{{"--ip-range", "IPRange", ranges, false}, {"--gateway", "Gateway", gateways, true}} {
			for _, v := range x.vals {
				if !in(v, x.addr) {
					continue
				}
				if _, dup := c[x.key]; dup {
					return nil, fmt.Errorf("at most one %s per subnet", x.flag)
				}
				c[x.key], used[x.flag+v] = v, true
			}
		}
		m := map[string]string{}
		for k, v := range auxes {
			if in(v, true) {
				m[k], used["--aux-address"+k] = v, true
			}
		}
		if len(m) > 0 {
			c["AuxiliaryAddresses"] = m
		}
		out = append(out, c)
	}
	for _, x := range []struct {
		flag string
		vals []string
	}{{"--ip-range", ranges}, {"--gateway", gateways}} {
		for _, v := range x.vals {
			if !used[x.flag+v] {
				return nil, fmt.Errorf("invalid %s %q: in no --subnet", x.flag, v)
			}
		}
	}
	for k, v := range auxes {
		if !used["--aux-address"+k] {
			return nil, fmt.Errorf("invalid --aux-address %s=%s: in no --subnet", k, v)
		}
	}
	return out, nil
}

func keyValues(flag string, kvs []string) (map[string]string, error) {
	m := map[string]string{}
	for _, kv := range kvs {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("invalid %s %q: expected key=value", flag, kv)
		}
		m[k] = v
	}
	return m, nil
}

func netLsCmd(g *globals) *cobra.Command {
	var format string
	var filterArgs []string
	var quiet bool
	cmd := &cobra.Command{
		Use:     "ls [OPTIONS]",
		Aliases: []string{"list"},
		Short:   "List networks",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			q, err := filterQuery(filterArgs)
			if err != nil {
				return err
			}
			var nets []network.Inspect
			if err := c.do("GET", "/networks", q, nil, &nets); err != nil {
				return err
			}
			if quiet {
				for _, n := range nets {
					fmt.Println(n.ID[:12])
				}
				return nil
			}
			items := toAny(nets)
			for _, it := range items {
				m := it.(map[string]any)
				m["ID"] = m["Id"]
			}
			if done, err := newFormatter(format).each(items); done {
				return err
			}
			w := table("NETWORK ID\tNAME\tDRIVER\tSCOPE")
			for _, n := range nets {
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", n.ID[:12], n.Name, n.Driver, n.Scope)
			}
			return w.Flush()
		},
	}
	cmd.Flags().StringVar(&format, "format", "", "output format: table, json, or a Go template")
	cmd.Flags().StringArrayVarP(&filterArgs, "filter", "f", nil, "filter output (driver=, name=, id=, label=, scope=, type=, dangling=)")
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "only display network IDs")
	return cmd
}

// filterJSON turns -f key=value flags into Docker's filters JSON.
func filterJSON(args []string) (string, error) {
	m := map[string]map[string]bool{}
	for _, a := range args {
		k, v, ok := strings.Cut(a, "=")
		if !ok {
			return "", fmt.Errorf("invalid filter %q: expected key=value", a)
		}
		if m[k] == nil {
			m[k] = map[string]bool{}
		}
		m[k][v] = true
	}
	b, err := json.Marshal(m)
	return string(b), err
}

func netRmCmd(g *globals) *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:     "rm NETWORK [NETWORK...]",
		Aliases: []string{"remove"},
		Short:   "Remove one or more networks",
		Args:    cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			return forEach(cmd, args, func(ref string) (bool, error) {
				err := c.do("DELETE", "/networks/"+url.PathEscape(ref), nil, nil, nil)
				if de, ok := err.(*ErrDaemon); ok && force && de.Status == 404 {
					return false, nil
				}
				return err == nil, err
			})
		},
	}
	cmd.Flags().BoolVarP(&force, "force", "f", false, "do not error if the network does not exist")
	return cmd
}

func netPruneCmd(g *globals) *cobra.Command {
	var filterArgs []string
	var yes bool
	cmd := &cobra.Command{
		Use:   "prune [OPTIONS]",
		Short: "Remove all unused networks",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_ = yes // tether never prompts; -f is accepted for docker muscle memory
			c, err := g.client()
			if err != nil {
				return err
			}
			q, err := filterQuery(filterArgs)
			if err != nil {
				return err
			}
			var rep network.PruneReport
			if err := c.do("POST", "/networks/prune", q, nil, &rep); err != nil {
				return err
			}
			if len(rep.NetworksDeleted) > 0 {
				fmt.Println("Deleted Networks:")
				for _, n := range rep.NetworksDeleted {
					fmt.Println(n)
				}
			}
			return nil
		},
	}
	cmd.Flags().StringArrayVar(&filterArgs, "filter", nil, "provide filter values (e.g. until=24h, label=a=b)")
	cmd.Flags().BoolVarP(&yes, "force", "f", false, "do not prompt for confirmation")
	return cmd
}

func netConnectCmd(g *globals) *cobra.Command {
	var ip, ip6 string
	var aliases, publish []string
	cmd := &cobra.Command{
		Use:   "connect [OPTIONS] NETWORK SANDBOX",
		Short: "Connect a sandbox to a network",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			body, err := connectRequest(args[1], ip, ip6, aliases, publish)
			if err != nil {
				return err
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			return c.do("POST", "/networks/"+url.PathEscape(args[0])+"/connect", nil, body, nil)
		},
	}
	cmd.Flags().StringVar(&ip, "ip", "", "IPv4 address")
	cmd.Flags().StringVar(&ip6, "ip6", "", "IPv6 address")
	cmd.Flags().StringArrayVar(&aliases, "alias", nil, "network-scoped alias for the sandbox")
	cmd.Flags().StringArrayVarP(&publish, "publish", "p", nil, "publish a port on this network (docker run -p syntax)")
	return cmd
}

// connectRequest is the body of POST /networks/{id}/connect: Docker's
// ConnectRequest plus PortBindings (a Tether extension) for -p.
func connectRequest(sandbox, ip, ip6 string, aliases, publish []string) (map[string]any, error) {
	ec := map[string]any{"Aliases": aliases}
	if ip != "" || ip6 != "" {
		c := map[string]any{}
		if ip != "" {
			c["IPv4Address"] = ip
		}
		if ip6 != "" {
			c["IPv6Address"] = ip6
		}
		ec["IPAMConfig"] = c
	}
	body := map[string]any{"Container": sandbox, "EndpointConfig": ec}
	pm, err := types.ParsePublish(publish)
	if err != nil {
		return nil, fmt.Errorf("invalid --publish: %w", err)
	}
	if pm != nil {
		body["PortBindings"] = pm
	}
	return body, nil
}

func netDisconnectCmd(g *globals) *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:   "disconnect [OPTIONS] NETWORK SANDBOX",
		Short: "Disconnect a sandbox from a network",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			return c.do("POST", "/networks/"+url.PathEscape(args[0])+"/disconnect", nil,
				map[string]any{"Container": args[1], "Force": force}, nil)
		},
	}
	cmd.Flags().BoolVarP(&force, "force", "f", false, "force the sandbox to disconnect")
	return cmd
}
