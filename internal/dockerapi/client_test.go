package dockerapi

import (
	"context"
	"errors"
	"net/http"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

const (
	netID = "7d86d31b1478e7cca9ebed7e73aa0fdeec46c5ca29497431d3007d2d9e15ed99"
	ctrID = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
)

func TestNew(t *testing.T) {
	for _, tc := range []struct {
		host string
		ok   bool
		base string
	}{
		{"unix:///var/run/docker.sock", true, "http://" + unixHost},
		{"tcp://127.0.0.1:2375", true, "http://127.0.0.1:2375"},
		{"tcp://docker.example:2375", true, "http://docker.example:2375"},
		{"tcp://[::1]:2375", true, "http://[::1]:2375"},
		{"tcp://10.0.0.1", true, "http://10.0.0.1:2375"}, // Docker's plain port
		{"", false, ""},
		{"unix://docker.sock", false, ""}, // relative path
		{"ssh://me@host", false, ""},
		{"npipe:////./pipe/docker_engine", false, ""},
		{"fd://", false, ""},
		{"tcp://host:port", false, ""},
		{"tcp://host:2375/v1.44", false, ""},
	} {
		c, err := New(tc.host)
		if (err == nil) != tc.ok {
			t.Errorf("New(%q): err %v, want ok=%v", tc.host, err, tc.ok)
			continue
		}
		if err != nil {
			if tc.host != "" && !strings.Contains(err.Error(), tc.host) {
				t.Errorf("New(%q): error %q does not name the host", tc.host, err)
			}
			continue
		}
		if c.base != tc.base || c.Host() != tc.host {
			t.Errorf("New(%q): base %q host %q, want base %q", tc.host, c.base, c.Host(), tc.base)
		}
	}
}

// callCase is one call against the fake dockerd.
type callCase struct {
	name    string
	routes  map[string]reply
	call    func(context.Context, *Client) (any, error)
	want    any      // the result, when no error is expected
	wantReq []string // "METHOD /path" sent, in order
	wantIs  error    // ErrNotFound, ErrConflict, ErrInUse, or nil
	wantErr string   // substring of the error; "" = success expected
}

func runCalls(t *testing.T, cases []callCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d := startDockerd(t, tc.routes)
			got, err := tc.call(context.Background(), d.client(t))
			checkErr(t, err, tc.wantErr, tc.wantIs)
			if tc.wantErr == "" && !reflect.DeepEqual(got, tc.want) {
				t.Errorf("result:\n got %#v\nwant %#v", got, tc.want)
			}
			var sent []string
			for _, r := range d.requests() {
				sent = append(sent, r.method+" "+r.path)
			}
			if !reflect.DeepEqual(sent, tc.wantReq) {
				t.Errorf("requests %q, want %q", sent, tc.wantReq)
			}
		})
	}
}

func checkErr(t *testing.T, err error, want string, is error) {
	t.Helper()
	if want == "" {
		if err != nil {
			t.Fatalf("unexpected error: %v", err)
		}
		return
	}
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("error %v, want one containing %q", err, want)
	}
	for _, kind := range []error{ErrNotFound, ErrConflict, ErrInUse} {
		if errors.Is(err, kind) != (kind == is) {
			t.Errorf("errors.Is(%v, %v) = %v", err, kind, !(kind == is))
		}
	}
}

func TestPing(t *testing.T) {
	ping := func(ctx context.Context, c *Client) (any, error) { return nil, c.Ping(ctx) }
	runCalls(t, []callCase{
		{name: "ok", routes: map[string]reply{"GET /_ping": {200, "OK", "text/plain; charset=utf-8"}},
			call: ping, wantReq: []string{"GET /_ping"}},
		{name: "daemon error", routes: map[string]reply{"GET /_ping": {500, `{"message":"daemon is shutting down"}`, ""}},
			call: ping, wantReq: []string{"GET /_ping"}, wantErr: "docker API: GET /_ping: 500: daemon is shutting down"},
	})
}

func TestDockerdDown(t *testing.T) {
	c, err := New("unix://" + filepath.Join(t.TempDir(), "docker.sock"))
	if err != nil {
		t.Fatal(err)
	}
	err = c.Ping(context.Background())
	if err == nil || !strings.Contains(err.Error(), "docker API: GET /_ping (unix://") {
		t.Errorf("Ping without dockerd: %v, want an error naming the call and the host", err)
	}
}

// TestTimeout: a dockerd that never answers is given up on after the
// client's timeout, and at once when the caller's context ends.
func TestTimeout(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "docker.sock")
	serveUnix(t, sock, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() }))
	c, err := New("unix://" + sock)
	if err != nil {
		t.Fatal(err)
	}
	c.timeout = 50 * time.Millisecond
	if _, err := c.NetworkList(context.Background()); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("NetworkList against a silent dockerd: %v, want the deadline", err)
	}
	c.timeout = time.Hour
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := c.NetworkInspect(ctx, netID); !errors.Is(err, context.Canceled) {
		t.Errorf("NetworkInspect with a cancelled context: %v", err)
	}
}

func TestErrorText(t *testing.T) {
	for _, tc := range []struct {
		name string
		rep  reply
		want string
	}{
		{"json message", reply{409, `{"message":"network with name web-net already exists"}`, ""},
			"docker API: POST /networks/create: 409: network with name web-net already exists"},
		{"text body", reply{502, "Bad Gateway\n", "text/plain"}, "docker API: POST /networks/create: 502: Bad Gateway"},
		{"empty body", reply{503, "", ""}, "docker API: POST /networks/create: 503: Service Unavailable"},
		{"json without message", reply{500, `{"error":"x"}`, ""}, `docker API: POST /networks/create: 500: {"error":"x"}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := startDockerd(t, map[string]reply{"POST /networks/create": tc.rep})
			_, err := d.client(t).NetworkCreate(context.Background(), NetworkCreate{Name: "web-net"})
			if err == nil || err.Error() != tc.want {
				t.Errorf("error %q, want %q", err, tc.want)
			}
			var e *Error
			if !errors.As(err, &e) || e.Status != tc.rep.status {
				t.Errorf("errors.As(*Error): %#v", e)
			}
		})
	}
}
