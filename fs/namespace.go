package fs

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/mmapfs/mmapfs/backing"
)

// Node's namespace operations act relative to a descriptor of the
// parent directory, opened by backing.Store.OpenDir beneath the store
// root without following any symlink, and never follow the final
// component either (the *at calls with AT_SYMLINK_NOFOLLOW, unlinkat and
// renameat2, which do not follow). So a symlink planted in the store, or
// a directory swapped for one behind the daemon's back, is refused, never
// followed out of the store, as go-fuse's LoopbackNode (path strings from
// the store root) would follow it: which is why Node does not embed it.
// Directories' descriptors are cached, boundedly (dircache.go): a
// descriptor per inode would not fit the daemon's descriptor limit.

// noDone is the release function of a descriptor the caller must not
// close (the store root's).
func noDone() error { return nil }

// dir returns a descriptor of the node itself, a directory (the store
// root's for the root; else cached, see dircache.go), and the function
// to call when done with it.
func (n *Node) dir() (int, func() error, error) {
	if n.IsRoot() {
		return n.m.store.RootFd(), noDone, nil
	}
	return n.m.dirs.get(n, func() (int, error) {
		rel, err := n.path()
		if err != nil {
			return -1, err
		}
		return n.m.store.OpenDir(rel, unix.O_PATH)
	})
}

// parent returns a descriptor of the node's parent directory and the
// node's name in it; for the root, the store root itself and "". For a
// file with no name yet (O_TMPFILE) it returns a descriptor of the file
// itself and "" (see unnamedFd).
func (n *Node) parent() (dirfd int, name string, done func() error, err error) {
	if n.IsRoot() {
		return n.m.store.RootFd(), "", noDone, nil
	}
	name, p := n.Parent()
	if p == nil {
		if n.unnamed != nil {
			return n.unnamedFd()
		}
		return -1, "", nil, pathErr("resolve", name, fmt.Errorf("the file has no name any more: %w", syscall.ENOENT))
	}
	pn, ok := p.Operations().(*Node)
	if !ok {
		return -1, "", nil, pathErr("resolve", name, syscall.EXDEV)
	}
	fd, done, err := pn.dir()
	return fd, name, done, err
}

// unnamedBlob returns the Blob of a file made by O_TMPFILE that has no
// name yet, with a reference to Release, or nil for any other node. The
// daemon holds it as long as the client holds the file open; once it does
// not, the file is gone.
func (n *Node) unnamedBlob() *backing.Blob {
	if n.unnamed == nil {
		return nil
	}
	if _, p := n.Parent(); p != nil {
		return nil
	}
	return n.m.store.Find(&syscall.Stat_t{Dev: n.unnamed.dev, Ino: n.unnamed.ino})
}

// unnamedFd returns a descriptor of a file with no name yet, its own
// (a duplicate of its Blob's), so that the operations by name in a
// directory act on it with AT_EMPTY_PATH, as on the root.
func (n *Node) unnamedFd() (int, string, func() error, error) {
	b := n.unnamedBlob()
	if b == nil {
		return -1, "", nil, pathErr("resolve", "", fmt.Errorf("the file has no name and is no longer open: %w", syscall.ENOENT))
	}
	fd := -1
	err := b.Fd(func(bfd int) error {
		var err error
		if fd, err = unix.FcntlInt(uintptr(bfd), unix.F_DUPFD_CLOEXEC, 0); err != nil {
			return pathErr("dup", b.Name(), err)
		}
		return nil
	})
	if err = errors.Join(err, n.m.store.Release(b)); err != nil {
		if fd >= 0 {
			if cerr := unix.Close(fd); cerr != nil {
				err = errors.Join(err, pathErr("close", n.rel(), cerr))
			}
		}
		return -1, "", nil, err
	}
	return fd, "", func() error { return unix.Close(fd) }, nil
}

var _ = (gofs.NodeOnForgetter)((*Node)(nil))

// OnForget drops the node's cached directory descriptor: the kernel
// forgot the node.
func (n *Node) OnForget() {
	if err := n.m.dirs.forget(n); err != nil {
		n.m.log.Printf("forget %q: %v", n.rel(), err)
	}
}

