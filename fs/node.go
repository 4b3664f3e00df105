package fs

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/mmapfs/mmapfs/backing"
)

// Node is a file, directory, symlink or special file of the mount, the
// only node type of the tree apart from the two virtual files at its root
// (statsfile.go, control.go). It embeds go-fuse's Inode and implements
// every operation itself: the data path (open, create, tmpfile, getattr
// and setattr, copy_file_range: the file's Blob) here, the namespace
// (lookup, mkdir, rename, xattrs, ...) in namespace.go, the file-flag
// ioctls in ioctl.go. Each resolves names beneath the store root without
// following a symlink. It does not embed go-fuse's LoopbackNode, which
// resolves path strings and follows symlinks: a method a later go-fuse
// added to it would be inherited silently, and resolve the loopback's way.
type Node struct {
	gofs.Inode
	m *mountState // read only
	// unnamed identifies the store file of a node made by O_TMPFILE
	// (nil for every other node), so that Link, Open and the operations
	// by name reach its Blob while it has no name (see unnamedBlob).
	// Read only.
	unnamed *fileID
}

// fileID is a file of the store: its st_dev and st_ino.
type fileID struct{ dev, ino uint64 }

// path returns the node's path relative to the store root. It is the one
// place the fs side turns a node into a name; backing resolves the name
// beneath the store without following symlinks. A node that has no name
// left (unlinked while open, or below a directory that was) is ENOENT:
// go-fuse's Inode.Path would log and make one up, and a partial path
// could name another file.
func (n *Node) path() (string, error) {
	root := n.Root()
	var segs []string
	for p := n.EmbeddedInode(); p != root; {
		name, parent := p.Parent()
		if parent == nil {
			return "", pathErr("resolve", strings.Join(segs, "/"), fmt.Errorf("the file has no name any more: %w", syscall.ENOENT))
		}
		segs = append(segs, name)
		p = parent
	}
	slices.Reverse(segs)
	return strings.Join(segs, "/"), nil
}

// rel is path for messages.
func (n *Node) rel() string {
	p, err := n.path()
	if err != nil {
		return "(a file with no name left)"
	}
	return p
}

var _ = (gofs.NodeOpener)((*Node)(nil))

// Open opens the node's Blob; a file with no name yet (O_TMPFILE,
// reopened through /proc/self/fd) has its Blob held already.
func (n *Node) Open(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	if errno := n.injectNode(ctx, "open", ""); errno != 0 {
		return nil, 0, errno
	}
	if b := n.unnamedBlob(); b != nil {
		return n.openUnnamed(b, flags)
	}
	var b *backing.Blob
	errno := n.withParent("open", func(dirfd int, name string) error {
		var err error
		b, err = n.m.store.OpenAt(dirfd, name, n.rel(), int(flags&^fuse.FMODE_EXEC), 0)
		return err
	})
	if errno != 0 {
		return nil, 0, errno
	}
	return n.m.openHandle("open", b, n, flags)
}

// openHandle makes the handle of an open (op) of node's Blob b with flags,
// which takes over b's reference, and its FOPEN_* flags; on an error, b is
// released.
func (m *mountState) openHandle(op string, b *backing.Blob, node *Node, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	h := m.newHandle(b, node)
	keep, err := h.openCacheFlags()
	if err != nil {
		return nil, 0, m.errno(op, b.Name(), errors.Join(err, m.store.Release(b)))
	}
	return h, m.openFlagsFor(flags) | keep, 0
}

// openUnnamed opens b, the Blob of a file with no name yet, whose
// reference it takes over, as Store.OpenAt opens a named one.
func (n *Node) openUnnamed(b *backing.Blob, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	if flags&syscall.O_TRUNC != 0 && flags&syscall.O_ACCMODE != syscall.O_RDONLY {
		if err := b.Truncate(0); err != nil {
			return nil, 0, n.m.errno("open", b.Name(), errors.Join(err, n.m.store.Release(b)))
		}
	}
	return n.m.openHandle("open", b, n, flags)
}

// openFlagsFor returns the FOPEN_* flags for an open with flags. Only
// the close policy has work for FLUSH (it syncs there, and close(2) must
// see a failure); under every other policy a FLUSH would only apply a
// pending mtime, which getattr, fsync and the last close (release) apply
// as well, so close(2) need not wait for a FLUSH round trip. A read-only
// descriptor has nothing to flush under any policy (writes through
// others are theirs to flush). Under CAP_WRITEBACK_CACHE the kernel
// flushes its dirty pages at close regardless of FOPEN_NOFLUSH.
//
// A file opened while a fault-injection rule names flush gets FLUSH at
// every close, so that the rule can fail the close(2).
func (m *mountState) openFlagsFor(flags uint32) uint32 {
	if m.inj.Has("flush") {
		return m.openFlags
	}
	if flags&syscall.O_ACCMODE == syscall.O_RDONLY || m.opts.Store.Policy.Kind != backing.PolicyClose {
		return m.openFlags | fuse.FOPEN_NOFLUSH
	}
	return m.openFlags
}

