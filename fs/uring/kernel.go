package uring

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// EnableParam is the fuse module's parameter that lets connections use
// io_uring. Only root can turn it on (EnableHint); this package never
// writes it.
const EnableParam = "/sys/module/fuse/parameters/enable_uring"

// EnableHint says how to turn EnableParam on.
const EnableHint = "echo 1 > " + EnableParam

// Enabled reports whether the kernel offers FUSE over io_uring to new
// connections: EnableParam exists (CONFIG_FUSE_IO_URING) and is Y. The
// error says which of the two is missing, with EnableHint.
func Enabled() error {
	b, err := os.ReadFile(EnableParam)
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("this kernel has no FUSE over io_uring (%s does not exist: Linux 6.14 or later with CONFIG_FUSE_IO_URING, and the fuse module loaded)", EnableParam)
	}
	if err != nil {
		return fmt.Errorf("reading %s: %w", EnableParam, err)
	}
	switch v := strings.TrimSpace(string(b)); v {
	case "Y", "1":
		return nil
	case "N", "0":
		return fmt.Errorf("FUSE over io_uring is off: %s is N; turn it on as root with `%s`", EnableParam, EnableHint)
	default:
		return fmt.Errorf("%s reads %q, neither Y nor N", EnableParam, v)
	}
}

// PossibleCPUs is how many CPUs the kernel may ever run, the number of
// queues it makes for a connection (num_possible_cpus), from
// /sys/devices/system/cpu/possible; queue q serves CPU q, so the CPUs
// must be numbered 0 to n-1 without gaps.
func PossibleCPUs() (int, error) {
	const path = "/sys/devices/system/cpu/possible"
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, fmt.Errorf("reading %s: %w", path, err)
	}
	n := 0
	for _, r := range strings.Split(strings.TrimSpace(string(b)), ",") {
		lo, hi, isRange := strings.Cut(r, "-")
		a, err1 := strconv.Atoi(lo)
		z := a
		var err2 error
		if isRange {
			z, err2 = strconv.Atoi(hi)
		}
		if err1 != nil || err2 != nil || a != n || z < a {
			return 0, fmt.Errorf("%s is %q: not CPUs 0 to n-1", path, strings.TrimSpace(string(b)))
		}
		n = z + 1
	}
	if n == 0 {
		return 0, fmt.Errorf("%s lists no CPU", path)
	}
	return n, nil
}

// fusectl is where the fuse control filesystem is mounted.
const fusectl = "/sys/fs/fuse/connections"

// ConnectionDir is the fusectl directory of the FUSE connection of the
// mount whose device is dev ("major:minor", as /proc/self/mountinfo has
// it): the connection's number is the device number, major<<20|minor.
func ConnectionDir(dev string) (string, error) {
	major, minor, ok := strings.Cut(dev, ":")
	mj, err1 := strconv.ParseUint(major, 10, 12)
	mn, err2 := strconv.ParseUint(minor, 10, 20)
	if !ok || err1 != nil || err2 != nil {
		return "", fmt.Errorf("mount device %q is not major:minor", dev)
	}
	return filepath.Join(fusectl, strconv.FormatUint(mj<<20|mn, 10)), nil
}