// withDir calls fn with the node's own directory open (for operations on
// its children); op and the child's name label an error.
func (n *Node) withDir(op, child string, fn func(dirfd int) error) syscall.Errno {
	fd, done, err := n.dir()
	if err != nil {
		return n.m.errno(op, filepath.Join(n.rel(), child), err)
	}
	err = fn(fd)
	if derr := done(); derr != nil && err == nil {
		err = pathErr("close", n.rel(), derr)
	}
	if err == nil {
		return 0 // spare walking the path for a name no message needs
	}
	if e, ok := quietErrno(err); ok {
		return e
	}
	return n.m.errno(op, filepath.Join(n.rel(), child), err)
}

// quietErrno is the errno of err, when err is one of the everyday
// failures (no such name, no such xattr, a name taken, a directory not
// empty) as a system call returned it, bare or in one *os.PathError:
// errno() would give the same errno and log nothing (TestQuietErrno
// holds the two to that), but only after walking the node's path for a
// label no message uses and errors.As's reflection. Every CREATE is
// preceded by a LOOKUP that fails so, and every write to a new file by
// a GETXATTR of security.capability that fails so. Anything else is
// errno()'s.
func quietErrno(err error) (syscall.Errno, bool) {
	e, ok := err.(syscall.Errno)
	if !ok {
		pe, isPath := err.(*os.PathError)
		if !isPath {
			return 0, false
		}
		if e, ok = pe.Err.(syscall.Errno); !ok {
			return 0, false
		}
	}
	switch e {
	case syscall.ENOENT, syscall.ENODATA, syscall.EEXIST, syscall.ENOTEMPTY:
		return e, true
	}
	return 0, false
}

// withParent calls fn with the node's parent open and the node's name in
// it ("" for the root, whose dirfd is then the store root itself).
func (n *Node) withParent(op string, fn func(dirfd int, name string) error) syscall.Errno {
	fd, name, done, err := n.parent()
	if err != nil {
		return n.m.errno(op, n.rel(), err)
	}
	err = fn(fd, name)
	if derr := done(); derr != nil && err == nil {
		err = pathErr("close", n.rel(), derr)
	}
	if err == nil {
		return 0
	}
	if e, ok := quietErrno(err); ok {
		return e
	}
	return n.m.errno(op, n.rel(), err)
}

// statAt stats name in dirfd without following a symlink; "" is dirfd
// itself.
func statAt(dirfd int, name string, st *unix.Statx_t) error {
	flags := unix.AT_SYMLINK_NOFOLLOW
	if name == "" {
		flags |= unix.AT_EMPTY_PATH
	}
	if err := unix.Statx(dirfd, name, flags, unix.STATX_BASIC_STATS|unix.STATX_BTIME, st); err != nil {
		return pathErr("statx", name, err)
	}
	return nil
}

// childAt makes the inode of name, just found or created in dirfd, and
// fills out.
func (n *Node) childAt(ctx context.Context, dirfd int, name string, out *fuse.EntryOut) (*gofs.Inode, error) {
	var st unix.Statx_t
	if err := statAt(dirfd, name, &st); err != nil {
		return nil, err
	}
	sys := statFromStatx(&st)
	n.m.sawAttr(&sys)
	out.Attr.FromStat(&sys)
	return n.NewInode(ctx, &Node{m: n.m}, n.m.stableAttr(&st)), nil
}

// createAt runs make (mkdirat, mknodat, symlinkat) in the node's directory
// as the caller (see asCaller) and returns the new child's inode; a
// failure after make removes what it made.
func (n *Node) createAt(ctx context.Context, op, name string, dir bool, out *fuse.EntryOut, make func(dirfd int) error) (*gofs.Inode, syscall.Errno) {
	var ch *gofs.Inode
	errno := n.withDir(op, name, func(dirfd int) error {
		if err := n.m.asCaller(ctx, func() error { return make(dirfd) }); err != nil {
			return pathErr(op, name, err)
		}
		var err error
		ch, err = n.childAt(ctx, dirfd, name, out)
		if err != nil {
			flag := 0
			if dir {
				flag = unix.AT_REMOVEDIR
			}
			if uerr := unix.Unlinkat(dirfd, name, flag); uerr != nil {
				err = errors.Join(err, pathErr("unlink", name, uerr))
			}
		}
		return err
	})
	return ch, errno
}

var _ = (gofs.NodeLookuper)((*Node)(nil))

// Lookup finds a child; the stats file at the root.
func (n *Node) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	if n.IsRoot() {
		switch name {
		case StatsName:
			return n.statsInode(ctx, out), 0
		case ControlName:
			return n.controlInode(ctx, out), 0
		}
	}
	if errno := n.injectNode(ctx, "lookup", name); errno != 0 {
		return nil, errno
	}
	var ch *gofs.Inode
	errno := n.withDir("lookup", name, func(dirfd int) error {
		var err error
		ch, err = n.childAt(ctx, dirfd, name, out)
		return err
	})
	return ch, errno
}

