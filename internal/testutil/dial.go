package testutil

import (
	"context"
	"io"
	"net"
	"net/http"
	"testing"
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

// ExpectPage fetches http://addr/ from inside namespace ns and checks the
// body is page (retrying for 5 s while a server starts) or, with want
// false, that nothing answers (refused or dropped).
func ExpectPage(t testing.TB, ns, addr, page string, want bool) {
	t.Helper()
	c := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return DialInNS(ctx, ns, network, addr)
		},
	}}
	var body string
	var err error
	for range 50 {
		var resp *http.Response
		resp, err = c.Get("http://" + addr + "/")
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			body = string(b)
		}
		switch {
		case want && err == nil && body == page:
			return
		case !want && err != nil:
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	if want {
		t.Fatalf("GET http://%s/ from %s: %q, %v; want %q", addr, ns, body, err, page)
	}
	t.Fatalf("GET http://%s/ from %s after removal: answered %q", addr, ns, body)
}