// Abort aborts the FUSE connection whose fusectl directory is dir, as
// `echo 1 > dir/abort` does: every request waiting fails with ENOTCONN,
// the daemon's reads and ring commands end. If the fuse control
// filesystem is not mounted at fusectl, Abort mounts it on a directory
// of its own for the write and unmounts it again, leaving the mount
// table as it was.
func Abort(dir string) error {
	abort := filepath.Join(dir, "abort")
	if _, err := os.Stat(abort); errors.Is(err, os.ErrNotExist) {
		tmp, err := os.MkdirTemp("", "mmapfs-fusectl-")
		if err != nil {
			return fmt.Errorf("aborting FUSE connection %s: no %s, and making a directory for the fuse control filesystem: %w", dir, abort, err)
		}
		if err := unix.Mount("fusectl", tmp, "fusectl", 0, ""); err != nil {
			return errors.Join(fmt.Errorf("aborting FUSE connection %s: no %s, and mounting the fuse control filesystem at %s: %w", dir, abort, tmp, err), os.Remove(tmp))
		}
		werr := os.WriteFile(filepath.Join(tmp, filepath.Base(dir), "abort"), []byte("1"), 0)
		if werr != nil {
			werr = fmt.Errorf("aborting FUSE connection %s: %w", dir, werr)
		}
		uerr := unix.Unmount(tmp, 0)
		if uerr != nil {
			uerr = fmt.Errorf("unmounting the fuse control filesystem at %s: %w", tmp, uerr)
		}
		return errors.Join(werr, uerr, os.Remove(tmp))
	}
	if err := os.WriteFile(abort, []byte("1"), 0); err != nil {
		return fmt.Errorf("aborting FUSE connection %s: %w", dir, err)
	}
	return nil
}

// InitReply is what the daemon answered the kernel's INIT with, as far
// as the transport needs it.
type InitReply struct {
	Flags    uint64 // the capabilities negotiated (fuse.CAP_*)
	MaxWrite uint32
	MaxPages uint16
}

// IOUring reports whether the reply negotiated FUSE over io_uring.
func (r InitReply) IOUring() bool { return r.Flags&fuse.CAP_OVER_IO_URING != 0 }

// PayloadSize is the smallest payload buffer the kernel accepts for a
// connection with this reply: max(FUSE_MIN_READ_BUFFER, max_write,
// max_pages pages) (fs/fuse/dev_uring.c fuse_uring_create; max_pages
// may be capped lower by the kernel, never raised).
func (r InitReply) PayloadSize() int {
	pages := int(max(r.MaxPages, 1)) * os.Getpagesize()
	return max(minPayload, int(r.MaxWrite), pages)
}

// Prime gives ps, a fuse.ProtocolServer made for the same file system
// and MountOptions as the fuse.Server that answered the kernel's INIT,
// the same INIT, so that it parses requests as that server does (the
// kernel's protocol version, the flags negotiated: neither is exported
// by go-fuse, and a ProtocolServer learns them only from an INIT it
// serves). kernel is the server's KernelSettings. It returns what ps
// answered, which is what the server answered (go-fuse computes the
// reply from the INIT and the options alone).
func Prime(ps Handler, kernel *fuse.InitIn) (InitReply, error) {
	in := *kernel
	in.InHeader = fuse.InHeader{Opcode: 26, Unique: 1} // FUSE_INIT
	var b bytes.Buffer
	if err := binary.Write(&b, binary.LittleEndian, &in); err != nil {
		return InitReply{}, fmt.Errorf("encoding INIT: %w", err)
	}
	req := b.Bytes()
	binary.LittleEndian.PutUint32(req[0:], uint32(len(req)))
	out := make([]byte, 4096)
	n, st := ps.HandleRequest([][]byte{req}, [][]byte{out})
	if !st.Ok() {
		return InitReply{}, fmt.Errorf("replaying INIT to the request handler: %v", st)
	}
	if n < outHeaderSize+36 {
		return InitReply{}, fmt.Errorf("replaying INIT to the request handler: a reply of %d bytes", n)
	}
	if errno := int32(binary.LittleEndian.Uint32(out[4:])); errno != 0 {
		return InitReply{}, fmt.Errorf("replaying INIT to the request handler: it failed: %v", unix.Errno(-errno))
	}
	o := out[outHeaderSize:]
	// struct fuse_init_out: flags at 12, max_write at 20, max_pages
	// at 28, flags2 at 32.
	return InitReply{
		Flags:    uint64(binary.LittleEndian.Uint32(o[12:])) | uint64(binary.LittleEndian.Uint32(o[32:]))<<32,
		MaxWrite: binary.LittleEndian.Uint32(o[20:]),
		MaxPages: binary.LittleEndian.Uint16(o[28:]),
	}, nil
}