var _ = (gofs.NodeCreater)((*Node)(nil))

// Create creates and opens a regular file, as the caller (see asCaller).
func (n *Node) Create(ctx context.Context, name string, flags uint32, mode uint32, out *fuse.EntryOut) (*gofs.Inode, gofs.FileHandle, uint32, syscall.Errno) {
	if errno := n.injectNode(ctx, "create", name); errno != 0 {
		return nil, nil, 0, errno
	}
	rel := filepath.Join(n.rel(), name)
	flags &^= fuse.FMODE_EXEC
	var b *backing.Blob
	errno := n.withDir("create", name, func(dirfd int) error {
		err := n.m.asCaller(ctx, func() error {
			var err error
			b, err = n.m.store.OpenAt(dirfd, name, rel, int(flags)|unix.O_CREAT|unix.O_EXCL, mode)
			return err
		})
		if errors.Is(err, syscall.EEXIST) && flags&unix.O_EXCL == 0 {
			// The kernel sends CREATE after a failed lookup, but the
			// file may have appeared since: open it as it is.
			b, err = n.m.store.OpenAt(dirfd, name, rel, int(flags)&^unix.O_CREAT, 0)
		}
		return err
	})
	if errno != 0 {
		return nil, nil, 0, errno
	}
	return n.created(ctx, "create", b, rel, false, flags, out)
}

var _ = (gofs.NodeTmpfiler)((*Node)(nil))

// Tmpfile creates an unnamed regular file in the directory (O_TMPFILE),
// as the caller. Link gives it a name, unless it was made O_EXCL.
func (n *Node) Tmpfile(ctx context.Context, flags uint32, mode uint32, out *fuse.EntryOut) (*gofs.Inode, gofs.FileHandle, uint32, syscall.Errno) {
	if errno := n.injectNode(ctx, "tmpfile", ""); errno != 0 {
		return nil, nil, 0, errno
	}
	rel := n.rel()
	flags &^= fuse.FMODE_EXEC
	var b *backing.Blob
	errno := n.withDir("tmpfile", "", func(dirfd int) error {
		return n.m.asCaller(ctx, func() error {
			var err error
			b, err = n.m.store.OpenAt(dirfd, ".", rel, int(flags)|unix.O_TMPFILE, mode)
			return err
		})
	})
	if errno != 0 {
		return nil, nil, 0, errno
	}
	return n.created(ctx, "tmpfile", b, rel, true, flags, out)
}

// created answers a CREATE or TMPFILE (op) that made or opened b with
// flags: the new child (unnamed: by O_TMPFILE), a handle that takes over
// b's reference, and the open flags. If the child cannot be made, b is
// released.
func (n *Node) created(ctx context.Context, op string, b *backing.Blob, rel string, unnamed bool, flags uint32, out *fuse.EntryOut) (*gofs.Inode, gofs.FileHandle, uint32, syscall.Errno) {
	ch, err := n.newChild(ctx, b, rel, unnamed, out)
	if err != nil {
		return nil, nil, 0, n.m.errno(op, rel, errors.Join(err, n.m.store.Release(b)))
	}
	child, _ := ch.Operations().(*Node)
	h, fl, errno := n.m.openHandle(op, b, child, flags)
	if errno != 0 {
		return nil, nil, 0, errno
	}
	return ch, h, fl, 0
}

