package portmap

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"syscall"
	"testing"
)

func TestHoldRefusesSecondHold(t *testing.T) {
	ns := testNS(t)
	for _, proto := range []string{"tcp", "udp"} {
		h := holdIn(t, ns, proto, "127.0.0.1", 8080)
		if want := netip.MustParseAddrPort("127.0.0.1:8080"); h.Addr != want || h.Proto != proto {
			t.Fatalf("held %s/%s, want %s/%s", h.Addr, h.Proto, want, proto)
		}
		want := fmt.Sprintf("port 8080/%s on 127.0.0.1 is already in use by %s (pid %d)", proto, selfComm(t), os.Getpid())
		for _, ip := range []string{"127.0.0.1", "0.0.0.0"} {
			in(t, ns, func() error {
				h2, err := Hold(proto, netip.MustParseAddr(ip), 8080)
				if err == nil {
					h2.Close()
					return fmt.Errorf("second hold of %s:8080/%s succeeded", ip, proto)
				}
				if !errors.Is(err, ErrPortInUse) || !strings.Contains(err.Error(), strings.Replace(want, "127.0.0.1", ip, 1)) {
					return fmt.Errorf("second hold: got %q, want %q wrapping ErrPortInUse", err, want)
				}
				return nil
			})
		}
		if err := h.Close(); err != nil {
			t.Fatal(err)
		}
		if err := h.Close(); err != nil {
			t.Fatalf("second Close: %v", err)
		}
		holdIn(t, ns, proto, "127.0.0.1", 8080) // released: holding again works
	}
}

func TestHoldNamesOtherHolder(t *testing.T) {
	ns := testNS(t)
	for _, proto := range []string{"tcp", "udp"} {
		var other interface{ Close() error }
		in(t, ns, func() (err error) {
			if proto == "tcp" {
				other, err = net.Listen("tcp4", "0.0.0.0:9090")
			} else {
				other, err = net.ListenPacket("udp4", "0.0.0.0:9090")
			}
			return err
		})
		want := fmt.Sprintf("port 9090/%s on 127.0.0.2 is already in use by %s (pid %d)", proto, selfComm(t), os.Getpid())
		in(t, ns, func() error {
			h, err := Hold(proto, netip.MustParseAddr("127.0.0.2"), 9090)
			if err == nil {
				h.Close()
				return fmt.Errorf("hold of a port held by net.Listen succeeded")
			}
			if !strings.Contains(err.Error(), want) {
				return fmt.Errorf("got %q, want %q", err, want)
			}
			return nil
		})
		other.Close()
	}
}

// TestHoldEphemeral fills a 4-port range per protocol and family: IPv4
// and IPv6 holds (V6ONLY) do not take each other's ports, so each family
// gets all four, and the fifth hold of a family finds none.
func TestHoldEphemeral(t *testing.T) {
	ns := testNS(t)
	in(t, ns, func() error {
		return os.WriteFile("/proc/sys/net/ipv4/ip_local_port_range", []byte("40000 40003"), 0o644)
	})
	for _, tt := range []struct {
		ip   string
		full netip.Addr // the fifth hold: the same family's default/unspecified address
	}{{"127.0.0.1", netip.Addr{}}, {"::1", netip.IPv6Unspecified()}} {
		for _, proto := range []string{"tcp", "udp"} {
			seen := map[uint16]bool{}
			for range 4 {
				h := holdIn(t, ns, proto, tt.ip, 0)
				p := h.Addr.Port()
				if p < 40000 || p > 40003 || seen[p] || h.Addr.Addr() != netip.MustParseAddr(tt.ip) {
					t.Fatalf("ephemeral %s port %s: outside 40000-40003 or taken twice (%v)", proto, h.Addr, seen)
				}
				seen[p] = true
			}
			in(t, ns, func() error {
				h, err := Hold(proto, tt.full, 0)
				if err == nil {
					h.Close()
					return fmt.Errorf("fifth ephemeral %s port on %s in a 4-port range: got %s", proto, tt.full, h.Addr)
				}
				if !errors.Is(err, ErrPortInUse) {
					return fmt.Errorf("full range: %v does not wrap ErrPortInUse", err)
				}
				return nil
			})
		}
	}
}

func TestEphemeralRangeOfNetns(t *testing.T) {
	ns := testNS(t)
	in(t, ns, func() error {
		if err := os.WriteFile("/proc/sys/net/ipv4/ip_local_port_range", []byte("41000 41999"), 0o644); err != nil {
			return err
		}
		if lo, hi := EphemeralRange(); lo != 41000 || hi != 41999 {
			return fmt.Errorf("EphemeralRange() = %d-%d, want 41000-41999", lo, hi)
		}
		return nil
	})
}

func TestHoldRejects(t *testing.T) {
	for _, tt := range []struct {
		proto, ip string
	}{{"sctp", "127.0.0.1"}, {"sctp", "::1"}, {"tcp", "fe80::1%lo"}, {"udp", "fe80::1%lo"}} {
		if h, err := Hold(tt.proto, netip.MustParseAddr(tt.ip), 1); err == nil {
			h.Close()
			t.Errorf("Hold(%s, %s) succeeded", tt.proto, tt.ip)
		}
	}
}

