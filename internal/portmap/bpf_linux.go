package portmap

// Short names for the bpf(2) layer in internal/bpf, as the connect
// redirect's code and tests use them.

import "github.com/tether-net/tether/internal/bpf"

type bpfInsn = bpf.Insn

var (
	ne             = bpf.NE
	ins            = bpf.I
	ldMap          = bpf.LdMap
	bpfCall        = bpf.Call
	cstr           = bpf.CStr
	bpfMapNew      = bpf.MapNew
	bpfMapUpdate   = bpf.MapUpdate
	bpfMapLookup   = bpf.MapLookup
	bpfMapDelete   = bpf.MapDelete
	bpfProgNew     = bpf.ProgNew
	bpfLinkNew     = bpf.LinkNew
	bpfProgID      = bpf.ProgID
	bpfQueryCgroup = bpf.QueryCgroup
)

const (
	bpfMapCreate         = bpf.MapCreate
	bpfMapLookupElem     = bpf.MapLookupElem
	bpfMapUpdateElem     = bpf.MapUpdateElem
	bpfMapDeleteElem     = bpf.MapDeleteElem
	bpfProgLoad          = bpf.ProgLoad
	bpfProgAttach        = bpf.ProgAttach
	bpfObjGetInfoByFD    = bpf.ObjGetInfoByFD
	bpfProgQuery         = bpf.ProgQuery
	bpfLinkCreate        = bpf.LinkCreate
	bpfProgTypeSockAddr  = bpf.ProgTypeSockAddr
	bpfMapTypeHash       = bpf.MapTypeHash
	bpfMapTypeLRUHash    = bpf.MapTypeLRUHash
	attachInet4Connect   = bpf.AttachInet4Connect
	attachInet6Connect   = bpf.AttachInet6Connect
	attachInet4Peername  = bpf.AttachInet4Peername
	attachInet6Peername  = bpf.AttachInet6Peername
	bpfPseudoMapFD       = bpf.PseudoMapFD
	fnMapLookupElem      = bpf.FnMapLookupElem
	fnMapUpdateElem      = bpf.FnMapUpdateElem
	fnGetSocketCookieFn  = bpf.FnGetSocketCookieFn
	fnGetNetnsCookie     = bpf.FnGetNetnsCookie
	bpfObjNameLen        = bpf.ObjNameLen
	bpfProgInfoIDOffset  = bpf.ProgInfoIDOffset
	bpfProgInfoNameStart = bpf.ProgInfoNameStart
)
