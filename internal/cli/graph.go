package cli

import (
	"fmt"
	"net/http"
	"net/url"
	"slices"

	"github.com/spf13/cobra"
)

// graphFormats are what `tether network graph --format` accepts (the
// daemon's GET /tether/v1/graph?format=).
var graphFormats = []string{"dot", "svg", "json"}

// netGraphCmd is `tether network graph`: the daemon's picture of its hosts,
// networks, sandboxes, links, published ports and overlay peers, printed as
// the daemon renders it.
func netGraphCmd(g *globals) *cobra.Command {
	var format string
	cmd := &cobra.Command{
		Use:   "graph [OPTIONS]",
		Short: "Draw the hosts, networks, sandboxes, links and published ports",
		Long: `Print the daemon's topology: as DOT for Graphviz (tether network graph | dot -Tpng -o net.png),
as an SVG drawn by the daemon, or as JSON. The daemon also serves a page that draws it and
follows changes live: GET /tether/v1/ui on its API.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !slices.Contains(graphFormats, format) {
				return fmt.Errorf("invalid --format %q: must be dot, svg or json", format)
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			return c.do(http.MethodGet, "/tether/v1/graph", url.Values{"format": {format}}, nil, cmd.OutOrStdout())
		},
	}
	cmd.Flags().StringVar(&format, "format", "dot", "output format: dot, svg or json")
	return cmd
}
