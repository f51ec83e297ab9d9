package config

import (
	"reflect"
	"testing"
)

// withTLS is a daemon.json fragment with mutual TLS set up.
const withTLS = `"tlsverify": true, "tlscacert": "/t/ca.pem", "tlscert": "/t/cert.pem", "tlskey": "/t/key.pem"`

func TestHostsCanonical(t *testing.T) {
	tests := []struct {
		name  string
		file  string
		flags FlagValues
		want  []string
	}{
		{"unix", `{"hosts": ["unix:///run/a.sock", "unix:///run/../run/b.sock"]}`, nil,
			[]string{"unix:///run/a.sock", "unix:///run/b.sock"}},
		{"bare unix is the default", "", FlagValues{"host": {"unix://"}}, []string{DefaultHost}},
		{"tcp with port", `{"hosts": ["tcp://0.0.0.0:2376"], ` + withTLS + `}`, nil, []string{"tcp://0.0.0.0:2376"}},
		{"tcp without port and TLS", `{"hosts": ["tcp://10.0.0.1"], ` + withTLS + `}`, nil, []string{"tcp://10.0.0.1:2376"}},
		{"tcp without port, tls false", `{"hosts": ["tcp://10.0.0.1"], "tls": false}`, nil, []string{"tcp://10.0.0.1:2375"}},
		{"tcp without host", "", FlagValues{"host": {"tcp://:2380"}, "tls": {"false"}}, []string{"tcp://127.0.0.1:2380"}},
		{"tcp alone", "", FlagValues{"host": {"tcp://"}, "tls": {"false"}}, []string{"tcp://127.0.0.1:2375"}},
		{"tcp IPv6", `{"hosts": ["tcp://[::1]", "tcp://[fd00::1]:3000"], ` + withTLS + `}`, nil,
			[]string{"tcp://[::1]:2376", "tcp://[fd00::1]:3000"}},
		{"no scheme means tcp", `{"hosts": ["0.0.0.0:2376"], ` + withTLS + `}`, nil, []string{"tcp://0.0.0.0:2376"}},
		{"tcp with only a certificate", `{"hosts": ["tcp://0.0.0.0"], "tlscert": "/c", "tlskey": "/k"}`, nil, []string{"tcp://0.0.0.0:2376"}},
		{"fd", "", FlagValues{"host": {"fd://", "fd://4"}}, []string{"fd://", "fd://4"}},
		{"mixed", "", FlagValues{"host": {"unix:///run/t.sock", "tcp://127.0.0.1:2376", "fd://3"}, "tls": {"true"}, "tlscert": {"/c"}, "tlskey": {"/k"}},
			[]string{"unix:///run/t.sock", "tcp://127.0.0.1:2376", "fd://3"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := loadString(tt.file, tt.flags)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(c.Hosts, tt.want) {
				t.Errorf("hosts %q, want %q", c.Hosts, tt.want)
			}
		})
	}
}

func TestHostErrors(t *testing.T) {
	tests := []struct {
		host string
		want string
	}{
		{"http://x:80", `hosts: "http://x:80": unknown scheme "http" (want unix:///path, tcp://host:port or fd://)`},
		{"ssh://me@host", `unknown scheme "ssh"`},
		{"npipe:////./pipe/docker_engine", `unknown scheme "npipe"`},
		{"unix://run/t.sock", `"unix://run/t.sock": the socket path must be absolute`},
		{"tcp://0.0.0.0:x", `"tcp://0.0.0.0:x": port "x" is not a number 1..65535`},
		{"tcp://0.0.0.0:0", `port "0" is not a number 1..65535`},
		{"tcp://0.0.0.0:65536", `port "65536" is not a number 1..65535`},
		{"tcp://0.0.0.0:-1", `port "-1"`},
		{"tcp://host:2376/path", `"tcp://host:2376/path": want tcp://host:port (a socket path is written unix:///path)`},
		{"/run/t.sock", `"tcp:///run/t.sock": want tcp://host:port (a socket path is written unix:///path)`},
		{"tcp://fd00::1", `"tcp://fd00::1": address fd00::1: too many colons`},
		{"fd://x", `"fd://x": want fd:// or fd://N with N a file descriptor number, 3 or more`},
		{"fd://2", `"fd://2": want fd://`},
	}
	for _, tt := range tests {
		t.Run(tt.host, func(t *testing.T) {
			_, err := loadString("", FlagValues{"host": {tt.host}, "tls": {"false"}})
			wantErr(t, err, "hosts: ", tt.want)
		})
	}
}

