package cniplugin

import (
	"bytes"
	"encoding/json"
	"net/http"
	"reflect"
	"strings"
	"testing"

	apitypes "github.com/tether-net/tether/internal/api/types"
)

// TestDel: DEL removes the attachment and succeeds when there is none,
// whatever the configuration lacks that only ADD needs; other failures of
// the daemon are errors.
func TestDel(t *testing.T) {
	msg := map[string]string{"message": "remove sandbox: device or resource busy"}
	tests := []struct {
		name  string
		reply reply
		extra map[string]any
		code  uint // 0: success
	}{
		{name: "removed", reply: reply{http.StatusNoContent, nil}},
		{name: "unknown attachment", reply: reply{http.StatusNotFound, map[string]string{"message": "no attachment"}}},
		{name: "no network in the configuration", reply: reply{http.StatusNoContent, nil}, extra: map[string]any{"network": nil}},
		{name: "bad runtimeConfig", reply: reply{http.StatusNoContent, nil},
			extra: map[string]any{"runtimeConfig": map[string]any{"ips": []any{"fd00::1", "fd00::2"}}}},
		{name: "daemon fails", reply: reply{http.StatusInternalServerError, msg}, code: ErrDaemon},
		{name: "daemon busy", reply: reply{http.StatusServiceUnavailable, msg}, code: 11},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := startDaemon(t, map[string]reply{"DELETE " + attachPath: tt.reply})
			var out bytes.Buffer
			err := testPlugin(t, &out).Del(cmdArgs(conf(t, "1.1.0", d.socket, tt.extra), ""))
			switch {
			case tt.code == 0 && err != nil:
				t.Errorf("Del: %v", err)
			case tt.code != 0:
				if e := cniError(t, err); e.Code != tt.code || !strings.Contains(e.Msg, msg["message"]) {
					t.Errorf("error %d %q, want %d with the daemon's message", e.Code, e.Msg, tt.code)
				}
			}
			if r := d.only(t); r.Method != http.MethodDelete || r.Path != attachPath {
				t.Errorf("request %s %s", r.Method, r.Path)
			}
			if out.Len() != 0 {
				t.Errorf("printed %s", out.String())
			}
		})
	}
}

// TestDelEscapesKey: the attachment's key is escaped in the route.
func TestDelEscapesKey(t *testing.T) {
	d := startDaemon(t, nil)
	args := cmdArgs(conf(t, "1.1.0", d.socket, nil), "")
	args.ContainerID, args.IfName = "a b", "eth%0"
	var out bytes.Buffer
	if err := testPlugin(t, &out).Del(args); err != nil {
		t.Fatal(err)
	}
	if r := d.only(t); r.Path != "/tether/v1/cni/attachments/a%20b/eth%250" {
		t.Errorf("path %s", r.Path)
	}
}

