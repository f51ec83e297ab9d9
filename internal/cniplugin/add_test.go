package cniplugin

import (
	"bytes"
	"encoding/json"
	"maps"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	cnitypes "github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"

	apitypes "github.com/tether-net/tether/internal/api/types"
)

func addRoutes() map[string]reply {
	return map[string]reply{"POST /tether/v1/cni/attachments": {http.StatusCreated, testAttachment}}
}

// decodeJSON decodes printed JSON into generic values, as a runtime sees it.
func decodeJSON(t *testing.T, b []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("printed %q: %v", b, err)
	}
	return m
}

// TestAddResultShape runs ADD for every supported version and checks the
// printed result against that version's shape: 0.3.x and 0.4.0 give each
// IP a "version" and no interface MTU; 1.0.0 and later no IP version and
// the MTU.
func TestAddResultShape(t *testing.T) {
	for _, v := range Versions.SupportedVersions() {
		t.Run(v, func(t *testing.T) {
			d := startDaemon(t, addRoutes())
			var out bytes.Buffer
			if err := testPlugin(t, &out).Add(cmdArgs(conf(t, v, d.socket, nil), "")); err != nil {
				t.Fatalf("Add: %v", err)
			}
			if _, err := version.NewResult(v, out.Bytes()); err != nil {
				t.Errorf("libcni cannot read the %s result: %v\n%s", v, err, out.String())
			}
			pre1 := v < "1.0.0"
			want := map[string]any{
				"cniVersion": v,
				"interfaces": []any{
					map[string]any{"name": "vethTth01"},
					withMTU(map[string]any{"name": "eth0", "mac": "02:42:0a:0b:00:05", "sandbox": "/run/netns/test-ctr1"}, !pre1),
				},
				"ips":    []any{withVersion(map[string]any{"interface": 1.0, "address": "10.11.0.5/24", "gateway": "10.11.0.1"}, pre1)},
				"routes": []any{map[string]any{"dst": "0.0.0.0/0", "gw": "10.11.0.1"}},
				"dns":    map[string]any{"nameservers": []any{"127.0.0.11"}, "search": []any{"example.test"}},
			}
			if got := decodeJSON(t, out.Bytes()); !reflect.DeepEqual(got, want) {
				t.Errorf("result\n got %v\nwant %v", got, want)
			}
		})
	}
}

func withMTU(m map[string]any, yes bool) map[string]any {
	if yes {
		m["mtu"] = 1450.0
	}
	return m
}

func withVersion(m map[string]any, yes bool) map[string]any {
	if yes {
		m["version"] = "4"
	}
	return m
}

// Attachments on IPv6 networks, as the daemon answers ADD.
var (
	// testAttachmentDual is testAttachment on a dual-stack network.
	testAttachmentDual = func() apitypes.CNIAttachment {
		a := testAttachment
		a.Address6, a.Gateway6 = "fd00:11::5/64", "fd00:11::1"
		return a
	}()
	// testAttachment6 is testAttachment on an IPv6-only network.
	testAttachment6 = func() apitypes.CNIAttachment {
		a := testAttachmentDual
		a.Address, a.Gateway = "", ""
		return a
	}()
)