var _ = (gofs.NodeMkdirer)((*Node)(nil))

// Mkdir makes a directory.
func (n *Node) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	if errno := n.injectNode(ctx, "mkdir", name); errno != 0 {
		return nil, errno
	}
	return n.createAt(ctx, "mkdir", name, true, out, func(dirfd int) error {
		return unix.Mkdirat(dirfd, name, mode)
	})
}

var _ = (gofs.NodeMknoder)((*Node)(nil))

// Mknod makes a regular file, device, fifo or socket node.
func (n *Node) Mknod(ctx context.Context, name string, mode, rdev uint32, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	if errno := n.injectNode(ctx, "mknod", name); errno != 0 {
		return nil, errno
	}
	return n.createAt(ctx, "mknod", name, false, out, func(dirfd int) error {
		return unix.Mknodat(dirfd, name, mode, int(rdev))
	})
}

var _ = (gofs.NodeSymlinker)((*Node)(nil))

// Symlink makes a symlink. Its target is stored as given: the daemon never
// follows it; a client does, on its own side of the mount.
func (n *Node) Symlink(ctx context.Context, target, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	if errno := n.injectNode(ctx, "symlink", name); errno != 0 {
		return nil, errno
	}
	return n.createAt(ctx, "symlink", name, false, out, func(dirfd int) error {
		return unix.Symlinkat(target, dirfd, name)
	})
}

var _ = (gofs.NodeLinker)((*Node)(nil))

// Link makes a hard link to target, a file of this mount. A file with no
// name yet (O_TMPFILE, linked through /proc/self/fd) is linked through
// the descriptor of its Blob, which the daemon holds while the client
// has the file open; the kernel itself refuses a file made O_TMPFILE|O_EXCL
// or one whose last name was removed (ENOENT), as for a local filesystem.
func (n *Node) Link(ctx context.Context, target gofs.InodeEmbedder, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	if errno := n.injectNode(ctx, "link", name); errno != 0 {
		return nil, errno
	}
	t, ok := target.(*Node)
	if !ok || t.m != n.m {
		return nil, syscall.EXDEV
	}
	if _, p := t.Parent(); p == nil {
		if t.unnamed == nil {
			// LINK carries no descriptor, and the daemon holds none
			// of an unlinked file's name: as go-fuse's loopback, EXDEV.
			return nil, syscall.EXDEV
		}
		return n.linkUnnamed(ctx, t.unnamed, name, out)
	}
	tdir, tname, tdone, err := t.parent()
	if err != nil {
		return nil, n.m.errno("link", t.rel(), err)
	}
	var ch *gofs.Inode
	errno := n.withDir("link", name, func(dirfd int) error {
		if err := unix.Linkat(tdir, tname, dirfd, name, 0); err != nil {
			return pathErr("link", name, err)
		}
		var err error
		ch, err = n.childAt(ctx, dirfd, name, out)
		return err
	})
	if err := tdone(); err != nil && errno == 0 {
		errno = n.m.errno("link", t.rel(), pathErr("close", t.rel(), err))
	}
	return ch, errno
}

// linkUnnamed names the unnamed file id in the node's directory, through
// its Blob's descriptor. go-fuse then files the node that was unnamed
// under the new name (the new inode has the same identity).
func (n *Node) linkUnnamed(ctx context.Context, id *fileID, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	b := n.m.store.Find(&syscall.Stat_t{Dev: id.dev, Ino: id.ino})
	if b == nil {
		// No longer open anywhere: the file is gone.
		return nil, syscall.ENOENT
	}
	var ch *gofs.Inode
	errno := n.withDir("link", name, func(dirfd int) error {
		err := b.Fd(func(fd int) error {
			// linkat(fd, "", ..., AT_EMPTY_PATH) would need
			// CAP_DAC_READ_SEARCH; the /proc link works for any daemon.
			if err := unix.Linkat(unix.AT_FDCWD, "/proc/self/fd/"+strconv.Itoa(fd), dirfd, name, unix.AT_SYMLINK_FOLLOW); err != nil {
				return pathErr("link", name, err)
			}
			return nil
		})
		if err != nil {
			return err
		}
		ch, err = n.childAt(ctx, dirfd, name, out)
		return err
	})
	if err := n.m.store.Release(b); err != nil && errno == 0 {
		errno = n.m.errno("link", name, err)
	}
	return ch, errno
}