// TestCheck: CHECK fails with the spec's "unknown container" when the
// daemon has no such attachment, with the daemon's reason when the kernel
// does not match, and when prevResult does not give the interface the
// attachment's address.
func TestCheck(t *testing.T) {
	good := func(t *testing.T) map[string]any { return addedResult(t) }
	tests := []struct {
		name  string
		ver   string // "" = 1.1.0
		check reply
		prev  func(*testing.T) map[string]any
		code  uint // 0: success
		msg   string
	}{
		{name: "as added", check: reply{http.StatusNoContent, nil}, prev: good},
		{name: "as added, 0.4.0", ver: "0.4.0", check: reply{http.StatusNoContent, nil}, prev: func(t *testing.T) map[string]any {
			m := good(t)
			m["cniVersion"] = "0.4.0"
			for _, ip := range m["ips"].([]any) {
				ip.(map[string]any)["version"] = "4"
			}
			return m
		}},
		{name: "no attachment", check: reply{http.StatusNotFound, map[string]string{"message": "no attachment of container ctr1"}},
			prev: good, code: 3, msg: "no attachment of container ctr1"},
		{name: "kernel differs", check: reply{http.StatusConflict, map[string]string{"message": "interface eth0 is missing"}},
			prev: good, code: ErrCheckFailed, msg: "interface eth0 is missing"},
		{name: "daemon fails", check: reply{http.StatusInternalServerError, map[string]string{"message": "boom"}},
			prev: good, code: ErrDaemon, msg: "boom"},
		{name: "other address", check: reply{http.StatusNoContent, nil}, prev: func(t *testing.T) map[string]any {
			m := good(t)
			m["ips"].([]any)[0].(map[string]any)["address"] = "10.11.0.6/24"
			return m
		}, code: ErrCheckFailed, msg: "no address 10.11.0.5/24"},
		{name: "interface elsewhere", check: reply{http.StatusNoContent, nil}, prev: func(t *testing.T) map[string]any {
			m := good(t)
			m["interfaces"].([]any)[1].(map[string]any)["sandbox"] = "/run/netns/other"
			return m
		}, code: ErrCheckFailed, msg: "no interface eth0"},
		{name: "no prevResult", check: reply{http.StatusNoContent, nil}, code: 7, msg: "prevResult is required"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := startDaemon(t, map[string]reply{
				"POST " + attachPath + "/check": tt.check,
				"GET " + attachPath:             {http.StatusOK, testAttachment},
			})
			extra := map[string]any{}
			if tt.prev != nil {
				extra["prevResult"] = tt.prev(t)
			}
			if tt.ver == "" {
				tt.ver = "1.1.0"
			}
			var out bytes.Buffer
			err := testPlugin(t, &out).Check(cmdArgs(conf(t, tt.ver, d.socket, extra), ""))
			if tt.code == 0 {
				if err != nil {
					t.Fatalf("Check: %v", err)
				}
				return
			}
			if e := cniError(t, err); e.Code != tt.code || !strings.Contains(e.Msg, tt.msg) {
				t.Errorf("error %d %q, want %d with %q", e.Code, e.Msg, tt.code, tt.msg)
			}
		})
	}
}

