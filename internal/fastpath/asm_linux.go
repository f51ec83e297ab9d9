package fastpath

import (
	"encoding/binary"

	"github.com/tether-net/tether/internal/bpf"
)

// Opcodes the programs use (include/uapi/linux/bpf.h: class | size/op | source).
const (
	ldxw  = 0x61 // r_dst = *(u32 *)(r_src + off)
	ldxh  = 0x69
	ldxb  = 0x71
	stxw  = 0x63 // *(u32 *)(r_dst + off) = r_src
	stxh  = 0x6b
	stxb  = 0x73
	stw   = 0x62 // *(u32 *)(r_dst + off) = imm
	sth   = 0x6a
	movr  = 0xbf
	movi  = 0xb7
	addi  = 0x07
	addr  = 0x0f
	subi  = 0x17
	andi  = 0x57
	ori   = 0x47
	orr   = 0x4f
	xori  = 0xa7
	lshi  = 0x67
	rshi  = 0x77
	tobe  = 0xdc // BPF_ALU | BPF_END | BPF_TO_BE: imm bits of the host value to big-endian
	jgtr  = 0x2d
	jgti  = 0x25
	ja    = 0x05
	jeqi  = 0x15
	jeqr  = 0x1d
	jner  = 0x5d
	jnei  = 0x55
	call  = 0x85
	exit  = 0x95
	ldimm = 0x18 // two-slot 64-bit immediate
)

// __sk_buff offsets (include/uapi/linux/bpf.h).
const (
	skbLen      = 0
	skbProtocol = 16
	skbIfindex  = 40
	skbData     = 76
	skbDataEnd  = 80
)

// Helpers beyond those internal/bpf names.
const (
	fnPrandom       = 7
	fnSkbStoreBytes = 9
	fnCsumDiff      = 28
	fnSkbLoadBytes  = 26
	fnGetHashRecalc = 34
	fnSkbPullData   = 39
	fnSkbAdjustRoom = 50
	fnRedirectNeigh = 152
	fnCsumLvl       = 135
)

// Return codes.
const (
	tcxNext = -1 // TCX_NEXT: the next program, or the stack (the bridge, the VXLAN socket)
	tcShot  = 2  // TC_ACT_SHOT: drop (only after the frame was changed and cannot go on)
)

// asm is a program under construction with jumps to named labels.
type asm struct {
	p      []bpf.Insn
	jumps  map[int]string // instruction -> label it jumps to
	labels map[string]int
}

func newAsm() *asm { return &asm{jumps: map[int]string{}, labels: map[string]int{}} }

func (a *asm) emit(is ...bpf.Insn) { a.p = append(a.p, is...) }

func (a *asm) i(code, dst, src byte, off int16, imm int32) { a.emit(bpf.I(code, dst, src, off, imm)) }

func (a *asm) jump(code, dst, src byte, imm int32, to string) {
	a.jumps[len(a.p)] = to
	a.i(code, dst, src, 0, imm)
}

func (a *asm) label(name string) { a.labels[name] = len(a.p) }

// ld64 loads a 64-bit immediate into dst.
func (a *asm) ld64(dst byte, v uint64) {
	a.emit(bpf.I(ldimm, dst, 0, 0, int32(uint32(v))), bpf.I(0, 0, 0, 0, int32(uint32(v>>32))))
}

// ret returns imm.
func (a *asm) ret(imm int32) { a.i(movi, 0, 0, 0, imm); a.i(exit, 0, 0, 0, 0) }

func (a *asm) done() []bpf.Insn {
	for at, to := range a.jumps {
		l, ok := a.labels[to]
		if !ok {
			panic("fastpath: jump to undefined label " + to)
		}
		a.p[at].Off = int16(l - at - 1)
	}
	return a.p
}

// lookupMAC copies the 6-byte MAC at src+off into the dests key at
// fp-16 (whose segment and padding are set) and looks it up: r0 is the
// value, and a miss jumps to "pass". It uses r1-r4.
func (a *asm) lookupMAC(dests int, src byte, off int16) {
	a.i(ldxw, 4, src, off, 0)
	a.i(stxw, 10, 4, -12, 0)
	a.i(ldxh, 4, src, off+4, 0)
	a.i(stxh, 10, 4, -8, 0)
	a.emit(bpf.LdMap(1, dests)...)
	a.i(movr, 2, 10, 0, 0)
	a.i(addi, 2, 0, 0, -16)
	a.i(call, 0, 0, 0, bpf.FnMapLookupElem)
	a.jump(jeqi, 0, 0, 0, "pass")
}

// fold folds the one's complement sum in r to 16 bits (tmp is clobbered).
func (a *asm) fold(r, tmp byte) {
	for range 2 {
		a.i(movr, tmp, r, 0, 0)
		a.i(rshi, tmp, 0, 0, 16)
		a.i(andi, r, 0, 0, 0xffff)
		a.i(addr, r, tmp, 0, 0)
	}
}

// be16 is the immediate that, compared with or stored as a 16-bit value
// in the machine's byte order, is v in network byte order.
func be16(v uint16) int32 {
	var b [2]byte
	binary.BigEndian.PutUint16(b[:], v)
	return int32(bpf.NE.Uint16(b[:]))
}

// be32 is be16 for 32 bits.
func be32(v uint32) int32 {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], v)
	return int32(bpf.NE.Uint32(b[:]))
}