func TestTLSRules(t *testing.T) {
	tests := []struct {
		name  string
		file  string
		flags FlagValues
		want  []string // error parts; none = loads
	}{
		{"tcp without TLS refused", `{"hosts": ["tcp://0.0.0.0:2375"]}`, nil,
			[]string{"hosts: tcp://0.0.0.0:2375 would serve the API unencrypted", "tlscert", "tlskey", "--tls=false"}},
		{"tcp without TLS refused (flag)", "", FlagValues{"host": {"unix:///run/a.sock", "tcp://0.0.0.0"}},
			[]string{"hosts: tcp://0.0.0.0:2375 would serve", "--tls=false"}},
		{"tls true without certificate", `{"tls": true}`, nil, []string{"tls: true needs tlscert and tlskey"}},
		{"tlsverify without certificate", `{"tlsverify": true, "tlscacert": "/ca"}`, nil, []string{"tlsverify: true needs tlscert and tlskey"}},
		{"tlsverify without CA", "", FlagValues{"tlsverify": {"true"}, "tlscert": {"/c"}, "tlskey": {"/k"}},
			[]string{"tlscacert: not given, but tlsverify is true"}},
		{"certificate without key", `{"tlscert": "/c"}`, nil, []string{"tlskey: not given, but tlscert is"}},
		{"key without certificate", `{"tlskey": "/k"}`, nil, []string{"tlscert: not given, but tlskey is"}},
		{"tls false with tlsverify", `{"tls": false}`, FlagValues{"tlsverify": {"true"}, "tlscacert": {"/ca"}},
			[]string{"tls: false, but tlsverify is true"}},
		{"tls false with a certificate", `{"tls": false, "tlscert": "/c", "tlskey": "/k"}`, nil,
			[]string{"tls: false turns TLS off, but tlscert, tlskey or tlscacert is given"}},
		{"tcp with tls false", `{"hosts": ["tcp://0.0.0.0:2375"], "tls": false}`, nil, nil},
		{"tcp with mutual TLS", `{"hosts": ["tcp://0.0.0.0:2376"], ` + withTLS + `}`, nil, nil},
		{"tcp with server TLS", "", FlagValues{"host": {"tcp://0.0.0.0:2376"}, "tlscert": {"/c"}, "tlskey": {"/k"}}, nil},
		{"fd needs no TLS at load", `{"hosts": ["fd://"]}`, nil, nil},
		{"TLS given with only unix", `{` + withTLS + `}`, nil, nil},
		{"dockerd's empty sample", `{"tls": false, "tlsverify": false, "tlscacert": "", "tlscert": "", "tlskey": "", "hosts": []}`, nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := loadString(tt.file, tt.flags)
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			wantErr(t, err, tt.want...)
		})
	}
}

func TestTLSMode(t *testing.T) {
	tests := []struct {
		file              string
		on, verify, plain bool
		warning           string
	}{
		{`{}`, false, false, false, ""},
		{`{"tls": false}`, false, false, true, ""},
		{`{"tls": true, "tlscert": "/c", "tlskey": "/k"}`, true, false, false, ""},
		{`{"tlscert": "/c", "tlskey": "/k"}`, true, false, false, ""},
		{`{` + withTLS + `}`, true, true, false, ""},
		{`{"tlsverify": false, "tlscert": "/c", "tlskey": "/k"}`, true, false, false, ""},
		{`{"tls": true, "tlscacert": "/ca", "tlscert": "/c", "tlskey": "/k"}`, true, false, false,
			"tlscacert is given but tlsverify is not true: clients are not asked for certificates"},
	}
	for _, tt := range tests {
		c, err := loadString(tt.file, nil)
		if err != nil {
			t.Fatalf("%s: %v", tt.file, err)
		}
		if c.TLSOn() != tt.on || c.VerifyClients() != tt.verify || c.PlainTCP() != tt.plain {
			t.Errorf("%s: TLSOn %v VerifyClients %v PlainTCP %v, want %v %v %v",
				tt.file, c.TLSOn(), c.VerifyClients(), c.PlainTCP(), tt.on, tt.verify, tt.plain)
		}
		var want []string
		if tt.warning != "" {
			want = []string{tt.warning}
		}
		if !reflect.DeepEqual(c.Warnings, want) {
			t.Errorf("%s: warnings %q, want %q", tt.file, c.Warnings, want)
		}
	}
}