// TestCheckIPv6: CHECK of a dual-stack or IPv6-only attachment passes when
// prevResult gives the interface each of the attachment's addresses (in
// the result format of any version) and fails naming the one it lacks.
func TestCheckIPv6(t *testing.T) {
	// dropIP removes the ips entry with address addr.
	dropIP := func(m map[string]any, addr string) map[string]any {
		var keep []any
		for _, ip := range m["ips"].([]any) {
			if ip.(map[string]any)["address"] != addr {
				keep = append(keep, ip)
			}
		}
		m["ips"] = keep
		return m
	}
	setIP := func(m map[string]any, from, to string) map[string]any {
		for _, ip := range m["ips"].([]any) {
			if ip.(map[string]any)["address"] == from {
				ip.(map[string]any)["address"] = to
			}
		}
		return m
	}
	asVersion := func(m map[string]any, v string) map[string]any {
		m["cniVersion"] = v
		for _, ip := range m["ips"].([]any) {
			ipm := ip.(map[string]any)
			ipm["version"] = map[bool]string{true: "6", false: "4"}[strings.Contains(ipm["address"].(string), ":")]
		}
		return m
	}
	tests := []struct {
		name string
		a    apitypes.CNIAttachment
		ver  string // "" = 1.1.0
		prev func(m map[string]any) map[string]any
		msg  string // "" = success
	}{
		{name: "dual stack as added", a: testAttachmentDual},
		{name: "dual stack as added, 0.4.0", a: testAttachmentDual, ver: "0.4.0",
			prev: func(m map[string]any) map[string]any { return asVersion(m, "0.4.0") }},
		{name: "ipv6 only as added", a: testAttachment6},
		{name: "ipv6 only as added, 0.4.0", a: testAttachment6, ver: "0.4.0",
			prev: func(m map[string]any) map[string]any { return asVersion(m, "0.4.0") }},
		{name: "dual stack without the v6 address", a: testAttachmentDual,
			prev: func(m map[string]any) map[string]any { return dropIP(m, "fd00:11::5/64") }, msg: "no address fd00:11::5/64"},
		{name: "dual stack without the v4 address", a: testAttachmentDual,
			prev: func(m map[string]any) map[string]any { return dropIP(m, "10.11.0.5/24") }, msg: "no address 10.11.0.5/24"},
		{name: "dual stack with another v6 address", a: testAttachmentDual,
			prev: func(m map[string]any) map[string]any { return setIP(m, "fd00:11::5/64", "fd00:11::6/64") }, msg: "no address fd00:11::5/64"},
		{name: "dual stack with another v6 prefix length", a: testAttachmentDual,
			prev: func(m map[string]any) map[string]any { return setIP(m, "fd00:11::5/64", "fd00:11::5/80") }, msg: "no address fd00:11::5/64"},
		{name: "ipv6 only without its address", a: testAttachment6,
			prev: func(m map[string]any) map[string]any { return dropIP(m, "fd00:11::5/64") }, msg: "no address fd00:11::5/64"},
		{name: "v4 result of a now dual-stack attachment", a: testAttachmentDual,
			prev: func(map[string]any) map[string]any { return addedResult(t) }, msg: "no address fd00:11::5/64"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := startDaemon(t, map[string]reply{
				"POST " + attachPath + "/check": {http.StatusNoContent, nil},
				"GET " + attachPath:             {http.StatusOK, tt.a},
			})
			prev := addedResultOf(t, tt.a)
			if tt.prev != nil {
				prev = tt.prev(prev)
			}
			if tt.ver == "" {
				tt.ver = "1.1.0"
			}
			var out bytes.Buffer
			err := testPlugin(t, &out).Check(cmdArgs(conf(t, tt.ver, d.socket, map[string]any{"prevResult": prev}), ""))
			if tt.msg == "" {
				if err != nil {
					t.Fatalf("Check: %v", err)
				}
				return
			}
			if e := cniError(t, err); e.Code != ErrCheckFailed || !strings.Contains(e.Msg, tt.msg) {
				t.Errorf("error %d %q, want %d with %q", e.Code, e.Msg, ErrCheckFailed, tt.msg)
			}
		})
	}
}

// TestStatus: ready, degraded (51 with the daemon's reason), failing (50).
func TestStatus(t *testing.T) {
	tests := []struct {
		name  string
		reply reply
		code  uint
		msg   string
	}{
		{name: "ready", reply: reply{http.StatusOK, apitypes.CNIStatus{}}},
		{name: "degraded", reply: reply{http.StatusOK, apitypes.CNIStatus{Degraded: true, Reason: "cluster store unreachable"}},
			code: 51, msg: "cluster store unreachable"},
		{name: "failing", reply: reply{http.StatusInternalServerError, map[string]string{"message": "engine stopped"}},
			code: 50, msg: "engine stopped"},
		{name: "no route", reply: reply{http.StatusNotFound, nil}, code: 50, msg: "404"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := startDaemon(t, map[string]reply{"GET /tether/v1/cni/status": tt.reply})
			var out bytes.Buffer
			err := testPlugin(t, &out).Status(cmdArgs(conf(t, "1.1.0", d.socket, nil), ""))
			if tt.code == 0 {
				if err != nil {
					t.Fatalf("Status: %v", err)
				}
			} else if e := cniError(t, err); e.Code != tt.code || !strings.Contains(e.Msg, tt.msg) {
				t.Errorf("error %d %q, want %d with %q", e.Code, e.Msg, tt.code, tt.msg)
			}
			if r := d.only(t); r.Method != http.MethodGet || r.Path != "/tether/v1/cni/status" {
				t.Errorf("request %s %s", r.Method, r.Path)
			}
		})
	}
}