var _ = (gofs.NodeUnlinker)((*Node)(nil))

// Unlink removes a name; the stats and control files cannot be removed.
func (n *Node) Unlink(ctx context.Context, name string) syscall.Errno {
	if n.IsRoot() && isVirtual(name) {
		return syscall.EPERM
	}
	if errno := n.injectNode(ctx, "unlink", name); errno != 0 {
		return errno
	}
	return n.withDir("unlink", name, func(dirfd int) error {
		st, last := lastLink(dirfd, name)
		if err := unix.Unlinkat(dirfd, name, 0); err != nil {
			return err
		}
		if last {
			n.m.store.Removed(st.Dev, st.Ino)
		}
		return nil
	})
}

// lastLink stats name in dirfd and reports whether it is a regular file's
// only name, so that removing it removes the file (see
// backing.Store.Removed). The kernel holds the file's inode lock for the
// whole UNLINK or RENAME request, so no link to it through the mount can
// come in between. A name that cannot be stat'ed is not reported.
func lastLink(dirfd int, name string) (*unix.Stat_t, bool) {
	var st unix.Stat_t
	if err := unix.Fstatat(dirfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return nil, false
	}
	return &st, st.Mode&unix.S_IFMT == unix.S_IFREG && st.Nlink == 1
}

var _ = (gofs.NodeRmdirer)((*Node)(nil))

// Rmdir removes an empty directory.
func (n *Node) Rmdir(ctx context.Context, name string) syscall.Errno {
	if errno := n.injectNode(ctx, "rmdir", name); errno != 0 {
		return errno
	}
	return n.withDir("rmdir", name, func(dirfd int) error {
		return unix.Unlinkat(dirfd, name, unix.AT_REMOVEDIR)
	})
}

var _ = (gofs.NodeRenamer)((*Node)(nil))

// Rename renames, with RENAME_NOREPLACE, RENAME_EXCHANGE and
// RENAME_WHITEOUT as renameat2 gives them (a whiteout is made as the
// caller, see asCaller); the stats and control files cannot be renamed or
// replaced.
func (n *Node) Rename(ctx context.Context, name string, newParent gofs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	np, ok := newParent.(*Node)
	if !ok || np.m != n.m {
		return syscall.EXDEV
	}
	if (n.IsRoot() && isVirtual(name)) || (np.IsRoot() && isVirtual(newName)) {
		return syscall.EPERM
	}
	if errno := n.injectNode(ctx, "rename", name); errno != 0 {
		return errno
	}
	ndir, ndone, err := np.dir()
	if err != nil {
		return n.m.errno("rename", filepath.Join(np.rel(), newName), err)
	}
	errno := n.withDir("rename", name, func(dirfd int) error {
		var st *unix.Stat_t
		last := false
		if flags&unix.RENAME_EXCHANGE == 0 {
			// The file it replaces, if any. It is not the file renamed:
			// the kernel answers a rename of a file onto one of its own
			// names itself (vfs_rename) without asking the daemon.
			st, last = lastLink(ndir, newName)
		}
		rename := func() error { return unix.Renameat2(dirfd, name, ndir, newName, uint(flags)) }
		if flags&unix.RENAME_WHITEOUT != 0 {
			// The whiteout left at name is a new node: the caller's.
			if err := n.m.asCaller(ctx, rename); err != nil {
				return err
			}
		} else if err := rename(); err != nil {
			return err
		}
		if last {
			n.m.store.Removed(st.Dev, st.Ino)
		}
		return nil
	})
	if err := ndone(); err != nil && errno == 0 {
		errno = n.m.errno("rename", np.rel(), pathErr("close", np.rel(), err))
	}
	return errno
}

var _ = (gofs.NodeReadlinker)((*Node)(nil))

// Readlink reads a symlink's target.
func (n *Node) Readlink(ctx context.Context) ([]byte, syscall.Errno) {
	if errno := n.injectNode(ctx, "readlink", ""); errno != 0 {
		return nil, errno
	}
	var target []byte
	errno := n.withParent("readlink", func(dirfd int, name string) error {
		for size := 256; ; size *= 2 {
			buf := make([]byte, size)
			r, err := unix.Readlinkat(dirfd, name, buf)
			if err != nil {
				return pathErr("readlink", name, err)
			}
			if r < size {
				target = buf[:r]
				return nil
			}
		}
	})
	return target, errno
}

var _ = (gofs.NodeOpendirHandler)((*Node)(nil))

