package portmap

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
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

func TestHoldEphemeral(t *testing.T) {
	ns := testNS(t)
	in(t, ns, func() error {
		return os.WriteFile("/proc/sys/net/ipv4/ip_local_port_range", []byte("40000 40003"), 0o644)
	})
	for _, proto := range []string{"tcp", "udp"} {
		seen := map[uint16]bool{}
		for range 4 {
			h := holdIn(t, ns, proto, "127.0.0.1", 0)
			p := h.Addr.Port()
			if p < 40000 || p > 40003 || seen[p] {
				t.Fatalf("ephemeral %s port %d: outside 40000-40003 or taken twice (%v)", proto, p, seen)
			}
			seen[p] = true
		}
		in(t, ns, func() error {
			h, err := Hold(proto, netip.Addr{}, 0)
			if err == nil {
				h.Close()
				return fmt.Errorf("fifth ephemeral %s port in a 4-port range: got %s", proto, h.Addr)
			}
			if !errors.Is(err, ErrPortInUse) {
				return fmt.Errorf("full range: %v does not wrap ErrPortInUse", err)
			}
			return nil
		})
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
	}{{"sctp", "127.0.0.1"}, {"tcp", "::1"}} {
		if h, err := Hold(tt.proto, netip.MustParseAddr(tt.ip), 1); err == nil {
			h.Close()
			t.Errorf("Hold(%s, %s) succeeded", tt.proto, tt.ip)
		}
	}
}
