package cli

import (
	"testing"
)

// The daemon's --host and --tls* flags are its own (listeners, server
// certificates): they shadow the client's persistent flags of the same names.
func TestDaemonFlagsShadowClientFlags(t *testing.T) {
	g := &globals{}
	root := newRoot(g)
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
		if cmd.Flags().Lookup(name) == root.PersistentFlags().Lookup(name) {
			t.Errorf("daemon --%s is the client's flag", name)
		}
	}
	if g.host != "" || g.tls != (tlsFlags{}) || g.flags.Changed("tlsverify") {
		t.Errorf("client flags changed by daemon flags: %q %+v", g.host, g.tls)
	}
}

// Client commands see the persistent flags wherever they are given.
func TestClientFlags(t *testing.T) {
	g := &globals{}
	root := newRoot(g)
	args := []string{"--tlsverify=false", "network", "ls", "-H", "tcp://h:2376", "--tlscacert", "/ca.pem"}
	cmd, rest, err := root.Find(args)
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.ParseFlags(rest); err != nil {
		t.Fatal(err)
	}
	if g.host != "tcp://h:2376" || g.tls.ca != "/ca.pem" || g.tls.verify || !g.flags.Changed("tlsverify") {
		t.Errorf("globals %q %+v, tlsverify given %v", g.host, g.tls, g.flags.Changed("tlsverify"))
	}
}
