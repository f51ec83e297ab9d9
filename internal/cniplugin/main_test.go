package cniplugin

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"reflect"
	"testing"

	"github.com/containernetworking/cni/pkg/version"
)

// runPlugin runs the test binary as the plugin (TestMain enters Main when
// CNI_COMMAND is set, as cmd/tether does) with the CNI environment of
// container ctr1's eth0 and stdin; it returns stdout and the exit status.
func runPlugin(t *testing.T, command string, stdin []byte) ([]byte, int) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), "CNI_COMMAND="+command, "CNI_CONTAINERID=ctr1",
		"CNI_NETNS=/run/netns/test-ctr1", "CNI_IFNAME=eth0", "CNI_PATH=/opt/cni/bin", "CNI_ARGS=")
	cmd.Stdin = bytes.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err = cmd.Run()
	if stderr.Len() > 0 {
		t.Logf("stderr: %s", stderr.String())
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return stdout.Bytes(), ee.ExitCode()
	}
	if err != nil {
		t.Fatal(err)
	}
	return stdout.Bytes(), 0
}

// TestMainThroughSkel runs the plugin as a runtime does: environment,
// stdin, stdout and exit status, with skel's own checks (VERSION, versions
// that do not allow a command).
func TestMainThroughSkel(t *testing.T) {
	d := startDaemon(t, addRoutes())
	down := missingSocket(t)
	t.Run("VERSION", func(t *testing.T) {
		out, status := runPlugin(t, "VERSION", []byte(`{"cniVersion":"1.1.0"}`))
		got, err := (&version.PluginDecoder{}).Decode(out)
		if status != 0 || err != nil {
			t.Fatalf("status %d, %v: %s", status, err, out)
		}
		if want := []string{"0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"}; !reflect.DeepEqual(got.SupportedVersions(), want) {
			t.Errorf("supported %v, want %v", got.SupportedVersions(), want)
		}
	})
	t.Run("ADD 0.4.0", func(t *testing.T) {
		out, status := runPlugin(t, "ADD", conf(t, "0.4.0", d.socket, nil))
		if status != 0 {
			t.Fatalf("status %d: %s", status, out)
		}
		if _, err := version.NewResult("0.4.0", out); err != nil {
			t.Errorf("result %s: %v", out, err)
		}
	})
	t.Run("DEL, daemon down", func(t *testing.T) {
		if out, status := runPlugin(t, "DEL", conf(t, "1.1.0", down, nil)); status != 0 || len(out) != 0 {
			t.Errorf("status %d, printed %s", status, out)
		}
	})
	errs := []struct {
		name, cmd string
		stdin     []byte
		code      uint
	}{
		{"ADD without network", "ADD", conf(t, "1.1.0", d.socket, map[string]any{"network": nil}), 7},
		{"ADD 0.2.0", "ADD", conf(t, "0.2.0", d.socket, nil), 1},
		{"GC 1.0.0", "GC", conf(t, "1.0.0", d.socket, nil), 1},
		{"STATUS 0.4.0", "STATUS", conf(t, "0.4.0", d.socket, nil), 1},
		{"STATUS, daemon down", "STATUS", conf(t, "1.1.0", down, nil), 50},
		{"no name", "ADD", conf(t, "1.1.0", d.socket, map[string]any{"name": nil}), 7},
	}
	for _, tt := range errs {
		t.Run(tt.name, func(t *testing.T) {
			out, status := runPlugin(t, tt.cmd, tt.stdin)
			var e struct {
				Code uint   `json:"code"`
				Msg  string `json:"msg"`
			}
			if err := json.Unmarshal(out, &e); err != nil || status != 1 {
				t.Fatalf("status %d, stdout %q (%v): want 1 and a CNI error", status, out, err)
			}
			if e.Code != tt.code || e.Msg == "" {
				t.Errorf("error %+v, want code %d", e, tt.code)
			}
		})
	}
}
