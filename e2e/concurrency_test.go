package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moby/moby/api/types/network"

	"github.com/tether-net/tether/internal/api"
	"github.com/tether-net/tether/internal/testutil"
)

// rawAPI is a goroutine-safe client of the daemon's socket (errors are
// returned, never t.Fatal from a worker goroutine).
type rawAPI struct{ c *http.Client }

func newRawAPI(d *testutil.Daemon) *rawAPI {
	return &rawAPI{c: &http.Client{Timeout: 5 * time.Minute, Transport: &http.Transport{
		MaxIdleConnsPerHost: 256,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var dl net.Dialer
			return dl.DialContext(ctx, "unix", d.Socket)
		},
	}}}
}

func (a *rawAPI) do(method, path string, in, out any, want int) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, "http://tether"+path, body)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := a.c.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != want {
		return fmt.Errorf("%s %s: %d %s", method, path, resp.StatusCode, b)
	}
	if out != nil {
		return json.Unmarshal(b, out)
	}
	return nil
}

// parallel runs fn(0..n-1) on n goroutines and returns their errors.
func parallel(n int, fn func(i int) error) []error {
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []error
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := fn(i); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return errs
}

// 200 attaches in parallel to one network, then connects, disconnects,
// creates and removes interleaved, against a daemon built with the race
// detector: every call succeeds, no address is handed out twice, the kernel
// matches the records, and no data race is reported.
func TestParallelAttachAndChurn(t *testing.T) {
	testutil.RequireRoot(t)
	ns := testutil.NetNS(t, "tth-par")
	d := testutil.NewDaemon(t, ns)
	d.Bin = testutil.RaceBinary(t)
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
	d.MustTether("network", "create", "--subnet", "10.66.0.0/16", "par")
	d.MustTether("network", "create", "--subnet", "10.67.0.0/16", "side")
	a := newRawAPI(d)
	const n = 200

	create := func(name string) error {
		return a.do("POST", "/tether/v1/sandboxes", api.SandboxCreateRequest{Name: name, Networks: []api.NetworkAttach{{Network: "par"}}}, nil, http.StatusCreated)
	}
	if errs := parallel(n, func(i int) error { return create(fmt.Sprintf("p%d", i)) }); len(errs) > 0 {
		t.Fatalf("%d of %d parallel attaches failed, first: %v", len(errs), n, errs[0])
	}
	checkConsistent(t, d, ns, a)
	if !ping(d, "p0", ip(t, d, "p199", "par")) {
		t.Error("p0 cannot reach p199")
	}

	// Interleaved churn on the same sandboxes and networks.
	errs := parallel(n, func(i int) error {
		name := fmt.Sprintf("p%d", i)
		switch i % 4 {
		case 0: // connect and disconnect a second network
			if err := a.do("POST", "/networks/side/connect", network.ConnectRequest{Container: name}, nil, http.StatusOK); err != nil {
				return err
			}
			return a.do("POST", "/networks/side/disconnect", network.DisconnectRequest{Container: name}, nil, http.StatusOK)
		case 1: // connect and stay
			return a.do("POST", "/networks/side/connect", network.ConnectRequest{Container: name}, nil, http.StatusOK)
		case 2: // remove
			return a.do("DELETE", "/tether/v1/sandboxes/"+name, nil, nil, http.StatusNoContent)
		default: // a new sandbox
			return create(fmt.Sprintf("q%d", i))
		}
	})
	if len(errs) > 0 {
		t.Fatalf("%d churn operations failed, first: %v", len(errs), errs[0])
	}
	checkConsistent(t, d, ns, a)
	if strings.Contains(d.Log(), "DATA RACE") {
		t.Errorf("the race detector fired:\n%s", d.Log())
	}
}

