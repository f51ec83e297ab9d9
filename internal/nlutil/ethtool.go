package nlutil

import (
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The legacy ethtool ioctl (SIOCETHTOOL) is the only way to change a
// device's offload features without the ethtool program: netlink's
// RTM_SETLINK does not carry them, and vishvananda/netlink has no call for
// them. The ioctl takes a struct ifreq naming the device whose data
// member points at a command structure, here struct ethtool_value.

// ethtoolValue is struct ethtool_value (linux/ethtool.h).
type ethtoolValue struct {
	cmd  uint32
	data uint32
}

// ifreqData is struct ifreq with ifr_data set: the name, then a pointer in
// the union, padded to the union's size (24 bytes on 64-bit, 16 on 32-bit).
type ifreqData struct {
	name [unix.IFNAMSIZ]byte
	data unsafe.Pointer
	_    [24 - unsafe.Sizeof(uintptr(0))]byte
}

// ethtool runs the ethtool command cmd with value data on the device name
// of the calling thread's network namespace and returns the value the
// kernel leaves in data (a get's answer).
func ethtool(name string, cmd, data uint32) (uint32, error) {
	v := ethtoolValue{cmd: cmd, data: data}
	if _, err := ethtoolPtr(name, unsafe.Pointer(&v)); err != nil {
		return 0, err
	}
	return v.data, nil
}

// SetTxChecksum turns the device's transmit checksum offload on or off,
// equivalent to `ethtool -K NAME tx on|off` (ETHTOOL_STXCSUM; the kernel
// drops the features that need it, TSO among them, with it). It works in
// the calling thread's network namespace: run it in the device's (netns.Do).
func SetTxChecksum(name string, on bool) error {
	var data uint32
	if on {
		data = 1
	}
	if _, err := ethtool(name, unix.ETHTOOL_STXCSUM, data); err != nil {
		return fmt.Errorf("set tx checksum offload of %q: %w", name, err)
	}
	return nil
}

// TxChecksum reports whether the device's transmit checksum offload is on
// (ETHTOOL_GTXCSUM, `ethtool -k NAME`'s tx-checksumming), in the calling
// thread's network namespace.
func TxChecksum(name string) (bool, error) {
	v, err := ethtool(name, unix.ETHTOOL_GTXCSUM, 0)
	if err != nil {
		return false, fmt.Errorf("get tx checksum offload of %q: %w", name, err)
	}
	return v != 0, nil
}
