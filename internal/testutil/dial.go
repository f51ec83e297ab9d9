package testutil

import (
	"context"
	"net"
	"time"

	"github.com/tether-net/tether/internal/netns"
)

// DialInNS opens a connection from inside the named namespace (ip netns
// add): the socket is created there and stays there, so the test process can
// reach a daemon listening on the namespace's own loopback.
func DialInNS(ctx context.Context, ns, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := netns.Do("/run/netns/"+ns, func() error {
		var d net.Dialer
		var err error
		c, err = d.DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// NSDialer returns a DialContext function for http.Transport (or
// moby/client's WithDialContext) that dials addr inside ns whatever address
// the client asks for.
func NSDialer(ns, addr string) func(ctx context.Context, network, _ string) (net.Conn, error) {
	return func(ctx context.Context, network, _ string) (net.Conn, error) {
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		return DialInNS(ctx, ns, "tcp", addr)
	}
}