// checkConsistent compares the records with the kernel: addresses unique per
// network, one host veth per endpoint on the right bridge, nothing more.
func checkConsistent(t *testing.T, d *testutil.Daemon, ns string, a *rawAPI) {
	t.Helper()
	var sbs []api.Sandbox
	if err := a.do("GET", "/tether/v1/sandboxes", nil, &sbs, http.StatusOK); err != nil {
		t.Fatal(err)
	}
	seen := map[string]string{}
	hostIfs := map[string]bool{}
	for _, sb := range sbs {
		for netName, ep := range sb.Networks {
			key := netName + "/" + ep.IPAddress.String()
			if other, dup := seen[key]; dup {
				t.Errorf("address %s handed to %s and %s", key, other, sb.Name)
			}
			seen[key] = sb.Name
			hostIfs[ep.HostIfName] = true
		}
	}
	out, err := inNS(ns, "ip", "-o", "link", "show", "type", "veth")
	if err != nil {
		t.Fatalf("list veths: %v %s", err, out)
	}
	kernel := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^\d+: (vth[0-9a-f]+)@`).FindAllStringSubmatch(out, -1) {
		kernel[m[1]] = true
	}
	for name := range hostIfs {
		if !kernel[name] {
			t.Errorf("endpoint link %s is in the records but not in the kernel", name)
		}
	}
	for name := range kernel {
		if !hostIfs[name] {
			t.Errorf("link %s is in the kernel but in no record", name)
		}
	}
	var par network.Inspect
	if err := a.do("GET", "/networks/par", nil, &par, http.StatusOK); err != nil {
		t.Fatal(err)
	}
	onPar := 0
	for _, sb := range sbs {
		if sb.Networks["par"] != nil {
			onPar++
		}
	}
	if len(par.Containers) != onPar {
		t.Errorf("network inspect lists %d endpoints, sandboxes say %d", len(par.Containers), onPar)
	}
}

// A restart leaves running sandboxes connected, however the daemon is
// started: a ping every 10 ms from one sandbox to another across a daemon
// stop and start loses nothing, and the sandbox's links, addresses and
// routes are the same objects afterwards. Under ipnetns and unshare the
// restarted daemon runs in a new mount namespace, where the old one's
// namespace files are gone; the sandboxes live on in their processes.
func TestRestartKeepsTraffic(t *testing.T) {
	forModes(t, func(t *testing.T, mode testutil.StartMode) {
		ns, d := hostMode(t, mode)
		d.MustTether("network", "create", "--subnet", "10.68.0.0/24", "live")
		runDetached(t, d, "a", "--network", "live", "--", "sleep", "600")
		runDetached(t, d, "b", "--network", "live", "--", "sleep", "600")
		nsPath := procNetNS(t, d, "a")
		target := ip(t, d, "b", "live")
		// stdout only: iproute2 prints "Peer netns reference is invalid"
		// on stderr when another test's namespace goes away while it names
		// a veth peer's namespace.
		snapshot := func() string {
			links, _ := exec.Command("nsenter", "--net="+nsPath, "ip", "-o", "link").Output()
			addrs, _ := exec.Command("nsenter", "--net="+nsPath, "ip", "-o", "addr").Output()
			routes, _ := exec.Command("nsenter", "--net="+nsPath, "ip", "route").Output()
			host, _ := exec.Command("ip", "-n", ns, "-o", "link", "show", "type", "veth").Output()
			return string(links) + string(addrs) + string(routes) + string(host)
		}
		before := snapshot()

		const count = 500 // 5 s at one packet every 10 ms
		pinger := exec.Command("nsenter", "--net="+nsPath, "ping", "-n", "-i", "0.01", "-c", strconv.Itoa(count), "-W", "1", target)
		var out bytes.Buffer
		pinger.Stdout, pinger.Stderr = &out, &out
		if err := pinger.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = pinger.Process.Kill(); _ = pinger.Wait() })
		time.Sleep(time.Second)
		stopAt := time.Now()
		restart(t, d)
		took := time.Since(stopAt)
		err := pinger.Wait()
		m := regexp.MustCompile(`(\d+) packets transmitted, (\d+) received`).FindStringSubmatch(out.String())
		if m == nil {
			t.Fatalf("ping: %v\n%s", err, out.String())
		}
		sent, got := m[1], m[2]
		t.Logf("restart took %v; ping every 10 ms: %s sent, %s received", took.Round(time.Millisecond), sent, got)
		if sent != got || sent != strconv.Itoa(count) {
			t.Errorf("packets lost across the restart: %s sent, %s received", sent, got)
		}
		if after := snapshot(); after != before {
			t.Errorf("sandbox kernel state changed across the restart:\nbefore:\n%s\nafter:\n%s", before, after)
		}
		if l := listed(t, d); !l["a"] || !l["b"] {
			t.Errorf("sandboxes after the restart: %v, want a and b", l)
		}
		if !ping(d, "a", target) {
			t.Error("exec ping from a to b fails after the restart")
		}
	})
}
