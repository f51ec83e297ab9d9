package bpf

// Package bpf makes the few bpf(2) commands Tether needs directly: small
// programs written as instructions, hash maps, and links (cgroup and TCX).
// Attributes are built as byte arrays laid out as union bpf_attr
// (include/uapi/linux/bpf.h) in the machine's byte order; the tail the
// kernel does not read for a command stays zero, as it requires. Users:
// the connect redirect (internal/portmap) and the overlay's bridge bypass
// (internal/driver/overlay/fastpath).

import (
	"encoding/binary"
	"fmt"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// bpf(2) commands.
const (
	MapCreate           = 0
	MapLookupElem       = 1
	MapUpdateElem       = 2
	MapDeleteElem       = 3
	ProgLoad            = 5
	ProgAttach          = 8
	ProgGetFDByID       = 13
	ObjGetInfoByFD      = 15
	ProgQuery           = 16
	LinkCreate          = 28
	ProgTypeSchedCls    = 3  // BPF_PROG_TYPE_SCHED_CLS (tc, TCX)
	ProgTypeSockAddr    = 18 // BPF_PROG_TYPE_CGROUP_SOCK_ADDR
	MapTypeHash         = 1
	MapTypeLRUHash      = 9
	AttachInet4Connect  = 10 // BPF_CGROUP_INET4_CONNECT
	AttachInet6Connect  = 11 // BPF_CGROUP_INET6_CONNECT
	AttachInet4Peername = 29 // BPF_CGROUP_INET4_GETPEERNAME
	AttachInet6Peername = 30 // BPF_CGROUP_INET6_GETPEERNAME
	AttachTCXIngress    = 46 // BPF_TCX_INGRESS
	PseudoMapFD         = 1
	FnMapLookupElem     = 1
	FnMapUpdateElem     = 2
	FnRedirect          = 23
	FnGetSocketCookieFn = 46
	FnRedirectPeer      = 155
	FnGetNetnsCookie    = 122
	ObjNameLen          = 16
	ProgInfoIDOffset    = 4
	ProgInfoNameStart   = 64
)

// NE is the machine's byte order, in which bpf(2) attributes are laid out.
var NE = binary.NativeEndian

// Insn is struct bpf_insn.
type Insn struct {
	Code byte
	Regs byte  // dst | src<<4
	Off  int16 // jump offset, or memory offset
	Imm  int32
}

// I is one instruction.
func I(code byte, dst, src byte, off int16, imm int32) Insn {
	return Insn{Code: code, Regs: dst | src<<4, Off: off, Imm: imm}
}

// LdMap is the two-instruction load of a map's address (ld_imm64 with a
// pseudo map fd) into dst.
func LdMap(dst byte, fd int) []Insn {
	return []Insn{I(0x18, dst, PseudoMapFD, 0, int32(fd)), {}}
}

// Call is the bpf(2) system call with cmd and the attributes at attr.
func Call(cmd int, attr unsafe.Pointer, size uintptr) (int, error) {
	r, _, errno := unix.Syscall(unix.SYS_BPF, uintptr(cmd), uintptr(attr), size)
	if errno != 0 {
		return int(r), errno
	}
	return int(r), nil
}

// CStr is the NUL-terminated string at the start of b.
func CStr(b []byte) string {
	for i, c := range b {
		if c == 0 {
			return string(b[:i])
		}
	}
	return string(b)
}

// MapNew creates a map; name is at most 15 characters.
func MapNew(typ, keySize, valueSize, maxEntries uint32, name string) (int, error) {
	return MapNewFlags(typ, keySize, valueSize, maxEntries, 0, name)
}

// MapNoPrealloc is BPF_F_NO_PREALLOC: a hash map's entries are allocated
// as they are added, not all at creation.
const MapNoPrealloc = 1

// MapNewFlags is MapNew with map_flags (MapNoPrealloc).
func MapNewFlags(typ, keySize, valueSize, maxEntries, flags uint32, name string) (int, error) {
	var a [64]byte
	NE.PutUint32(a[0:], typ)
	NE.PutUint32(a[4:], keySize)
	NE.PutUint32(a[8:], valueSize)
	NE.PutUint32(a[12:], maxEntries)
	NE.PutUint32(a[16:], flags)
	copy(a[28:28+ObjNameLen-1], name)
	fd, err := Call(MapCreate, unsafe.Pointer(&a[0]), unsafe.Sizeof(a))
	if err != nil {
		return -1, fmt.Errorf("create BPF map %s: %w", name, err)
	}
	return fd, nil
}

// MapUpdate stores key → value (BPF_ANY).
func MapUpdate(fd int, key, value []byte) error {
	var a [32]byte
	NE.PutUint32(a[0:], uint32(fd))
	NE.PutUint64(a[8:], uint64(uintptr(unsafe.Pointer(&key[0]))))
	NE.PutUint64(a[16:], uint64(uintptr(unsafe.Pointer(&value[0]))))
	_, err := Call(MapUpdateElem, unsafe.Pointer(&a[0]), unsafe.Sizeof(a))
	runtime.KeepAlive(key)
	runtime.KeepAlive(value)
	return err
}

// MapLookup reads key's value into value; false when absent.
func MapLookup(fd int, key, value []byte) (bool, error) {
	var a [32]byte
	NE.PutUint32(a[0:], uint32(fd))
	NE.PutUint64(a[8:], uint64(uintptr(unsafe.Pointer(&key[0]))))
	NE.PutUint64(a[16:], uint64(uintptr(unsafe.Pointer(&value[0]))))
	_, err := Call(MapLookupElem, unsafe.Pointer(&a[0]), unsafe.Sizeof(a))
	runtime.KeepAlive(key)
	runtime.KeepAlive(value)
	if err == unix.ENOENT {
		return false, nil
	}
	return err == nil, err
}

// MapDelete removes key; a missing key is not an error.
func MapDelete(fd int, key []byte) error {
	var a [32]byte
	NE.PutUint32(a[0:], uint32(fd))
	NE.PutUint64(a[8:], uint64(uintptr(unsafe.Pointer(&key[0]))))
	_, err := Call(MapDeleteElem, unsafe.Pointer(&a[0]), unsafe.Sizeof(a))
	runtime.KeepAlive(key)
	if err == unix.ENOENT {
		return nil
	}
	return err
}

// ProgNew loads a program of type typ for expected attach type
// attach; the verifier's log is in the error when it refuses.
func ProgNew(typ, attach uint32, prog []Insn, name string) (int, error) {
	lic := []byte("GPL\x00")
	logBuf := make([]byte, 64<<10)
	var a [128]byte
	NE.PutUint32(a[0:], typ)
	NE.PutUint32(a[4:], uint32(len(prog)))
	NE.PutUint64(a[8:], uint64(uintptr(unsafe.Pointer(&prog[0]))))
	NE.PutUint64(a[16:], uint64(uintptr(unsafe.Pointer(&lic[0]))))
	NE.PutUint32(a[24:], 1)
	NE.PutUint32(a[28:], uint32(len(logBuf)))
	NE.PutUint64(a[32:], uint64(uintptr(unsafe.Pointer(&logBuf[0]))))
	copy(a[48:48+ObjNameLen-1], name)
	NE.PutUint32(a[68:], attach)
	// The verifier gives up with EAGAIN when a signal is pending, and Go's
	// runtime signals its threads often (SIGURG, preemption): try again.
	fd, err := Call(ProgLoad, unsafe.Pointer(&a[0]), unsafe.Sizeof(a))
	for try := 0; err == unix.EAGAIN && try < 20; try++ {
		fd, err = Call(ProgLoad, unsafe.Pointer(&a[0]), unsafe.Sizeof(a))
	}
	runtime.KeepAlive(prog)
	runtime.KeepAlive(lic)
	runtime.KeepAlive(logBuf)
	if err != nil {
		return -1, fmt.Errorf("load BPF program %s: %w: %s", name, err, CStr(logBuf))
	}
	return fd, nil
}

// LinkNew attaches prog with a BPF link (BPF_LINK_CREATE) to target: the
// cgroup open as that fd, or for TCX (AttachTCXIngress) the interface of
// that index in the calling thread's network namespace. The attachment
// lasts as long as the link's fd, so it ends with the process that holds
// it. Links on one cgroup or one interface's TCX hook compose.
func LinkNew(prog, target int, attach uint32) (int, error) {
	var a [64]byte
	NE.PutUint32(a[0:], uint32(prog))
	NE.PutUint32(a[4:], uint32(target))
	NE.PutUint32(a[8:], attach)
	return Call(LinkCreate, unsafe.Pointer(&a[0]), unsafe.Sizeof(a))
}

// ProgID is the kernel's ID of the program open as fd.
func ProgID(fd int) (uint32, string, error) {
	info := make([]byte, 256)
	var a [16]byte
	NE.PutUint32(a[0:], uint32(fd))
	NE.PutUint32(a[4:], uint32(len(info)))
	NE.PutUint64(a[8:], uint64(uintptr(unsafe.Pointer(&info[0]))))
	_, err := Call(ObjGetInfoByFD, unsafe.Pointer(&a[0]), unsafe.Sizeof(a))
	runtime.KeepAlive(info)
	if err != nil {
		return 0, "", fmt.Errorf("BPF program info: %w", err)
	}
	return NE.Uint32(info[ProgInfoIDOffset:]), CStr(info[ProgInfoNameStart : ProgInfoNameStart+ObjNameLen]), nil
}

// QueryTCXIngress lists the IDs of the programs on the TCX ingress hook
// of the interface with index ifindex in the calling thread's namespace.
func QueryTCXIngress(ifindex int) ([]uint32, error) {
	ids, err := query(ifindex, AttachTCXIngress)
	if err != nil {
		return nil, fmt.Errorf("query TCX programs: %w", err)
	}
	return ids, nil
}

// ProgName is the name of the loaded program with this ID.
func ProgName(id uint32) (string, error) {
	var a [16]byte
	NE.PutUint32(a[0:], id)
	fd, err := Call(ProgGetFDByID, unsafe.Pointer(&a[0]), unsafe.Sizeof(a))
	if err != nil {
		return "", fmt.Errorf("BPF program %d: %w", id, err)
	}
	defer unix.Close(fd)
	_, name, err := ProgID(fd)
	return name, err
}

func query(target int, attach uint32) ([]uint32, error) {
	ids := make([]uint32, 1024)
	var a [64]byte
	NE.PutUint32(a[0:], uint32(target))
	NE.PutUint32(a[4:], attach)
	NE.PutUint64(a[16:], uint64(uintptr(unsafe.Pointer(&ids[0]))))
	NE.PutUint32(a[24:], uint32(len(ids)))
	_, err := Call(ProgQuery, unsafe.Pointer(&a[0]), unsafe.Sizeof(a))
	runtime.KeepAlive(ids)
	if err != nil {
		return nil, err
	}
	return ids[:NE.Uint32(a[24:])], nil
}

// QueryCgroup lists the IDs of the programs attached to the cgroup open
// as target for attach (BPF_PROG_QUERY; links included).
func QueryCgroup(target int, attach uint32) ([]uint32, error) {
	ids, err := query(target, attach)
	if err != nil {
		return nil, fmt.Errorf("query cgroup programs: %w", err)
	}
	return ids, nil
}
