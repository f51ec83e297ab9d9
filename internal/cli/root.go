// Package cli is the tether command line: the daemon command and a thin
// HTTP client of the daemon for everything else, with Docker-like output.
package cli

import (
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

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
	g := &globals{}
	root := newRoot(g)
	root.SetArgs(args)
	err := root.Execute()
	g.close()
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

// globals are the root command's persistent flags: where the daemon is and
// how to reach it (docs/cli-remote.md).
type globals struct {
	host    string
	tls     tlsFlags
	flags   *pflag.FlagSet // the root's persistent flags, to see what was given
	clients []*Client
}

func (g *globals) register(fs *pflag.FlagSet) {
	g.flags = fs
	fs.StringVarP(&g.host, "host", "H", "", "daemon to connect to: "+hostForms+" (default $TETHER_HOST, $DOCKER_HOST or "+DefaultHost+")")
	fs.BoolVar(&g.tls.tls, "tls", false, "use TLS to a tcp:// host; implied by --tlsverify")
	fs.BoolVar(&g.tls.verify, "tlsverify", false, "use TLS and verify the daemon against the CA (default: $TETHER_TLS_VERIFY or $DOCKER_TLS_VERIFY non-empty)")
	fs.StringVar(&g.tls.ca, "tlscacert", "", "trust certs signed only by this CA (default CERTDIR/ca.pem; CERTDIR is $TETHER_CERT_PATH, $DOCKER_CERT_PATH or ~/.docker)")
	fs.StringVar(&g.tls.cert, "tlscert", "", "client certificate (default CERTDIR/cert.pem when present)")
	fs.StringVar(&g.tls.key, "tlskey", "", "client key (default CERTDIR/key.pem when present)")
}

// client builds a client from the flags and the environment; Execute closes
// it when the command is done.
func (g *globals) client() (*Client, error) {
	tf := g.tls
	tf.verifySet = g.flags.Changed("tlsverify")
	c, err := newClient(g.host, tf, os.LookupEnv)
	if err != nil {
		return nil, err
	}
	g.clients = append(g.clients, c)
	return c, nil
}

func (g *globals) close() {
	for _, c := range g.clients {
		c.Close()
	}
}

func newRoot(g *globals) *cobra.Command {
	root := &cobra.Command{
		Use:           "tether",
		Short:         "Tether: container networking engine",
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       api.Version,
	}
	g.register(root.PersistentFlags())
	root.AddCommand(daemonCmd(), networkCmd(g), runCmd(g), execCmd(g), sandboxCmd(g), rmCmd(g), portCmd(g), versionCmd(g), systemCmd(g))
	return root
}

func daemonCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "daemon [flags]",
		Short: "Run the Tether daemon",
		Args:  cobra.NoArgs,
	}
	// The daemon's -H means "listen here" and its --tls* flags are its
	// server's: they shadow the client's persistent flags of the same names
	// by being registered locally.
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
