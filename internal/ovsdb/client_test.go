package ovsdb_test

import (
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/tether-net/tether/internal/ovsdb"
)

var ctx = context.Background()

// TestTransactWire: each operation's wire shape (RFC 7047 5.2) and the
// decoding of each kind of result.
func TestTransactWire(t *testing.T) {
	cases := []struct {
		name    string
		ops     []ovsdb.Op
		params  string
		result  string
		want    []ovsdb.Result
		wantErr string // substring of the error; "" none
		txErr   *ovsdb.TxError
	}{
		{
			name: "insert with named uuid, set and map",
			ops: []ovsdb.Op{
				ovsdb.Insert("Interface", ovsdb.Row{"name": "p1", "type": "", "external_ids": ovsdb.Map{"b": "2", "a": "1"}}, "iface"),
				ovsdb.Insert("Port", ovsdb.Row{"name": "p1", "interfaces": ovsdb.NamedUUID("iface"), "tag": 10,
					"trunks": ovsdb.Set{1, 2}}, "port"),
			},
			params: `["Open_vSwitch",
				{"op":"insert","table":"Interface","uuid-name":"iface","row":{"name":"p1","type":"","external_ids":["map",[["a","1"],["b","2"]]]}},
				{"op":"insert","table":"Port","uuid-name":"port","row":{"name":"p1","interfaces":["named-uuid","iface"],"tag":10,"trunks":["set",[1,2]]}}]`,
			result: `[{"uuid":["uuid","u-1"]},{"uuid":["uuid","u-2"]}]`,
			want:   []ovsdb.Result{{UUID: "u-1"}, {UUID: "u-2"}},
		},
		{
			name:   "update clears an optional column",
			ops:    []ovsdb.Op{ovsdb.Update("Port", ovsdb.Row{"tag": ovsdb.Set{}}, ovsdb.Cond("_uuid", "==", ovsdb.UUID("u-2")))},
			params: `["Open_vSwitch",{"op":"update","table":"Port","row":{"tag":["set",[]]},"where":[["_uuid","==",["uuid","u-2"]]]}]`,
			result: `[{"count":1}]`,
			want:   []ovsdb.Result{{Count: 1}},
		},
		{
			name:   "mutate with an empty where",
			ops:    []ovsdb.Op{ovsdb.Mutate("Open_vSwitch", []ovsdb.Mutation{ovsdb.Mut("bridges", "insert", ovsdb.NamedUUID("br"))})},
			params: `["Open_vSwitch",{"op":"mutate","table":"Open_vSwitch","where":[],"mutations":[["bridges","insert",["named-uuid","br"]]]}]`,
			result: `[{"count":1}]`,
			want:   []ovsdb.Result{{Count: 1}},
		},
		{
			name:   "delete",
			ops:    []ovsdb.Op{ovsdb.Delete("Bridge", ovsdb.Cond("name", "==", "br0"))},
			params: `["Open_vSwitch",{"op":"delete","table":"Bridge","where":[["name","==","br0"]]}]`,
			result: `[{"count":0}]`,
			want:   []ovsdb.Result{{}},
		},
		{
			name:   "select decodes rows",
			ops:    []ovsdb.Op{ovsdb.Select("Port", []string{"name", "tag"}, ovsdb.Cond("name", "==", "p1"))},
			params: `["Open_vSwitch",{"op":"select","table":"Port","columns":["name","tag"],"where":[["name","==","p1"]]}]`,
			result: `[{"rows":[{"name":"p1","tag":["set",[]]},{"name":"p2","tag":7}]}]`,
			want:   []ovsdb.Result{{Rows: []ovsdb.Row{{"name": "p1", "tag": ovsdb.Set{}}, {"name": "p2", "tag": int64(7)}}}},
		},
		{
			name: "wait",
			ops: []ovsdb.Op{ovsdb.Wait("Bridge", []ovsdb.Condition{ovsdb.Cond("_uuid", "==", ovsdb.UUID("b"))}, []string{"ports"}, "==",
				[]ovsdb.Row{{"ports": ovsdb.Set{ovsdb.UUID("p")}}}, 0)},
			params: `["Open_vSwitch",{"op":"wait","table":"Bridge","where":[["_uuid","==",["uuid","b"]]],"columns":["ports"],
				"until":"==","rows":[{"ports":["set",[["uuid","p"]]]}],"timeout":0}]`,
			result: `[{}]`,
			want:   []ovsdb.Result{{}},
		},
		{
			name: "an operation fails, the rest are not run",
			ops: []ovsdb.Op{ovsdb.Select("Bridge", nil), ovsdb.Delete("Port"),
				ovsdb.Select("Port", nil)},
			result: `[{"rows":[]},{"error":"referential integrity violation","details":"cannot delete Port row"},null]`,
			txErr:  &ovsdb.TxError{Index: 1, Op: "delete", Table: "Port", Err: "referential integrity violation", Details: "cannot delete Port row"},
		},
		{
			name:   "the commit fails: one result more than operations",
			ops:    []ovsdb.Op{ovsdb.Insert("Bridge", ovsdb.Row{"name": "br0"}, "")},
			result: `[{"uuid":["uuid","x"]},{"error":"constraint violation","details":"duplicate name"}]`,
			txErr:  &ovsdb.TxError{Index: 1, Err: "constraint violation", Details: "duplicate name"},
		},
		{
			name:    "too few results",
			ops:     []ovsdb.Op{ovsdb.Select("Bridge", nil), ovsdb.Select("Port", nil)},
			result:  `[{"rows":[]}]`,
			wantErr: "1 results for 2 operations",
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cl, f := newPair(t)
			done := make(chan struct{})
			go func() {
				defer close(done)
				r := f.recv()
				if r.Method != "transact" {
					t.Errorf("method %q", r.Method)
				}
				if c.params != "" && !sameJSON(t, r.Params, c.params) {
					t.Errorf("params\n%s\nwant\n%s", r.Params, c.params)
				}
				f.reply(r, c.result)
			}()
			got, err := cl.Transact(ctx, ovsdb.DB, c.ops...)
			<-done
			switch {
			case c.txErr != nil:
				var te *ovsdb.TxError
				if !errors.As(err, &te) || *te != *c.txErr {
					t.Fatalf("error %#v, want %#v", err, c.txErr)
				}
				if !ovsdb.IsTxError(err, c.txErr.Err) {
					t.Errorf("IsTxError(%q) false", c.txErr.Err)
				}
			case c.wantErr != "":
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("error %v, want %q", err, c.wantErr)
				}
			case err != nil:
				t.Fatal(err)
			case !reflect.DeepEqual(got, c.want):
				t.Errorf("results %#v, want %#v", got, c.want)
			}
		})
	}
}

