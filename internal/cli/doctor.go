package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"os"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/tether-net/tether/internal/doctor/report"
)

// Exit statuses of tether doctor (docs/observability.md).
const (
	doctorHealthy = 0 // no error finding (warnings and infos allowed)
	doctorBroken  = 1 // at least one error finding
	doctorFailed  = 2 // the doctor could not run: daemon unreachable, unknown sandbox, bad arguments
)

// tether doctor [A B]: the daemon's checks of the host, and the path
// between two sandboxes.
func doctorCmd(g *globals) *cobra.Command {
	var format string
	cmd := &cobra.Command{
		Use:   "doctor [OPTIONS] [SANDBOX_A SANDBOX_B]",
		Short: "Check the host's networking (and the path from one sandbox to another) and say how to fix what is broken",
		Long: "Runs the daemon's checks: ip_forward, br_netfilter, other nftables tables that drop forwarded traffic, Tether's own table, " +
			"routes overlapping a network, overlay MTU, the cluster store and lease, overlay peers' FDB and neighbour entries, DNS upstreams; " +
			"with two sandboxes, also the path between them and the first hop that breaks it.\n" +
			"Exit status: 0 nothing broken (warnings allowed), 1 something broken, 2 the doctor could not run.",
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) != 0 && len(args) != 2 {
				return exitWith(doctorFailed, fmt.Errorf("tether doctor takes no sandbox or two (A and B), got %d", len(args)))
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			rep, err := fetchDoctor(g, args)
			if err != nil {
				return exitWith(doctorFailed, err)
			}
			if err := printDoctor(os.Stdout, format, rep); err != nil {
				return exitWith(doctorFailed, err)
			}
			if rep.Broken {
				return exitError{doctorBroken}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&format, "format", "", "output: table (default), json, or a Go template applied to the report")
	return cmd
}

// exitWith prints err (as Execute would) and exits with code.
func exitWith(code int, err error) error {
	fmt.Fprintln(os.Stderr, err)
	return exitError{code}
}

func fetchDoctor(g *globals, args []string) (*report.Report, error) {
	c, err := g.client()
	if err != nil {
		return nil, err
	}
	q := url.Values{}
	if len(args) == 2 {
		q.Set("a", args[0])
		q.Set("b", args[1])
	}
	var rep report.Report
	if err := c.do("GET", "/tether/v1/doctor", q, nil, &rep); err != nil {
		return nil, err
	}
	return &rep, nil
}

// printDoctor prints the report: JSON, a template, or the checks, the
// findings with why and fix, the path and a verdict.
func printDoctor(w io.Writer, format string, rep *report.Report) error {
	switch format {
	case "", "table":
	case "json":
		b, err := json.MarshalIndent(rep, "", "  ")
		if err != nil {
			return err
		}
		_, err = fmt.Fprintln(w, string(b))
		return err
	default:
		f := &formatter{spec: format, out: w}
		_, err := f.each(toAny([]*report.Report{rep}))
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 0, 3, ' ', 0)
	fmt.Fprintln(tw, "CHECK\tSTATUS\tDETAIL")
	for _, c := range rep.Checks {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", c.Name, c.Severity, c.Detail)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, f := range rep.Findings {
		fmt.Fprintf(w, "\n[%s] %s: %s\n", f.Severity, f.Check, f.What)
		if f.Why != "" {
			fmt.Fprintf(w, "  why: %s\n", f.Why)
		}
		if f.Fix != "" {
			fmt.Fprintf(w, "  fix: %s\n", f.Fix)
		}
	}
	printPair(w, rep.Pair)
	fmt.Fprintln(w, "\n"+verdictLine(rep))
	return nil
}

func printPair(w io.Writer, p *report.Pair) {
	if p == nil {
		return
	}
	fmt.Fprintf(w, "\nPath %s -> %s: %s", p.A, p.B, p.Path)
	if p.Network != "" {
		fmt.Fprintf(w, " (network %s)", p.Network)
	}
	fmt.Fprintln(w)
	broken := false
	for _, h := range p.Hops {
		mark := "ok  "
		switch {
		case broken:
			mark = "--  " // not reached
		case !h.OK:
			mark, broken = "FAIL", true
		}
		fmt.Fprintf(w, "  %s %s", mark, h.Step)
		if h.Detail != "" {
			fmt.Fprintf(w, ": %s", h.Detail)
		}
		fmt.Fprintln(w)
	}
	if p.BreaksAt != "" {
		fmt.Fprintf(w, "Breaks at: %s\n", p.BreaksAt)
	}
}

func verdictLine(rep *report.Report) string {
	n := map[report.Severity]int{}
	for _, f := range rep.Findings {
		n[f.Severity]++
	}
	if rep.Broken {
		return fmt.Sprintf("BROKEN: %d error(s), %d warning(s)", n[report.Error], n[report.Warning])
	}
	return fmt.Sprintf("nothing broken: %d warning(s), %d note(s)", n[report.Warning], n[report.Info])
}
