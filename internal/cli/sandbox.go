package cli

import (
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/tether-net/tether/internal/api/types"
)

// attachFlags are the network flags of run and sandbox create.
type attachFlags struct {
	name, hostname, ip, ip6    string
	networks, aliases, publish []string
}

func (a *attachFlags) register(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&a.name, "name", "", "sandbox name")
	f.StringVar(&a.hostname, "hostname", "", "hostname inside the sandbox (default: the short ID)")
	f.StringArrayVar(&a.networks, "network", nil, "connect to a network, repeatable: eth0, eth1, ... in order (default: bridge)")
	f.StringVar(&a.ip, "ip", "", "IPv4 address on the first network")
	f.StringVar(&a.ip6, "ip6", "", "IPv6 address on the first network")
	f.StringArrayVar(&a.aliases, "network-alias", nil, "network-scoped alias on the first network")
	f.StringArrayVar(&a.aliases, "alias", nil, "same as --network-alias")
	f.StringArrayVarP(&a.publish, "publish", "p", nil, "publish a port on the first network: [hostIP:][hostPort[-end]:]port[-end][/tcp|/udp]")
}

func (a *attachFlags) request() (types.SandboxCreateRequest, error) {
	req := types.SandboxCreateRequest{Name: a.name, Hostname: a.hostname}
	for i, n := range a.networks {
		at := types.NetworkAttach{Network: n}
		if i == 0 {
			at.IP, at.IP6, at.Aliases = a.ip, a.ip6, a.aliases
		}
		req.Networks = append(req.Networks, at)
	}
	if len(a.networks) == 0 && (a.ip != "" || a.ip6 != "" || len(a.aliases) > 0) {
		return req, fmt.Errorf("--ip, --ip6 and --network-alias need a --network")
	}
	// Published on the first network; with no --network the daemon picks
	// its default network.
	pm, err := types.ParsePublish(a.publish)
	if err != nil {
		return req, fmt.Errorf("invalid --publish: %w", err)
	}
	req.PortBindings = pm
	return req, nil
}

func runCmd(g *globals) *cobra.Command {
	var at attachFlags
	var pf procFlags
	var rm bool
	cmd := &cobra.Command{
		Use:   "run [OPTIONS] -- COMMAND [ARG...]",
		Short: "Create a sandbox, attach its networks and run a command in it",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req, err := at.request()
			if err != nil {
				return err
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			req.AutoRemove = rm
			var sb types.Sandbox
			if err := c.do("POST", "/tether/v1/sandboxes", nil, req, &sb); err != nil {
				return err
			}
			x := pf.request(args, true)
			if x.Detach {
				if err := c.do("POST", "/tether/v1/sandboxes/"+sb.ID+"/exec", nil, x, nil); err != nil {
					removeQuietly(c, sb.ID)
					return err
				}
				fmt.Println(sb.ID)
				return nil
			}
			err = attachRun(c, sb.ID, x)
			if _, exited := err.(exitError); err != nil && !exited && rm {
				removeQuietly(c, sb.ID)
			}
			return err
		},
	}
	at.register(cmd)
	pf.register(cmd, "run the command in the background and print the sandbox ID")
	cmd.Flags().BoolVar(&rm, "rm", false, "remove the sandbox when the command exits")
	return cmd
}

func removeQuietly(c *Client, id string) {
	_ = c.do("DELETE", "/tether/v1/sandboxes/"+id, url.Values{"force": {"1"}}, nil, nil)
}

func execCmd(g *globals) *cobra.Command {
	var pf procFlags
	cmd := &cobra.Command{
		Use:   "exec [OPTIONS] SANDBOX -- COMMAND [ARG...]",
		Short: "Run a command in a sandbox's network, mount and UTS namespaces",
		Args:  cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			x := pf.request(args[1:], false)
			if x.Detach {
				var r types.ExecResponse
				return c.do("POST", "/tether/v1/sandboxes/"+url.PathEscape(args[0])+"/exec", nil, x, &r)
			}
			return attachRun(c, args[0], x)
		},
	}
	pf.register(cmd, "run the command in the background")
	return cmd
}

func sandboxCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "sandbox", Short: "Manage sandboxes (network namespaces)"}
	cmd.AddCommand(sbCreateCmd(g), sbLsCmd(g), portCmd(g), inspectCmd(g, "inspect [OPTIONS] SANDBOX [SANDBOX...]", "Display detailed information on one or more sandboxes", "/tether/v1/sandboxes/"), rmCmd(g))
	return cmd
}

func sbCreateCmd(g *globals) *cobra.Command {
	var at attachFlags
	var pid int
	var nsPath string
	cmd := &cobra.Command{
		Use:   "create [OPTIONS]",
		Short: "Create a sandbox, or adopt a namespace of another runtime (--pid, --netns)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			req, err := at.request()
			if err != nil {
				return err
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			req.PID, req.NetNS = pid, nsPath
			var sb types.Sandbox
			if err := c.do("POST", "/tether/v1/sandboxes", nil, req, &sb); err != nil {
				return err
			}
			fmt.Println(sb.ID)
			return nil
		},
	}
	at.register(cmd)
	cmd.Flags().IntVar(&pid, "pid", 0, "adopt the network namespace of this process")
	cmd.Flags().StringVar(&nsPath, "netns", "", "adopt the network namespace at this path")
	return cmd
}

func sbLsCmd(g *globals) *cobra.Command {
	var format string
	var quiet bool
	cmd := &cobra.Command{
		Use:     "ls [OPTIONS]",
		Aliases: []string{"list", "ps"},
		Short:   "List sandboxes",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			var sbs []types.Sandbox
			if err := c.do("GET", "/tether/v1/sandboxes", nil, nil, &sbs); err != nil {
				return err
			}
			if quiet {
				for _, s := range sbs {
					fmt.Println(s.ID[:12])
				}
				return nil
			}
			if done, err := newFormatter(format).each(toAny(sbs)); done {
				return err
			}
			w := table("SANDBOX ID\tNAME\tNETWORKS\tPROCESSES\tCREATED")
			for _, s := range sbs {
				var nets []string
				for _, n := range s.NetworkOrder {
					ep := s.Networks[n]
					var addrs []string
					for _, a := range []netip.Addr{ep.IPAddress, ep.GlobalIPv6Address} {
						if a.IsValid() {
							addrs = append(addrs, a.String())
						}
					}
					if len(addrs) > 0 {
						nets = append(nets, n+"="+strings.Join(addrs, ","))
					} else {
						nets = append(nets, n)
					}
				}
				created := time.Since(s.Created).Round(time.Second).String() + " ago"
				name := s.Name
				if s.Degraded {
					name += " (degraded)"
				}
				if s.HandedOver {
					name += " (docker)"
				}
				fmt.Fprintf(w, "%s\t%s\t%s\t%d\t%s\n", s.ID[:12], name, strings.Join(nets, ","), len(s.Processes), created)
			}
			return w.Flush()
		},
	}
	cmd.Flags().StringVar(&format, "format", "", "output format: table, json, or a Go template")
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "only display sandbox IDs")
	return cmd
}

func rmCmd(g *globals) *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:     "rm [OPTIONS] SANDBOX [SANDBOX...]",
		Aliases: []string{"remove"},
		Short:   "Remove one or more sandboxes",
		Args:    cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			q := url.Values{}
			if force {
				q.Set("force", "1")
			}
			return forEach(cmd, args, func(ref string) (bool, error) {
				err := c.do("DELETE", "/tether/v1/sandboxes/"+url.PathEscape(ref), q, nil, nil)
				return err == nil, err
			})
		},
	}
	cmd.Flags().BoolVarP(&force, "force", "f", false, "kill the sandbox's processes and remove it")
	return cmd
}

func portCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "port SANDBOX",
		Short: "List a sandbox's published ports",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			var sb types.Sandbox
			if err := c.do("GET", "/tether/v1/sandboxes/"+url.PathEscape(args[0]), nil, nil, &sb); err != nil {
				return err
			}
			var lines []string
			for key, bs := range sb.NetworkSettings.Ports {
				for _, b := range bs {
					lines = append(lines, fmt.Sprintf("%s -> %s", key, net.JoinHostPort(b.HostIP, b.HostPort))) // [::]:8080, as docker port
				}
			}
			slices.Sort(lines)
			for _, l := range lines {
				fmt.Println(l)
			}
			return nil
		},
	}
}
