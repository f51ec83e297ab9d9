package listen

import (
	"bytes"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

func TestOpenUnix(t *testing.T) {
	gid := os.Getgid()
	name := strconv.Itoa(gid)
	if g, err := user.LookupGroupId(name); err == nil {
		name = g.Name
	}
	for _, group := range []string{"", name, strconv.Itoa(gid)} {
		t.Run("group="+group, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "sub", "t.sock")
			ls, err := Open([]string{"unix://" + path}, Options{Group: group})
			if err != nil {
				t.Fatal(err)
			}
			fi, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode().Perm() != 0o660 || fi.Mode().Type() != os.ModeSocket || int(fi.Sys().(*syscall.Stat_t).Gid) != gid {
				t.Errorf("socket mode %v gid %d, want socket 0660 gid %d", fi.Mode(), fi.Sys().(*syscall.Stat_t).Gid, gid)
			}
			if ls[0].Host != "unix://"+path || ls[0].Security != "unix socket" {
				t.Errorf("listener %q %q", ls[0].Host, ls[0].Security)
			}
			CloseAll(ls)
			if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("socket left after close: %v", err)
			}
		})
	}
}

func TestOpenUnixErrors(t *testing.T) {
	dir := t.TempDir()
	live := filepath.Join(dir, "live.sock")
	l, err := net.Listen("unix", live)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	tests := []struct {
		hosts []string
		group string
		want  string
	}{
		{[]string{"unix://" + live}, "", `hosts: unix://` + live + `: another daemon is serving "` + live + `"`},
		{[]string{"unix://" + filepath.Join(dir, "g.sock")}, "no-such-group-tether", `group: no group "no-such-group-tether"`},
		{[]string{"tcp://h:x"}, "", `hosts: "tcp://h:x": port "x"`},
	}
	for _, tt := range tests {
		ls, err := Open(tt.hosts, Options{Group: tt.group})
		if err == nil || !strings.Contains(err.Error(), tt.want) || ls != nil {
			t.Errorf("Open(%q): %d listeners, %v; want error %q", tt.hosts, len(ls), err, tt.want)
		}
	}
}

// A socket file whose daemon died is replaced.
func TestOpenUnixStale(t *testing.T) {
	path := filepath.Join(t.TempDir(), "t.sock")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	l.SetUnlinkOnClose(false)
	l.Close()
	ls, err := Open([]string{"unix://" + path}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	CloseAll(ls)
}

// Open closes what it opened when a later entry fails.
func TestOpenRollsBack(t *testing.T) {
	path := filepath.Join(t.TempDir(), "first.sock")
	_, err := Open([]string{"unix://" + path, "fd://"}, Options{})
	if err == nil {
		t.Fatal("fd:// without activation opened")
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("first socket left behind: %v", err)
	}
}

// fakeTCP stands for a TCP listener in secure's tests.
type fakeTCP struct{ closed bool }

func (f *fakeTCP) Accept() (net.Conn, error) { return nil, errors.New("fake") }
func (f *fakeTCP) Close() error              { f.closed = true; return nil }
func (f *fakeTCP) Addr() net.Addr            { return &net.TCPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 2376} }

func TestSecure(t *testing.T) {
	mutual := &tls.Config{ClientAuth: tls.RequireAndVerifyClientCert}
	tests := []struct {
		name     string
		o        Options
		security string // "" = refused
		warning  string
	}{
		{"mutual TLS", Options{TLS: mutual}, "mutual TLS", ""},
		{"TLS without client certificates", Options{TLS: &tls.Config{}}, "TLS", "without tlsverify"},
		{"plain, tls false", Options{PlainTCP: true}, "plain TCP", "WITHOUT TLS (tls: false): anyone who can reach this address gets root"},
		{"plain, not asked for", Options{}, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var logged bytes.Buffer
			tt.o.Log = slog.New(slog.NewTextHandler(&logged, nil))
			f := &fakeTCP{}
			l, err := tt.o.secure(f, "tcp://192.0.2.1:2376")
			if tt.security == "" {
				if err == nil || !strings.Contains(err.Error(), "needs TLS: give tlscert and tlskey") ||
					!strings.Contains(err.Error(), "--tls=false") || !f.closed {
					t.Errorf("error %v, closed %v", err, f.closed)
				}
				return
			}
			if err != nil || l.Security != tt.security {
				t.Fatalf("listener %+v, %v", l, err)
			}
			if _, isTLS := l.Listener.(*fakeTCP); isTLS == (tt.o.TLS != nil) {
				t.Errorf("TLS wrapping %v, want %v", !isTLS, tt.o.TLS != nil)
			}
			if got := logged.String(); (tt.warning == "") != (got == "") || !strings.Contains(got, tt.warning) ||
				tt.warning != "" && !strings.Contains(got, "level=WARN") {
				t.Errorf("log %q, want a warning containing %q", got, tt.warning)
			}
		})
	}
}

// An activated unix socket is served as it is and left in place on close.
func TestFromFileUnix(t *testing.T) {
	path := filepath.Join(t.TempDir(), "activated.sock")
	ul, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ul.SetUnlinkOnClose(false)
	f, err := ul.File()
	ul.Close()
	if err != nil {
		t.Fatal(err)
	}
	l, err := Options{}.fromFile(&socketFile{fd: 3, f: f})
	if err != nil {
		t.Fatal(err)
	}
	if l.Host != "fd://3" || l.Security != "unix socket" {
		t.Errorf("listener %q %q", l.Host, l.Security)
	}
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	l.Close()
	if _, err := os.Stat(path); err != nil {
		t.Errorf("activated socket removed on close: %v", err)
	}
}

func TestFromFileNotASocket(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	_, err = Options{}.fromFile(&socketFile{fd: 5, f: r})
	if err == nil || !strings.Contains(err.Error(), "fd 5 is not a listening stream socket") {
		t.Errorf("pipe as socket: %v", err)
	}
}
