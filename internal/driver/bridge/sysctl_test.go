package bridge

import (
	"os"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	tns "github.com/tether-net/tether/internal/netns"
	"github.com/tether-net/tether/internal/testutil"
)

// TestIPv6SysctlsAt writes a link's sysctls relative to a held
// /proc/sys/net/ipv6/conf of a namespace the test creates, reads them back
// by path, and checks that the directory knows which threads are in its
// namespace (only those may use it).
func TestIPv6SysctlsAt(t *testing.T) {
	testutil.RequireRoot(t)
	path := "/run/netns/" + testutil.NetNS(t, "t19d-sc")
	var c *confDir
	err := tns.Do(path, func() error {
		if err := netlink.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "dm0"}}); err != nil {
			return err
		}
		var err error
		c, err = openConfDir()
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(c.fd) })
	if c.here() {
		t.Error("here() on a thread of the test's own namespace: want false")
	}
	tests := []struct {
		name, link string
		kv         []string
		want       map[string]string // key -> value read back
		wantErr    string
	}{
		{name: "two keys in order", link: "dm0", kv: []string{"accept_ra", "0", "disable_ipv6", "1"},
			want: map[string]string{"accept_ra": "0", "disable_ipv6": "1"}},
		{name: "back on", link: "dm0", kv: []string{"disable_ipv6", "0"}, want: map[string]string{"disable_ipv6": "0"}},
		{name: "no such link", link: "nope0", kv: []string{"accept_ra", "0"}, wantErr: "/proc/sys/net/ipv6/conf/nope0/accept_ra"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := map[string]string{}
			err := tns.Do(path, func() error {
				if !c.here() {
					t.Error("here() inside the namespace: want true")
				}
				if err := ipv6SysctlsAt(c.fd, tt.link, tt.kv...); err != nil {
					return err
				}
				for k := range tt.want {
					b, err := os.ReadFile("/proc/sys/net/ipv6/conf/" + tt.link + "/" + k)
					if err != nil {
						return err
					}
					got[k] = strings.TrimSpace(string(b))
				}
				return nil
			})
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err %v, want one naming %s", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for k, v := range tt.want {
				if got[k] != v {
					t.Errorf("%s = %q, want %q", k, got[k], v)
				}
			}
		})
	}
}

// TestOwnConfDirOnlyOwnNamespace: the cached directory is only ever the
// process's own namespace's, whichever thread asks first. (A test
// namespace's directory cached by its first caller outlived the namespace,
// and a new namespace that got its inode number wrote into the dead one.)
func TestOwnConfDirOnlyOwnNamespace(t *testing.T) {
	testutil.RequireRoot(t)
	path := "/run/netns/" + testutil.NetNS(t, "t19d-oc")
	ownConf.mu.Lock()
	saved := ownConf.dir
	ownConf.dir = nil
	ownConf.mu.Unlock()
	t.Cleanup(func() {
		ownConf.mu.Lock()
		if ownConf.dir != nil && ownConf.dir != saved {
			unix.Close(ownConf.dir.fd)
		}
		ownConf.dir = saved
		ownConf.mu.Unlock()
	})
	var inside *confDir
	if err := tns.Do(path, func() error { inside = ownConfDir(); return nil }); err != nil {
		t.Fatal(err)
	}
	if inside != nil {
		t.Fatalf("from a thread in another namespace: got a directory (ns %d:%d), want none", inside.dev, inside.ino)
	}
	var self unix.Stat_t
	if err := unix.Stat("/proc/self/ns/net", &self); err != nil {
		t.Fatal(err)
	}
	own := ownConfDir()
	if own == nil || own.dev != self.Dev || own.ino != self.Ino {
		t.Fatalf("from the process's namespace: got %+v, want the directory of ns %d:%d", own, self.Dev, self.Ino)
	}
}
