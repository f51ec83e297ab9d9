package cli

import (
	"fmt"
	"net/url"

	"github.com/spf13/cobra"

	"github.com/tether-net/tether/internal/api/types"
)

// tether link: point-to-point links between two sandboxes (docs/links.md).
func linkCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "link", Short: "Manage point-to-point links between sandboxes"}
	cmd.AddCommand(linkCreateCmd(g), linkLsCmd(g),
		inspectCmd(g, "inspect [OPTIONS] LINK [LINK...]", "Display detailed information on one or more links", "/tether/v1/links/"),
		linkRmCmd(g))
	return cmd
}

func linkCreateCmd(g *globals) *cobra.Command {
	var req types.LinkCreateRequest
	cmd := &cobra.Command{
		Use:   "create [OPTIONS] SANDBOX_A SANDBOX_B",
		Short: "Link two sandboxes with a veth pair (a /32 on each end, a host route to the other)",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			req.A, req.B = args[0], args[1]
			c, err := g.client()
			if err != nil {
				return err
			}
			var l types.Link
			if err := c.do("POST", "/tether/v1/links", nil, req, &l); err != nil {
				return err
			}
			fmt.Println(l.ID)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&req.Name, "name", "", "link name (default: A-B)")
	f.StringVar(&req.IP, "ip", "", "IPv4 address of A's end (with --peer-ip; default: a /31 from link-pool)")
	f.StringVar(&req.PeerIP, "peer-ip", "", "IPv4 address of B's end")
	f.IntVar(&req.MTU, "mtu", 0, "MTU of both ends (default 1500)")
	f.BoolVar(&req.DNSName, "dns-name", false, "each end resolves the other's sandbox name to its address on the link")
	return cmd
}

func linkLsCmd(g *globals) *cobra.Command {
	var format string
	var quiet bool
	cmd := &cobra.Command{
		Use:     "ls [OPTIONS]",
		Aliases: []string{"list"},
		Short:   "List links",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			var ls []types.Link
			if err := c.do("GET", "/tether/v1/links", nil, nil, &ls); err != nil {
				return err
			}
			if quiet {
				for _, l := range ls {
					fmt.Println(l.ID[:12])
				}
				return nil
			}
			if done, err := newFormatter(format).each(toAny(ls)); done {
				return err
			}
			w := table("LINK ID\tNAME\tA\tB\tMTU")
			for _, l := range ls {
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%d\n", l.ID[:12], l.Name, end(l.A), end(l.B), l.MTU)
			}
			return w.Flush()
		},
	}
	cmd.Flags().StringVar(&format, "format", "", "output format: table, json, or a Go template")
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "only display link IDs")
	return cmd
}

// end prints a link end as sandbox:interface=address.
func end(e types.LinkEnd) string {
	return fmt.Sprintf("%s:%s=%s", e.SandboxName, e.IfName, e.Address.Addr())
}

func linkRmCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:     "rm LINK [LINK...]",
		Aliases: []string{"remove"},
		Short:   "Remove one or more links",
		Args:    cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			return forEach(cmd, args, func(ref string) (bool, error) {
				err := c.do("DELETE", "/tether/v1/links/"+url.PathEscape(ref), nil, nil, nil)
				return err == nil, err
			})
		},
	}
}
