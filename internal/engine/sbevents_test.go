package engine

import (
	"maps"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tether-net/tether/internal/portmap"
	"github.com/tether-net/tether/internal/proc"
)

// The events of processes and ports have Docker's container actions and
// attributes (dockerd's LogContainerEvent and its exit handler).
func TestSandboxEventShapes(t *testing.T) {
	rec := &Sandbox{ID: "c0ffee", Name: "web", Labels: map[string]string{"team": "db", "name": "spoof"}}
	v4 := PortBinding{Proto: "tcp", HostIP: netip.MustParseAddr("0.0.0.0"), HostPort: 8080, ContainerPort: 80}
	v6 := PortBinding{Proto: "tcp", HostIP: netip.MustParseAddr("::"), HostPort: 8080, ContainerPort: 80}
	udp := PortBinding{Proto: "udp", HostIP: netip.MustParseAddr("127.0.0.1"), HostPort: 53, ContainerPort: 5353}
	tests := []struct {
		name        string
		ev          Event
		typ, action string
		attrs       map[string]string
	}{
		{"create", sandboxEvent(rec, ActionCreate, nil), "container", "create",
			map[string]string{"name": "web", "team": "db"}},
		{"start of the main process", procStartEvent(rec, ProcRecord{PID: 42, Args: []string{"sleep", "1"}, Main: true}),
			"container", "start", map[string]string{"name": "web", "team": "db"}},
		{"start of another", procStartEvent(rec, ProcRecord{PID: 42, Args: []string{"sh", "-c", "exit 3"}}),
			"container", "exec_start: sh -c exit 3", map[string]string{"name": "web", "team": "db", "pid": "42"}},
		{"die of the main process", procDieEvent(rec, 42, true, 3, 2500*time.Millisecond),
			"container", "die", map[string]string{"name": "web", "team": "db", "exitCode": "3", "execDuration": "2"}},
		{"die after SIGKILL", procDieEvent(rec, 42, true, 137, 0),
			"container", "die", map[string]string{"name": "web", "team": "db", "exitCode": "137", "execDuration": "0"}},
		{"die of another", procDieEvent(rec, 42, false, 0, time.Hour),
			"container", "exec_die", map[string]string{"name": "web", "team": "db", "exitCode": "0", "pid": "42"}},
		{"destroy", sandboxEvent(rec, ActionDestroy, nil), "container", "destroy",
			map[string]string{"name": "web", "team": "db"}},
		{"publish", portEvent(rec, "front", ActionPublish, []PortBinding{v4, v6, udp}), "port", "publish",
			map[string]string{"name": "web", "network": "front",
				"ports": "0.0.0.0:8080->80/tcp, [::]:8080->80/tcp, 127.0.0.1:53->5353/udp"}},
		{"unpublish", portEvent(rec, "front", ActionUnpublish, []PortBinding{v4}), "port", "unpublish",
			map[string]string{"name": "web", "network": "front", "ports": "0.0.0.0:8080->80/tcp"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.ev.Type != tt.typ || tt.ev.Action != tt.action || tt.ev.ID != "c0ffee" {
				t.Errorf("event %s %q of %s, want %s %q of c0ffee", tt.ev.Type, tt.ev.Action, tt.ev.ID, tt.typ, tt.action)
			}
			if !maps.Equal(tt.ev.Attrs, tt.attrs) {
				t.Errorf("attributes %v, want %v", tt.ev.Attrs, tt.attrs)
			}
		})
	}
	if rec.Labels["name"] != "spoof" || len(rec.Labels) != 2 {
		t.Errorf("the sandbox's labels were changed: %v", rec.Labels)
	}
}

// evLine is an event as the tests compare it: "type action name".
func evLine(ev Event) string {
	return ev.Type + " " + ev.Action + " " + ev.Attrs["name"]
}

// drain returns what the subscription holds now (the engine publishes
// before its calls return, so nothing is in flight).
func drain(c <-chan Event) []Event {
	var out []Event
	for {
		select {
		case ev := <-c:
			out = append(out, ev)
		default:
			return out
		}
	}
}