// OpendirHandle opens the directory for reading.
func (n *Node) OpendirHandle(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	if errno := n.injectNode(ctx, "readdir", ""); errno != 0 {
		return nil, 0, errno
	}
	ds, errno := n.dirStream()
	return ds, 0, errno
}

var _ = (gofs.NodeReaddirer)((*Node)(nil))

// Readdir lists the directory.
func (n *Node) Readdir(ctx context.Context) (gofs.DirStream, syscall.Errno) {
	if errno := n.injectNode(ctx, "readdir", ""); errno != 0 {
		return nil, errno
	}
	return n.dirStream()
}

func (n *Node) dirStream() (gofs.DirStream, syscall.Errno) {
	var fd int
	errno := n.withDir("opendir", "", func(dirfd int) error {
		var err error
		fd, err = unix.Openat(dirfd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return pathErr("opendir", n.rel(), err)
		}
		return nil
	})
	if errno != 0 {
		return nil, errno
	}
	// The stream owns fd and closes it.
	return gofs.NewLoopbackDirStreamFd(fd)
}

var _ = (gofs.NodeStatfser)((*Node)(nil))

// Statfs reports the store's filesystem.
func (n *Node) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	if errno := n.injectNode(ctx, "statfs", ""); errno != 0 {
		return errno
	}
	var st syscall.Statfs_t
	if err := syscall.Fstatfs(n.m.store.RootFd(), &st); err != nil {
		return n.m.errno("statfs", "", pathErr("statfs", n.m.store.Root(), err))
	}
	out.FromStatfsT(&st)
	return 0
}

var _ = (gofs.NodeStatxer)((*Node)(nil))

// Statx is statx of the node (of its Blob, when open through f).
func (n *Node) Statx(ctx context.Context, f gofs.FileHandle, flags uint32, mask uint32, out *fuse.StatxOut) syscall.Errno {
	if h, ok := f.(*handle); ok {
		return h.Statx(ctx, flags, mask, out)
	}
	if errno := n.injectNode(ctx, "getattr", ""); errno != 0 {
		return errno
	}
	return n.withParent("statx", func(dirfd int, name string) error {
		var st unix.Statx_t
		fl := int(flags) | unix.AT_SYMLINK_NOFOLLOW
		if name == "" {
			fl |= unix.AT_EMPTY_PATH
		}
		if err := unix.Statx(dirfd, name, fl, int(mask), &st); err != nil {
			return pathErr("statx", name, err)
		}
		n.m.sawStatx(&st)
		out.FromStatx(&st)
		return nil
	})
}

// The xattr calls have no *at form before Linux 6.13 and none in x/sys:
// they take a /proc/self/fd path through a descriptor of the node's
// parent directory (as libfuse's passthrough_hp does through one of the
// node), /proc/self/fd/DIRFD/NAME, and use the l* forms, which do not
// follow a symlink NAME: the magic link leads straight to the directory,
// NAME (one component, never "." or "..") to the node, and no further.
// The root is "." in its own descriptor. One system call, where opening
// the node O_PATH first took three. A file with no name yet is its own
// descriptor's magic link, /proc/self/fd/FD, which the calls must follow
// (it leads to that file and no further).

// procPath names a node for the xattr calls: the path, and whether its
// last component is the node's own magic link, to be followed.
type procPath struct {
	p      string
	follow bool
}

func (q procPath) getxattr(attr string, dest []byte) (int, error) {
	if q.follow {
		return unix.Getxattr(q.p, attr, dest)
	}
	return unix.Lgetxattr(q.p, attr, dest)
}

func (q procPath) listxattr(dest []byte) (int, error) {
	if q.follow {
		return unix.Listxattr(q.p, dest)
	}
	return unix.Llistxattr(q.p, dest)
}

func (q procPath) setxattr(attr string, data []byte, flags int) error {
	if q.follow {
		return unix.Setxattr(q.p, attr, data, flags)
	}
	return unix.Lsetxattr(q.p, attr, data, flags)
}

func (q procPath) removexattr(attr string) error {
	if q.follow {
		return unix.Removexattr(q.p, attr)
	}
	return unix.Lremovexattr(q.p, attr)
}

func (q procPath) stat(st *syscall.Stat_t) error {
	if q.follow {
		return syscall.Stat(q.p, st)
	}
	return syscall.Lstat(q.p, st)
}