// TestRPCError: a response with a non-null error member fails the call.
func TestRPCError(t *testing.T) {
	for _, c := range []struct{ errJSON, want string }{
		{`"unknown database"`, "ovsdb: unknown database"},
		{`{"error":"syntax error","details":"bad op"}`, "ovsdb: syntax error: bad op"},
	} {
		cl, f := newPair(t)
		go func() {
			r := f.recv()
			f.send(`{"result":null,"error":` + c.errJSON + `,"id":` + string(r.ID) + `}`)
		}()
		_, err := cl.Transact(ctx, "nope", ovsdb.Select("Bridge", nil))
		if err == nil || err.Error() != c.want {
			t.Errorf("error %v, want %q", err, c.want)
		}
	}
}

// TestEchoAnswered: the server's echo (its keepalive), sent while a
// transaction waits, is answered with its params; a notification is
// ignored; the transaction then completes.
func TestEchoAnswered(t *testing.T) {
	cl, f := newPair(t)
	res := make(chan error, 1)
	go func() {
		_, err := cl.Transact(ctx, ovsdb.DB, ovsdb.Select("Bridge", nil))
		res <- err
	}()
	tx := f.recv()
	f.send(`{"method":"update","params":[null,{}],"id":null}`)
	f.send(`{"method":"echo","params":["ping",1],"id":"echo"}`)
	echo := f.recv()
	if !sameJSON(t, echo.Result, `["ping",1]`) || string(echo.ID) != `"echo"` || string(echo.Error) != "null" {
		t.Errorf("echo answered %+v", echo)
	}
	f.reply(tx, `[{"rows":[]}]`)
	if err := <-res; err != nil {
		t.Fatal(err)
	}
}