// TestAddResultIPv6 runs ADD of dual-stack and IPv6-only attachments for
// every supported version: one IP per family on the container interface
// with its gateway ("version" "4" or "6" before 1.0.0), a default route
// per family with a gateway when the attachment carries it.
func TestAddResultIPv6(t *testing.T) {
	ip4 := map[string]any{"interface": 1.0, "address": "10.11.0.5/24", "gateway": "10.11.0.1"}
	ip6 := map[string]any{"interface": 1.0, "address": "fd00:11::5/64", "gateway": "fd00:11::1"}
	route4 := map[string]any{"dst": "0.0.0.0/0", "gw": "10.11.0.1"}
	route6 := map[string]any{"dst": "::/0", "gw": "fd00:11::1"}
	noGW := func(m map[string]any) map[string]any {
		c := maps.Clone(m)
		delete(c, "gateway")
		return c
	}
	tests := []struct {
		name   string
		a      apitypes.CNIAttachment
		ips    []map[string]any // without "version"
		routes []any            // nil: no "routes"
	}{
		{name: "dual stack", a: testAttachmentDual, ips: []map[string]any{ip4, ip6}, routes: []any{route4, route6}},
		{name: "ipv6 only", a: testAttachment6, ips: []map[string]any{ip6}, routes: []any{route6}},
		{name: "dual stack, second attachment", a: func() apitypes.CNIAttachment {
			a := testAttachmentDual
			a.DefaultRoute = false
			return a
		}(), ips: []map[string]any{ip4, ip6}},
		{name: "dual stack, internal", a: func() apitypes.CNIAttachment {
			a := testAttachmentDual
			a.Gateway, a.Gateway6, a.DefaultRoute = "", "", false
			return a
		}(), ips: []map[string]any{noGW(ip4), noGW(ip6)}},
		{name: "ipv6 only, no v6 gateway", a: func() apitypes.CNIAttachment {
			a := testAttachment6
			a.Gateway6 = ""
			return a
		}(), ips: []map[string]any{noGW(ip6)}},
	}
	for _, tt := range tests {
		for _, v := range Versions.SupportedVersions() {
			t.Run(tt.name+"/"+v, func(t *testing.T) {
				d := startDaemon(t, map[string]reply{"POST /tether/v1/cni/attachments": {http.StatusCreated, tt.a}})
				var out bytes.Buffer
				if err := testPlugin(t, &out).Add(cmdArgs(conf(t, v, d.socket, nil), "")); err != nil {
					t.Fatalf("Add: %v", err)
				}
				if _, err := version.NewResult(v, out.Bytes()); err != nil {
					t.Errorf("libcni cannot read the %s result: %v\n%s", v, err, out.String())
				}
				pre1 := v < "1.0.0"
				var ips []any
				for _, ip := range tt.ips {
					m := maps.Clone(ip)
					if pre1 {
						m["version"] = map[bool]string{true: "6", false: "4"}[strings.Contains(m["address"].(string), ":")]
					}
					ips = append(ips, m)
				}
				want := map[string]any{
					"cniVersion": v,
					"interfaces": []any{
						map[string]any{"name": "vethTth01"},
						withMTU(map[string]any{"name": "eth0", "mac": "02:42:0a:0b:00:05", "sandbox": "/run/netns/test-ctr1"}, !pre1),
					},
					"ips": ips,
					"dns": map[string]any{"nameservers": []any{"127.0.0.11"}, "search": []any{"example.test"}},
				}
				if tt.routes != nil {
					want["routes"] = tt.routes
				}
				if got := decodeJSON(t, out.Bytes()); !reflect.DeepEqual(got, want) {
					t.Errorf("result\n got %v\nwant %v", got, want)
				}
			})
		}
	}
}

