package config

import (
	"strings"
	"testing"
)

func TestMetricsAddr(t *testing.T) {
	for _, tc := range []struct {
		file    string
		flags   FlagValues
		want    string // MetricsAddr after the load
		wantErr string // "" = loads
	}{
		{file: `{}`, want: ""},
		{file: `{"metrics-addr": "127.0.0.1:9323"}`, want: "127.0.0.1:9323"},
		{file: `{"metrics-addr": "[::1]:9323"}`, want: "[::1]:9323"},
		{file: `{"metrics-addr": ":9323"}`, want: ":9323"},
		{file: `{"metrics-addr": "localhost:9323"}`, want: "localhost:9323"},
		{file: `{}`, flags: FlagValues{"metrics-addr": {"127.0.0.2:9100"}}, want: "127.0.0.2:9100"},
		{file: `{"metrics-addr": "127.0.0.1"}`, wantErr: `metrics-addr: "127.0.0.1" is not host:port`},
		{file: `{"metrics-addr": "127.0.0.1:0"}`, wantErr: `metrics-addr: "127.0.0.1:0": port "0"`},
		{file: `{"metrics-addr": "127.0.0.1:http"}`, wantErr: `metrics-addr: "127.0.0.1:http": port "http"`},
		{file: `{"metrics-addr": "127.0.0.1:70000"}`, wantErr: `port "70000" is not a number`},
		{file: `{"metrics-addr": "bad_host!:9323"}`, wantErr: `metrics-addr: "bad_host!:9323": "bad_host!" is neither`},
		{file: `{"metrics-addr": "[fe80::1%eth0]:9323"}`, wantErr: `metrics-addr: "[fe80::1%eth0]:9323": an address with a zone`},
		{file: `{"metrics-addr": 9323}`, wantErr: `metrics-addr`},
		{file: `{}`, flags: FlagValues{"metrics-addr": {"nope"}}, wantErr: `metrics-addr: "nope" is not host:port`},
	} {
		c, err := LoadBytes("daemon.json", []byte(tc.file), tc.flags)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%s %v: err = %v, want one containing %q", tc.file, tc.flags, err, tc.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s %v: %v", tc.file, tc.flags, err)
			continue
		}
		if c.MetricsAddr != tc.want {
			t.Errorf("%s %v: MetricsAddr = %q, want %q", tc.file, tc.flags, c.MetricsAddr, tc.want)
		}
		for _, w := range c.Warnings {
			if strings.Contains(w, "metrics-addr") {
				t.Errorf("%s: warning %q: metrics-addr is a Tether option now", tc.file, w)
			}
		}
	}
}
