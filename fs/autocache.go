package fs

import (
	"sync"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// The automatic page cache (Options.AutoCache, on by default): an open
// keeps the kernel's cached pages of a file (FOPEN_KEEP_CACHE) when the
// file is as the kernel last knew it, and drops them otherwise, so that a
// file read again and again is read from the mount's page cache, while a
// change made in the store behind the mount is seen by the next open. It
// is libfuse's auto_cache, made to survive the mount's own writes.
//
// What the kernel last knew is a file's stamp (mtime, ctime, size) at the
// last moment its cache was known to match the store file:
//   - an attribute reply (lookup, getattr, statx, setattr, create), but
//     only under CAP_AUTO_INVAL_DATA and without the writeback cache,
//     where the kernel itself drops the cached pages when a reply shows a
//     new mtime or size, so that after the reply its pages are of the
//     file the reply describes;
//   - an open that drops the cache: the kernel reads the file afresh;
//   - the release of a handle that wrote, when the handle's open found the
//     cache current and none of its writes failed: writes through the mount go through the kernel's
//     cache (or are the kernel's writeback), so the cache is still the
//     file's after them, though the mtime they leave is new.
//
// A change behind the mount while the file is open and written through
// it, too, is then missed at the next open; the kernel still drops the
// pages at the first attribute reply after it (CAP_AUTO_INVAL_DATA), as
// it does for every change behind the mount while a file is open. A write
// that fails or comes up short forgets the file's stamp: under the
// writeback cache the kernel keeps pages it could not write back.

// cacheStamp is what a file's cached pages are known to be of.
type cacheStamp struct {
	mtime, ctime syscall.Timespec
	size         int64
	// suspect: a write to the file failed since the kernel's cache was
	// last dropped; it matches no file.
	suspect bool
}

// autoCacheFiles bounds the stamps kept: past it they are all forgotten,
// and each file's next open drops its cache once, as without auto-cache.
const autoCacheFiles = 1 << 16

// autoCache holds the stamps of the mount's files, by store file.
type autoCache struct {
	mu     sync.Mutex
	stamps map[fileID]cacheStamp // guarded by mu
}

// stampOf is st's stamp, and whether st is a regular file's.
func stampOf(st *syscall.Stat_t) (fileID, cacheStamp, bool) {
	if st.Mode&syscall.S_IFMT != syscall.S_IFREG {
		return fileID{}, cacheStamp{}, false
	}
	return fileID{dev: st.Dev, ino: st.Ino}, cacheStamp{mtime: st.Mtim, ctime: st.Ctim, size: st.Size}, true
}

// record remembers st as what the kernel's cache of its file is of,
// unless a failed write made the cache suspect (see forget): only an open
// that drops it (reset) vouches for it again.
func (c *autoCache) record(st *syscall.Stat_t) { c.set(st, false) }

// reset is record at an open that drops the kernel's cache of the file.
func (c *autoCache) reset(st *syscall.Stat_t) { c.set(st, true) }

func (c *autoCache) set(st *syscall.Stat_t, dropped bool) {
	id, s, ok := stampOf(st)
	if !ok {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stamps == nil || len(c.stamps) >= autoCacheFiles {
		c.stamps = make(map[fileID]cacheStamp)
	}
	if old, found := c.stamps[id]; found && old.suspect && !dropped {
		return
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

// autoCacheOn says whether the mount decides FOPEN_KEEP_CACHE per open:
// --keep-cache keeps every file's cache and --direct-io has none.
func (m *mountState) autoCacheOn() bool {
	return m.opts.AutoCache && !m.opts.KeepCache && !m.opts.DirectIO
}

// sawAttr notes the attributes of a file the daemon is replying with (see
// the comment at the top of the file: only under CAP_AUTO_INVAL_DATA).
func (m *mountState) sawAttr(st *syscall.Stat_t) {
	if m.autoCacheOn() && !m.opts.ExplicitInvalData && !m.opts.WritebackCache {
		m.cache.record(st)
	}
}

// sawStatx is sawAttr for a statx reply, when it has the stamp's fields.
func (m *mountState) sawStatx(x *unix.Statx_t) {
	const need = unix.STATX_TYPE | unix.STATX_MTIME | unix.STATX_CTIME | unix.STATX_SIZE | unix.STATX_INO
	if x.Mask&need != need {
		return
	}
	st := statFromStatx(x)
	m.sawAttr(&st)
}

// openCacheFlags returns the FOPEN_KEEP_CACHE flag for an open of h's
// file under auto-cache, and marks h as opened on a current cache: the
// file (fstat through its Blob, the pending mtime applied) is as the
// kernel last knew it; if not, the open drops the kernel's pages, and the
// file as it is now is what they will be of.
func (h *handle) openCacheFlags() (uint32, error) {
	if !h.m.autoCacheOn() {
		return 0, nil
	}
	var st syscall.Stat_t
	if err := h.blob.Fd(func(fd int) error { return syscall.Fstat(fd, &st) }); err != nil {
		return 0, err
	}
	h.cacheCurrent = true
	h.cacheID = fileID{dev: st.Dev, ino: st.Ino}
	if h.m.cache.current(&st) {
		h.m.stats.autoCacheKept.Add(1)
		return fuse.FOPEN_KEEP_CACHE, nil
	}
	h.m.stats.autoCacheDropped.Add(1)
	h.m.cache.reset(&st)
	return 0, nil
}

// forget marks the cache of the file id suspect: its next open drops the
// kernel's pages, and nothing but that open vouches for them again.
func (c *autoCache) forget(id fileID) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stamps == nil || len(c.stamps) >= autoCacheFiles {
		c.stamps = make(map[fileID]cacheStamp)
	}
	c.stamps[id] = cacheStamp{suspect: true}
}

// forgetCache is called when a write through h failed or came up short:
// the kernel's pages may hold what never reached the file (the writeback
// cache keeps a page whose writeback failed), so the next open drops them
// and h's release does not vouch for them.
func (h *handle) forgetCache() {
	if !h.cacheCurrent {
		return
	}
	h.failed.Store(true)
	h.m.cache.forget(h.cacheID)
}

// releaseCache notes, at the release of h, the file as h's writes left it,
// when h was opened on a current cache (see the top of the file).
func (h *handle) releaseCache() error {
	if !h.cacheCurrent || !h.wrote.Load() || h.failed.Load() {
		return nil
	}
	var st syscall.Stat_t
	if err := h.blob.Fd(func(fd int) error { return syscall.Fstat(fd, &st) }); err != nil {
		return err
	}
	h.m.cache.record(&st)
	return nil
}
