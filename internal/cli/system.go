package cli

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"

	"github.com/spf13/cobra"
)

func systemCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "system", Short: "Manage the connection to the daemon"}
	cmd.AddCommand(dialStdioCmd(g))
	return cmd
}

// dialStdioCmd is the far end of an ssh:// host: `ssh HOST tether system
// dial-stdio` (or `docker system dial-stdio`, with docker a link to tether)
// joins the ssh session to the daemon's socket.
func dialStdioCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "dial-stdio",
		Short: "Connect stdin and stdout to the daemon (the remote end of ssh:// hosts)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			conn, err := c.connect(context.Background())
			if err != nil {
				return err
			}
			defer conn.Close()
			return proxyStdio(conn, os.Stdin, os.Stdout)
		},
	}
}

// closeWriter is a connection that can close its write half (unix and TCP
// sockets, TLS, command connections).
type closeWriter interface{ CloseWrite() error }

// proxyStdio copies in to conn and conn to out. When in ends, conn's write
// half is closed, so the daemon reads EOF once it has every request and
// finishes its answers; proxyStdio returns when the daemon closes its side.
func proxyStdio(conn net.Conn, in io.Reader, out io.Writer) error {
	go func() {
		_, _ = io.Copy(conn, in)
		closeWrite(conn)
	}()
	if _, err := io.Copy(out, conn); err != nil {
		return fmt.Errorf("copy from the daemon to stdout: %w", err)
	}
	return nil
}

// closeWrite half-closes conn. Every transport of the CLI can; were one
// unable to, the daemon would simply see EOF when the process exits.
func closeWrite(conn net.Conn) {
	if cw, ok := conn.(closeWriter); ok {
		_ = cw.CloseWrite()
	}
}
