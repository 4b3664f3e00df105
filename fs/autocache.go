package fs

import (
	"sync"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// The automatic page cache (Options.AutoCache, on by default): an open
// keeps the kernel's cached pages of a file (FOPEN_KEEP_CACHE) when the
// file is as it was at the last open that dropped them, and drops them
// otherwise, so that a file read again and again is read from the mount's
// page cache, while a change made in the store behind the mount is seen
// by the next open. It is libfuse's auto_cache, made safe against what
// the kernel does with attribute replies.
//
// A file's stamp (mtime, ctime, size of the store file) is what its
// cached pages are known to be of. Only an open that drops the cache
// sets it: the kernel then reads the file afresh. Everything else can
// only take a stamp away, so that the next open drops the cache again:
//   - an attribute reply (lookup, getattr, statx, setattr, create) that
//     shows the file otherwise: the kernel may have dropped its pages for
//     it (CAP_AUTO_INVAL_DATA) or not (a SETATTR reply, a reply it
//     discarded as racing a write, --auto-inval-data=false, the writeback
//     cache), and the daemon cannot tell which;
//   - a write that fails or comes up short: under the writeback cache the
//     kernel keeps pages it could not write back, which hold what never
//     reached the file;
//   - the daemon's own change of a file behind the kernel's cache (the
//     fsyncgate put-back, injecthooks.go).
// The mount's own writes change the mtime too, so a file written through
// the mount is read afresh once after its next open: what the kernel does
// anyway under CAP_AUTO_INVAL_DATA when it sees the new mtime.

// cacheStamp is what a file's cached pages are known to be of.
type cacheStamp struct {
	mtime, ctime syscall.Timespec
	size         int64
}

// autoCacheFiles bounds the stamps kept: past it they are all forgotten,
// and each file's next open drops its cache once, as without auto-cache.
const autoCacheFiles = 1 << 16

// autoCache holds the stamps of the mount's files, by store file.
type autoCache struct {
	mu     sync.Mutex
	stamps map[fileID]cacheStamp // guarded by mu
	// putBacks are fsyncgate's invalidations not delivered yet
	// (injecthooks.go); it has its own lock.
	putBacks putBacks
}

// stampOf is st's stamp, and whether st is a regular file's.
func stampOf(st *syscall.Stat_t) (fileID, cacheStamp, bool) {
	if st.Mode&syscall.S_IFMT != syscall.S_IFREG {
		return fileID{}, cacheStamp{}, false
	}
	return fileID{dev: st.Dev, ino: st.Ino}, cacheStamp{mtime: st.Mtim, ctime: st.Ctim, size: st.Size}, true
}

// reset notes, at an open that drops the kernel's cache of st's file, st
// as what the cache will be of.
func (c *autoCache) reset(st *syscall.Stat_t) {
	id, s, ok := stampOf(st)
	if !ok {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stamps == nil || len(c.stamps) >= autoCacheFiles {
		c.stamps = make(map[fileID]cacheStamp)
	}
	c.stamps[id] = s
}

// current says whether the kernel's cache of st's file is of the file as
// st shows it.
func (c *autoCache) current(st *syscall.Stat_t) bool {
	id, s, ok := stampOf(st)
	if !ok {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	old, found := c.stamps[id]
	return found && old == s
}

// confirm takes away the stamp of st's file if st shows the file
// otherwise.
func (c *autoCache) confirm(st *syscall.Stat_t) {
	id, s, ok := stampOf(st)
	if !ok {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if old, found := c.stamps[id]; found && old != s {
		delete(c.stamps, id)
	}
}

// forget takes away the stamp of the file id: its next open drops the
// kernel's pages.
func (c *autoCache) forget(id fileID) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.stamps, id)
}

// forgetAll takes away every stamp.
func (c *autoCache) forgetAll() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.stamps = nil
}

// autoCacheOn says whether the mount decides FOPEN_KEEP_CACHE per open:
// --keep-cache keeps every file's cache and --direct-io has none.
func (m *mountState) autoCacheOn() bool {
	return m.opts.AutoCache && !m.opts.KeepCache && !m.opts.DirectIO
}

// sawAttr notes the attributes of a file the daemon is replying with (see
// the comment at the top of the file).
func (m *mountState) sawAttr(st *syscall.Stat_t) {
	if m.autoCacheOn() {
		m.cache.confirm(st)
	}
}

// sawStatx is sawAttr for a statx reply. One without the stamp's fields
// shows nothing to confirm against; the kernel takes its attributes only
// when it has all of them, and the open compares the whole stamp anyway.
func (m *mountState) sawStatx(x *unix.Statx_t) {
	const need = unix.STATX_TYPE | unix.STATX_MTIME | unix.STATX_CTIME | unix.STATX_SIZE | unix.STATX_INO
	if x.Mask&need != need {
		return
	}
	st := statFromStatx(x)
	m.sawAttr(&st)
}

// openCacheFlags returns the FOPEN_KEEP_CACHE flag for an open of h's
// file under auto-cache: the file (fstat through its Blob, the pending
// mtime applied) is as it was at the last open that dropped the kernel's
// cache; if not, this open drops it, and the file as it is now is what
// the cache will be of.
func (h *handle) openCacheFlags() (uint32, error) {
	if h.m.cache.putBacks.any() && h.node != nil {
		// Under any cache option: see blobOwner.Invalidate.
		blobOwner{h.node, h.blob}.WaitPutBack()
	}
	if !h.m.autoCacheOn() {
		return 0, nil
	}
	var st syscall.Stat_t
	if err := h.blob.Fd(func(fd int) error { return syscall.Fstat(fd, &st) }); err != nil {
		return 0, err
	}
	h.cacheID = fileID{dev: st.Dev, ino: st.Ino}
	if h.m.cache.current(&st) {
		h.m.stats.autoCacheKept.Add(1)
		return fuse.FOPEN_KEEP_CACHE, nil
	}
	h.m.stats.autoCacheDropped.Add(1)
	h.m.cache.reset(&st)
	return 0, nil
}

// forgetCache is called when a write through h failed or came up short
// (see the top of the file).
func (h *handle) forgetCache() {
	if h.m.autoCacheOn() {
		h.m.cache.forget(h.cacheID)
	}
}