func evLines(evs []Event) []string {
	out := make([]string, len(evs))
	for i, ev := range evs {
		out[i] = evLine(ev)
	}
	return out
}

// A sandbox's life, in order: create, connect and its ports, a second
// network, disconnect (ports first), removal (disconnects, then destroy).
func TestSandboxEvents(t *testing.T) {
	r := newRig(t)
	r.network("n1", "bridge", "10.10.1.0/24")
	r.network("n2", "bridge", "10.10.2.0/24")
	c, cancel := r.e.Events().Subscribe()
	defer cancel()
	sb, err := r.e.CreateSandbox(r.ctx, SandboxSpec{Name: "web", Labels: map[string]string{"team": "db"},
		Networks: []AttachSpec{{Network: "n1", Ports: []portmap.Spec{localPort("tcp")}}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.e.Connect(r.ctx, "n2", "web", AttachSpec{}); err != nil {
		t.Fatal(err)
	}
	if err := r.e.Disconnect(r.ctx, "n1", "web", false); err != nil {
		t.Fatal(err)
	}
	if err := r.e.RemoveSandbox(r.ctx, "web", false); err != nil {
		t.Fatal(err)
	}
	evs := drain(c)
	want := []string{"container create web", "network connect n1", "port publish web", "network connect n2",
		"port unpublish web", "network disconnect n1", "network disconnect n2", "container destroy web"}
	if got := evLines(evs); !slices.Equal(got, want) {
		t.Fatalf("events\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	port := sb.Endpoints[0].Ports[0]
	wantPorts := "127.0.0.1:" + strconv.Itoa(int(port.HostPort)) + "->80/tcp"
	for _, ev := range evs {
		switch ev.Type {
		case TypeContainer, TypePort:
			if ev.ID != sb.ID || ev.Attrs["name"] != "web" {
				t.Errorf("%s %s: actor %s %v, want the sandbox", ev.Type, ev.Action, ev.ID, ev.Attrs)
			}
		case TypeNetwork:
			if ev.Attrs["container"] != sb.ID {
				t.Errorf("network %s: container %q, want %s", ev.Action, ev.Attrs["container"], sb.ID)
			}
		}
		if ev.Type == TypeContainer && ev.Attrs["team"] != "db" {
			t.Errorf("container %s lacks the sandbox's label: %v", ev.Action, ev.Attrs)
		}
		if ev.Type == TypePort && (ev.Attrs["ports"] != wantPorts || ev.Attrs["network"] != "n1") {
			t.Errorf("port %s: %v, want ports %s on n1", ev.Action, ev.Attrs, wantPorts)
		}
	}
}

// A create that fails after the sandbox existed is followed by its destroy
// (and the disconnect of what it had attached); one refused before has no
// event at all.
func TestSandboxEventsFailedCreate(t *testing.T) {
	for _, tt := range []struct {
		name  string
		point string
		spec  SandboxSpec
		want  []string
	}{
		{"refused", "", SandboxSpec{Name: "bad name!"}, nil},
		{"namespace made", "sandbox.create.after-netns", SandboxSpec{Name: "web", Networks: []AttachSpec{{Network: "n1"}}},
			[]string{"container create web", "container destroy web"}},
		{"second attach fails", "", SandboxSpec{Name: "web", Networks: []AttachSpec{{Network: "n1"},
			{Network: "n2", IP: "10.99.0.9"}}},
			[]string{"container create web", "network connect n1", "network disconnect n1", "container destroy web"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := newRig(t)
			r.network("n1", "bridge", "10.10.1.0/24")
			r.network("n2", "bridge", "10.10.2.0/24")
			c, cancel := r.e.Events().Subscribe()
			defer cancel()
			if tt.point != "" {
				arm(t, tt.point)
			}
			if _, err := r.e.CreateSandbox(r.ctx, tt.spec); err == nil {
				t.Fatal("create succeeded")
			}
			if got := evLines(drain(c)); !slices.Equal(got, tt.want) {
				t.Errorf("events %q, want %q", got, tt.want)
			}
		})
	}
}

// After a restart, the events of a restored sandbox name it as before, and
// a sandbox whose namespace died while the daemon was down is destroyed at
// start (kept for a `since` that reaches back to it).
func TestSandboxEventsAcrossRestart(t *testing.T) {
	r := newRig(t)
	r.network("n1", "bridge", "10.10.1.0/24")
	r.sandbox("web", "n1")
	dead := r.sandbox("gone", "n1")
	r.stop()
	if err := r.nsx.Delete(dead.NetNS); err != nil {
		t.Fatal(err)
	}
	since := time.Now()
	r.start()
	past, c, cancel := r.e.SubscribeEvents(since)
	defer cancel()
	if got, want := evLines(past), []string{"network disconnect n1", "container destroy gone"}; !slices.Equal(got, want) {
		t.Errorf("events at start %q, want %q", got, want)
	}
	if err := r.e.RemoveSandbox(r.ctx, "web", false); err != nil {
		t.Fatal(err)
	}
	if got, want := evLines(drain(c)), []string{"network disconnect n1", "container destroy web"}; !slices.Equal(got, want) {
		t.Errorf("events after restart %q, want %q", got, want)
	}
}

// A forced removal waits for the die events of the processes it killed, so
// they come before the sandbox's disconnect and destroy.
func TestKillWaitsForDieEvents(t *testing.T) {
	r := newRig(t)
	r.sandbox("web")
	r.e.mu.Lock()
	sb := r.e.byName["web"][0]
	p := &proc.Process{Pid: 4242}
	sb.procs[p.Pid] = p
	r.e.mu.Unlock()
	c, cancel := r.e.Events().Subscribe()
	defer cancel()
	r.e.publishProcStarted(sb, p, ProcRecord{PID: p.Pid, Main: true})
	go r.e.publishProcDied(sb, p, true, 137)
	r.e.awaitDieEvents(sb, []int{p.Pid}, time.Now().Add(time.Minute))
	if got, want := evLines(drain(c)), []string{"container start web", "container die web"}; !slices.Equal(got, want) {
		t.Errorf("events %q, want %q", got, want)
	}
	if _, ok := runningProcs.Load(p); ok {
		t.Error("the exited process is still tracked")
	}
	// nothing to wait for: an unknown PID, or one whose die is out
	r.e.awaitDieEvents(sb, []int{p.Pid, 99999}, time.Now().Add(time.Minute))
	if got := drain(c); len(got) != 0 {
		t.Errorf("events %q, want none", evLines(got))
	}
}

// A killed process the daemon did not start (it ran on across a restart)
// gets its die from the kill: the SIGKILL status, its age from /proc.
func TestKillOfRestoredProcess(t *testing.T) {
	r := newRig(t)
	r.sandbox("web")
	r.e.mu.Lock()
	sb := r.e.byName["web"][0]
	self := ProcRecord{PID: os.Getpid(), StartTime: procStartTime(os.Getpid()), Main: true}
	sb.rec.Procs = append(sb.rec.Procs, self, ProcRecord{PID: 7, Args: []string{"sh"}})
	r.e.mu.Unlock()
	c, cancel := r.e.Events().Subscribe()
	defer cancel()
	r.e.awaitDieEvents(sb, []int{self.PID, 7}, time.Now().Add(time.Minute))
	evs := drain(c)
	if got, want := evLines(evs), []string{"container die web", "container exec_die web"}; !slices.Equal(got, want) {
		t.Fatalf("events %q, want %q", got, want)
	}
	if evs[0].Attrs["exitCode"] != "137" || evs[1].Attrs["exitCode"] != "137" || evs[1].Attrs["pid"] != "7" {
		t.Errorf("attributes %v, %v", evs[0].Attrs, evs[1].Attrs)
	}
	if d, err := strconv.Atoi(evs[0].Attrs["execDuration"]); err != nil || d < 0 {
		t.Errorf("execDuration %q", evs[0].Attrs["execDuration"])
	}
	if at := procStartedAt(self.StartTime); at.After(time.Now()) || at.Year() < 2000 {
		t.Errorf("this test started at %v", at)
	}
}

// startSleeper starts `sleep 1000` as a child of the test (standing for a
// sandbox's process that ran on across a restart: not the daemon's child)
// and returns its record; the test reaps it at the end.
func startSleeper(t *testing.T, main bool) ProcRecord {
	t.Helper()
	cmd := exec.Command("sleep", "1000")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	return ProcRecord{PID: cmd.Process.Pid, StartTime: procStartTime(cmd.Process.Pid), Args: []string{"sleep", "1000"}, Main: main}
}

// await returns the next event, failing the test if none comes in a minute
// (a guard against hanging, not a measure).
func await(t *testing.T, c <-chan Event) Event {
	t.Helper()
	select {
	case ev := <-c:
		return ev
	case <-time.After(time.Minute):
		t.Fatal("no event")
		return Event{}
	}
}

// The processes of a restored sandbox: one that ended while the daemon was
// down gets its die at once; one that runs is watched, and its exit is
// announced without exitCode (its status went to its new parent), or with
// 137 when the daemon killed it itself, once (not again by the kill).
func TestRestoredProcessEvents(t *testing.T) {
	r := newRig(t)
	r.sandbox("web")
	r.e.mu.Lock()
	sb := r.e.byName["web"][0]
	r.e.mu.Unlock()
	exits, killed := startSleeper(t, true), startSleeper(t, false)
	ended := ProcRecord{PID: exits.PID, StartTime: exits.StartTime + 1, Args: []string{"true"}}
	r.e.mu.Lock()
	sb.rec.Procs = append(sb.rec.Procs, ended, exits, killed)
	r.e.mu.Unlock()
	c, cancel := r.e.Events().Subscribe()
	defer cancel()

	r.e.watchRestoredProcs(sb)
	ev := await(t, c)
	if evLine(ev) != "container exec_die web" || ev.Attrs["pid"] != strconv.Itoa(exits.PID) {
		t.Fatalf("event %+v, want the exec_die of the process that ended", ev)
	}
	if _, ok := ev.Attrs["exitCode"]; ok {
		t.Errorf("exitCode of a process whose status the daemon never had: %v", ev.Attrs)
	}

	if err := syscall.Kill(exits.PID, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	ev = await(t, c)
	if _, ok := ev.Attrs["exitCode"]; evLine(ev) != "container die web" || ok || ev.Attrs["execDuration"] == "" {
		t.Fatalf("event %+v, want the die of the main process, without exitCode", ev)
	}

	r.e.mu.Lock()
	sb.rec.Procs = []ProcRecord{killed}
	r.e.mu.Unlock()
	r.e.killProcs(sb)
	evs := drain(c)
	if len(evs) != 1 || evLine(evs[0]) != "container exec_die web" || evs[0].Attrs["exitCode"] != "137" {
		t.Fatalf("events after the kill %+v, want one exec_die with exitCode 137", evs)
	}
	if _, ok := restoredWatches.Load(watchKey{killed.PID, killed.StartTime}); ok {
		t.Error("the killed process is still watched")
	}
}

// What an event costs the engine: building a container event and
// publishing it to the history and one subscriber that does not read (the
// worst case: its buffer is full, the event is dropped for it).
func BenchmarkSandboxEvent(b *testing.B) {
	ev := newEvents()
	_, cancel := ev.Subscribe()
	defer cancel()
	rec := &Sandbox{ID: strings.Repeat("a", 64), Name: "web", Labels: map[string]string{"team": "db"}}
	b.ReportAllocs()
	for b.Loop() {
		ev.publish(procDieEvent(rec, 42, true, 0, time.Second))
	}
}
