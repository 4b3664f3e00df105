package fs

import (
	"context"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/mmapfs/mmapfs/backing"
	"github.com/mmapfs/mmapfs/fs/inject"
)

// handle is one open of a regular file. It holds a reference to the file's
// shared Blob and no descriptor of its own. While a trace runs, each
// method notes in its request's record what it did to the Blob
// (reqtrace.go: inflight.enter and leave; nothing when none runs).
type handle struct {
	m    *mountState   // read only
	blob *backing.Blob // read only; released by Release
	// node is the file the handle was opened on (read only): the
	// fault-injection rules match its path now, which follows renames
	// and links, unlike the name the Blob was first opened by.
	node *Node
	// appendOnly (read only) says the file was append-only (chattr +a)
	// when this handle was opened: as on ext4, a descriptor opened then
	// may only append, though the Blob's own descriptor, and handles
	// opened before the flag, may write anywhere.
	appendOnly bool
	// mark is the handle's place in the Blob's record of lost
	// writebacks (an open file description's errseq): its fsyncs
	// report each loss recorded after its open once. Read only; what it
	// points to is the Blob's.
	mark *backing.ErrMark
	// cacheID is the store file, for auto-cache (autocache.go): set at
	// open, read only after.
	cacheID fileID
}

func (m *mountState) newHandle(b *backing.Blob, n *Node) *handle {
	if n != nil {
		b.SetOwner(blobOwner{n, b}) // the store's rules match its path now
	}
	return &handle{m: m, blob: b, node: n, appendOnly: b.AppendOnly(), mark: b.Mark()}
}

// injectPath is the path the fault-injection rules match the handle's
// requests against: its node's path now.
func (h *handle) injectPath() string {
	if h.node == nil {
		return h.blob.Name()
	}
	return h.node.rel()
}

// writeAt writes through the Blob as this handle may (see appendOnly).
func (h *handle) writeAt(p []byte, off int64) (int, error) {
	if h.appendOnly {
		return h.blob.AppendAt(p, off)
	}
	return h.blob.WriteAt(p, off)
}

var _ = (gofs.FileReader)((*handle)(nil))

// Read copies out of the mapping into the kernel's buffer.
func (h *handle) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	rq := h.m.trace.current(ctx)
	served := "" // the path the rules matched, whose after= counts the bytes served
	if h.m.inj.Active() {
		served = h.injectPath()
		d, errno := h.m.inject(ctx, "read", served, 0)
		if errno != 0 {
			rq.enter(h.m.trace, h.blob, off, 0)
			return nil, errno
		}
		if d.Short >= 0 && int64(len(dest)) > d.Short {
			dest = dest[:d.Short]
		}
	}
	rq.enter(h.m.trace, h.blob, off, int64(len(dest))) // the pages it copies
	n, err := h.blob.ReadAt(dest, off)
	if err != nil {
		return nil, h.errno("read", err)
	}
	if served != "" {
		h.m.inj.Served("read", served, int64(n))
	}
	h.m.stats.bytesRead.Add(int64(n))
	return fuse.ReadResultData(dest[:n]), 0
}

var _ = (gofs.FileWriter)((*handle)(nil))

// Write copies into the mapping, growing the file first if it extends it.
func (h *handle) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	n, errno := h.write(ctx, data, off)
	if errno != 0 || int(n) < len(data) {
		// Under the writeback cache the kernel keeps what it could not
		// write in its cache (or ignores a short count): its pages are
		// no longer the file's.
		h.forgetCache()
	}
	return n, errno
}

// write is Write, its errors not yet seen by auto-cache.
func (h *handle) write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	rq := h.m.trace.current(ctx)
	var torn inject.Decision
	if h.m.inj.Active() {
		d, errno := h.m.inject(ctx, "write", h.injectPath(), int64(len(data)))
		if errno != 0 {
			rq.enter(h.m.trace, h.blob, off, 0)
			return 0, errno
		}
		if d.Torn >= 0 {
			// A write no longer than Torn reaches the file whole
			// (then fails, with torn=K:ERRNO).
			torn = d
			if int64(len(data)) > d.Torn {
				data = data[:d.Torn]
			}
		}
	}
	rq.enter(h.m.trace, h.blob, off, int64(len(data))) // the pages it copies into
	n, err := h.writeAt(data, off)
	rq.leave() // a policy may sync as it writes
	h.m.stats.bytesWritten.Add(int64(n))
	if err != nil {
		return 0, h.errno("write", err)
	}
	if torn.TornErrno != 0 {
		// The first bytes reached the file; the client is told the
		// write failed, as a device failing mid-write would.
		return 0, torn.TornErrno
	}
	return uint32(n), 0
}

// errno is m.errno for an operation on the handle's file, except that an
// error a fault-injection rule made (by the store's hooks) is returned
// as it is: injecthooks.go logged it, rate-limited.
func (h *handle) errno(op string, err error) syscall.Errno {
	if e, ok := injectedErrno(err); ok {
		return e
	}
	return h.m.errno(op, h.blob.Name(), err)
}

