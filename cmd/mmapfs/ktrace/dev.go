package ktrace

import (
	"fmt"
	"io/fs"

	"golang.org/x/sys/unix"
)

// PathDev is the device of the filesystem path is on (its st_dev) in
// the kernel's encoding, as the events carry it: for a FUSE mount point
// it is the mount's connection (Config.Conn), for a file the s_dev of
// its filesystem (Config.Devs).
func PathDev(path string) (uint32, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0, &fs.PathError{Op: "stat", Path: path, Err: err}
	}
	return KernelDev(unix.Major(st.Dev), unix.Minor(st.Dev)), nil
}

// DevName is "major:minor" of a kernel-encoded device: the name of the
// bdi of a FUSE mount ("0:52") or of a block device ("254:0"), as
// Config.BDIs and Event.BDI spell it.
func DevName(dev uint32) string { return fmt.Sprintf("%d:%d", dev>>20, dev&(1<<20-1)) }
