package portmap

// Finding who holds a port is what `ss -lptn sport = :P` does: the
// namespace's socket tables (/proc/thread-self/net/{tcp,tcp6,udp,udp6},
// the calling thread's network namespace) give the socket's inode for
// the local address, and the process whose /proc/PID/fd has a link to
// "socket:[INODE]" is the holder. Best effort: a process in another PID
// namespace, or one we may not inspect, is simply not named.

import (
	"bufio"
	"encoding/binary"
	"encoding/hex"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

type owner struct {
	pid  int
	comm string
}

const tcpListen = "0A"

// findOwner returns the process holding a socket that conflicts with ap.
func findOwner(proto string, ap netip.AddrPort) (owner, bool) {
	inode, ok := findInode(proto, ap)
	if !ok {
		return owner{}, false
	}
	return findProcess(inode)
}

// findInode scans the v4 and v6 tables for a socket on ap's port whose
// address can conflict with ap's (see overlaps); for TCP a listener wins
// over other states.
func findInode(proto string, ap netip.AddrPort) (string, bool) {
	best, bestListen := "", false
	for _, table := range []string{proto, proto + "6"} {
		for _, e := range readSockTable("/proc/thread-self/net/" + table) {
			if e.local.Port() != ap.Port() || !overlaps(e.local.Addr(), ap.Addr()) || e.inode == "0" {
				continue
			}
			listen := e.state == tcpListen
			if best == "" || (listen && !bestListen) {
				best, bestListen = e.inode, listen
			}
		}
	}
	return best, best != ""
}

// overlaps reports whether a socket bound to sock can be what refused a
// bind to want: the same family (an IPv4-mapped entry counts as IPv4) and
// equal addresses or either one unspecified. Across families only a
// [::] socket can hold an IPv4 port (a dual-stack one: /proc does not show
// IPV6_V6ONLY); our IPv6 holds are V6ONLY, so no IPv4 socket blocks them.
func overlaps(sock, want netip.Addr) bool {
	sock, want = sock.Unmap(), want.Unmap()
	if sock.Is4() != want.Is4() {
		return want.Is4() && sock == netip.IPv6Unspecified()
	}
	return sock == want || sock.IsUnspecified() || want.IsUnspecified()
}

type sockEntry struct {
	local netip.AddrPort
	state string
	inode string
}

// readSockTable parses /proc/net/{tcp,udp}[6]: "sl local rem st ... uid
// timeout inode", addresses as hex of the kernel's in-memory words.
func readSockTable(path string) []sockEntry {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []sockEntry
	sc := bufio.NewScanner(f)
	sc.Scan() // header
	for sc.Scan() {
		fl := strings.Fields(sc.Text())
		if len(fl) < 10 {
			continue
		}
		if ap, ok := parseHexAddrPort(fl[1]); ok {
			out = append(out, sockEntry{local: ap, state: fl[3], inode: fl[9]})
		}
	}
	return out
}

// parseHexAddrPort parses "0100007F:1F90": the address is a sequence of
// 32-bit words printed in host byte order, the port plain hex.
func parseHexAddrPort(s string) (netip.AddrPort, bool) {
	a, p, ok := strings.Cut(s, ":")
	if !ok {
		return netip.AddrPort{}, false
	}
	raw, err := hex.DecodeString(a)
	port, perr := strconv.ParseUint(p, 16, 16)
	if err != nil || perr != nil || (len(raw) != 4 && len(raw) != 16) {
		return netip.AddrPort{}, false
	}
	b := make([]byte, len(raw))
	for i := 0; i < len(raw); i += 4 {
		binary.NativeEndian.PutUint32(b[i:], binary.BigEndian.Uint32(raw[i:]))
	}
	addr, _ := netip.AddrFromSlice(b)
	return netip.AddrPortFrom(addr, uint16(port)), true
}

// findProcess finds the process with an fd on socket inode.
func findProcess(inode string) (owner, bool) {
	want := "socket:[" + inode + "]"
	pids, _ := filepath.Glob("/proc/[0-9]*")
	for _, dir := range pids {
		fds, err := os.ReadDir(dir + "/fd")
		if err != nil {
			continue
		}
		for _, fd := range fds {
			if l, err := os.Readlink(dir + "/fd/" + fd.Name()); err == nil && l == want {
				return processOwner(dir)
			}
		}
	}
	return owner{}, false
}

func processOwner(dir string) (owner, bool) {
	pid, err := strconv.Atoi(filepath.Base(dir))
	if err != nil {
		return owner{}, false
	}
	comm, _ := os.ReadFile(dir + "/comm")
	return owner{pid: pid, comm: strings.TrimSpace(string(comm))}, true
}
