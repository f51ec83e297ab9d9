package etcd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/tether-net/tether/internal/store"
	"github.com/tether-net/tether/internal/store/storetest"
	"github.com/tether-net/tether/internal/testutil"
	"github.com/tether-net/tether/internal/testutil/gate"
)

// etcdLeases is the suite's option for etcd: whole-second leases, and the
// servers here run a 500ms election timeout, so 1s is kept as 1s.
var etcdLeases = storetest.Options{MinLeaseTTL: time.Second}

func TestConformance(t *testing.T) {
	srv := startEmbedded(t, embedOptions{})
	storetest.RunWith(t, func(t *testing.T) store.Store { return srv.open(t) }, etcdLeases)
}

// Debian's etcd-server (3.4) as a process in its own namespace, over TLS
// with client certificates: the whole suite.
func TestConformanceEtcd34TLS(t *testing.T) {
	c := startCluster(t, etcd34(t), clusterOptions{size: 1, tls: newTestTLS(t)})
	storetest.RunWith(t, func(t *testing.T) store.Store { return c.openStore(t, 5*time.Second) }, etcdLeases)
}

// As root the embedded server's sockets live in the test's namespace only:
// nothing listens on the host's loopback.
func TestEmbeddedListensInNamespace(t *testing.T) {
	testutil.RequireRoot(t)
	srv := startEmbedded(t, embedOptions{})
	if srv.ns == "" {
		t.Fatal("no namespace")
	}
	if c, err := net.DialTimeout("tcp", srv.endpoint, time.Second); err == nil {
		c.Close()
		t.Fatalf("%s answers in the host namespace", srv.endpoint)
	}
	srv.open(t) // and it answers inside
}