var _ = (gofs.FileFsyncer)((*handle)(nil))

// Fsync msyncs the pages the daemon dirtied and makes the size durable.
func (h *handle) Fsync(ctx context.Context, flags uint32) syscall.Errno {
	rq := h.m.trace.current(ctx)
	rq.enter(h.m.trace, h.blob, 0, 0)
	if h.m.inj.Active() {
		if _, errno := h.m.inject(ctx, "fsync", h.injectPath(), 0); errno != 0 {
			return errno
		}
	}
	err := h.blob.FsyncAs(h.mark)
	rq.leave()
	if err != nil {
		return h.errno("fsync", err)
	}
	return 0
}

var _ = (gofs.FileFlusher)((*handle)(nil))

// Flush runs at every close(2) of a descriptor; under the close policy it
// syncs the file, and reports a failure here, where close(2) sees it.
func (h *handle) Flush(ctx context.Context) syscall.Errno {
	rq := h.m.trace.current(ctx)
	rq.enter(h.m.trace, h.blob, 0, 0)
	if h.m.inj.Active() {
		if _, errno := h.m.inject(ctx, "flush", h.injectPath(), 0); errno != 0 {
			return errno
		}
	}
	err := h.blob.FlushAs(h.mark)
	rq.leave()
	if err != nil {
		return h.errno("flush", err)
	}
	return 0
}

var _ = (gofs.FileReleaser)((*handle)(nil))

// Release drops the handle's reference to the Blob; the last one unmaps it.
func (h *handle) Release(ctx context.Context) syscall.Errno {
	rq := h.m.trace.current(ctx)
	rq.enter(h.m.trace, h.blob, 0, 0)
	err := h.m.store.Release(h.blob) // the last release may sync
	rq.leave()
	if err != nil {
		// The kernel ignores this errno; errno() logs it (an
		// injected one only as its rule's hits are logged).
		return h.errno("release", err)
	}
	return 0
}

var _ = (gofs.FileGetattrer)((*handle)(nil))

// Getattr is fstat of the Blob, with the mtime of its last write applied.
func (h *handle) Getattr(ctx context.Context, out *fuse.AttrOut) syscall.Errno {
	h.m.trace.current(ctx).enter(h.m.trace, h.blob, 0, 0)
	if h.m.inj.Active() {
		if _, errno := h.m.inject(ctx, "getattr", h.injectPath(), 0); errno != 0 {
			return errno
		}
	}
	var st syscall.Stat_t
	if err := h.blob.Fd(func(fd int) error { return syscall.Fstat(fd, &st) }); err != nil {
		return h.m.errno("getattr", h.blob.Name(), err)
	}
	h.m.sawAttr(&st)
	out.FromStat(&st)
	return 0
}

var _ = (gofs.FileStatxer)((*handle)(nil))

// Statx is statx of the Blob, with the mtime of its last write applied.
func (h *handle) Statx(ctx context.Context, flags uint32, mask uint32, out *fuse.StatxOut) syscall.Errno {
	h.m.trace.current(ctx).enter(h.m.trace, h.blob, 0, 0)
	var st unix.Statx_t
	err := h.blob.Fd(func(fd int) error {
		return unix.Statx(fd, "", int(flags)|unix.AT_EMPTY_PATH, int(mask), &st)
	})
	if err != nil {
		return h.m.errno("statx", h.blob.Name(), err)
	}
	h.m.sawStatx(&st)
	out.FromStatx(&st)
	return 0
}

var _ = (gofs.FileLseeker)((*handle)(nil))

// Lseek answers SEEK_DATA and SEEK_HOLE from the store's filesystem (the
// kernel handles the other whences itself).
func (h *handle) Lseek(ctx context.Context, off uint64, whence uint32) (uint64, syscall.Errno) {
	h.m.trace.current(ctx).enter(h.m.trace, h.blob, 0, 0)
	if h.m.inj.Active() {
		if _, errno := h.m.inject(ctx, "lseek", h.injectPath(), 0); errno != 0 {
			return 0, errno
		}
	}
	n, err := h.blob.Seek(int64(off), int(whence))
	if err != nil {
		return 0, h.m.errno("lseek", h.blob.Name(), err)
	}
	return uint64(n), 0
}

var _ = (gofs.FileAllocater)((*handle)(nil))

// Allocate is fallocate(2) through the Blob, which keeps its mapping in
// step with the size.
func (h *handle) Allocate(ctx context.Context, off uint64, size uint64, mode uint32) syscall.Errno {
	rq := h.m.trace.current(ctx)
	rq.enter(h.m.trace, h.blob, 0, 0)
	if h.m.inj.Active() {
		if _, errno := h.m.inject(ctx, "fallocate", h.injectPath(), 0); errno != 0 {
			return errno
		}
	}
	err := h.blob.Allocate(int64(off), int64(size), mode)
	rq.leave()
	if err != nil {
		// The kernel drops the range's cached pages only after a
		// fallocate that succeeded.
		h.forgetCache()
		return h.errno("fallocate", err)
	}
	return 0
}