// TestGC: GC sends the valid set from both keys, once each, without
// entries of other network configurations, and the Tether network.
func TestGC(t *testing.T) {
	att := func(cid, ifname string) map[string]any { return map[string]any{"containerID": cid, "ifname": ifname} }
	key := func(cid, ifname string) apitypes.CNIAttachmentKey {
		return apitypes.CNIAttachmentKey{ContainerID: cid, IfName: ifname}
	}
	tests := []struct {
		name  string
		extra map[string]any
		want  []apitypes.CNIAttachmentKey
	}{
		{name: "libcni: both keys", extra: map[string]any{
			"cni.dev/valid-attachments": []any{att("c1", "eth0"), att("c2", "eth1")},
			"cni.dev/attachments":       []any{att("c1", "eth0"), att("c2", "eth1")}},
			want: []apitypes.CNIAttachmentKey{key("c1", "eth0"), key("c2", "eth1")}},
		{name: "older key only", extra: map[string]any{"cni.dev/attachments": []any{att("c3", "eth0")}},
			want: []apitypes.CNIAttachmentKey{key("c3", "eth0")}},
		{name: "entries naming networks", extra: map[string]any{"cni.dev/valid-attachments": []any{
			map[string]any{"containerID": "c1", "ifname": "eth0", "network": "tether-front"},
			map[string]any{"containerID": "c2", "ifname": "eth0", "network": "other"}}},
			want: []apitypes.CNIAttachmentKey{key("c1", "eth0")}},
		{name: "null list", extra: map[string]any{"cni.dev/valid-attachments": []any(nil)}, want: []apitypes.CNIAttachmentKey{}},
		{name: "cnitool gc: no list", want: []apitypes.CNIAttachmentKey{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := startDaemon(t, map[string]reply{"POST /tether/v1/cni/gc": {http.StatusOK,
				apitypes.CNIGCResponse{Removed: []apitypes.CNIAttachmentKey{key("c9", "eth0")}}}})
			var out bytes.Buffer
			if err := testPlugin(t, &out).GC(cmdArgs(conf(t, "1.1.0", d.socket, tt.extra), "")); err != nil {
				t.Fatalf("GC: %v", err)
			}
			r := d.only(t)
			if r.Method != http.MethodPost || r.Path != "/tether/v1/cni/gc" {
				t.Errorf("request %s %s", r.Method, r.Path)
			}
			if !bytes.Contains(r.Body, []byte(`"Valid":[`)) {
				t.Errorf("body %s: Valid is not a list", r.Body)
			}
			var got apitypes.CNIGCRequest
			if err := json.Unmarshal(r.Body, &got); err != nil {
				t.Fatal(err)
			}
			want := apitypes.CNIGCRequest{Valid: tt.want, Network: "front"}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("request %+v, want %+v", got, want)
			}
			if out.Len() != 0 {
				t.Errorf("printed %s", out.String())
			}
		})
	}
}

// TestGCErrors: a refusal keeps the daemon's message; no network is
// refused before asking.
func TestGCErrors(t *testing.T) {
	d := startDaemon(t, map[string]reply{"POST /tether/v1/cni/gc": {http.StatusNotFound,
		map[string]string{"message": `network "front" not found`}}})
	var out bytes.Buffer
	e := cniError(t, testPlugin(t, &out).GC(cmdArgs(conf(t, "1.1.0", d.socket, nil), "")))
	if e.Code != 7 || !strings.Contains(e.Msg, `network "front" not found`) {
		t.Errorf("error %d %q", e.Code, e.Msg)
	}
	e = cniError(t, testPlugin(t, &out).GC(cmdArgs(conf(t, "1.1.0", d.socket, map[string]any{"network": nil}), "")))
	if e.Code != 7 || !strings.Contains(e.Msg, `"network"`) {
		t.Errorf("error %d %q", e.Code, e.Msg)
	}
	if got := d.requests(); len(got) != 1 {
		t.Errorf("the daemon got %d requests, want 1", len(got))
	}
}
