package portmap

// The proxy dials its backend from the network namespace the port was held
// in: a socket belongs to the namespace of the thread that creates it, and
// a Held made inside netns.Do would otherwise dial from whatever namespace
// the proxy goroutine's thread happens to be in (the process's). The
// daemon holds ports in its own namespace, where this costs nothing: the
// dialer below only exists when the holding thread's namespace differs
// from the process's, and then runs dials on one thread that stays in that
// namespace (internal/netns.Do). Dials there are serialised. Nothing here
// depends on the address family: the network is "tcp" or "udp" and the
// backend's address ("10.0.0.2:80", "[fd00::2]:80") picks AF_INET or
// AF_INET6.

import (
	"fmt"
	"net"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tether-net/tether/internal/netns"
)

const dialTimeout = 10 * time.Second

type dialReq struct {
	network, addr string
	reply         chan dialResult
}

type dialResult struct {
	c   net.Conn
	err error
}

type nsDialer struct {
	reqs chan dialReq
	done chan error
}

// newNSDialerIfForeign returns nil when the calling thread is in the
// process's network namespace, else a dialer bound to the thread's one.
func newNSDialerIfForeign() (*nsDialer, error) {
	var self, thread unix.Stat_t
	if err := unix.Stat("/proc/self/ns/net", &self); err != nil {
		return nil, fmt.Errorf("stat process netns: %w", err)
	}
	if err := unix.Stat("/proc/thread-self/ns/net", &thread); err != nil {
		return nil, fmt.Errorf("stat thread netns: %w", err)
	}
	if self.Dev == thread.Dev && self.Ino == thread.Ino {
		return nil, nil
	}
	f, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		return nil, fmt.Errorf("open thread netns: %w", err)
	}
	d := &nsDialer{reqs: make(chan dialReq), done: make(chan error, 1)}
	path := fmt.Sprintf("/proc/self/fd/%d", f.Fd())
	ready := make(chan struct{})
	go func() {
		d.done <- netns.Do(path, func() error {
			close(ready)
			d.serve()
			return nil
		})
	}()
	select {
	case <-ready:
	case err := <-d.done:
		f.Close()
		return nil, fmt.Errorf("dialer in netns: %w", err)
	}
	f.Close() // netns.Do holds its own reference
	return d, nil
}

func (d *nsDialer) serve() {
	dl := net.Dialer{Timeout: dialTimeout}
	for r := range d.reqs {
		c, err := dl.Dial(r.network, r.addr)
		r.reply <- dialResult{c, err}
	}
}

func (d *nsDialer) dial(network, addr string) (net.Conn, error) {
	r := dialReq{network, addr, make(chan dialResult, 1)}
	d.reqs <- r
	res := <-r.reply
	return res.c, res.err
}

func (d *nsDialer) close() {
	close(d.reqs)
	<-d.done
}
