package listen

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"time"
)

// Options shape the listeners Open makes.
type Options struct {
	Group    string      // group owning unix sockets ("" = the daemon's own)
	TLS      *tls.Config // served on TCP listeners; nil = none (see PlainTCP)
	PlainTCP bool        // TCP without TLS was asked for explicitly (tls: false)
	Log      *slog.Logger
	// Activation holds the sockets systemd passed (TakeActivation); nil:
	// taken from the environment by the first fd:// entry. Open closes
	// those no entry names.
	Activation *Activation
}

// Listener is one open API listener.
type Listener struct {
	net.Listener
	Host     string // the hosts entry it serves; fd:// ones name their descriptor (fd://3)
	Security string // "unix socket", "mutual TLS", "TLS" or "plain TCP"
}

// Open opens one listener per hosts entry (fd:// yields one per activated
// socket) and, on error, closes those it opened. Activated sockets no entry
// names are closed.
func Open(hosts []string, o Options) (ls []*Listener, err error) {
	if o.Log == nil {
		o.Log = slog.Default()
	}
	act := o.Activation
	if act == nil {
		act = &Activation{}
	}
	defer act.closeRest()
	defer func() {
		if err != nil {
			CloseAll(ls)
			ls = nil
		}
	}()
	for _, s := range hosts {
		h, err := ParseHost(s, o.defaultPort())
		if err != nil {
			return ls, fmt.Errorf("hosts: %w", err)
		}
		more, err := o.open(h, act)
		ls = append(ls, more...)
		if err != nil {
			return ls, fmt.Errorf("hosts: %s: %w", h, err)
		}
	}
	return ls, nil
}

// CloseAll closes every listener. A unix socket file the daemon created
// goes with its listener; an activated one stays (it belongs to systemd).
func CloseAll(ls []*Listener) {
	for _, l := range ls {
		l.Close()
	}
}

func (o Options) defaultPort() int {
	if o.TLS != nil {
		return PortTLS
	}
	return PortPlain
}

func (o Options) open(h Host, act *Activation) ([]*Listener, error) {
	switch h.Proto {
	case "unix":
		l, err := listenUnix(h.Addr, o.Group)
		if err != nil {
			return nil, err
		}
		return []*Listener{{Listener: l, Host: h.String(), Security: "unix socket"}}, nil
	case "tcp":
		l, err := net.Listen("tcp", h.Addr)
		if err != nil {
			return nil, err
		}
		sl, err := o.secure(l, h.String())
		if err != nil {
			return nil, err
		}
		return []*Listener{sl}, nil
	default:
		files, err := act.pick(h.Addr)
		if err != nil {
			return nil, err
		}
		return o.fromFiles(files)
	}
}

// secure puts TLS on a TCP listener, or lets it serve plain HTTP when
// tls: false says so (loudly); otherwise it closes it and refuses.
func (o Options) secure(l net.Listener, host string) (*Listener, error) {
	addr := l.Addr().String()
	switch {
	case o.TLS != nil && o.TLS.ClientAuth == tls.RequireAndVerifyClientCert:
		return &Listener{Listener: tls.NewListener(l, o.TLS), Host: host, Security: "mutual TLS"}, nil
	case o.TLS != nil:
		o.Log.Warn("API on TCP with TLS but without tlsverify: any client that can reach this address controls the daemon, which is root on this host; set tlsverify and tlscacert to require client certificates", "addr", addr)
		return &Listener{Listener: tls.NewListener(l, o.TLS), Host: host, Security: "TLS"}, nil
	case o.PlainTCP:
		o.Log.Warn("API on TCP WITHOUT TLS (tls: false): anyone who can reach this address gets root on this host, unauthenticated and unencrypted; use tlsverify with tlscacert, tlscert and tlskey", "addr", addr)
		return &Listener{Listener: l, Host: host, Security: "plain TCP"}, nil
	}
	l.Close()
	return nil, errors.New("serving the API on TCP needs TLS: give tlscert and tlskey (and tlsverify with tlscacert to require client certificates), or --tls=false to serve it unencrypted")
}

// fromFiles makes listeners of activated sockets: unix ones are served as
// they are, TCP ones like tcp:// entries.
func (o Options) fromFiles(files []*socketFile) ([]*Listener, error) {
	var ls []*Listener
	for i, sf := range files {
		l, err := o.fromFile(sf)
		if err != nil {
			for _, rest := range files[i+1:] {
				rest.f.Close()
			}
			CloseAll(ls)
			return nil, err
		}
		ls = append(ls, l)
	}
	return ls, nil
}

func (o Options) fromFile(sf *socketFile) (*Listener, error) {
	host := "fd://" + strconv.Itoa(sf.fd)
	l, err := net.FileListener(sf.f)
	sf.f.Close() // FileListener holds a duplicate
	if err != nil {
		return nil, fmt.Errorf("fd %d is not a listening stream socket: %w", sf.fd, err)
	}
	switch l := l.(type) {
	case *net.UnixListener:
		l.SetUnlinkOnClose(false)
		return &Listener{Listener: l, Host: host, Security: "unix socket"}, nil
	case *net.TCPListener:
		sl, err := o.secure(l, host)
		if err != nil {
			return nil, fmt.Errorf("fd %d: %w", sf.fd, err)
		}
		return sl, nil
	}
	l.Close()
	return nil, fmt.Errorf("fd %d: unsupported socket %s", sf.fd, l.Addr().Network())
}

// listenUnix is bind(2) and listen(2) on a unix socket at path, mode 0660,
// owned by group when one is given. A socket file left by a dead daemon is
// replaced; one that answers belongs to a running daemon and is an error.
// Closing the listener removes the file.
func listenUnix(path, group string) (net.Listener, error) {
	gid, err := lookupGroup(group)
	if err != nil {
		return nil, err
	}
	if err := removeStale(path); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("create directory of %q: %w", path, err)
	}
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, err
	}
	l.SetUnlinkOnClose(true)
	if err := setMode(path, gid); err != nil {
		l.Close()
		return nil, err
	}
	return l, nil
}

// removeStale deletes a socket file no daemon answers on.
func removeStale(path string) error {
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return fmt.Errorf("another daemon is serving %q", path)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove stale socket %q: %w", path, err)
	}
	return nil
}

// setMode is chmod 0660 and chgrp gid (-1 = leave the group).
func setMode(path string, gid int) error {
	if gid >= 0 {
		if err := os.Chown(path, -1, gid); err != nil {
			return fmt.Errorf("group: chgrp %q: %w", path, err)
		}
	}
	if err := os.Chmod(path, 0o660); err != nil {
		return fmt.Errorf("chmod %q: %w", path, err)
	}
	return nil
}

// lookupGroup returns the gid of a group name or number; "" is -1.
func lookupGroup(group string) (int, error) {
	if group == "" {
		return -1, nil
	}
	if g, err := user.LookupGroup(group); err == nil {
		return strconv.Atoi(g.Gid)
	}
	if gid, err := strconv.Atoi(group); err == nil && gid >= 0 {
		return gid, nil
	}
	return 0, fmt.Errorf("group: no group %q in the group database", group)
}
