package main

import (
	"testing"

	"github.com/tether-net/tether/internal/cli"
)

// The daemon's --host and --tls* flags are its own (listeners, server
// certificates): they shadow the client's persistent flags of the same names.
func TestDaemonFlagsShadowClientFlags(t *testing.T) {
	root, done := cli.NewRoot("test", daemonCmd())
	defer done()
	args := []string{"daemon", "-H", "tcp://127.0.0.1:2376", "--tls", "--tlsverify", "--tlscacert", "/ca.pem", "--tlscert", "/srv.pem", "--tlskey", "/srv-key.pem"}
	cmd, rest, err := root.Find(args)
	if err != nil || cmd.Name() != "daemon" {
		t.Fatalf("find daemon: %v %v", cmd, err)
	}
	if err := cmd.ParseFlags(rest); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"host", "tls", "tlsverify", "tlscacert", "tlscert", "tlskey"} {
		if !cmd.Flags().Changed(name) {
			t.Errorf("daemon --%s not set", name)
		}
		client := root.PersistentFlags().Lookup(name)
		if client == nil {
			t.Fatalf("the client has no --%s", name)
		}
		if cmd.Flags().Lookup(name) == client {
			t.Errorf("daemon --%s is the client's flag", name)
		}
		if client.Changed || client.Value.String() != client.DefValue {
			t.Errorf("client --%s changed by the daemon's: %q", name, client.Value)
		}
	}
}
