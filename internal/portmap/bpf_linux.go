package portmap

// The few bpf(2) commands the connect redirect (redirect_linux.go) needs,
// made directly: two small programs, two maps and two links need no loader
// library. Attributes are built as byte arrays laid out as union bpf_attr
// (include/uapi/linux/bpf.h) in the machine's byte order; the tail the
// kernel does not read for a command stays zero, as it requires.

import (
	"encoding/binary"
	"fmt"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// bpf(2) commands.
const (
	bpfMapCreate         = 0
	bpfMapLookupElem     = 1
	bpfMapUpdateElem     = 2
	bpfMapDeleteElem     = 3
	bpfProgLoad          = 5
	bpfProgAttach        = 8
	bpfObjGetInfoByFD    = 15
	bpfProgQuery         = 16
	bpfLinkCreate        = 28
	bpfProgTypeSockAddr  = 18 // BPF_PROG_TYPE_CGROUP_SOCK_ADDR
	bpfMapTypeHash       = 1
	bpfMapTypeLRUHash    = 9
	attachInet4Connect   = 10 // BPF_CGROUP_INET4_CONNECT
	attachInet6Connect   = 11 // BPF_CGROUP_INET6_CONNECT
	attachInet4Peername  = 29 // BPF_CGROUP_INET4_GETPEERNAME
	attachInet6Peername  = 30 // BPF_CGROUP_INET6_GETPEERNAME
	bpfPseudoMapFD       = 1
	fnMapLookupElem      = 1
	fnMapUpdateElem      = 2
	fnGetSocketCookieFn  = 46
	fnGetNetnsCookie     = 122
	bpfObjNameLen        = 16
	bpfProgInfoIDOffset  = 4
	bpfProgInfoNameStart = 64
)

var ne = binary.NativeEndian

// bpfInsn is struct bpf_insn.
type bpfInsn struct {
	code byte
	regs byte // dst | src<<4
	off  int16
	imm  int32
}

func ins(code byte, dst, src byte, off int16, imm int32) bpfInsn {
	return bpfInsn{code: code, regs: dst | src<<4, off: off, imm: imm}
}

// ldMap is the two-instruction load of a map's address (ld_imm64 with a
// pseudo map fd) into dst.
func ldMap(dst byte, fd int) []bpfInsn {
	return []bpfInsn{ins(0x18, dst, bpfPseudoMapFD, 0, int32(fd)), {}}
}

func bpfCall(cmd int, attr unsafe.Pointer, size uintptr) (int, error) {
	r, _, errno := unix.Syscall(unix.SYS_BPF, uintptr(cmd), uintptr(attr), size)
	if errno != 0 {
		return int(r), errno
	}
	return int(r), nil
}

func cstr(b []byte) string {
	for i, c := range b {
		if c == 0 {
			return string(b[:i])
		}
	}
	return string(b)
}

// bpfMapNew creates a map; name is at most 15 characters.
func bpfMapNew(typ, keySize, valueSize, maxEntries uint32, name string) (int, error) {
	var a [64]byte
	ne.PutUint32(a[0:], typ)
	ne.PutUint32(a[4:], keySize)
	ne.PutUint32(a[8:], valueSize)
	ne.PutUint32(a[12:], maxEntries)
	copy(a[28:28+bpfObjNameLen-1], name)
	fd, err := bpfCall(bpfMapCreate, unsafe.Pointer(&a[0]), unsafe.Sizeof(a))
	if err != nil {
		return -1, fmt.Errorf("create BPF map %s: %w", name, err)
	}
	return fd, nil
}

// bpfMapUpdate stores key → value (BPF_ANY).
func bpfMapUpdate(fd int, key, value []byte) error {
	var a [32]byte
	ne.PutUint32(a[0:], uint32(fd))
	ne.PutUint64(a[8:], uint64(uintptr(unsafe.Pointer(&key[0]))))
	ne.PutUint64(a[16:], uint64(uintptr(unsafe.Pointer(&value[0]))))
	_, err := bpfCall(bpfMapUpdateElem, unsafe.Pointer(&a[0]), unsafe.Sizeof(a))
	runtime.KeepAlive(key)
	runtime.KeepAlive(value)
	return err
}

// bpfMapLookup reads key's value into value; false when absent.
func bpfMapLookup(fd int, key, value []byte) (bool, error) {
	var a [32]byte
	ne.PutUint32(a[0:], uint32(fd))
	ne.PutUint64(a[8:], uint64(uintptr(unsafe.Pointer(&key[0]))))
	ne.PutUint64(a[16:], uint64(uintptr(unsafe.Pointer(&value[0]))))
	_, err := bpfCall(bpfMapLookupElem, unsafe.Pointer(&a[0]), unsafe.Sizeof(a))
	runtime.KeepAlive(key)
	runtime.KeepAlive(value)
	if err == unix.ENOENT {
		return false, nil
	}
	return err == nil, err
}

// bpfMapDelete removes key; a missing key is not an error.
func bpfMapDelete(fd int, key []byte) error {
	var a [32]byte
	ne.PutUint32(a[0:], uint32(fd))
	ne.PutUint64(a[8:], uint64(uintptr(unsafe.Pointer(&key[0]))))
	_, err := bpfCall(bpfMapDeleteElem, unsafe.Pointer(&a[0]), unsafe.Sizeof(a))
	runtime.KeepAlive(key)
	if err == unix.ENOENT {
		return nil
	}
	return err
}

// bpfProgNew loads a program of type typ for expected attach type
// attach; the verifier's log is in the error when it refuses.
func bpfProgNew(typ, attach uint32, prog []bpfInsn, name string) (int, error) {
	lic := []byte("GPL\x00")
	logBuf := make([]byte, 64<<10)
	var a [128]byte
	ne.PutUint32(a[0:], typ)
	ne.PutUint32(a[4:], uint32(len(prog)))
	ne.PutUint64(a[8:], uint64(uintptr(unsafe.Pointer(&prog[0]))))
	ne.PutUint64(a[16:], uint64(uintptr(unsafe.Pointer(&lic[0]))))
	ne.PutUint32(a[24:], 1)
	ne.PutUint32(a[28:], uint32(len(logBuf)))
	ne.PutUint64(a[32:], uint64(uintptr(unsafe.Pointer(&logBuf[0]))))
	copy(a[48:48+bpfObjNameLen-1], name)
	ne.PutUint32(a[68:], attach)
	fd, err := bpfCall(bpfProgLoad, unsafe.Pointer(&a[0]), unsafe.Sizeof(a))
	runtime.KeepAlive(prog)
	runtime.KeepAlive(lic)
	runtime.KeepAlive(logBuf)
	if err != nil {
		return -1, fmt.Errorf("load BPF program %s: %w: %s", name, err, cstr(logBuf))
	}
	return fd, nil
}

// bpfLinkNew attaches prog to the cgroup open as target with a BPF link
// (BPF_LINK_CREATE): the attachment lasts as long as the link's fd, so it
// ends with the process that holds it. Links on one cgroup always compose.
func bpfLinkNew(prog, target int, attach uint32) (int, error) {
	var a [64]byte
	ne.PutUint32(a[0:], uint32(prog))
	ne.PutUint32(a[4:], uint32(target))
	ne.PutUint32(a[8:], attach)
	return bpfCall(bpfLinkCreate, unsafe.Pointer(&a[0]), unsafe.Sizeof(a))
}

// bpfProgID is the kernel's ID of the program open as fd.
func bpfProgID(fd int) (uint32, string, error) {
	info := make([]byte, 256)
	var a [16]byte
	ne.PutUint32(a[0:], uint32(fd))
	ne.PutUint32(a[4:], uint32(len(info)))
	ne.PutUint64(a[8:], uint64(uintptr(unsafe.Pointer(&info[0]))))
	_, err := bpfCall(bpfObjGetInfoByFD, unsafe.Pointer(&a[0]), unsafe.Sizeof(a))
	runtime.KeepAlive(info)
	if err != nil {
		return 0, "", fmt.Errorf("BPF program info: %w", err)
	}
	return ne.Uint32(info[bpfProgInfoIDOffset:]), cstr(info[bpfProgInfoNameStart : bpfProgInfoNameStart+bpfObjNameLen]), nil
}

// bpfQueryCgroup lists the IDs of the programs attached to the cgroup open
// as target for attach (BPF_PROG_QUERY; links included).
func bpfQueryCgroup(target int, attach uint32) ([]uint32, error) {
	ids := make([]uint32, 1024)
	var a [64]byte
	ne.PutUint32(a[0:], uint32(target))
	ne.PutUint32(a[4:], attach)
	ne.PutUint64(a[16:], uint64(uintptr(unsafe.Pointer(&ids[0]))))
	ne.PutUint32(a[24:], uint32(len(ids)))
	_, err := bpfCall(bpfProgQuery, unsafe.Pointer(&a[0]), unsafe.Sizeof(a))
	runtime.KeepAlive(ids)
	if err != nil {
		return nil, fmt.Errorf("query cgroup programs: %w", err)
	}
	return ids[:ne.Uint32(a[24:])], nil
}
