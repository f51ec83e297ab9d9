package cmdconn

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

func TestParseSSH(t *testing.T) {
	tests := []struct {
		in      string
		want    SSH
		wantErr string
	}{
		{in: "ssh://host", want: SSH{Host: "host"}},
		{in: "ssh://me@host", want: SSH{User: "me", Host: "host"}},
		{in: "ssh://me@host:2222/run/tether.sock", want: SSH{User: "me", Host: "host", Port: "2222", Socket: "/run/tether.sock"}},
		{in: "ssh://[fd00::1]:22", want: SSH{Host: "fd00::1", Port: "22"}},
		{in: "ssh://host/", want: SSH{Host: "host"}},
		{in: "ssh://me:secret@host", wantErr: "password"},
		{in: "ssh://", wantErr: "no host name"},
		{in: "ssh://me@", wantErr: "no host name"},
		{in: "ssh://-oProxyCommand=x", wantErr: "must not start"},
		{in: "ssh://-x@host", wantErr: "must not start"},
		{in: "ssh://host:99999", wantErr: "port"},
		{in: "ssh://host:0", wantErr: "port"},
		{in: "ssh://host:abc", wantErr: "port"},
		{in: "ssh://host?x=1", wantErr: "query"},
		{in: "ssh://host#frag", wantErr: "fragment"},
		{in: "tcp://host:1", wantErr: "not ssh"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseSSH(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("ParseSSH = %+v, %v; want %+v", got, err, tt.want)
			}
		})
	}
}

func TestSSHArgs(t *testing.T) {
	tests := []struct {
		s    SSH
		want string
	}{
		{SSH{Host: "h"}, "-o ConnectTimeout=30 -T -- h tether system dial-stdio"},
		{SSH{User: "me", Host: "h", Port: "2222"}, "-o ConnectTimeout=30 -T -l me -p 2222 -- h tether system dial-stdio"},
	}
	for _, tt := range tests {
		got := strings.Join(tt.s.Args("tether", "system", "dial-stdio"), " ")
		if got != tt.want {
			t.Errorf("%+v: args %q, want %q", tt.s, got, tt.want)
		}
	}
	args := SSH{Host: "h"}.Args("tether", "--host", "unix:///a b/it's.sock")
	if !slices.Contains(args, `'unix:///a b/it'\''s.sock'`) {
		t.Errorf("socket path not quoted: %q", args)
	}
}

// What ShellQuote returns is read back by sh as exactly the original word.
func TestShellQuoteRoundTrip(t *testing.T) {
	words := []string{"plain", "unix:///run/tether.sock", "", "a b", "it's", `"$HOME"`, "`id`", "a;b|c&d", "new\nline", "*?[x]", "~root", "--host=x"}
	for _, w := range words {
		out, err := exec.Command("sh", "-c", "printf %s "+ShellQuote(w)).Output()
		if err != nil || string(out) != w {
			t.Errorf("word %q quoted as %s reads back as %q (%v)", w, ShellQuote(w), out, err)
		}
	}
	if ShellQuote("unix:///run/tether.sock") != "unix:///run/tether.sock" {
		t.Error("a safe word was quoted")
	}
}