func TestPrefixIsolatesStores(t *testing.T) {
	srv := startEmbedded(t, embedOptions{})
	ctx := t.Context()
	a := mustOpen(t, srv.config("tether/a/"))
	b := mustOpen(t, srv.config("tether/b/"))
	raw := mustOpen(t, srv.config(""))
	ch, err := b.Watch(ctx, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	rev, err := a.Put(ctx, "k", []byte("a"), store.NoLease)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Get(ctx, "k"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("b sees a's key: %v", err)
	}
	if kvs, err := b.List(ctx, ""); err != nil || len(kvs) != 0 {
		t.Fatalf("b.List = %v, %v; want nothing", kvs, err)
	}
	kv, err := raw.Get(ctx, "tether/a/k")
	if err != nil || string(kv.Value) != "a" || kv.Revision != rev {
		t.Fatalf("raw key = %+v, %v; want tether/a/k=a at %d", kv, err, rev)
	}
	kvs, err := raw.List(ctx, "")
	if err != nil || len(kvs) != 1 || kvs[0].Key != "tether/a/k" {
		t.Fatalf("raw List = %+v, %v", kvs, err)
	}
	brev, err := b.Put(ctx, "k", []byte("b"), store.NoLease)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case ev := <-ch:
		if ev.KV.Key != "k" || ev.KV.Revision != brev {
			t.Fatalf("b's watcher got %+v, want its own k at %d", ev, brev)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no event")
	}
}

func TestListPages(t *testing.T) {
	srv := startEmbedded(t, embedOptions{})
	s := srv.open(t)
	ctx := t.Context()
	const n = 2*listPage + 345
	for i := 0; i < n; i += 100 {
		var ops []store.Op
		for j := i; j < min(i+100, n); j++ {
			ops = append(ops, store.Put(fmt.Sprintf("k/%05d", j), []byte("v")))
		}
		if _, err := s.Txn(ctx, nil, ops); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Put(ctx, "l/after", nil, store.NoLease); err != nil {
		t.Fatal(err)
	}
	kvs, err := s.List(ctx, "k/")
	if err != nil {
		t.Fatal(err)
	}
	if len(kvs) != n {
		t.Fatalf("List returned %d keys, want %d", len(kvs), n)
	}
	for i, kv := range kvs {
		if want := fmt.Sprintf("k/%05d", i); kv.Key != want {
			t.Fatalf("key %d = %q, want %q", i, kv.Key, want)
		}
	}
	if all, err := s.List(ctx, ""); err != nil || len(all) != n+1 {
		t.Fatalf("List all: %d keys, %v; want %d", len(all), err, n+1)
	}
}

func TestCompactedHistory(t *testing.T) {
	srv := startEmbedded(t, embedOptions{})
	s := srv.open(t)
	ctx := t.Context()
	var revs []int64
	for i := range 4 {
		rev, err := s.Put(ctx, fmt.Sprintf("k/%d", i), []byte("v"), store.NoLease)
		if err != nil {
			t.Fatal(err)
		}
		revs = append(revs, rev)
	}
	if _, err := s.client.Compact(ctx, revs[2]); err != nil {
		t.Fatal(err)
	}
	// History from revs[2] on is kept: a watch after revs[1] replays it.
	_, err := s.Watch(ctx, "k/", revs[0])
	if !errors.Is(err, store.ErrCompacted) || !strings.Contains(err.Error(), `watch "k/" after revision`) {
		t.Fatalf("Watch after %d: err = %v, want ErrCompacted naming the watch", revs[0], err)
	}
	ch, err := s.Watch(ctx, "k/", revs[1])
	if err != nil {
		t.Fatalf("Watch after %d: %v", revs[1], err)
	}
	for _, want := range revs[2:] {
		select {
		case ev := <-ch:
			if ev.KV.Revision != want {
				t.Fatalf("replayed revision %d, want %d", ev.KV.Revision, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("revision %d not replayed", want)
		}
	}
	// A watch from the future waits for it.
	future, err := s.Watch(ctx, "k/", revs[3]+1)
	if err != nil {
		t.Fatalf("Watch from the future: %v", err)
	}
	storetest.PutRev(t, s, "k/x")
	next := storetest.PutRev(t, s, "k/y")
	select {
	case ev := <-future:
		if ev.KV.Revision != next {
			t.Fatalf("future watch got revision %d, want %d", ev.KV.Revision, next)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("future watch got nothing")
	}
}

func TestGrantRoundsUpToSeconds(t *testing.T) {
	srv := startEmbedded(t, embedOptions{})
	s := srv.open(t)
	ctx := t.Context()
	for _, tc := range []struct {
		ttl  time.Duration
		want int64
	}{{time.Nanosecond, 1}, {time.Second, 1}, {1500 * time.Millisecond, 2}, {time.Minute, 60}} {
		id, err := s.Grant(ctx, tc.ttl)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := s.client.TimeToLive(ctx, clientv3.LeaseID(id))
		if err != nil {
			t.Fatal(err)
		}
		if resp.GrantedTTL != tc.want {
			t.Errorf("Grant(%v): etcd TTL %ds, want %ds", tc.ttl, resp.GrantedTTL, tc.want)
		}
	}
	if _, err := s.Grant(ctx, 0); err == nil {
		t.Error("Grant(0) succeeded")
	}
}

func TestRejectsBadInput(t *testing.T) {
	srv := startEmbedded(t, embedOptions{})
	s := srv.open(t)
	ctx := t.Context()
	txns := map[string][]store.Op{
		"duplicate": {store.Put("a", nil), store.Delete("a")},
		"empty key": {store.Put("", nil)},
		"bad type":  {{Type: 99, Key: "a"}},
	}
	for name, ops := range txns {
		if _, err := s.Txn(ctx, nil, ops); err == nil {
			t.Errorf("Txn %s succeeded", name)
		}
	}
	if _, err := s.Txn(ctx, []store.Cmp{store.Absent("")}, nil); err == nil {
		t.Error("Txn with an empty compare key succeeded")
	}
	_, errGet := s.Get(ctx, "")
	_, errPut := s.Put(ctx, "", nil, store.NoLease)
	_, errCreate := s.Create(ctx, "", nil, store.NoLease)
	_, errCAS := s.CompareAndSwap(ctx, "", nil, 1, store.NoLease)
	for name, err := range map[string]error{"Get": errGet, "Put": errPut, "Create": errCreate, "CAS": errCAS,
		"Delete": s.Delete(ctx, ""), "CompareAndDelete": s.CompareAndDelete(ctx, "", 1)} {
		if !errors.Is(err, errEmptyKey) {
			t.Errorf("%s of the empty key: err = %v, want errEmptyKey", name, err)
		}
	}
	if kvs, _ := s.List(ctx, ""); len(kvs) != 0 {
		t.Fatalf("rejected calls wrote %v", kvs)
	}
}

// Errors name the operation and key, and what was found.
func TestErrorMessages(t *testing.T) {
	srv := startEmbedded(t, embedOptions{})
	s := srv.open(t)
	ctx := t.Context()
	rev := storetest.PutRev(t, s, "k")
	_, errCreate := s.Create(ctx, "k", nil, store.NoLease)
	_, errCAS := s.CompareAndSwap(ctx, "k", nil, rev-1, store.NoLease)
	_, errTxn := s.Txn(ctx, []store.Cmp{store.Absent("other"), store.AtRevision("k", rev+5)}, []store.Op{store.Put("x", nil)})
	_, errLease := s.Put(ctx, "k", nil, 0x7eadbeef)
	for _, tc := range []struct {
		err  error
		is   error
		want string
	}{
		{errCreate, store.ErrExists, fmt.Sprintf(`create "k": key already exists (revision %d)`, rev)},
		{errCAS, store.ErrConflict, fmt.Sprintf(`compare-and-swap "k": revision %d, expected %d: revision conflict`, rev, rev-1)},
		{errTxn, store.ErrConflict, fmt.Sprintf(`txn: "k" at revision %d, expected %d: revision conflict`, rev, rev+5)},
		{errLease, store.ErrLeaseNotFound, fmt.Sprintf(`put "k" with lease %d: lease not found`, 0x7eadbeef)},
		{s.CompareAndDelete(ctx, "gone", 3), store.ErrNotFound, `compare-and-delete "gone": key not found`},
	} {
		if !errors.Is(tc.err, tc.is) || tc.err.Error() != tc.want {
			t.Errorf("err = %q, want %q (wrapping %v)", tc.err, tc.want, tc.is)
		}
	}
}

func TestClosed(t *testing.T) {
	srv := startEmbedded(t, embedOptions{})
	s := srv.open(t)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	ctx := t.Context()
	_, errGet := s.Get(ctx, "k")
	_, errPut := s.Put(ctx, "k", nil, store.NoLease)
	_, errWatch := s.Watch(ctx, "", 0)
	_, errGrant := s.Grant(ctx, time.Minute)
	for name, err := range map[string]error{"Get": errGet, "Put": errPut, "Watch": errWatch, "Grant": errGrant} {
		if !errors.Is(err, ErrClosed) {
			t.Errorf("%s after Close: err = %v, want ErrClosed", name, err)
		}
	}
}

// Nothing listens: Open gives up after the dial timeout, saying so.
func TestOpenUnreachable(t *testing.T) {
	var cfg Config
	if gate.Root(t) {
		ns := testutil.NetNS(t, "tth-etcd")
		cfg = Config{Endpoints: []string{"127.0.0.1:2379"}, DialContext: dialer(ns)}
	} else {
		cfg = Config{Endpoints: []string{fmt.Sprintf("127.0.0.1:%d", freePort(t))}}
	}
	cfg.DialTimeout = 500 * time.Millisecond
	start := time.Now()
	s, err := Open(t.Context(), cfg)
	if err == nil {
		s.Close()
		t.Fatal("Open succeeded with nothing listening")
	}
	if !errors.Is(err, ErrUnreachable) || !strings.Contains(err.Error(), "open etcd store at 127.0.0.1:") {
		t.Fatalf("err = %v, want ErrUnreachable naming the endpoint", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("Open gave up after %v, dial timeout 500ms", d)
	}
}

func TestTLS(t *testing.T) {
	tt := newTestTLS(t)
	srv := startEmbedded(t, embedOptions{tls: tt})
	ctx := t.Context()

	opts := map[string]string{OptCACertFile: tt.client.CA, OptCertFile: tt.client.Cert, OptKeyFile: tt.client.Key}
	cfg, err := ParseURL("etcd://"+srv.endpoint+"/tether/tls", opts)
	if err != nil {
		t.Fatal(err)
	}
	cfg.DialContext = dialer(srv.ns)
	s := mustOpen(t, cfg)
	rev, err := s.Put(ctx, "k", []byte("v"), store.NoLease)
	if err != nil {
		t.Fatal(err)
	}
	if kv, err := s.Get(ctx, "k"); err != nil || kv.Revision != rev {
		t.Fatalf("Get over TLS = %+v, %v", kv, err)
	}

	otherCA := testutil.NewCA(t, "other-ca")
	foreign := otherCA.Issue(t, "intruder", testutil.CertOptions{})
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		// TLS 1.3: the server refuses the client after the client finished
		// its handshake, so the client sees the alert or a closed socket.
		{"no client certificate", Config{CACertFile: tt.client.CA}, "tls: certificate required|broken pipe|connection reset"},
		{"unknown server CA", Config{CACertFile: foreign.CA, CertFile: tt.client.Cert, KeyFile: tt.client.Key}, "x509: certificate signed by unknown authority"},
		{"client cert of another CA", Config{CACertFile: tt.client.CA, CertFile: foreign.Cert, KeyFile: foreign.Key}, "tls: certificate required|broken pipe|connection reset"},
		{"no TLS at all", Config{}, "error reading server preface"},
	}
	for _, tc := range tests {
		c := tc.cfg
		c.Endpoints, c.DialContext, c.DialTimeout = []string{srv.endpoint}, dialer(srv.ns), time.Second
		start := time.Now()
		s, err := Open(ctx, c)
		if err == nil {
			s.Close()
			t.Errorf("%s: Open succeeded", tc.name)
			continue
		}
		if d := time.Since(start); d > 3*time.Second {
			t.Errorf("%s: Open failed only after %v", tc.name, d)
		}
		if !errors.Is(err, ErrUnreachable) || !regexp.MustCompile(tc.want).MatchString(err.Error()) {
			t.Errorf("%s: err = %v, want ErrUnreachable saying %q", tc.name, err, tc.want)
		}
	}
}

func TestTLSFileErrors(t *testing.T) {
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(notPEM, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := map[string]struct {
		cfg  Config
		want string
	}{
		"missing CA":     {Config{CACertFile: filepath.Join(dir, "nope.pem")}, "etcd TLS: CA: open"},
		"CA not PEM":     {Config{CACertFile: notPEM}, "holds no PEM certificate"},
		"cert alone":     {Config{CertFile: notPEM}, "go together"},
		"bad key pair":   {Config{CertFile: notPEM, KeyFile: notPEM}, "etcd TLS: client certificate"},
		"no endpoints":   {Config{}, "no endpoints"},
		"empty endpoint": {Config{Endpoints: []string{"a:1", " "}}, "empty endpoint"},
	}
	for name, tc := range tests {
		if tc.cfg.Endpoints == nil && name != "no endpoints" {
			tc.cfg.Endpoints = []string{"127.0.0.1:1"}
		}
		_, err := Open(t.Context(), tc.cfg)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want it to contain %q", name, err, tc.want)
		}
	}
}

// forward closes the channel when etcd says the history is compacted, and
// delivers what came before.
func TestForwardStopsOnCompaction(t *testing.T) {
	s := &Store{cfg: Config{Prefix: "p/"}, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	wch := make(chan clientv3.WatchResponse, 2)
	wch <- clientv3.WatchResponse{Events: []*clientv3.Event{
		{Type: mvccpb.PUT, Kv: &mvccpb.KeyValue{Key: []byte("p/a"), Value: []byte("1"), ModRevision: 7}},
		{Type: mvccpb.DELETE, Kv: &mvccpb.KeyValue{Key: []byte("p/b"), ModRevision: 7}},
	}}
	wch <- clientv3.WatchResponse{CompactRevision: 9, Canceled: true}
	out := make(chan store.Event, 10)
	s.forward("watch", wch, out) // returns without wch being closed
	var got []string
	for ev := range out {
		got = append(got, fmt.Sprintf("%d %s=%s@%d", ev.Type, ev.KV.Key, ev.KV.Value, ev.KV.Revision))
	}
	if want := fmt.Sprint([]string{"1 a=1@7", "2 b=@7"}); fmt.Sprint(got) != want {
		t.Fatalf("events %v, want %v", got, want)
	}
}

// A reader that falls WatchBuffer events behind is dropped: forward never
// blocks (etcd's client would buffer without bound behind it).
func TestForwardDropsSlowReader(t *testing.T) {
	s := &Store{cfg: Config{}, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	wch := make(chan clientv3.WatchResponse, 1)
	var evs []*clientv3.Event
	for i := range 5 {
		evs = append(evs, &clientv3.Event{Type: mvccpb.PUT, Kv: &mvccpb.KeyValue{Key: []byte("k"), ModRevision: int64(i + 1)}})
	}
	wch <- clientv3.WatchResponse{Events: evs}
	out := make(chan store.Event, 2)
	done := make(chan struct{})
	go func() { s.forward("watch", wch, out); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("forward blocked on a full queue")
	}
	n := 0
	for range out {
		n++
	}
	if n != 2 {
		t.Fatalf("slow reader got %d events, want the 2 queued", n)
	}
}

func TestTTLSeconds(t *testing.T) {
	for ttl, want := range map[time.Duration]int64{
		time.Nanosecond: 1, 200 * time.Millisecond: 1, time.Second: 1,
		time.Second + 1: 2, 1500 * time.Millisecond: 2, 10 * time.Second: 10,
	} {
		if got := ttlSeconds(ttl); got != want {
			t.Errorf("ttlSeconds(%v) = %d, want %d", ttl, got, want)
		}
	}
}

func TestUnavailable(t *testing.T) {
	ctx := context.Background()
	s := &Store{cfg: Config{Endpoints: []string{"h:1"}, RequestTimeout: time.Second}}
	err := s.mapErr(ctx, `put "k"`, context.DeadlineExceeded)
	want := `put "k": store unreachable: etcd at h:1 gave no answer within 1s: context deadline exceeded`
	if !errors.Is(err, ErrUnreachable) || !errors.Is(err, context.DeadlineExceeded) || err.Error() != want {
		t.Fatalf("err = %q, want %q", err, want)
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if err := s.mapErr(cancelled, "get", context.Canceled); !errors.Is(err, context.Canceled) || errors.Is(err, ErrUnreachable) {
		t.Fatalf("caller's cancel: err = %v, want context.Canceled only", err)
	}
}

// With etcd auth on, Username/Password log in; a user limited to the
// store's prefix can use it; a wrong password fails Open, clearly.
func TestAuth(t *testing.T) {
	srv := startEmbedded(t, embedOptions{})
	ctx := t.Context()
	admin := mustOpen(t, srv.config("")).client
	steps := []func() error{
		func() error { _, err := admin.UserAdd(ctx, "root", "rootpw"); return err },
		func() error { _, err := admin.UserGrantRole(ctx, "root", "root"); return err },
		func() error { _, err := admin.RoleAdd(ctx, "tether"); return err },
		func() error {
			_, err := admin.RoleGrantPermission(ctx, "tether", "tether/", clientv3.GetPrefixRangeEnd("tether/"), clientv3.PermissionType(clientv3.PermReadWrite))
			return err
		},
		func() error { _, err := admin.UserAdd(ctx, "tether", "s3cret"); return err },
		func() error { _, err := admin.UserGrantRole(ctx, "tether", "tether"); return err },
		func() error { _, err := admin.AuthEnable(ctx); return err },
	}
	for i, step := range steps {
		if err := step(); err != nil {
			t.Fatalf("auth setup step %d: %v", i, err)
		}
	}
	cfg := srv.config("tether/")
	cfg.Username, cfg.Password = "tether", "s3cret"
	s := mustOpen(t, cfg)
	if _, err := s.Put(ctx, "k", []byte("v"), store.NoLease); err != nil {
		t.Fatalf("Put as tether: %v", err)
	}
	ch, err := s.Watch(ctx, "", 0)
	if err != nil {
		t.Fatalf("Watch as tether: %v", err)
	}
	rev := storetest.PutRev(t, s, "k2")
	storetest.ExpectEvents(t, ch, fmt.Sprintf(`put "k2"@%d`, rev))

	outside := srv.config("other/")
	outside.Username, outside.Password = "tether", "s3cret"
	if s, err := Open(ctx, outside); err == nil {
		s.Close()
		t.Error("Open outside the user's prefix succeeded")
	} else if !strings.Contains(err.Error(), "permission denied") {
		t.Errorf("Open outside the user's prefix: %v, want permission denied", err)
	}
	cfg.Password = "wrong"
	if s, err := Open(ctx, cfg); err == nil {
		s.Close()
		t.Error("Open with a wrong password succeeded")
	} else if !strings.Contains(err.Error(), "authentication failed") || errors.Is(err, ErrUnreachable) {
		t.Errorf("Open with a wrong password: %v, want authentication failed", err)
	}
}
