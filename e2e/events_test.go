package e2e

import (
	"encoding/json"
	"fmt"
	"net/url"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/api/types/events"

	"github.com/tether-net/tether/internal/testutil"
)

// eventsHost is hostMode with the events tests' namespace prefix.
func eventsHost(t *testing.T, mode testutil.StartMode) *testutil.Daemon {
	t.Helper()
	testutil.RequireRoot(t)
	d := testutil.NewDaemon(t, testutil.NetNS(t, "t20e"))
	d.Mode = mode
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
	return d
}

// eventLog reads the kept events between since and now with the stock
// docker CLI (`docker events --since --until --format '{{json .}}'`, plus
// the filters given) and returns them in order.
func eventLog(t *testing.T, c *dockerCLI, since time.Time, filters ...string) []events.Message {
	t.Helper()
	args := []string{"events", "--since", unixNano(since), "--until", unixNano(time.Now()), "--format", "{{json .}}"}
	for _, f := range filters {
		args = append(args, "--filter", f)
	}
	var out []events.Message
	for _, l := range strings.Split(strings.TrimSpace(c.must(args...)), "\n") {
		if l == "" {
			continue
		}
		var m events.Message
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("event line %q: %v", l, err)
		}
		out = append(out, m)
	}
	return out
}

// unixNano is a time as docker's --since and --until take it with
// nanoseconds ("1700000000.123456789").
func unixNano(t time.Time) string { return fmt.Sprintf("%d.%09d", t.Unix(), t.Nanosecond()) }

// story is the events of one sandbox, as "type action name": its container
// and port events (by its name) and the network events naming it as their
// container (by the network's name).
func story(ms []events.Message, name, id string) []string {
	var out []string
	for _, m := range ms {
		a := m.Actor.Attributes
		switch {
		case (m.Type == "container" || m.Type == "port") && a["name"] == name:
			out = append(out, fmt.Sprintf("%s %s %s", m.Type, m.Action, name))
		case m.Type == "network" && a["container"] == id:
			out = append(out, fmt.Sprintf("network %s %s", m.Action, a["name"]))
		}
	}
	return out
}

// checkShape checks that every message is in Docker's shape: a type, an
// action, an actor with an ID and a name, local scope, and both times.
func checkShape(t *testing.T, ms []events.Message) {
	t.Helper()
	for _, m := range ms {
		if m.Type == "" || m.Action == "" || m.Actor.ID == "" || m.Actor.Attributes["name"] == "" ||
			m.Scope != "local" || m.Time == 0 || m.TimeNano/1_000_000_000 != m.Time {
			t.Errorf("event not in Docker's shape: %+v", m)
		}
	}
}

func mustEqual(t *testing.T, what string, got, want []string) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Errorf("%s:\n  got  %q\n  want %q", what, got, want)
	}
}

