package nlutil

import (
	"encoding/binary"
	"fmt"
	"runtime"
	"sort"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Offload features by name, as `ethtool -k`/`ethtool -K` show and set them
// ("rx-gro-list", "rx-udp-gro-forwarding", "tx-udp_tnl-segmentation", ...),
// through the legacy ioctl: ETHTOOL_GSSET_INFO and ETHTOOL_GSTRINGS give the
// kernel's feature names (string set ETH_SS_FEATURES, one bit each, in
// order), ETHTOOL_GFEATURES reads the bits (available, requested, active,
// never changeable) in blocks of 32, ETHTOOL_SFEATURES sets the requested
// bits of the features it marks valid. Everything works in the calling
// thread's network namespace: run it in the device's (netns.Do).

// Constants of linux/ethtool.h that x/sys/unix does not carry.
const (
	ethSSFeatures = 4  // ETH_SS_FEATURES, the string set of feature names
	ethGStringLen = 32 // ETH_GSTRING_LEN
)

// Feature is one offload feature of a device.
type Feature struct {
	Available bool // the device can change it (ethtool's not "[fixed]")
	Requested bool // what was last asked for
	Active    bool // what is in effect
}

// ethtoolPtr runs an ethtool ioctl whose command structure is at p.
func ethtoolPtr(name string, p unsafe.Pointer) (int, error) {
	if len(name) == 0 || len(name) >= unix.IFNAMSIZ {
		return 0, fmt.Errorf("ethtool on %q: bad interface name", name)
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, fmt.Errorf("ethtool on %q: socket: %w", name, err)
	}
	defer unix.Close(fd)
	ifr := ifreqData{data: p}
	copy(ifr.name[:], name)
	r, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCETHTOOL, uintptr(unsafe.Pointer(&ifr)))
	runtime.KeepAlive(p)
	if errno != 0 {
		return 0, errno
	}
	return int(r), nil
}

// words is a command buffer of 32-bit words in host order, 8-byte aligned.
type words []uint32

func (w words) ptr() unsafe.Pointer { return unsafe.Pointer(&w[0]) }

// featureNames returns the device's feature names, bit i at index i.
func featureNames(name string) ([]string, error) {
	// struct ethtool_sset_info: cmd, reserved, u64 sset_mask, u32 data[1]
	info := make(words, 5)
	info[0] = unix.ETHTOOL_GSSET_INFO
	binary.NativeEndian.PutUint64(unsafe.Slice((*byte)(unsafe.Pointer(&info[2])), 8), 1<<ethSSFeatures)
	if _, err := ethtoolPtr(name, info.ptr()); err != nil {
		return nil, fmt.Errorf("feature count of %q: %w", name, err)
	}
	n := int(info[4])
	// struct ethtool_gstrings: cmd, string_set, len, u8 data[len*32]
	const strLen = ethGStringLen
	gs := make(words, 3+n*strLen/4)
	gs[0], gs[1], gs[2] = unix.ETHTOOL_GSTRINGS, ethSSFeatures, uint32(n)
	if _, err := ethtoolPtr(name, gs.ptr()); err != nil {
		return nil, fmt.Errorf("feature names of %q: %w", name, err)
	}
	raw := unsafe.Slice((*byte)(unsafe.Pointer(&gs[3])), n*strLen)
	names := make([]string, n)
	for i := range names {
		s := raw[i*strLen : (i+1)*strLen]
		if j := strings.IndexByte(string(s), 0); j >= 0 {
			s = s[:j]
		}
		names[i] = string(s)
	}
	return names, nil
}

// featureBlocks reads the device's feature bits: per 32 features,
// available, requested, active, never_changed.
func featureBlocks(name string, n int) (words, error) {
	blocks := (n + 31) / 32
	// struct ethtool_gfeatures: cmd, size, features[size]
	gf := make(words, 2+4*blocks)
	gf[0], gf[1] = unix.ETHTOOL_GFEATURES, uint32(blocks)
	if _, err := ethtoolPtr(name, gf.ptr()); err != nil {
		return nil, fmt.Errorf("features of %q: %w", name, err)
	}
	return gf[2:], nil
}

// Features returns the device's offload features by name, as `ethtool -k
// NAME` lists them.
func Features(name string) (map[string]Feature, error) {
	names, err := featureNames(name)
	if err != nil {
		return nil, err
	}
	b, err := featureBlocks(name, len(names))
	if err != nil {
		return nil, err
	}
	out := make(map[string]Feature, len(names))
	for i, f := range names {
		blk, bit := b[4*(i/32):], uint32(1)<<(i%32)
		out[f] = Feature{Available: blk[0]&bit != 0, Requested: blk[1]&bit != 0, Active: blk[2]&bit != 0}
	}
	return out, nil
}

// SetFeatures asks for the named features on or off, equivalent to
// `ethtool -K NAME feature on|off ...`, and checks what took effect: a
// feature the device does not know or cannot change is an error naming it,
// and so is one the kernel left otherwise (another feature it depends on
// is off, say), as `ethtool -K` reports "Could not change any device
// features" or "Actual changes". Asking for what is already in effect is a
// no-op.
func SetFeatures(name string, want map[string]bool) error {
	names, err := featureNames(name)
	if err != nil {
		return err
	}
	blocks := (len(names) + 31) / 32
	// struct ethtool_sfeatures: cmd, size, features[size] {valid, requested}
	sf := make(words, 2+2*blocks)
	sf[0], sf[1] = unix.ETHTOOL_SFEATURES, uint32(blocks)
	index := make(map[string]int, len(names))
	for i, f := range names {
		index[f] = i
	}
	for f, on := range want {
		i, ok := index[f]
		if !ok {
			return fmt.Errorf("set features of %q: no feature %q", name, f)
		}
		blk, bit := sf[2+2*(i/32):], uint32(1)<<(i%32)
		blk[0] |= bit
		if on {
			blk[1] |= bit
		}
	}
	if _, err := ethtoolPtr(name, sf.ptr()); err != nil {
		return fmt.Errorf("set features %v of %q: %w", sortedKeys(want), name, err)
	}
	have, err := Features(name)
	if err != nil {
		return err
	}
	var off []string
	for f, on := range want {
		if have[f].Active != on {
			off = append(off, fmt.Sprintf("%s (asked %v, in effect %v)", f, on, have[f].Active))
		}
	}
	if len(off) > 0 {
		sort.Strings(off)
		return fmt.Errorf("set features of %q: not in effect: %s", name, strings.Join(off, ", "))
	}
	return nil
}

func sortedKeys(m map[string]bool) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}
