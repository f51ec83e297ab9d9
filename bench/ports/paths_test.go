package ports

// The traffic side of the scenario: the outside namespace, the
// accept-and-answer server, the connection-rate client and iperf3.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tether-net/tether/bench/attach"
	"github.com/tether-net/tether/internal/netns"
	"github.com/tether-net/tether/internal/testutil"
)

const (
	uplinkAddr  = testutil.UplinkAddr
	outsideAddr = testutil.OutsideAddr
)

var outside = testutil.Outside

// answerProg accepts connections on port 80 and answers each with argv[1]
// and a close: the cheapest server that still proves which sandbox answered.
const answerProg = `import socket,sys
s=socket.socket(socket.AF_INET,socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)
s.bind(('0.0.0.0',80))
s.listen(4096)
m=sys.argv[1].encode()
while True:
 c,_=s.accept()
 try:
  c.sendall(m)
 except OSError:
  pass
 c.close()
`

// startAnswer runs the answer server in sandbox name (a detached exec).
func startAnswer(tb testing.TB, t *attach.Tether, name string) {
	tb.Helper()
	if _, _, err := t.Exec(name, "python3", "-c", answerProg, name); err != nil {
		tb.Fatal(err)
	}
}

// ask connects to addr from inside ns, reads the answer to EOF and closes.
func ask(d *net.Dialer, addr string, buf []byte) (string, error) {
	c, err := d.Dial("tcp4", addr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
	n, err := io.ReadFull(c, buf)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return "", err
	}
	return string(buf[:n]), nil
}

// waitAnswer retries ask (bounded) until the server in the sandbox answers want.
func waitAnswer(tb testing.TB, ns, addr, want string) {
	tb.Helper()
	var got string
	var err error
	for range 100 {
		_ = netns.Do("/run/netns/"+ns, func() error {
			got, err = ask(&net.Dialer{Timeout: time.Second}, addr, make([]byte, 64))
			return nil
		})
		if err == nil && got == want {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	tb.Fatalf("%s from %s: answer %q, %v; want %q", addr, ns, got, err, want)
}

// ConnRun is one series of connections to one address.
type ConnRun struct {
	Addr    string       `json:"addr"`
	N       int          `json:"n"`
	PerSec  float64      `json:"conns_per_s"`
	PerConn attach.Stats `json:"per_conn"`
}

// connRate opens n connections in a row from inside ns to addr (connect,
// read the answer to EOF, close) and checks each answer is want.
func connRate(ns, addr, want string, n int) (ConnRun, error) {
	run := ConnRun{Addr: addr, N: n}
	err := netns.Do("/run/netns/"+ns, func() error {
		d := &net.Dialer{Timeout: 3 * time.Second}
		buf := make([]byte, 64)
		each := make([]time.Duration, 0, n)
		start := time.Now()
		for i := range n {
			t0 := time.Now()
			got, err := ask(d, addr, buf)
			if err != nil {
				return fmt.Errorf("connection %d of %d to %s: %w", i+1, n, addr, err)
			}
			if got != want {
				return fmt.Errorf("connection %d of %d to %s answered %q, want %q", i+1, n, addr, got, want)
			}
			each = append(each, time.Since(t0))
		}
		run.PerSec = float64(n) / time.Since(start).Seconds()
		run.PerConn = attach.Summarize(each)
		return nil
	})
	return run, err
}

// Iperf is one iperf3 client run.
type Iperf struct {
	Path string  `json:"path"`
	From string  `json:"from"` // network namespace file the client ran in
	To   string  `json:"to"`
	Gbps float64 `json:"gbit_per_s"` // receiver side
	// ProxySeen: an established socket on the published port in the host
	// namespace during the run, i.e. the userland proxy accepted it.
	ProxySeen bool `json:"proxy_seen,omitempty"`
	// CPU during the run, in CPUs: the daemon's (the proxy's copy) and the
	// whole machine's busy time.
	DaemonCPU float64 `json:"daemon_cpus"`
	BusyCPU   float64 `json:"machine_busy_cpus"`
}

type iperfJSON struct {
	End struct {
		SumReceived struct {
			Bytes         int64   `json:"bytes"`
			BitsPerSecond float64 `json:"bits_per_second"`
		} `json:"sum_received"`
	} `json:"end"`
	Error string `json:"error"`
}

// iperf runs `iperf3 -c r.To -p port -t secs -J` inside the network
// namespace file r.From and fills in r. The server serves one test at a time
// and needs a moment between tests, so a refused or busy start is retried
// (bounded). With watchNS, that namespace (the host) is checked once,
// halfway through the run, for an established socket on port (the userland
// proxy's side). daemonPID's CPU time is read around the run.
func iperf(r Iperf, port, secs int, watchNS string, daemonPID int) (Iperf, error) {
	var lastErr error
	for range 10 {
		ctx, cancel := context.WithTimeout(context.Background(), time.Duration(secs+20)*time.Second)
		cmd := exec.CommandContext(ctx, "nsenter", "--net="+r.From, "iperf3", "-c", r.To, "-p", strconv.Itoa(port),
			"-t", strconv.Itoa(secs), "-J", "--connect-timeout", "2000")
		var out strings.Builder
		cmd.Stdout, cmd.Stderr = &out, &out
		var wg sync.WaitGroup
		d0, b0, t0 := attach.ProcTicks(daemonPID), time.Now(), attach.BusyTicks()
		if err := cmd.Start(); err != nil {
			cancel()
			return r, err
		}
		if watchNS != "" {
			wg.Go(func() { // one look, halfway through the run
				time.Sleep(time.Duration(secs) * time.Second / 2)
				s, err := testutil.InNS(watchNS, "ss", "-Htn", "state", "established", "sport", "=", ":"+strconv.Itoa(port))
				r.ProxySeen = err == nil && strings.TrimSpace(s) != ""
			})
		}
		err := cmd.Wait()
		el := time.Since(b0).Seconds()
		r.DaemonCPU = float64(attach.ProcTicks(daemonPID)-d0) / attach.ClockTicks / el
		r.BusyCPU = float64(attach.BusyTicks()-t0) / attach.ClockTicks / el
		wg.Wait()
		cancel()
		var j iperfJSON
		if jerr := json.Unmarshal([]byte(out.String()), &j); jerr != nil {
			lastErr = fmt.Errorf("iperf3 to %s:%d: %v, output: %.300s", r.To, port, err, out.String())
		} else if j.Error != "" || err != nil {
			lastErr = fmt.Errorf("iperf3 to %s:%d: %v %s", r.To, port, err, j.Error)
		} else if j.End.SumReceived.Bytes <= 0 {
			return r, fmt.Errorf("iperf3 to %s:%d: nothing received", r.To, port)
		} else {
			r.Gbps = j.End.SumReceived.BitsPerSecond / 1e9
			return r, nil
		}
		time.Sleep(500 * time.Millisecond)
	}
	return r, lastErr
}