// `docker events` shows a sandbox's whole life in order: created and run
// with a command that exits 3, connected with a published port, a command
// run in it, disconnected, removed; and a second sandbox removed by force
// while its command runs (die before its disconnect and destroy, as
// Docker's rm -f). Docker's filters pick the parts; a bad one is refused.
func TestDockerEventsSandboxLifecycle(t *testing.T) {
	d := eventsHost(t, testutil.StartNsenter)
	c := newDockerCLI(t, d)
	d.MustTether("network", "create", "--subnet", "10.201.0.0/24", "evnet")
	d.MustTether("network", "create", "--subnet", "10.202.0.0/24", "pubnet")
	start := time.Now()
	if out, err := d.Tether("run", "--name", "job", "--network", "evnet", "--", "sh", "-c", "exit 3"); err == nil {
		t.Fatalf("run of a command exiting 3 succeeded: %s", out)
	}
	id := sandbox(t, d, "job").ID
	d.MustTether("network", "connect", "-p", "50080:80", "pubnet", "job")
	d.MustTether("exec", "job", "--", "true")
	d.MustTether("network", "disconnect", "pubnet", "job")
	d.MustTether("rm", "job")
	runDetached(t, d, "sleeper", "--network", "evnet", "--", "sleep", "1000")
	sleeperID := sandbox(t, d, "sleeper").ID
	d.MustTether("rm", "-f", "sleeper")
	d.MustTether("run", "--rm", "--name", "once", "--network", "evnet", "--", "true")

	all := eventLog(t, c, start)
	checkShape(t, all)
	mustEqual(t, "the life of job", story(all, "job", id), []string{
		"container create job", "network connect evnet", "container start job", "container die job",
		"network connect pubnet", "port publish job", "container exec_start: true job", "container exec_die job",
		"port unpublish job", "network disconnect pubnet", "network disconnect evnet", "container destroy job"})
	mustEqual(t, "the life of sleeper", story(all, "sleeper", sleeperID), []string{
		"container create sleeper", "network connect evnet", "container start sleeper", "container die sleeper",
		"network disconnect evnet", "container destroy sleeper"})
	var onceID string
	for _, m := range all {
		if m.Type == "container" && m.Action == "create" && m.Actor.Attributes["name"] == "once" {
			onceID = m.Actor.ID
		}
	}
	mustEqual(t, "the life of once (run --rm)", story(all, "once", onceID), []string{
		"container create once", "network connect evnet", "container start once", "container die once",
		"network disconnect evnet", "container destroy once"})
	for _, m := range all {
		a := m.Actor.Attributes
		switch {
		case m.Type == "port" && (a["ports"] != "0.0.0.0:50080->80/tcp" || a["network"] != "pubnet" || m.Actor.ID != id):
			t.Errorf("port event %+v", m)
		case m.Action == "die" && a["name"] == "job" && (a["exitCode"] != "3" || a["execDuration"] == ""):
			t.Errorf("die of job %+v", m)
		case m.Action == "die" && a["name"] == "sleeper" && a["exitCode"] != "137":
			t.Errorf("die of sleeper %+v", m)
		case m.Action == "exec_die" && a["exitCode"] != "0":
			t.Errorf("exec_die %+v", m)
		case m.Action == "die" && a["name"] == "once" && a["exitCode"] != "0":
			t.Errorf("die of once %+v", m)
		case m.Type == "container" && m.Actor.ID != id && m.Actor.ID != sleeperID && m.Actor.ID != onceID:
			t.Errorf("container event of an unknown sandbox %+v", m)
		}
	}

	// Docker's filters: type, event and container together; a container by
	// name (its port events too: Docker matches actor keys on any type);
	// exec_start by prefix; the exit code as a label.
	got := c.must("events", "--since", unixNano(start), "--until", unixNano(time.Now()),
		"--filter", "type=container", "--filter", "event=die", "--filter", "container=job")
	if ls := lines(got); len(ls) != 1 || !strings.Contains(ls[0], "container die "+id) ||
		!strings.Contains(ls[0], "exitCode=3") || !strings.Contains(ls[0], "name=job") {
		t.Errorf("docker events, die of job:\n%s", got)
	}
	byName := eventLog(t, c, start, "container=job")
	mustEqual(t, "container=job", story(byName, "job", id), []string{
		"container create job", "container start job", "container die job", "port publish job",
		"container exec_start: true job", "container exec_die job", "port unpublish job", "container destroy job"})
	if len(byName) != 8 {
		t.Errorf("container=job gave %d events, want 8", len(byName))
	}
	execs := eventLog(t, c, start, "event=exec_start", "event=exec_die")
	mustEqual(t, "exec events", story(execs, "job", id), []string{"container exec_start: true job", "container exec_die job"})
	exits := eventLog(t, c, start, "type=container", "label=exitCode=137")
	if len(exits) != 1 {
		t.Errorf("exitCode=137: %+v", exits)
	}
	mustEqual(t, "exitCode=137", story(exits, "sleeper", sleeperID), []string{"container die sleeper"})
	ports := eventLog(t, c, start, "type=port")
	if len(ports) != 2 || ports[0].Action != "publish" || ports[1].Action != "unpublish" {
		t.Errorf("type=port: %+v", ports)
	}

	// the raw stream at API 1.24 (the oldest the CLI negotiates): container
	// events carry dockerd's legacy fields before API 1.52 (status, id, from)
	code, body := newAPI(t, d).call("GET", fmt.Sprintf("/v1.24/events?since=%s&until=%s&filters=%s", unixNano(start),
		unixNano(time.Now()), url.QueryEscape(`{"type":{"container":true},"container":{"job":true},"event":{"die":true}}`)), nil)
	var legacy map[string]any
	if err := json.Unmarshal([]byte(strings.TrimSpace(body)), &legacy); code != 200 || err != nil ||
		legacy["status"] != "die" || legacy["id"] != id || legacy["from"] != "" || legacy["Action"] != "die" {
		t.Errorf("raw die event of job at API 1.24: %d %v %s", code, err, body)
	}

	for _, bad := range []struct{ filter, want string }{
		{"event=dei", "event=dei"},
		{"type=boat", "type=boat"},
		{"colour=red", "colour"},
	} {
		out, err := c.run("events", "--since", unixNano(start), "--until", unixNano(time.Now()), "--filter", bad.filter)
		if err == nil || !strings.Contains(out, bad.want) {
			t.Errorf("docker events --filter %s: %v, %s", bad.filter, err, out)
		}
	}
}

