// Package cli is the tether command line: a thin HTTP client of the daemon,
// with Docker-like output. It links nothing of the daemon (it speaks the
// wire types of package api/types); the daemon command is added by the
// binary (cmd/tether).
package cli

import (
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// exitError carries a command's exit status (tether run/exec pass on the
// status of the command they ran).
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

// Execute runs the command line and returns the process exit code.
// version is the binary's; extra are commands added to the root (the
// binary's daemon command).
func Execute(args []string, version string, extra ...*cobra.Command) int {
	root, done := NewRoot(version, extra...)
	root.SetArgs(args)
	err := root.Execute()
	done()
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

// NewRoot builds the root command: the client commands, their persistent
// flags (-H, --tls...) and extra. A command in extra that registers flags
// of those names locally shadows them (the daemon's -H means "listen
// here"). done closes the connections the commands opened.
func NewRoot(version string, extra ...*cobra.Command) (root *cobra.Command, done func()) {
	g := &globals{}
	return newRoot(g, version, extra...), g.close
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

func newRoot(g *globals, version string, extra ...*cobra.Command) *cobra.Command {
	root := &cobra.Command{
		Use:           "tether",
		Short:         "Tether: container networking engine",
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       version,
	}
	g.register(root.PersistentFlags())
	root.AddCommand(networkCmd(g), runCmd(g), execCmd(g), sandboxCmd(g), linkCmd(g), rmCmd(g), portCmd(g), versionCmd(g, version), systemCmd(g))
	root.AddCommand(doctorCmd(g))
	root.AddCommand(extra...)
	return root
}

func versionCmd(g *globals, version string) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Show the client and daemon versions",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fmt.Printf("Client:\n Version:\t%s\n", version)
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
