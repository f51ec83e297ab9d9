package cli

import (
	"encoding/json"
	"fmt"
	"net/url"
	"os"

	"github.com/spf13/cobra"

	"github.com/tether-net/tether/internal/api/types"
)

// inspectCmd is `network inspect` and `sandbox inspect`: GET pathPrefix+ref
// for each argument, print them as docker inspect does.
func inspectCmd(g *globals, use, short, pathPrefix string) *cobra.Command {
	var format string
	cmd := &cobra.Command{
		Use:   use,
		Short: short,
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			var items []json.RawMessage
			var firstErr error
			for _, ref := range args {
				var raw json.RawMessage
				if err := c.do("GET", pathPrefix+url.PathEscape(ref), nil, nil, &raw); err != nil {
					if firstErr == nil {
						firstErr = err
					}
					continue
				}
				items = append(items, raw)
			}
			if err := newFormatter(format).inspect(items); err != nil {
				return err
			}
			return firstErr
		},
	}
	cmd.Flags().StringVarP(&format, "format", "f", "", "format output using a Go template, or json")
	return cmd
}

// filterQuery turns repeated --filter key=value flags into the query of a
// list or prune request.
func filterQuery(args []string) (url.Values, error) {
	q := url.Values{}
	if len(args) == 0 {
		return q, nil
	}
	f, err := filterJSON(args)
	if err != nil {
		return nil, err
	}
	q.Set("filters", f)
	return q, nil
}

// procFlags are the process flags shared by run and exec.
type procFlags struct {
	detach, interactive bool
	env                 []string
	workdir             string
}

func (p *procFlags) register(cmd *cobra.Command, detachHelp string) {
	f := cmd.Flags()
	f.BoolVarP(&p.detach, "detach", "d", false, detachHelp)
	f.BoolVarP(&p.interactive, "interactive", "i", false, "keep stdin attached")
	f.StringArrayVarP(&p.env, "env", "e", nil, "set environment variables")
	f.StringVarP(&p.workdir, "workdir", "w", "", "working directory inside the sandbox")
}

func (p *procFlags) request(args []string, main bool) types.ExecRequest {
	return types.ExecRequest{Cmd: args, Env: p.env, WorkingDir: p.workdir, Stdin: p.interactive, Detach: p.detach, Main: main}
}

// attachRun streams an exec and turns a non-zero exit status into the
// CLI's own exit status.
func attachRun(c *Client, sandbox string, x types.ExecRequest) error {
	code, err := c.execAttached(sandbox, x, os.Stdin, os.Stdout, os.Stderr)
	if err != nil {
		return err
	}
	if code != 0 {
		return exitError{code}
	}
	return nil
}

// forEach runs fn for every argument, as docker's rm commands do: a success
// prints the argument (when fn says so), a failure is printed and makes the
// exit status 1, and the other arguments are still tried.
func forEach(cmd *cobra.Command, args []string, fn func(ref string) (printed bool, err error)) error {
	var failed error
	for _, ref := range args {
		printed, err := fn(ref)
		if err != nil {
			fmt.Fprintln(cmd.ErrOrStderr(), err)
			failed = exitError{1}
			continue
		}
		if printed {
			fmt.Println(ref)
		}
	}
	return failed
}