// Across a restart: the events after it name the restored sandboxes as
// before (exec, connect with a port, forced removal with the die of the
// process that ran on across the restart); a sandbox without a process,
// which a daemon in a mount namespace of its own loses (docs/sandboxes.md),
// is destroyed at start, with its events then; the events of the daemon
// before the restart are gone, as Docker's are. Under every start mode.
func TestDockerEventsAcrossRestart(t *testing.T) {
	forModes(t, func(t *testing.T, mode testutil.StartMode) {
		d := eventsHost(t, mode)
		c := newDockerCLI(t, d)
		d.MustTether("network", "create", "--subnet", "10.203.0.0/24", "rnet")
		d.MustTether("network", "create", "--subnet", "10.204.0.0/24", "rpub")
		before := time.Now()
		runDetached(t, d, "keep", "--network", "rnet", "--", "sleep", "1000")
		keepID := sandbox(t, d, "keep").ID
		d.MustTether("sandbox", "create", "--name", "idle", "--network", "rnet")
		idleID := sandbox(t, d, "idle").ID
		stopped := time.Now()
		restart(t, d)
		if out, err := d.Tether("exec", "keep", "--", "sh", "-c", "exit 5"); err == nil {
			t.Fatalf("exec of a command exiting 5 succeeded: %s", out)
		}
		d.MustTether("network", "connect", "-p", "50081:80", "rpub", "keep")
		d.MustTether("rm", "-f", "keep")
		// idle outlives the restart only in the test's mount namespace
		if out, err := d.Tether("rm", "idle"); (err == nil) != (mode == testutil.StartNsenter) {
			t.Errorf("rm idle after the restart under %s: %v %s", mode, err, out)
		}

		all := eventLog(t, c, before)
		checkShape(t, all)
		for _, m := range all {
			if m.TimeNano < stopped.UnixNano() {
				t.Errorf("an event from before the restart was kept: %+v", m)
			}
		}
		mustEqual(t, "keep after the restart", story(all, "keep", keepID), []string{
			"container exec_start: sh -c exit 5 keep", "container exec_die keep",
			"network connect rpub", "port publish keep", "container die keep",
			"network disconnect rnet", "port unpublish keep", "network disconnect rpub", "container destroy keep"})
		mustEqual(t, "idle after the restart", story(all, "idle", idleID), []string{
			"network disconnect rnet", "container destroy idle"})
		for _, m := range all {
			a := m.Actor.Attributes
			switch {
			case m.Action == "exec_die" && a["exitCode"] != "5":
				t.Errorf("exec_die %+v", m)
			case m.Action == "die" && a["exitCode"] != "137":
				t.Errorf("die of the process that ran on across the restart %+v", m)
			case m.Type == "port" && a["ports"] != "0.0.0.0:50081->80/tcp":
				t.Errorf("port event %+v", m)
			}
		}
		dies := eventLog(t, c, before, "type=container", "event=die", "container=keep")
		mustEqual(t, "die of keep", story(dies, "keep", keepID), []string{"container die keep"})
	})
}

// docker events without --until follows the stream: the die of a command
// shows while it runs, filtered (--since makes the test independent of when
// the stream opens: a die before that is replayed from the kept events).
func TestDockerEventsFollowDie(t *testing.T) {
	d := eventsHost(t, testutil.StartNsenter)
	c := newDockerCLI(t, d)
	cmd := exec.Command(c.bin, "events", "--since", unixNano(time.Now()), "--filter", "type=container", "--filter", "event=die",
		"--format", "{{.Action}} {{.Actor.Attributes.name}} {{.Actor.Attributes.exitCode}}")
	cmd.Env = c.env
	var buf strings.Builder
	outw := &lockedWriter{w: &buf}
	cmd.Stdout = outw
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	if out, err := d.Tether("run", "--rm", "--name", "live", "--", "sh", "-c", "exit 7"); err == nil {
		t.Fatalf("run of a command exiting 7 succeeded: %s", out)
	}
	want := "die live 7\n"
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) && outw.String() != want {
		time.Sleep(50 * time.Millisecond)
	}
	if got := outw.String(); got != want {
		t.Errorf("docker events = %q, want %q", got, want)
	}
}
