package ovsdb_test

// A fake OVSDB server on the other end of a socketpair: the test reads
// each request the client sends and writes the answer it wants, byte for
// byte, so the wire shapes are checked and the client's handling of every
// kind of answer (errors, echo, out-of-order responses) can be driven.

import (
	"encoding/json"
	"net"
	"os"
	"reflect"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/tether-net/tether/internal/ovsdb"
)

type fakeServer struct {
	t    *testing.T
	conn net.Conn
	dec  *json.Decoder
}

// request is a message the client sent.
type request struct {
	Method string          `json:"method"`
	Params json.RawMessage `json:"params"`
	Result json.RawMessage `json:"result"`
	Error  json.RawMessage `json:"error"`
	ID     json.RawMessage `json:"id"`
}

// newPair connects a client and a fake server over a socketpair.
func newPair(t *testing.T) (*ovsdb.Client, *fakeServer) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	conn := func(fd int, name string) net.Conn {
		f := os.NewFile(uintptr(fd), name)
		defer f.Close()
		c, err := net.FileConn(f)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	client := ovsdb.NewClient(conn(fds[0], "client"))
	srv := conn(fds[1], "server")
	t.Cleanup(func() {
		_ = srv.Close()
		_ = client.Close()
	})
	return client, &fakeServer{t: t, conn: srv, dec: json.NewDecoder(srv)}
}

// recv reads the client's next message.
func (f *fakeServer) recv() request {
	f.t.Helper()
	var r request
	if err := f.dec.Decode(&r); err != nil {
		f.t.Errorf("fake server: read: %v", err)
	}
	return r
}

// send writes raw JSON to the client.
func (f *fakeServer) send(raw string) {
	f.t.Helper()
	if _, err := f.conn.Write([]byte(raw)); err != nil {
		f.t.Errorf("fake server: write: %v", err)
	}
}

// reply answers request r with a result (raw JSON).
func (f *fakeServer) reply(r request, result string) {
	f.t.Helper()
	f.send(`{"result":` + result + `,"error":null,"id":` + string(r.ID) + `}`)
}

// sameJSON compares two JSON texts by value.
func sameJSON(t *testing.T, got []byte, want string) bool {
	t.Helper()
	var g, w any
	if err := json.Unmarshal(got, &g); err != nil {
		t.Fatalf("got invalid JSON %s: %v", got, err)
	}
	if err := json.Unmarshal([]byte(want), &w); err != nil {
		t.Fatalf("want invalid JSON %s: %v", want, err)
	}
	return reflect.DeepEqual(g, w)
}

// step is one request a scripted server expects and its answer.
type step struct {
	ops    string // the operations expected, "select Bridge, insert Port": op and table of each
	params string // when set: the exact params expected (JSON, compared by value)
	result string // the result sent back
}

// script serves the steps in order on a new pair, and reports what was not
// as expected; it returns the client.
func script(t *testing.T, steps []step) *ovsdb.Client {
	t.Helper()
	c, f := newPair(t)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i, s := range steps {
			r := f.recv()
			if r.Method != "transact" {
				t.Errorf("step %d: method %q, want transact", i, r.Method)
				return
			}
			if got := opsSummary(t, r.Params); got != s.ops {
				t.Errorf("step %d: operations %q, want %q", i, got, s.ops)
			}
			if s.params != "" && !sameJSON(t, r.Params, s.params) {
				t.Errorf("step %d: params\n%s\nwant\n%s", i, r.Params, s.params)
			}
			f.reply(r, s.result)
		}
	}()
	t.Cleanup(func() { <-done })
	return c
}

// opsSummary is "op table, op table" of a transact's params, after
// checking the database name.
func opsSummary(t *testing.T, params json.RawMessage) string {
	var p []json.RawMessage
	if err := json.Unmarshal(params, &p); err != nil || len(p) == 0 {
		t.Errorf("params %s: %v", params, err)
		return ""
	}
	var db string
	_ = json.Unmarshal(p[0], &db)
	if db != ovsdb.DB {
		t.Errorf("database %s, want %s", p[0], ovsdb.DB)
	}
	var parts []string
	for _, raw := range p[1:] {
		var op struct{ Op, Table string }
		_ = json.Unmarshal(raw, &op)
		parts = append(parts, op.Op+" "+op.Table)
	}
	return strings.Join(parts, ", ")
}
