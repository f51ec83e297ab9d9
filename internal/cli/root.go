// Package cli is the tether command line: the daemon command and a thin
// HTTP client of the daemon for everything else, with Docker-like output.
package cli

import (
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/tether-net/tether/internal/api"
	"github.com/tether-net/tether/internal/config"
	"github.com/tether-net/tether/internal/daemon"
)

// exitError carries a command's exit status (tether run/exec pass on the
// status of the command they ran).
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

// Execute runs the command line and returns the process exit code.
func Execute(args []string) int {
	root := newRoot()
	root.SetArgs(args)
	err := root.Execute()
	var ee exitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee):
		return ee.code
	}
	fmt.Fprintln(os.Stderr, err)
	return 1
}

type globals struct{ host string }

func (g *globals) client() (*Client, error) { return newClient(g.host) }

func newRoot() *cobra.Command {
	g := &globals{}
	root := &cobra.Command{
		Use:           "tether",
		Short:         "Tether: container networking engine",
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       api.Version,
	}
	root.PersistentFlags().StringVarP(&g.host, "host", "H", "", "daemon socket to connect to (default $TETHER_HOST or "+DefaultHost+")")
	root.AddCommand(daemonCmd(), networkCmd(g), runCmd(g), execCmd(g), sandboxCmd(g), rmCmd(g), portCmd(g), versionCmd(g))
	return root
}

func daemonCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "daemon [flags]",
		Short: "Run the Tether daemon",
		Args:  cobra.NoArgs,
	}
	// The daemon's -H means "listen here"; the client's persistent -H is
	// shadowed by registering the daemon's own flags locally.
	flags := config.RegisterFlags(cmd.Flags())
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		cfg, err := flags.Load()
		if err != nil {
			return err
		}
		return daemon.Run(cfg)
	}
	return cmd
}

func versionCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Show the client and daemon versions",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fmt.Printf("Client:\n Version:\t%s\n", api.Version)
			c, err := g.client()
			if err != nil {
				return err
			}
			var v map[string]any
			if err := c.do("GET", "/version", nil, nil, &v); err != nil {
				return err
			}
			fmt.Printf("Server:\n Version:\t%v\n API version:\t%v (minimum %v)\n Kernel:\t%v\n", v["Version"], v["ApiVersion"], v["MinAPIVersion"], v["KernelVersion"])
			return nil
		},
	}
}