// TestAddResultBadFamily: an address or gateway of the wrong family in the
// daemon's answer is the daemon's error, naming the field.
func TestAddResultBadFamily(t *testing.T) {
	tests := []struct {
		name string
		edit func(*apitypes.CNIAttachment)
		msg  string
	}{
		{"v6 in Address", func(a *apitypes.CNIAttachment) { a.Address = "fd00:11::5/64" }, `Address "fd00:11::5/64": not an IPv4`},
		{"v4 in Address6", func(a *apitypes.CNIAttachment) { a.Address6 = "10.11.0.6/24" }, `Address6 "10.11.0.6/24": not an IPv6`},
		{"v4 Gateway6", func(a *apitypes.CNIAttachment) { a.Gateway6 = "10.11.0.1" }, `Gateway6 "10.11.0.1": not an IPv6`},
		{"v6 Gateway", func(a *apitypes.CNIAttachment) { a.Gateway = "fd00:11::1" }, `Gateway "fd00:11::1": not an IPv4`},
		{"bad Address6", func(a *apitypes.CNIAttachment) { a.Address6 = "fd00:11::5" }, `Address6 "fd00:11::5"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := testAttachmentDual
			tt.edit(&a)
			d := startDaemon(t, map[string]reply{"POST /tether/v1/cni/attachments": {http.StatusCreated, a}})
			var out bytes.Buffer
			e := cniError(t, testPlugin(t, &out).Add(cmdArgs(conf(t, "1.1.0", d.socket, nil), "")))
			if e.Code != ErrDaemon || !strings.Contains(e.Msg, tt.msg) {
				t.Errorf("error %d %q, want %d with %q", e.Code, e.Msg, ErrDaemon, tt.msg)
			}
			if out.Len() != 0 {
				t.Errorf("printed %s", out.String())
			}
		})
	}
}

// TestAddInternalNetwork: no gateway, no default route, no DNS, no host
// end named: the result has only what there is.
func TestAddInternalNetwork(t *testing.T) {
	a := testAttachment
	a.Gateway, a.DefaultRoute, a.DNS, a.Search, a.HostIfName, a.MTU = "", false, nil, nil, "", 0
	d := startDaemon(t, map[string]reply{"POST /tether/v1/cni/attachments": {http.StatusCreated, a}})
	var out bytes.Buffer
	if err := testPlugin(t, &out).Add(cmdArgs(conf(t, "1.1.0", d.socket, nil), "")); err != nil {
		t.Fatalf("Add: %v", err)
	}
	want := map[string]any{
		"cniVersion": "1.1.0",
		"interfaces": []any{map[string]any{"name": "eth0", "mac": "02:42:0a:0b:00:05", "sandbox": "/run/netns/test-ctr1"}},
		"ips":        []any{map[string]any{"interface": 0.0, "address": "10.11.0.5/24"}},
	}
	if got := decodeJSON(t, out.Bytes()); !reflect.DeepEqual(got, want) {
		t.Errorf("result\n got %v\nwant %v", got, want)
	}
}

// TestAddRequest checks what ADD asks of the daemon for each form of the
// capability arguments and CNI_ARGS.
func TestAddRequest(t *testing.T) {
	base := apitypes.CNIAttachRequest{ContainerID: "ctr1", IfName: "eth0", NetNS: "/run/netns/test-ctr1", Network: "front"}
	with := func(f func(*apitypes.CNIAttachRequest)) apitypes.CNIAttachRequest {
		r := base
		f(&r)
		return r
	}
	tests := []struct {
		name    string
		extra   map[string]any
		cniArgs string
		want    apitypes.CNIAttachRequest
	}{
		{name: "nothing", want: base},
		{name: "every capability", extra: map[string]any{"runtimeConfig": map[string]any{
			"portMappings": []any{
				map[string]any{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"},
				map[string]any{"hostPort": 5353, "containerPort": 53, "protocol": "UDP", "hostIP": "127.0.0.1"},
				map[string]any{"hostPort": 9000, "containerPort": 9000},
			},
			"ips":     []any{"10.11.0.9/24"},
			"mac":     "02:AA:BB:CC:DD:EE",
			"aliases": []any{"db", "primary"},
		}}, want: with(func(r *apitypes.CNIAttachRequest) {
			r.IP, r.MAC, r.Aliases = "10.11.0.9", "02:aa:bb:cc:dd:ee", []string{"db", "primary"}
			r.Ports = []apitypes.CNIPort{
				{HostPort: 8080, ContainerPort: 80, Protocol: "tcp"},
				{HostIP: "127.0.0.1", HostPort: 5353, ContainerPort: 53, Protocol: "udp"},
				{HostPort: 9000, ContainerPort: 9000, Protocol: "tcp"},
			}
		})},
		{name: "ip without prefix", extra: map[string]any{"runtimeConfig": map[string]any{"ips": []any{"10.11.0.9"}}},
			want: with(func(r *apitypes.CNIAttachRequest) { r.IP = "10.11.0.9" })},
		{name: "ipv6", extra: map[string]any{"runtimeConfig": map[string]any{"ips": []any{"fd00:11::9/64"}}},
			want: with(func(r *apitypes.CNIAttachRequest) { r.IP6 = "fd00:11::9" })},
		{name: "ipv6 without prefix", extra: map[string]any{"runtimeConfig": map[string]any{"ips": []any{"FD00:11:0::9"}}},
			want: with(func(r *apitypes.CNIAttachRequest) { r.IP6 = "fd00:11::9" })},
		{name: "both families", extra: map[string]any{"runtimeConfig": map[string]any{"ips": []any{"fd00:11::9/64", "10.11.0.9/24"}}},
			want: with(func(r *apitypes.CNIAttachRequest) { r.IP, r.IP6 = "10.11.0.9", "fd00:11::9" })},
		{name: "ipv4-mapped is ipv4", extra: map[string]any{"runtimeConfig": map[string]any{"ips": []any{"::ffff:10.11.0.9", "fd00:11::9"}}},
			want: with(func(r *apitypes.CNIAttachRequest) { r.IP, r.IP6 = "10.11.0.9", "fd00:11::9" })},
		{name: "both families in args.cni", extra: map[string]any{"args": map[string]any{"cni": map[string]any{"ips": []any{"10.11.0.7", "fd00:11::7"}}}},
			want: with(func(r *apitypes.CNIAttachRequest) { r.IP, r.IP6 = "10.11.0.7", "fd00:11::7" })},
		{name: "runtimeConfig ipv6 over args.cni", extra: map[string]any{
			"runtimeConfig": map[string]any{"ips": []any{"fd00:11::8"}},
			"args":          map[string]any{"cni": map[string]any{"ips": []any{"10.11.0.7"}}}},
			want: with(func(r *apitypes.CNIAttachRequest) { r.IP6 = "fd00:11::8" })},
		{name: "podman aliases by network name", extra: map[string]any{"runtimeConfig": map[string]any{
			"aliases": map[string]any{"tether-front": []any{"web", "ctr1"}, "other": []any{"no"}}}},
			want: with(func(r *apitypes.CNIAttachRequest) { r.Aliases = []string{"web", "ctr1"} })},
		{name: "podman aliases for another network only", extra: map[string]any{"runtimeConfig": map[string]any{
			"aliases": map[string]any{"other": []any{"no"}}}}, want: base},
		{name: "args.cni", extra: map[string]any{"args": map[string]any{"cni": map[string]any{
			"ips": []any{"10.11.0.7"}, "aliases": []any{"a1"}, "labels": []any{map[string]any{"key": "app"}}}}},
			want: with(func(r *apitypes.CNIAttachRequest) { r.IP, r.Aliases = "10.11.0.7", []string{"a1"} })},
		{name: "runtimeConfig over args.cni", extra: map[string]any{
			"runtimeConfig": map[string]any{"ips": []any{"10.11.0.8"}},
			"args":          map[string]any{"cni": map[string]any{"ips": []any{"10.11.0.7"}}}},
			want: with(func(r *apitypes.CNIAttachRequest) { r.IP = "10.11.0.8" })},
		{name: "kubernetes args", cniArgs: "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;K8S_POD_INFRA_CONTAINER_ID=ctr1",
			want: with(func(r *apitypes.CNIAttachRequest) { r.Name = "web-0" })},
		{name: "podman args", cniArgs: "IgnoreUnknown=1;K8S_POD_NAME=ctr",
			want: with(func(r *apitypes.CNIAttachRequest) { r.Name = "ctr" })},
		{name: "only the pod name", cniArgs: "K8S_POD_NAME=web-0",
			want: with(func(r *apitypes.CNIAttachRequest) { r.Name = "web-0" })},
		{name: "empty ipam", extra: map[string]any{"ipam": map[string]any{}}, want: base},
		{name: "bare socket path", extra: map[string]any{"socket": "BARE"}, want: base},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := startDaemon(t, addRoutes())
			if tt.extra["socket"] == "BARE" {
				tt.extra["socket"] = d.socket
			}
			var out bytes.Buffer
			if err := testPlugin(t, &out).Add(cmdArgs(conf(t, "1.1.0", d.socket, tt.extra), tt.cniArgs)); err != nil {
				t.Fatalf("Add: %v", err)
			}
			r := d.only(t)
			if r.Method != http.MethodPost || r.Path != "/tether/v1/cni/attachments" {
				t.Errorf("request %s %s", r.Method, r.Path)
			}
			var got apitypes.CNIAttachRequest
			if err := json.Unmarshal(r.Body, &got); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("request\n got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

// TestAddBadConfig: a bad configuration is a CNI error with the spec's
// code naming the field, and the daemon gets no request.
func TestAddBadConfig(t *testing.T) {
	rc := func(k string, v any) map[string]any { return map[string]any{"runtimeConfig": map[string]any{k: v}} }
	pm := func(m map[string]any) map[string]any { return rc("portMappings", []any{m}) }
	tests := []struct {
		name    string
		extra   map[string]any
		cniArgs string
		code    uint
		msg     []string // each in the message
	}{
		{name: "no network", extra: map[string]any{"network": nil}, code: 7, msg: []string{`"network"`, "required"}},
		{name: "empty network", extra: map[string]any{"network": " "}, code: 7, msg: []string{`"network"`}},
		{name: "ipam", extra: map[string]any{"ipam": map[string]any{"type": "host-local"}}, code: 2, msg: []string{`"ipam"`, "host-local"}},
		{name: "ipam not an object", extra: map[string]any{"ipam": "host-local"}, code: 2, msg: []string{`"ipam"`, "host-local"}},
		{name: "tcp socket", extra: map[string]any{"socket": "tcp://127.0.0.1:2375"}, code: 7, msg: []string{`"socket"`, "tcp://127.0.0.1:2375"}},
		{name: "relative socket", extra: map[string]any{"socket": "run/tether.sock"}, code: 7, msg: []string{`"socket"`}},
		{name: "not JSON", extra: map[string]any{"runtimeConfig": "x"}, code: 6, msg: []string{"runtimeConfig"}},
		{name: "two ipv4", extra: rc("ips", []any{"10.11.0.9", "10.11.0.10"}), code: 7,
			msg: []string{"runtimeConfig.ips", "10.11.0.9", "10.11.0.10", "one IPv4 address"}},
		{name: "two ipv6", extra: rc("ips", []any{"fd00:11::9/64", "10.11.0.9", "fd00:11::a"}), code: 7,
			msg: []string{"runtimeConfig.ips", "fd00:11::9", "fd00:11::a", "one IPv6 address"}},
		{name: "two ipv4, one mapped", extra: rc("ips", []any{"10.11.0.9", "::ffff:10.11.0.10"}), code: 7,
			msg: []string{"runtimeConfig.ips", "::ffff:10.11.0.10", "one IPv4 address"}},
		{name: "two ipv6 in args", extra: map[string]any{"args": map[string]any{"cni": map[string]any{"ips": []any{"fd00::1", "fd00::2"}}}},
			code: 7, msg: []string{"args.cni.ips", "fd00::2", "one IPv6 address"}},
		{name: "ipv6 with zone", extra: rc("ips", []any{"fe80::5%eth0"}), code: 7, msg: []string{"runtimeConfig.ips", "fe80::5%eth0", "zone"}},
		{name: "bad ipv6", extra: rc("ips", []any{"fd00::g/64"}), code: 7, msg: []string{"runtimeConfig.ips", "fd00::g/64"}},
		{name: "bad ip", extra: rc("ips", []any{"10.11.0.300/24"}), code: 7, msg: []string{"runtimeConfig.ips", "10.11.0.300/24"}},
		{name: "bad args ip", extra: map[string]any{"args": map[string]any{"cni": map[string]any{"ips": []any{"x"}}}}, code: 7, msg: []string{"args.cni.ips", `"x"`}},
		{name: "hostPort 0", extra: pm(map[string]any{"hostPort": 0, "containerPort": 80}), code: 7, msg: []string{"portMappings[0]", "hostPort 0"}},
		{name: "hostPort too big", extra: pm(map[string]any{"hostPort": 70000, "containerPort": 80}), code: 7, msg: []string{"hostPort 70000"}},
		{name: "containerPort negative", extra: pm(map[string]any{"hostPort": 80, "containerPort": -1}), code: 7, msg: []string{"containerPort -1"}},
		{name: "sctp", extra: pm(map[string]any{"hostPort": 80, "containerPort": 80, "protocol": "sctp"}), code: 7, msg: []string{`protocol "sctp"`}},
		{name: "bad hostIP", extra: pm(map[string]any{"hostPort": 80, "containerPort": 80, "hostIP": "::1"}), code: 7, msg: []string{`hostIP "::1"`}},
		{name: "port not a number", extra: pm(map[string]any{"hostPort": "80", "containerPort": 80}), code: 6, msg: []string{"hostPort"}},
		{name: "bad mac", extra: rc("mac", "02:42"), code: 7, msg: []string{"runtimeConfig.mac", "02:42"}},
		{name: "multicast mac", extra: rc("mac", "01:00:5e:00:00:01"), code: 7, msg: []string{"runtimeConfig.mac", "multicast"}},
		{name: "aliases not names", extra: rc("aliases", 5), code: 7, msg: []string{"runtimeConfig.aliases"}},
		{name: "empty alias", extra: rc("aliases", []any{""}), code: 7, msg: []string{"runtimeConfig.aliases", "empty"}},
		{name: "unknown CNI_ARGS", cniArgs: "K8S_POD_NAME=a;FOO=bar", code: 4, msg: []string{"CNI_ARGS", "FOO=bar"}},
		{name: "broken CNI_ARGS", cniArgs: "IgnoreUnknown=1;K8S_POD_NAME", code: 4, msg: []string{"CNI_ARGS"}},
		{name: "bad prevResult", extra: map[string]any{"prevResult": map[string]any{"ips": 3}}, code: 6, msg: []string{"prevResult"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := startDaemon(t, addRoutes())
			var out bytes.Buffer
			e := cniError(t, testPlugin(t, &out).Add(cmdArgs(conf(t, "1.1.0", d.socket, tt.extra), tt.cniArgs)))
			if e.Code != tt.code {
				t.Errorf("code %d, want %d (%v)", e.Code, tt.code, e)
			}
			for _, m := range tt.msg {
				if !strings.Contains(e.Error(), m) {
					t.Errorf("message %q does not name %s", e.Error(), m)
				}
			}
			if got := d.requests(); len(got) != 0 {
				t.Errorf("the daemon got %+v", got)
			}
			if out.Len() != 0 {
				t.Errorf("printed %s", out.String())
			}
		})
	}
}

// TestAddPrevResult: after another plugin, the result is prevResult with
// Tether's interfaces, IPs (indexes moved), routes and DNS appended, for
// every version in its own format.
func TestAddPrevResult(t *testing.T) {
	prevIP := func(v string) map[string]any {
		m := map[string]any{"interface": 0, "address": "192.168.7.2/24", "gateway": "192.168.7.1"}
		if v < "1.0.0" {
			m["version"] = "4"
		}
		return m
	}
	for _, v := range Versions.SupportedVersions() {
		t.Run(v, func(t *testing.T) {
			d := startDaemon(t, addRoutes())
			prev := map[string]any{
				"cniVersion": v,
				"interfaces": []any{map[string]any{"name": "net1", "sandbox": "/run/netns/test-ctr1"}},
				"ips":        []any{prevIP(v)},
				"routes":     []any{map[string]any{"dst": "192.168.0.0/16"}},
				"dns":        map[string]any{"nameservers": []any{"192.168.7.1", "127.0.0.11"}},
			}
			var out bytes.Buffer
			err := testPlugin(t, &out).Add(cmdArgs(conf(t, v, d.socket, map[string]any{"prevResult": prev}), ""))
			if err != nil {
				t.Fatalf("Add: %v", err)
			}
			pre1 := v < "1.0.0"
			own := withVersion(map[string]any{"interface": 2.0, "address": "10.11.0.5/24", "gateway": "10.11.0.1"}, pre1)
			p := prevIP(v)
			p["interface"] = 0.0
			want := map[string]any{
				"cniVersion": v,
				"interfaces": []any{
					map[string]any{"name": "net1", "sandbox": "/run/netns/test-ctr1"},
					map[string]any{"name": "vethTth01"},
					withMTU(map[string]any{"name": "eth0", "mac": "02:42:0a:0b:00:05", "sandbox": "/run/netns/test-ctr1"}, !pre1),
				},
				"ips":    []any{p, own},
				"routes": []any{map[string]any{"dst": "192.168.0.0/16"}, map[string]any{"dst": "0.0.0.0/0", "gw": "10.11.0.1"}},
				"dns": map[string]any{"nameservers": []any{"192.168.7.1", "127.0.0.11"},
					"search": []any{"example.test"}},
			}
			if got := decodeJSON(t, out.Bytes()); !reflect.DeepEqual(got, want) {
				t.Errorf("result\n got %v\nwant %v", got, want)
			}
		})
	}
}

// TestAddDaemonErrors: the daemon's refusals keep its message (which names
// the field); a daemon that cannot be reached is "try again later" with a
// message naming the socket.
func TestAddDaemonErrors(t *testing.T) {
	msg := func(s string) any { return map[string]string{"message": s} }
	tests := []struct {
		name   string
		status int
		body   any
		code   uint
		msg    string
	}{
		{"bad field", http.StatusBadRequest, msg(`invalid Ports[0]: hostIP "::1": not an IPv4 address`), 7, `invalid Ports[0]: hostIP "::1"`},
		{"unknown network", http.StatusNotFound, msg(`network "front" not found`), 7, `network "front" not found`},
		{"conflict", http.StatusConflict, msg("address 10.11.0.9 is in use"), 7, "address 10.11.0.9 is in use"},
		{"internal", http.StatusInternalServerError, msg("netlink: operation not permitted"), ErrDaemon, "netlink: operation not permitted"},
		{"unavailable", http.StatusServiceUnavailable, msg("starting"), 11, "starting"},
		{"not JSON", http.StatusBadGateway, nil, ErrDaemon, "502"},
		{"garbage answer", http.StatusCreated, "not an attachment", ErrDaemon, "decode the answer"},
		{"bad address", http.StatusCreated, apitypes.CNIAttachment{IfName: "eth0", Address: "10.11.0.5"}, ErrDaemon, `Address "10.11.0.5"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := startDaemon(t, map[string]reply{"POST /tether/v1/cni/attachments": {tt.status, tt.body}})
			var out bytes.Buffer
			e := cniError(t, testPlugin(t, &out).Add(cmdArgs(conf(t, "1.0.0", d.socket, nil), "")))
			if e.Code != tt.code || !strings.Contains(e.Msg, tt.msg) {
				t.Errorf("error %d %q, want %d with %q", e.Code, e.Msg, tt.code, tt.msg)
			}
			if out.Len() != 0 {
				t.Errorf("printed %s", out.String())
			}
		})
	}
}

