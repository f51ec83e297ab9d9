package cli

import (
	"testing"
)

// Client commands see the persistent flags wherever they are given.
func TestClientFlags(t *testing.T) {
	g := &globals{}
	root := newRoot(g, "test")
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
