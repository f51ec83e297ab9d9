package portmap

import (
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"
)

const benchCopy = 256 << 20

// sinkTCP reads each connection to EOF, then closes it (the sender's
// "all delivered" signal).
func sinkTCP(b *testing.B, ns, addr string) {
	var ln net.Listener
	in(b, ns, func() (err error) { ln, err = net.Listen("tcp4", addr); return err })
	b.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				buf := make([]byte, 1<<20)
				for {
					if _, err := c.Read(buf); err != nil {
						break
					}
				}
				c.Close()
			}()
		}
	}()
}

// sendAll copies benchCopy bytes to addr from inside ns and returns MB/s.
func sendAll(b *testing.B, ns, addr string) float64 {
	c := dialIn(b, ns, "tcp4", addr).(*net.TCPConn)
	buf := make([]byte, 1<<20)
	start := time.Now()
	for sent := 0; sent < benchCopy; sent += len(buf) {
		if _, err := c.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
	c.CloseWrite()
	if _, err := c.Read(buf[:1]); !errors.Is(err, io.EOF) {
		b.Fatalf("waiting for the sink to finish: %v", err)
	}
	return benchCopy / 1e6 / time.Since(start).Seconds()
}

// BenchmarkProxyTCPThroughput copies 256 MiB per op to a sink directly and
// through the userland proxy, on loopback inside a test namespace.
func BenchmarkProxyTCPThroughput(b *testing.B) {
	ns := testNS(b)
	sinkTCP(b, ns, "127.0.0.2:9000")
	h := holdIn(b, ns, "tcp", "127.0.0.1", 8080)
	if err := h.Proxy(netip.MustParseAddrPort("127.0.0.2:9000")); err != nil {
		b.Fatal(err)
	}
	var direct, proxied float64
	for b.Loop() {
		direct += sendAll(b, ns, "127.0.0.2:9000")
		proxied += sendAll(b, ns, "127.0.0.1:8080")
	}
	b.ReportMetric(direct/float64(b.N), "direct-MB/s")
	b.ReportMetric(proxied/float64(b.N), "proxy-MB/s")
	b.ReportMetric(proxied/direct, "proxy/direct")
}

// BenchmarkProxyConnRate opens a connection, exchanges one byte and closes
// it, per op, directly to an echo server and through the proxy.
func BenchmarkProxyConnRate(b *testing.B) {
	ns := testNS(b)
	in(b, ns, func() error { // many short connections: allow TIME_WAIT reuse
		return os.WriteFile("/proc/sys/net/ipv4/tcp_tw_reuse", []byte("1"), 0o644)
	})
	echoTCP(b, ns, "127.0.0.2:9000")
	h := holdIn(b, ns, "tcp", "127.0.0.1", 8080)
	if err := h.Proxy(netip.MustParseAddrPort("127.0.0.2:9000")); err != nil {
		b.Fatal(err)
	}
	for _, bc := range []struct{ name, addr string }{{"direct", "127.0.0.2:9000"}, {"proxy", "127.0.0.1:8080"}} {
		b.Run(bc.name, func(b *testing.B) {
			in(b, ns, func() error { // the whole loop on the namespace's thread
				buf := []byte{1}
				for range b.N {
					c, err := net.Dial("tcp4", bc.addr)
					if err != nil {
						return err
					}
					_, err = c.Write(buf)
					if err == nil {
						_, err = io.ReadFull(c, buf)
					}
					c.Close()
					if err != nil {
						return err
					}
				}
				return nil
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "conns/s")
		})
	}
}
