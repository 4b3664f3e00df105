package fs

import (
	"context"
	"errors"
	"strconv"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/mmapfs/mmapfs/backing"
)

// File flags (lsattr, chattr, xfs_io -c chattr) reach the daemon as
// FUSE_IOCTL: the kernel's FUSE client implements fileattr_get and
// fileattr_set by opening the node itself (OPEN or OPENDIR, read-only),
// sending FS_IOC_GETFLAGS or FS_IOC_SETFLAGS (4 bytes) or
// FS_IOC_FSGETXATTR or FS_IOC_FSSETXATTR (struct fsxattr), with
// FUSE_IOCTL_DIR for a directory, and releasing it. Ownership and
// CAP_LINUX_IMMUTABLE were checked on the client's side; the store's
// filesystem checks the daemon's own and decides the rest (EPERM,
// EOPNOTSUPP for a flag it lacks). The FUSE client never learns the
// flags (it keeps no S_IMMUTABLE or S_APPEND on its inode), so what they
// forbid is refused here and by the store's filesystem: see package
// backing, flags.go.

var _ = (gofs.NodeIoctler)((*Node)(nil))

// Ioctl answers the four file-attribute ioctls from the store's file;
// every other ioctl is ENOTTY, as before. On a regular file open on the
// mount the ioctl goes through its Blob, which learns the new flags under
// its own lock.
func (n *Node) Ioctl(ctx context.Context, f gofs.FileHandle, cmd uint32, arg uint64, input []byte, output []byte) (int32, syscall.Errno) {
	in, out, ok := backing.FileAttrSizes(cmd)
	if !ok {
		return 0, syscall.ENOTTY
	}
	if len(input) < in || len(output) < out {
		// A client that sent the command with other sizes than the
		// kernel's own fileattr path does.
		return 0, syscall.EINVAL
	}
	if h, ok := f.(*handle); ok {
		if err := h.blob.FileAttr(cmd, input, output); err != nil {
			return 0, n.m.errno("ioctl", h.blob.Name(), err)
		}
		return 0, 0
	}
	return 0, n.withParent("ioctl", func(dirfd int, name string) error {
		return n.fileAttrAt(dirfd, name, cmd, input, output)
	})
}

// fileAttrAt does the file-attribute ioctl cmd on name in dirfd (the
// store root itself for ""), which must be a regular file or a
// directory. An ioctl needs a descriptor that is not O_PATH; the node is
// opened O_PATH without following it first and checked, and only then
// opened for reading through that descriptor, so that a device node or
// FIFO swapped in behind the daemon is never opened. A regular file open
// on the mount goes through its Blob.
func (n *Node) fileAttrAt(dirfd int, name string, cmd uint32, in, out []byte) (err error) {
	rel := n.rel()
	if name == "" {
		return backing.FileAttr(dirfd, n.m.store.Root(), cmd, in, out)
	}
	pfd, err := unix.Openat(dirfd, name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return pathErr("open", rel, err)
	}
	defer func() {
		if cerr := syscall.Close(pfd); cerr != nil {
			err = errors.Join(err, pathErr("close", rel, cerr))
		}
	}()
	var st syscall.Stat_t
	if err := syscall.Fstat(pfd, &st); err != nil {
		return pathErr("fstat", rel, err)
	}
	flags := unix.O_RDONLY | unix.O_NONBLOCK | unix.O_CLOEXEC
	switch st.Mode & syscall.S_IFMT {
	case syscall.S_IFREG:
		if b := n.m.store.Find(&st); b != nil {
			return errors.Join(b.FileAttr(cmd, in, out), n.m.store.Release(b))
		}
	case syscall.S_IFDIR:
		flags |= unix.O_DIRECTORY
	default:
		// As the kernel answers for anything but a file or a
		// directory.
		return pathErr("ioctl", rel, syscall.ENOTTY)
	}
	fd, err := unix.Open("/proc/self/fd/"+strconv.Itoa(pfd), flags, 0)
	if err != nil {
		return pathErr("open", rel, err)
	}
	err = backing.FileAttr(fd, rel, cmd, in, out)
	if cerr := syscall.Close(fd); cerr != nil {
		err = errors.Join(err, pathErr("close", rel, cerr))
	}
	return err
}

// timesFlushRefused reports whether in is the kernel's own flush of the
// mtime of an append-only file under the writeback cache, which is then
// left undone. With CAP_WRITEBACK_CACHE the kernel keeps a written file's
// mtime itself and sends it later (fuse_flush_times: FATTR_MTIME, with
// FATTR_CTIME and a handle, and nothing else; a client's utimes never
// carries a handle). ext4 refuses explicit times on an append-only file
// (EPERM), which would fail the client's fsync or close; and the daemon
// appends to such a file with write(2), which set its mtime when the
// bytes arrived (see package backing, flags.go).
func timesFlushRefused(b *backing.Blob, in *fuse.SetAttrIn) bool {
	return in.Valid&^fuse.FATTR_CTIME == fuse.FATTR_MTIME|fuse.FATTR_FH && b.AppendOnly()
}