// newChild makes the inode for a file just created or opened through b
// (unnamed: by O_TMPFILE), and fills out.
func (n *Node) newChild(ctx context.Context, b *backing.Blob, rel string, unnamed bool, out *fuse.EntryOut) (*gofs.Inode, error) {
	var st unix.Statx_t
	err := b.Fd(func(fd int) error {
		if err := unix.Statx(fd, "", unix.AT_EMPTY_PATH, unix.STATX_BASIC_STATS|unix.STATX_BTIME, &st); err != nil {
			return pathErr("statx", rel, err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	sys := statFromStatx(&st)
	n.m.sawAttr(&sys)
	out.Attr.FromStat(&sys)
	node := &Node{m: n.m}
	if unnamed {
		node.unnamed = &fileID{dev: sys.Dev, ino: sys.Ino}
	}
	return n.NewInode(ctx, node, n.m.stableAttr(&st)), nil
}

var _ = (gofs.NodeGetattrer)((*Node)(nil))

// Getattr reports the attributes of the node; for a file open on the
// mount, those of its Blob, with the mtime of its last write applied.
func (n *Node) Getattr(ctx context.Context, f gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	if h, ok := f.(*handle); ok {
		return h.Getattr(ctx, out)
	}
	if errno := n.injectNode(ctx, "getattr", ""); errno != 0 {
		return errno
	}
	var st syscall.Stat_t
	errno := n.withParent("getattr", func(dirfd int, name string) error {
		var x unix.Statx_t
		if err := statAt(dirfd, name, &x); err != nil {
			return err
		}
		st = statFromStatx(&x)
		return nil
	})
	if errno != 0 {
		return errno
	}
	if st.Mode&syscall.S_IFMT == syscall.S_IFREG {
		// Open through another handle, the file may have a pending
		// mtime: stat it through its Blob.
		if b := n.m.store.Find(&st); b != nil {
			err := b.Fd(func(fd int) error { return syscall.Fstat(fd, &st) })
			if err = errors.Join(err, n.m.store.Release(b)); err != nil {
				return n.m.errno("getattr", n.rel(), err)
			}
		}
	}
	n.m.sawAttr(&st)
	out.FromStat(&st)
	return 0
}

var _ = (gofs.NodeSetattrer)((*Node)(nil))

// Setattr changes attributes. A size change always goes through the Blob
// (opening it if no handle is given), so that the mapping and the file
// agree; with a Blob at hand every attribute is set through its
// descriptor; without one, setattrAt sets them by name in the parent.
func (n *Node) Setattr(ctx context.Context, f gofs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if n.m.inj.Active() {
		op := "setattr"
		if _, ok := in.GetSize(); ok {
			op = "truncate"
		}
		if errno := n.injectNode(ctx, op, ""); errno != 0 {
			return errno
		}
	}
	rel := n.rel()
	var b *backing.Blob
	release := false
	if h, ok := f.(*handle); ok {
		b = h.blob
	} else if ub := n.unnamedBlob(); ub != nil {
		b, release = ub, true // O_TMPFILE, not linked yet: the Blob is held
	} else if _, ok := in.GetSize(); ok {
		var ob *backing.Blob
		errno := n.withParent("truncate", func(dirfd int, name string) error {
			var err error
			ob, err = n.m.store.OpenAt(dirfd, name, rel, unix.O_WRONLY, 0)
			return err
		})
		if errno != 0 {
			return errno
		}
		b, release = ob, true
	} else if n.StableAttr().Mode&syscall.S_IFMT == syscall.S_IFREG {
		var st syscall.Stat_t
		n.withParent("setattr", func(dirfd int, name string) error {
			var x unix.Statx_t
			if statAt(dirfd, name, &x) == nil {
				st = statFromStatx(&x)
				if b = n.m.store.Find(&st); b != nil {
					release = true
				}
			}
			return nil
		})
	}
	if b == nil {
		return n.setattrAt(in, out)
	}
	var st syscall.Stat_t
	err := setattrBlob(b, in)
	if err == nil {
		err = b.Fd(func(fd int) error { return syscall.Fstat(fd, &st) })
	}
	if release {
		err = errors.Join(err, n.m.store.Release(b))
	}
	if err != nil {
		return n.m.errno("setattr", rel, err)
	}
	n.m.sawAttr(&st)
	out.FromStat(&st)
	return 0
}

// setattrBlob applies in to the file of b through its descriptor: the
// size first (through the Blob, which resizes its mapping with the file),
// then mode and owner, and the times last, so that an explicit mtime is
// not overwritten by the truncate.
func setattrBlob(b *backing.Blob, in *fuse.SetAttrIn) error {
	if sz, ok := in.GetSize(); ok {
		if err := b.Truncate(int64(sz)); err != nil {
			return err
		}
	}
	if _, ok := timesArgs(in); ok {
		b.DiscardMtime()
	}
	return b.Fd(func(fd int) error {
		if m, ok := in.GetMode(); ok {
			if err := syscall.Fchmod(fd, m); err != nil {
				return pathErr("chmod", b.Name(), err)
			}
		}
		if uid, gid, ok := ownerArgs(in); ok {
			if err := syscall.Fchown(fd, uid, gid); err != nil {
				return pathErr("chown", b.Name(), err)
			}
		}
		if ts, ok := timesArgs(in); ok && !timesFlushRefused(b, in) {
			if err := unix.UtimesNanoAt(fd, "", ts, unix.AT_EMPTY_PATH); err != nil {
				return pathErr("utimens", b.Name(), err)
			}
		}
		return nil
	})
}

var _ = (gofs.NodeCopyFileRanger)((*Node)(nil))

// CopyFileRange copies between two files of the mount through their
// mappings, in pieces of at most copyChunk bytes.
func (n *Node) CopyFileRange(ctx context.Context, fhIn gofs.FileHandle, offIn uint64, out *gofs.Inode, fhOut gofs.FileHandle, offOut uint64, length uint64, flags uint64) (uint32, syscall.Errno) {
	hin, ok1 := fhIn.(*handle)
	hout, ok2 := fhOut.(*handle)
	if !ok1 || !ok2 || flags != 0 {
		return 0, syscall.EINVAL
	}
	if n.m.inj.Active() {
		if _, errno := n.m.inject(ctx, "copy_file_range", hin.injectPath(), 0); errno != 0 {
			return 0, errno
		}
	}
	length = min(length, 1<<30)
	buf := make([]byte, min(length, copyChunk))
	var done uint64
	for done < length {
		want := min(uint64(len(buf)), length-done)
		r, err := hin.blob.ReadAt(buf[:want], int64(offIn+done))
		if err != nil {
			return uint32(done), hin.errno("copy_file_range", err)
		}
		if r == 0 {
			break
		}
		w, err := hout.writeAt(buf[:r], int64(offOut+done))
		done += uint64(w)
		if err != nil {
			if done > 0 {
				break
			}
			return 0, hout.errno("copy_file_range", err)
		}
		if r < int(want) {
			break
		}
	}
	return uint32(done), 0
}

// copyChunk is the buffer copy_file_range copies through.
const copyChunk = 1 << 20

// statFromStatx converts a statx result for fuse.Attr.FromStat.
func statFromStatx(x *unix.Statx_t) syscall.Stat_t {
	ts := func(t unix.StatxTimestamp) syscall.Timespec {
		return syscall.Timespec{Sec: t.Sec, Nsec: int64(t.Nsec)}
	}
	return syscall.Stat_t{
		Dev:     unix.Mkdev(x.Dev_major, x.Dev_minor),
		Ino:     x.Ino,
		Nlink:   uint64(x.Nlink),
		Mode:    uint32(x.Mode),
		Uid:     x.Uid,
		Gid:     x.Gid,
		Rdev:    unix.Mkdev(x.Rdev_major, x.Rdev_minor),
		Size:    int64(x.Size),
		Blksize: int64(x.Blksize),
		Blocks:  int64(x.Blocks),
		Atim:    ts(x.Atime),
		Mtim:    ts(x.Mtime),
		Ctim:    ts(x.Ctime),
	}
}

// ownerArgs returns the uid and gid a SETATTR asks for, -1 for one it
// leaves alone (as chown takes them), and whether it asks for either.
func ownerArgs(in *fuse.SetAttrIn) (uid, gid int, ok bool) {
	uid, gid = -1, -1
	if u, set := in.GetUID(); set {
		uid, ok = int(u), true
	}
	if g, set := in.GetGID(); set {
		gid, ok = int(g), true
	}
	return uid, gid, ok
}

// timesArgs returns the atime and mtime a SETATTR asks for, as utimensat
// takes them (UTIME_OMIT for one it leaves alone), and whether it asks for
// either.
func timesArgs(in *fuse.SetAttrIn) ([]unix.Timespec, bool) {
	ts := []unix.Timespec{{Nsec: unix.UTIME_OMIT}, {Nsec: unix.UTIME_OMIT}}
	atime, aok := in.GetATime()
	mtime, mok := in.GetMTime()
	if aok {
		ts[0] = unix.NsecToTimespec(atime.UnixNano())
	}
	if mok {
		ts[1] = unix.NsecToTimespec(mtime.UnixNano())
	}
	// "Now" stays UTIME_NOW (go-fuse turns it into the time of day): an
	// append-only file takes it where explicit times are EPERM.
	if in.Valid&fuse.FATTR_ATIME_NOW != 0 {
		ts[0] = unix.Timespec{Nsec: unix.UTIME_NOW}
	}
	if in.Valid&fuse.FATTR_MTIME_NOW != 0 {
		ts[1] = unix.Timespec{Nsec: unix.UTIME_NOW}
	}
	return ts, aok || mok
}
