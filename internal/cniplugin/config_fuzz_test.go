package cniplugin

import (
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/skel"
)

// FuzzConfig feeds any network configuration and CNI_ARGS to what ADD,
// GC and CHECK read before they call the daemon: never a panic; a refusal
// is a CNI error with a code from the spec's table (1-11) or the plugin's
// own (100 and up) and a message; an accepted one gives the daemon a
// request with the container's key and a network.
func FuzzConfig(f *testing.F) {
	for _, seed := range []struct{ conf, args string }{
		{`{"cniVersion":"1.1.0","name":"n","type":"tether","network":"app"}`, ""},
		{`{"cniVersion":"1.0.0","name":"n","type":"tether","network":"app","socket":"/run/t.sock","runtimeConfig":{"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp","hostIP":"127.0.0.1"}],"ips":["10.1.0.5/24"],"mac":"02:00:00:00:00:01","aliases":{"n":["a","b"]}}}`, "IgnoreUnknown=1;K8S_POD_NAME=web"},
		{`{"cniVersion":"0.3.1","name":"n","type":"tether","network":"app","prevResult":{"cniVersion":"0.3.1","interfaces":[{"name":"eth0"}],"ips":[{"version":"4","address":"10.0.0.2/24","interface":0}]}}`, "K8S_POD_NAME=x"},
		{`{"cniVersion":"1.1.0","name":"n","type":"tether","network":"app","cni.dev/valid-attachments":[{"containerID":"c","ifname":"eth0"}],"cni.dev/attachments":[{"containerID":"d","ifname":"eth1"}]}`, ""},
		{`{"cniVersion":"1.1.0","name":"n","type":"tether","network":"app","runtimeConfig":{"ips":["fd00:1::5/64","10.1.0.5"]},"args":{"cni":{"ips":["fe80::1%eth0"]}}}`, ""},
		{`{"network":""}`, "a=b"},
		{`{"network":"x","ipam":{"type":"host-local"}}`, ""},
		{`{"network":"x","runtimeConfig":{"ips":["fd00::1/64"],"portMappings":[{"hostPort":0,"containerPort":70000}]}}`, ""},
	} {
		f.Add(seed.conf, seed.args)
	}
	f.Fuzz(func(t *testing.T, conf, cniArgs string) {
		args := &skel.CmdArgs{ContainerID: "ctr", IfName: "eth0", Netns: "/run/netns/x", Args: cniArgs, StdinData: []byte(conf)}
		nc, e := loadConf(args.StdinData, true)
		if e != nil {
			checkErr(t, e.Code, e.Msg)
			return
		}
		req, e := attachRequest(args, nc)
		if e != nil {
			checkErr(t, e.Code, e.Msg)
			return
		}
		if req.ContainerID != "ctr" || req.IfName != "eth0" || strings.TrimSpace(req.Network) == "" {
			t.Fatalf("accepted %q / %q into request %+v", conf, cniArgs, req)
		}
		_ = validAttachments(nc)
		if _, e := prevResult(nc); e != nil {
			checkErr(t, e.Code, e.Msg)
		}
	})
}

func checkErr(t *testing.T, code uint, msg string) {
	t.Helper()
	if (code < 1 || code > 11) && code < 100 || msg == "" {
		t.Fatalf("CNI error code %d msg %q", code, msg)
	}
}
