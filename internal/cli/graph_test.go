package cli

import (
	"bytes"
	"net/http"
	"strings"
	"testing"
)

func TestNetworkGraph(t *testing.T) {
	var asked []string
	mux := http.NewServeMux()
	mux.HandleFunc("GET /tether/v1/graph", func(w http.ResponseWriter, r *http.Request) {
		f := r.URL.Query().Get("format")
		asked = append(asked, f)
		if f == "json" {
			w.WriteHeader(http.StatusBadRequest)
			w.Write([]byte(`{"message":"invalid format \"json\": must be dot or svg"}`))
			return
		}
		w.Write([]byte("picture as " + f + "\n"))
	})
	sock := unixServer(t, mux)
	tests := []struct {
		args    []string
		out     string
		err     string
		reached bool
	}{
		{[]string{"network", "graph"}, "picture as dot\n", "", true},
		{[]string{"network", "graph", "--format", "svg"}, "picture as svg\n", "", true},
		// the daemon's refusal is shown as Docker shows errors
		{[]string{"network", "graph", "--format", "json"}, "", `Error response from daemon: invalid format "json"`, true},
		{[]string{"network", "graph", "--format", "png"}, "", `invalid --format "png": must be dot, svg or json`, false},
		{[]string{"network", "graph", "extra"}, "", `unknown command "extra"`, false},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			asked = nil
			root, done := NewRoot("test")
			var out bytes.Buffer
			root.SetOut(&out)
			root.SetArgs(append([]string{"-H", "unix://" + sock}, tt.args...))
			err := root.Execute()
			done()
			if tt.err == "" && err != nil || tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)) {
				t.Errorf("error %v, want %q", err, tt.err)
			}
			if out.String() != tt.out && tt.err == "" {
				t.Errorf("output %q, want %q", out.String(), tt.out)
			}
			if (len(asked) > 0) != tt.reached {
				t.Errorf("daemon asked %v, want reached=%v", asked, tt.reached)
			}
		})
	}
}