// v6Only reads IPV6_V6ONLY of a held socket.
func v6Only(h *Held) (int, error) {
	var rc interface {
		SyscallConn() (syscall.RawConn, error)
	} = h.pc
	if h.ln != nil {
		rc = h.ln
	}
	c, err := rc.SyscallConn()
	if err != nil {
		return 0, err
	}
	var v int
	var serr error
	if err := c.Control(func(fd uintptr) {
		v, serr = syscall.GetsockoptInt(int(fd), syscall.IPPROTO_IPV6, syscall.IPV6_V6ONLY)
	}); err != nil {
		return 0, err
	}
	return v, serr
}

// TestHoldIPv6 holds [::1] and [::]: the socket is V6ONLY, a second hold of
// the same port (same address, or [::] over [::1]) is refused naming the
// holder, and the IPv4 address of the same port stays free.
func TestHoldIPv6(t *testing.T) {
	ns := testNS(t)
	for _, proto := range []string{"tcp", "udp"} {
		for _, ip := range []string{"::1", "::"} {
			h := holdIn(t, ns, proto, ip, 8080)
			if want := netip.AddrPortFrom(netip.MustParseAddr(ip), 8080); h.Addr != want || h.Proto != proto {
				t.Fatalf("held %s/%s, want %s/%s", h.Addr, h.Proto, want, proto)
			}
			if v, err := v6Only(h); err != nil || v != 1 {
				t.Errorf("%s [%s]:8080: IPV6_V6ONLY = %d, %v; want 1", proto, ip, v, err)
			}
			for _, ip2 := range []string{"::1", "::"} {
				in(t, ns, func() error {
					h2, err := Hold(proto, netip.MustParseAddr(ip2), 8080)
					if err == nil {
						h2.Close()
						return fmt.Errorf("hold of [%s]:8080/%s while [%s]:8080 is held succeeded", ip2, proto, ip)
					}
					want := fmt.Sprintf("port 8080/%s on %s is already in use by %s (pid %d)", proto, ip2, selfComm(t), os.Getpid())
					if !errors.Is(err, ErrPortInUse) || !strings.Contains(err.Error(), want) {
						return fmt.Errorf("second hold: got %q, want %q wrapping ErrPortInUse", err, want)
					}
					return nil
				})
			}
			v4 := holdIn(t, ns, proto, "127.0.0.1", 8080)
			if err := errors.Join(v4.Close(), h.Close()); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// TestHoldBothUnspecified: 0.0.0.0:P and [::]:P are two holds, as Docker
// makes them for a dual-stack publish, in either order. Without V6ONLY on
// the [::] socket the kernel would refuse the second one.
func TestHoldBothUnspecified(t *testing.T) {
	ns := testNS(t)
	for _, proto := range []string{"tcp", "udp"} {
		for _, order := range [][2]string{{"0.0.0.0", "::"}, {"::", "0.0.0.0"}} {
			a := holdIn(t, ns, proto, order[0], 8081)
			b := holdIn(t, ns, proto, order[1], 8081)
			if err := errors.Join(a.Close(), b.Close()); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// TestHoldNamesIPv6Holder: the holder of an IPv6 port is named (found in
// the tcp6/udp6 table); which table entries may be the culprit is
// TestOverlaps.
func TestHoldNamesIPv6Holder(t *testing.T) {
	ns := testNS(t)
	for _, proto := range []string{"tcp", "udp"} {
		var other interface{ Close() error }
		in(t, ns, func() (err error) {
			if proto == "tcp" {
				other, err = net.Listen("tcp6", "[::]:9091")
			} else {
				other, err = net.ListenPacket("udp6", "[::]:9091")
			}
			return err
		})
		want := fmt.Sprintf("port 9091/%s on ::1 is already in use by %s (pid %d)", proto, selfComm(t), os.Getpid())
		in(t, ns, func() error {
			h, err := Hold(proto, netip.IPv6Loopback(), 9091)
			if err == nil {
				h.Close()
				return fmt.Errorf("hold of a port held by net.Listen succeeded")
			}
			if !errors.Is(err, ErrPortInUse) || !strings.Contains(err.Error(), want) {
				return fmt.Errorf("got %q, want %q", err, want)
			}
			return nil
		})
		other.Close()
	}
}

// TestHoldUnmapsIPv4Mapped: ::ffff:127.0.0.1 is held as 127.0.0.1.
func TestHoldUnmapsIPv4Mapped(t *testing.T) {
	ns := testNS(t)
	h := holdIn(t, ns, "tcp", "::ffff:127.0.0.1", 8082)
	if want := netip.MustParseAddrPort("127.0.0.1:8082"); h.Addr != want {
		t.Fatalf("held %s, want %s", h.Addr, want)
	}
	dialIn(t, ns, "tcp4", "127.0.0.1:8082")
}