// withProcPath calls fn with a /proc path that names the node.
func (n *Node) withProcPath(op string, fn func(q procPath) error) syscall.Errno {
	return n.withParent(op, func(dirfd int, name string) error {
		fdPath := "/proc/self/fd/" + strconv.Itoa(dirfd)
		switch {
		case name != "":
			return fn(procPath{p: fdPath + "/" + name})
		case n.IsRoot():
			return fn(procPath{p: fdPath + "/."})
		default: // no name yet: dirfd is the file's own
			return fn(procPath{p: fdPath, follow: true})
		}
	})
}

var _ = (gofs.NodeGetxattrer)((*Node)(nil))

// Getxattr reads an extended attribute.
func (n *Node) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	if errno := n.injectNode(ctx, "getxattr", ""); errno != 0 {
		return 0, errno
	}
	var sz int
	errno := n.withProcPath("getxattr", func(q procPath) error {
		var err error
		sz, err = q.getxattr(attr, dest)
		return err
	})
	return uint32(max(sz, 0)), errno
}

var _ = (gofs.NodeListxattrer)((*Node)(nil))

// Listxattr lists the extended attributes.
func (n *Node) Listxattr(ctx context.Context, dest []byte) (uint32, syscall.Errno) {
	if errno := n.injectNode(ctx, "listxattr", ""); errno != 0 {
		return 0, errno
	}
	var sz int
	errno := n.withProcPath("listxattr", func(q procPath) error {
		var err error
		sz, err = q.listxattr(dest)
		return err
	})
	return uint32(max(sz, 0)), errno
}

var _ = (gofs.NodeSetxattrer)((*Node)(nil))

// Setxattr sets an extended attribute. File capabilities set on a file
// open on the mount are noted by its Blob, whose next write removes them.
func (n *Node) Setxattr(ctx context.Context, attr string, data []byte, flags uint32) syscall.Errno {
	if errno := n.injectNode(ctx, "setxattr", ""); errno != 0 {
		return errno
	}
	var st syscall.Stat_t
	errno := n.withProcPath("setxattr", func(q procPath) error {
		if err := q.setxattr(attr, data, int(flags)); err != nil {
			return err
		}
		return q.stat(&st)
	})
	if errno == 0 && attr == "security.capability" {
		if b := n.m.store.Find(&st); b != nil {
			b.NoteCaps()
			return n.m.errno("setxattr", n.rel(), n.m.store.Release(b))
		}
	}
	return errno
}

var _ = (gofs.NodeRemovexattrer)((*Node)(nil))

// Removexattr removes an extended attribute.
func (n *Node) Removexattr(ctx context.Context, attr string) syscall.Errno {
	if errno := n.injectNode(ctx, "removexattr", ""); errno != 0 {
		return errno
	}
	return n.withProcPath("removexattr", func(q procPath) error {
		return q.removexattr(attr)
	})
}

// setattrAt applies in to the node by name in its parent, without
// following it, for nodes with no Blob (directories, symlinks, files not
// open). Size changes never come here.
func (n *Node) setattrAt(in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	return n.withParent("setattr", func(dirfd int, name string) error {
		at := 0
		if name == "" {
			at = unix.AT_EMPTY_PATH
		}
		if m, ok := in.GetMode(); ok {
			// fchmodat2 with AT_SYMLINK_NOFOLLOW: a symlink's mode
			// cannot change (EOPNOTSUPP), nor is it followed.
			if err := unix.Fchmodat(dirfd, name, m, unix.AT_SYMLINK_NOFOLLOW|at); err != nil {
				return pathErr("chmod", name, err)
			}
		}
		if uid, gid, ok := ownerArgs(in); ok {
			if err := unix.Fchownat(dirfd, name, uid, gid, unix.AT_SYMLINK_NOFOLLOW|at); err != nil {
				return pathErr("chown", name, err)
			}
		}
		if ts, ok := timesArgs(in); ok {
			if name == "" {
				// utimensat has no AT_EMPTY_PATH: the root by its
				// own O_PATH descriptor's /proc name.
				if err := unix.UtimesNanoAt(unix.AT_FDCWD, fmt.Sprintf("/proc/self/fd/%d", dirfd), ts, 0); err != nil {
					return pathErr("utimens", n.m.store.Root(), err)
				}
			} else if err := unix.UtimesNanoAt(dirfd, name, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
				return pathErr("utimens", name, err)
			}
		}
		var st unix.Statx_t
		if err := statAt(dirfd, name, &st); err != nil {
			return err
		}
		sys := statFromStatx(&st)
		n.m.sawAttr(&sys)
		out.FromStat(&sys)
		return nil
	})
}