// TestEchoRequest: the client's own echo.
func TestEchoRequest(t *testing.T) {
	cl, f := newPair(t)
	go func() {
		r := f.recv()
		if r.Method != "echo" {
			t.Errorf("method %q", r.Method)
		}
		f.reply(r, string(r.Params))
	}()
	if err := cl.Echo(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestOutOfOrder: concurrent requests get their own responses when the
// server answers in another order.
func TestOutOfOrder(t *testing.T) {
	cl, f := newPair(t)
	type out struct {
		name string
		res  []ovsdb.Result
		err  error
	}
	outs := make(chan out, 2)
	for _, name := range []string{"a", "b"} {
		go func() {
			res, err := cl.Transact(ctx, ovsdb.DB, ovsdb.Select("Bridge", nil, ovsdb.Cond("name", "==", name)))
			outs <- out{name, res, err}
		}()
	}
	r1, r2 := f.recv(), f.recv()
	for _, r := range []request{r2, r1} {
		var p []json.RawMessage
		_ = json.Unmarshal(r.Params, &p)
		var op struct{ Where [][]string }
		_ = json.Unmarshal(p[1], &op)
		f.reply(r, `[{"rows":[{"name":"`+op.Where[0][2]+`"}]}]`)
	}
	for range 2 {
		o := <-outs
		if o.err != nil || len(o.res) != 1 || len(o.res[0].Rows) != 1 || o.res[0].Rows[0].String("name") != o.name {
			t.Errorf("request %s got %+v, %v", o.name, o.res, o.err)
		}
	}
}

// TestCancelThenLateResponse: a cancelled call returns the context's
// error; its late response is dropped and the connection goes on.
func TestCancelThenLateResponse(t *testing.T) {
	cl, f := newPair(t)
	cctx, cancel := context.WithCancel(ctx)
	res := make(chan error, 1)
	go func() {
		_, err := cl.Transact(cctx, ovsdb.DB, ovsdb.Select("Bridge", nil))
		res <- err
	}()
	first := f.recv()
	cancel()
	if err := <-res; !errors.Is(err, context.Canceled) {
		t.Fatalf("error %v, want context.Canceled", err)
	}
	f.reply(first, `[{"rows":[{"name":"late"}]}]`)
	go func() {
		r := f.recv()
		f.reply(r, `[{"rows":[{"name":"second"}]}]`)
	}()
	got, err := cl.Transact(ctx, ovsdb.DB, ovsdb.Select("Bridge", nil))
	if err != nil || got[0].Rows[0].String("name") != "second" {
		t.Fatalf("second call: %+v, %v", got, err)
	}
}

// TestServerGone: a call waiting when the server closes the connection,
// and every call after, fail with ErrClosed.
func TestServerGone(t *testing.T) {
	cl, f := newPair(t)
	res := make(chan error, 1)
	go func() {
		_, err := cl.Transact(ctx, ovsdb.DB, ovsdb.Select("Bridge", nil))
		res <- err
	}()
	f.recv()
	_ = f.conn.Close()
	if err := <-res; !errors.Is(err, ovsdb.ErrClosed) {
		t.Fatalf("waiting call: %v, want ErrClosed", err)
	}
	if _, err := cl.Transact(ctx, ovsdb.DB, ovsdb.Select("Bridge", nil)); !errors.Is(err, ovsdb.ErrClosed) {
		t.Fatalf("later call: %v, want ErrClosed", err)
	}
}

// TestRowDecoding: every wire shape of a column value, and the accessors.
func TestRowDecoding(t *testing.T) {
	raw := `{"_uuid":["uuid","u0"],"name":"br0","ports":["set",[["uuid","p1"],["uuid","p2"]]],"one":["uuid","p3"],
		"tag":["set",[]],"vlan":12,"protected":true,"external_ids":["map",[["tether-owner","x"]]],
		"statistics":["map",[["rx",5]]],"ratio":0.5,"empty_map":["map",[]]}`
	var r ovsdb.Row
	if err := json.Unmarshal([]byte(raw), &r); err != nil {
		t.Fatal(err)
	}
	if got := r.UUID("_uuid"); got != "u0" {
		t.Errorf("_uuid %q", got)
	}
	if got := r.UUIDs("ports"); !reflect.DeepEqual(got, []ovsdb.UUID{"p1", "p2"}) {
		t.Errorf("ports %v", got)
	}
	if got := r.UUIDs("one"); !reflect.DeepEqual(got, []ovsdb.UUID{"p3"}) {
		t.Errorf("a bare uuid is a set of one: %v", got)
	}
	if _, ok := r.Int("tag"); ok {
		t.Error("empty set read as an integer")
	}
	if v, ok := r.Int("vlan"); !ok || v != 12 {
		t.Errorf("vlan %v %v", v, ok)
	}
	if !r.Bool("protected") || r.Bool("missing") {
		t.Error("booleans")
	}
	if got := r.Map("external_ids"); !reflect.DeepEqual(got, ovsdb.Map{"tether-owner": "x"}) {
		t.Errorf("external_ids %v", got)
	}
	if got, ok := r["statistics"].(ovsdb.Pairs); !ok || !reflect.DeepEqual(got, ovsdb.Pairs{{"rx", int64(5)}}) {
		t.Errorf("statistics %#v", r["statistics"])
	}
	if r["ratio"] != 0.5 || r.String("name") != "br0" {
		t.Errorf("ratio %v name %q", r["ratio"], r.String("name"))
	}
	if got := r.Map("empty_map"); len(got) != 0 {
		t.Errorf("empty map %v", got)
	}
	for _, bad := range []string{`{"x":["set",[["set",[]]]]}`, `{"x":["uuid"]}`, `{"x":["bogus",1]}`, `{"x":null}`} {
		var r ovsdb.Row
		if err := json.Unmarshal([]byte(bad), &r); err == nil {
			t.Errorf("%s decoded as %v", bad, r)
		}
	}
}

func TestParseAddr(t *testing.T) {
	cases := []struct {
		in, network, address string
		ok                   bool
	}{
		{"unix:/run/openvswitch/db.sock", "unix", "/run/openvswitch/db.sock", true},
		{"tcp:127.0.0.1:6640", "tcp", "127.0.0.1:6640", true},
		{"unix:", "", "", false},
		{"/run/openvswitch/db.sock", "", "", false},
		{"ssl:1.2.3.4:6640", "", "", false},
	}
	for _, c := range cases {
		n, a, err := ovsdb.ParseAddr(c.in)
		if (err == nil) != c.ok || n != c.network || a != c.address {
			t.Errorf("ParseAddr(%q) = %q %q %v", c.in, n, a, err)
		}
	}
}

func TestUnknownOp(t *testing.T) {
	if _, err := json.Marshal(ovsdb.Op{Op: "frobnicate", Table: "Bridge"}); err == nil {
		t.Error("unknown operation encoded")
	}
}