// TestDaemonDown: each command with no daemon: ADD, CHECK and GC try again
// later, DEL succeeds, STATUS is "not available"; messages name the socket.
func TestDaemonDown(t *testing.T) {
	sockets := map[string]func(*testing.T) string{"missing socket": missingSocket, "stale socket": staleSocket}
	tests := []struct {
		cmd  string
		run  func(*plugin, []byte) error
		code uint // 0: success
	}{
		{"ADD", func(p *plugin, c []byte) error { return p.Add(cmdArgs(c, "")) }, cnitypes.ErrTryAgainLater},
		{"DEL", func(p *plugin, c []byte) error { return p.Del(cmdArgs(c, "")) }, 0},
		{"CHECK", func(p *plugin, c []byte) error { return p.Check(cmdArgs(c, "")) }, cnitypes.ErrTryAgainLater},
		{"STATUS", func(p *plugin, c []byte) error { return p.Status(cmdArgs(c, "")) }, cnitypes.ErrPluginNotAvailable},
		{"GC", func(p *plugin, c []byte) error { return p.GC(cmdArgs(c, "")) }, cnitypes.ErrTryAgainLater},
	}
	for sname, socket := range sockets {
		for _, tt := range tests {
			t.Run(sname+"/"+tt.cmd, func(t *testing.T) {
				path := socket(t)
				c := conf(t, "1.1.0", path, map[string]any{"prevResult": addedResult(t)})
				var out bytes.Buffer
				err := tt.run(testPlugin(t, &out), c)
				if tt.code == 0 {
					if err != nil {
						t.Fatalf("%s: %v", tt.cmd, err)
					}
					return
				}
				e := cniError(t, err)
				if e.Code != tt.code || !strings.Contains(e.Msg, "unix://"+path) {
					t.Errorf("error %d %q, want %d naming unix://%s", e.Code, e.Msg, tt.code, path)
				}
			})
		}
	}
}

// TestAddTimeout: a daemon that takes longer than the plugin's timeout is
// "try again later".
func TestAddTimeout(t *testing.T) {
	path := hangingDaemon(t)
	var out bytes.Buffer
	p := testPlugin(t, &out)
	p.timeout = 100 * time.Millisecond // the daemon never answers: any timeout expires
	e := cniError(t, p.Add(cmdArgs(conf(t, "1.1.0", path, nil), "")))
	if e.Code != cnitypes.ErrTryAgainLater || !strings.Contains(e.Msg, "did not answer") {
		t.Errorf("error %d %q, want 11 did not answer", e.Code, e.Msg)
	}
}

// addedResult is the 1.1.0 result of ADD for testAttachment, as a runtime
// passes it back in prevResult.
func addedResult(t *testing.T) map[string]any {
	t.Helper()
	return addedResultOf(t, testAttachment)
}

// addedResultOf is the 1.1.0 result of ADD for attachment a.
func addedResultOf(t *testing.T, a apitypes.CNIAttachment) map[string]any {
	t.Helper()
	r, err := attachmentResult(a)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := r.PrintTo(&out); err != nil {
		t.Fatal(err)
	}
	return decodeJSON(t, out.Bytes())
}
