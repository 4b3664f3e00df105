package backing

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// MaxFileSize is the largest file a blob may grow to. Past it a write or a
// truncate fails with EFBIG. It bounds the address space one mapping can
// take (the store's own filesystem may set a lower limit, which comes back
// from fallocate or ftruncate as EFBIG too).
const MaxFileSize = int64(1) << 45 // 32 TiB

// maxSlack bounds how far the mapping's capacity runs ahead of the file when
// it grows, so that appends do not remap on every write but a huge file does
// not reserve as much address space again.
const maxSlack = int64(1) << 30

var pageSize = os.Getpagesize()

// Blob is one backing file and its shared mapping. It is shared by every
// open handle of every name of the file (hard links share one Blob) and is
// reference-counted by its Store. All methods are safe for concurrent use.
type Blob struct {
	store *Store
	key   fileKey // read only
	name  string  // path at first open, for messages; read only

	// refs and removed are guarded by store.mu. removed says the file's
	// last name is gone (Store.Removed): what it owes the disk at its last
	// release is not recorded.
	refs    int
	removed bool

	// counted and ringed are guarded by store.mu: whether the blob is
	// counted as resident, and whether it is in the store's ring.
	counted, ringed bool
	// fdKept is guarded by store.mu: the power-cut record of the file
	// took fd at the last release (recordSimLocked), so close leaves it
	// open.
	fdKept bool

	// mu guards fd, fh, writable, afd, data and size. Copies in and out of
	// data hold it shared for as long as they touch the bytes; anything
	// that changes the mapping, the size or the residency holds it
	// exclusively. Take it with rlock or lock, which make the blob
	// resident (see resident.go).
	mu       sync.RWMutex
	fd       int              // -1 while the store has dropped it
	fh       *unix.FileHandle // to reopen it by; set when first dropped
	writable bool             // fd is O_RDWR and data is mapped PROT_WRITE
	afd      int              // O_WRONLY|O_APPEND descriptor of an append-only file (flags.go), or -1
	data     []byte           // the exact slice mmap/mremap returned (len = capacity); nil when unmapped
	size     int64            // the file's size as far as the daemon knows

	// used is set by every access and cleared by the store's sweep.
	used atomic.Bool

	// flags caches the file's immutable and append-only flags and
	// whether the blob is written through afd (flagImmutable,
	// flagAppend, flagViaAppend; see flags.go). Read without a lock on
	// every change; stored with mu held exclusively, or before the blob
	// is shared.
	flags atomic.Uint32

	// caps says the file may carry file capabilities (the
	// security.capability xattr), which a write must remove, as the
	// kernel's file_remove_privs does for write(2): writes through a
	// mapping never do. Checked at open, set by NoteCaps.
	caps atomic.Bool

	// dmu guards the dirty-page bookkeeping below. Taken after mu.
	dmu        sync.Mutex
	dirty      pageSet   // pages written since their last msync
	dirtySince time.Time // when dirty last went from empty to non-empty
	metaDirty  bool      // size or allocation changed since the last fdatasync
	wholeSync  bool      // the next Sync must fdatasync the whole file

	// sim is the power-cut simulation's record of the file (see
	// powercut.go); nil when the simulation is off. The pointer is read
	// only; what it points to has its own lock.
	sim *simFile

	// mtime is the time of the last write not yet applied to the file's
	// mtime (unix nanoseconds), or 0. Writes through a mapping do not
	// update mtime once a page is dirty, so the daemon sets it lazily.
	mtime atomic.Int64
}

// Name returns the blob's path relative to the store, as it was when the
// blob was first opened.
func (b *Blob) Name() string { return b.name }

func (b *Blob) pathErr(op string, err error) error {
	return &os.PathError{Op: op, Path: b.name, Err: err}
}

// Size returns the file's size.
func (b *Blob) Size() int64 {
	b.mu.RLock()
	defer b.mu.RUnlock()
	return b.size
}

// Writable reports whether the blob is mapped for writing.
func (b *Blob) Writable() bool {
	b.mu.RLock()
	defer b.mu.RUnlock()
	return b.writable
}

// ReadAt copies bytes at off out of the mapping into p, clipped to the
// file's size, and returns how many it copied; 0 at or past EOF.
func (b *Blob) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, b.pathErr("read", syscall.EINVAL)
	}
	if err := b.rlock(); err != nil {
		return 0, err
	}
	if off >= b.size || len(p) == 0 {
		b.mu.RUnlock()
		return 0, nil
	}
	end := min(b.size, off+int64(len(p)))
	n, err := copyGuarded(p, b.data[off:end], off)
	b.mu.RUnlock()
	if err == nil {
		return n, nil
	}
	at := off + int64(n)
	if err := b.faulted("read", at, false); err != nil {
		return 0, err
	}
	// The file still covers the page, but it cannot be mapped in (a
	// hole on a full tmpfs needs a page to read as zeros): read it with
	// pread, which needs none.
	if err := b.rlock(); err != nil {
		return 0, err
	}
	defer b.mu.RUnlock()
	end = min(b.size, off+int64(len(p)))
	for at < end {
		r, err := unix.Pread(b.fd, p[at-off:end-off], at)
		if err != nil {
			return 0, b.pathErr("read", fmt.Errorf("pread at %d after a fault: %w", at, err))
		}
		if r == 0 {
			break
		}
		at += int64(r)
	}
	return int(at - off), nil
}

// WriteAt copies p into the mapping at off, growing the file and the
// mapping first when the write extends the file.
func (b *Blob) WriteAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, b.pathErr("write", syscall.EINVAL)
	}
	if len(p) == 0 {
		return 0, nil
	}
	end := off + int64(len(p))
	if end > MaxFileSize || end < off {
		return 0, b.pathErr("write", fmt.Errorf("offset %d + %d bytes is past the maximum file size %d: %w", off, len(p), MaxFileSize, syscall.EFBIG))
	}
	if b.flags.Load() != 0 {
		return b.writeFlagged(p, off)
	}
	for attempt := 0; ; attempt++ {
		n, extended, err := b.writeOnce(p, off, end)
		var fe *faultError
		if !errors.As(err, &fe) {
			if err != nil {
				return n, err
			}
			b.markDirty(off, end, extended)
			return n, b.afterWrite(off, end, extended)
		}
		// The pages copied before the fault are in the file.
		if fe.done > 0 {
			b.markDirty(off, off+int64(fe.done), extended)
		}
		if err := b.faulted("write", off+int64(fe.done), true); err != nil {
			return 0, err
		}
		if attempt > 0 {
			return 0, b.pathErr("write", fmt.Errorf("fault at offset %d again after allocating it: %w", off+int64(fe.done), syscall.EIO))
		}
		// faulted could allocate the page (the disk had been full and
		// has room now): try once more.
	}
}

// populateForWrite brings the pages of [off, end) below the end of the
// file into the page cache as single pages (fadvise WILLNEED reads them
// in order 0), before the copy faults them in. Left to the fault, the
// mapping's read-around would put them there as large folios (ext4 makes
// them, up to hundreds of KiB, ramping up as faults go sequentially), and
// a store through the mapping dirties a whole folio: a 4 KiB write then
// costs an msync or writeback of the entire folio (measured: 400 KiB
// written per 4 KiB write + fsync). Pages past the end are new: their
// read-around stops at the end of the file. A hint: errors are ignored,
// and pages already cached (in whatever size) are left as they are. Pages
// the daemon dirtied since their last sync are in memory already: a write
// that touches only those (a log rewriting its tail) makes no system call
// for it. b.mu must be held (shared is enough).
func (b *Blob) populateForWriteLocked(off, end int64) {
	if off >= b.size {
		return
	}
	end = min(end, b.size)
	first, last := off/int64(pageSize), pagesCeil(end)
	b.dmu.Lock()
	cached := true
	for p := first; p < last && cached; p++ {
		cached = b.dirty.has(p)
	}
	b.dmu.Unlock()
	if cached {
		return
	}
	_ = unix.Fadvise(b.fd, first*int64(pageSize), roundUp(end)-first*int64(pageSize), unix.FADV_WILLNEED)
}

// writeOnce does one attempt of WriteAt. extended reports whether it
// changed the file's size.
func (b *Blob) writeOnce(p []byte, off, end int64) (n int, extended bool, err error) {
	if err := b.rlock(); err != nil {
		return 0, false, err
	}
	if !b.writable {
		b.mu.RUnlock()
		return 0, false, b.pathErr("write", fmt.Errorf("blob is mapped read-only: %w", syscall.EBADF))
	}
	if err := b.cutErr("write"); err != nil {
		b.mu.RUnlock()
		return 0, false, err
	}
	b.populateForWriteLocked(off, end)
	if end <= b.size {
		if err := b.simSave(off, end); err != nil {
			b.mu.RUnlock()
			return 0, false, err
		}
		n, err = copyGuarded(b.data[off:end], p, off)
		b.mu.RUnlock()
		return n, false, err
	}
	b.mu.RUnlock()

	if err := b.lock(); err != nil {
		return 0, false, err
	}
	defer b.mu.Unlock()
	if err := b.cutErr("write"); err != nil {
		return 0, false, err
	}
	if err := b.simSave(off, end); err != nil {
		return 0, false, err
	}
	if end <= b.size { // grown by another write meanwhile
		n, err = copyGuarded(b.data[off:end], p, off)
		return n, false, err
	}
	old := b.size
	if err := b.growLocked(off, end); err != nil {
		return 0, false, err
	}
	n, err = copyGuarded(b.data[off:end], p, off)
	var fe *faultError
	if errors.As(err, &fe) {
		// The new pages could not be backed: find out why here, while
		// the old size is known, and retry once if the page could be
		// allocated after all.
		at := off + int64(fe.done)
		if aerr := b.allocatePageLocked(at); aerr != nil {
			err = aerr
		} else {
			var m int
			m, err = copyGuarded(b.data[at:end], p[fe.done:], at)
			n = fe.done + m
			if err != nil {
				err = b.pathErr("write", fmt.Errorf("fault at offset %d again after allocating it: %w", at, syscall.EIO))
			}
		}
	}
	if err != nil {
		// A failed write leaves the size as it was (what was copied
		// below the old end stays, as a short write would leave it).
		if terr := syscall.Ftruncate(b.fd, old); terr != nil {
			return n, false, errors.Join(err, b.pathErr("ftruncate", terr))
		}
		b.setSizeLocked(old)
		return n, false, err
	}
	return n, true, nil
}

// allocatePageLocked allocates the page of the file at off, after a write
// into it faulted: ENOSPC (or EDQUOT) if the store has no room for it, nil
// if it could be allocated now. b.mu must be held.
func (b *Blob) allocatePageLocked(off int64) error {
	page := off / int64(pageSize) * int64(pageSize)
	b.store.stats.faults.Add(1)
	err := fallocate(b.fd, unix.FALLOC_FL_KEEP_SIZE, page, int64(pageSize))
	switch {
	case err == nil:
		return nil
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT):
		return b.pathErr("write", fmt.Errorf("fault at offset %d, no space to fill the page: %w", off, err))
	}
	return b.pathErr("write", fmt.Errorf("fault at offset %d: %w", off, syscall.EIO))
}

// growLocked makes the file end at end (> size) and grows the mapping to
// cover it. By default it only sets the size: a page the store cannot back
// faults when the write touches it, and the fault path answers ENOSPC (see
// faulted). With Options.Preallocate it allocates [off, end) first, so that
// a full disk is ENOSPC before any copy, at the price of real extents for
// every small file (an fallocate to make, and to free at unlink: on ext4 a
// create+write+unlink costs several times as much). b.mu must be held
// exclusively.
func (b *Blob) growLocked(off, end int64) error {
	if err := b.zeroTailLocked(); err != nil {
		return err
	}
	var err error
	if b.store.opts.Preallocate {
		err = fallocate(b.fd, 0, off, end-off)
	}
	if !b.store.opts.Preallocate || errors.Is(err, syscall.EOPNOTSUPP) {
		err = syscall.Ftruncate(b.fd, end)
		if err == nil && !b.store.opts.Preallocate {
			// An ftruncate that changes the size sets mtime (POSIX),
			// now, before the copy, where write(2) would: what is
			// pending is older and must not be applied over it, and
			// this write adds nothing (see markDirty).
			b.mtime.Store(0)
		}
	}
	if err != nil {
		// A fallocate that fails part way may have extended the file:
		// a failed write leaves the size as it was.
		if terr := syscall.Ftruncate(b.fd, b.size); terr != nil {
			b.refreshSizeLocked()
			err = errors.Join(err, b.pathErr("ftruncate", terr))
		}
		return b.pathErr("grow", fmt.Errorf("to %d bytes: %w", end, err))
	}
	if err := b.ensureCapLocked(end); err != nil {
		// The file grew but the mapping could not: put the size back
		// so that the daemon's view and the file agree.
		if terr := syscall.Ftruncate(b.fd, b.size); terr != nil {
			err = errors.Join(err, b.pathErr("ftruncate", terr))
		}
		return err
	}
	b.size = end
	b.dmu.Lock()
	b.metaDirty = true
	b.dmu.Unlock()
	return nil
}

// ensureCapLocked makes the mapping at least need bytes long, remapping
// with some headroom. b.mu must be held exclusively.
func (b *Blob) ensureCapLocked(need int64) error {
	if need <= int64(len(b.data)) {
		return nil
	}
	capacity := roundUp(max(need, min(2*int64(len(b.data)), int64(len(b.data))+maxSlack)))
	prot := unix.PROT_READ
	if b.writable {
		prot |= unix.PROT_WRITE
	}
	if b.data == nil {
		flags := unix.MAP_SHARED
		if b.store.opts.Populate {
			flags |= unix.MAP_POPULATE
		}
		data, err := unix.Mmap(b.fd, 0, int(capacity), prot, flags)
		if err != nil {
			return b.pathErr("mmap", fmt.Errorf("%d bytes: %w", capacity, err))
		}
		b.data = data
		b.store.stats.mappings.Add(1)
	} else {
		data, err := unix.Mremap(b.data, int(capacity), unix.MREMAP_MAYMOVE)
		if err != nil {
			return b.pathErr("mremap", fmt.Errorf("%d to %d bytes: %w", len(b.data), capacity, err))
		}
		b.store.stats.mappedBytes.Add(-int64(len(b.data)))
		b.data = data
		b.store.stats.remaps.Add(1)
	}
	b.store.stats.mappedBytes.Add(int64(len(b.data)))
	if adv := b.store.opts.Advice; adv != AdviceNormal {
		// Advice is a hint: a kernel or filesystem that does not take
		// it (MADV_HUGEPAGE on a filesystem without large folios) is
		// no reason to fail the open. The error is kept for stats.
		if err := unix.Madvise(b.data, adv.madv()); err != nil {
			b.store.stats.adviceErrors.Add(1)
		}
	}
	return nil
}

// unmapLocked drops the mapping, handing it to the store's batch of
// unmaps (unmap.go). b.mu must be held exclusively.
func (b *Blob) unmapLocked() error {
	err := b.store.unmapLater(b.data)
	b.data = nil
	if err != nil {
		return b.pathErr("munmap", err)
	}
	return nil
}

// zeroTailLocked clears the bytes past the end of the file in its last
// page. A store's filesystem may keep what was written there through the
// mapping (tmpfs does), and growing the file would then show it instead
// of zeros. Call it before the size grows. b.mu must be held exclusively.
func (b *Blob) zeroTailLocked() error {
	tail := b.size % int64(pageSize)
	if tail == 0 || b.size >= int64(len(b.data)) {
		return nil
	}
	end := min(b.size-tail+int64(pageSize), int64(len(b.data)))
	if err := zeroGuarded(b.data[b.size:end]); err != nil {
		return b.pathErr("grow", fmt.Errorf("clearing past the end of file at %d: %w", b.size, syscall.EIO))
	}
	return nil
}

// Truncate sets the file's size, as ftruncate does: growing leaves a hole
// that reads as zeros, shrinking drops the bytes past size.
func (b *Blob) Truncate(size int64) error {
	if size < 0 {
		return b.pathErr("truncate", syscall.EINVAL)
	}
	if size > MaxFileSize {
		return b.pathErr("truncate", fmt.Errorf("%d bytes is past the maximum file size %d: %w", size, MaxFileSize, syscall.EFBIG))
	}
	if err := b.lock(); err != nil {
		return err
	}
	defer b.mu.Unlock()
	if err := b.cutErr("truncate"); err != nil {
		return err
	}
	// ftruncate of an immutable or append-only file is EPERM,
	// whatever the size and the descriptor.
	if err := b.flagErr("truncate", b.flags.Load()); err != nil {
		return err
	}
	wfd := b.writeFdLocked()
	if wfd < 0 {
		return b.pathErr("truncate", fmt.Errorf("blob is mapped read-only: %w", syscall.EBADF))
	}
	if size < b.size {
		// The page the new end falls in loses its tail, the pages
		// past it their content.
		if err := b.simSave(size, b.size); err != nil {
			return err
		}
	}
	if size > b.size && b.writable {
		if err := b.zeroTailLocked(); err != nil {
			return err
		}
	}
	if err := syscall.Ftruncate(wfd, size); err != nil {
		if errors.Is(err, syscall.EPERM) {
			err = errors.Join(err, b.refreshFlagsLocked())
		}
		return b.pathErr("truncate", err)
	}
	if size > b.size {
		if err := b.ensureCapLocked(size); err != nil {
			if terr := syscall.Ftruncate(wfd, b.size); terr != nil {
				err = errors.Join(err, b.pathErr("ftruncate", terr))
			}
			return err
		}
	} else if size == 0 {
		// Give the address space back: an empty file has no mapping.
		if err := b.unmapLocked(); err != nil {
			return err
		}
	}
	b.size = size
	b.dmu.Lock()
	b.dirty.removeFrom(pagesCeil(size))
	b.metaDirty = true
	b.dmu.Unlock()
	return nil
}

// Allocate is fallocate(2) on the blob: mode 0 allocates and may extend
// the file, FALLOC_FL_KEEP_SIZE allocates without extending,
// FALLOC_FL_PUNCH_HOLE (with KEEP_SIZE) frees a range, which then reads as
// zeros through the mapping too.
func (b *Blob) Allocate(off, length int64, mode uint32) error {
	if off < 0 || length <= 0 {
		return b.pathErr("fallocate", syscall.EINVAL)
	}
	end := off + length
	if end > MaxFileSize || end < off {
		return b.pathErr("fallocate", fmt.Errorf("range ends past the maximum file size %d: %w", MaxFileSize, syscall.EFBIG))
	}
	if err := b.lock(); err != nil {
		return err
	}
	defer b.mu.Unlock()
	if err := b.cutErr("fallocate"); err != nil {
		return err
	}
	f := b.flags.Load()
	if f&flagImmutable != 0 {
		return b.flagErr("fallocate", f)
	}
	// An append-only file takes fallocate that allocates (the store's
	// filesystem refuses the rest itself), through whichever
	// descriptor may change it.
	wfd := b.writeFdLocked()
	if wfd < 0 {
		return b.pathErr("fallocate", fmt.Errorf("blob is mapped read-only: %w", syscall.EBADF))
	}
	if mode&(unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_ZERO_RANGE) != 0 {
		if err := b.simSave(off, end); err != nil {
			return err
		}
	}
	keepSize := mode&unix.FALLOC_FL_KEEP_SIZE != 0
	if !keepSize && end > b.size {
		// Map the new length first, so that a failure leaves the file
		// as it was.
		if err := b.ensureCapLocked(end); err != nil {
			return err
		}
		if b.writable {
			if err := b.zeroTailLocked(); err != nil {
				return err
			}
		}
	}
	if err := fallocate(wfd, mode, off, length); err != nil {
		// A fallocate that fails part way may still have extended
		// the file.
		b.refreshSizeLocked()
		return b.pathErr("fallocate", err)
	}
	if !keepSize && end > b.size {
		b.size = end
	}
	b.dmu.Lock()
	b.metaDirty = true
	b.dmu.Unlock()
	return nil
}

// Seek is lseek(2) with SEEK_DATA or SEEK_HOLE on the blob, as the store's
// filesystem supports them.
func (b *Blob) Seek(off int64, whence int) (int64, error) {
	if err := b.rlock(); err != nil {
		return 0, err
	}
	defer b.mu.RUnlock()
	if off >= b.size {
		return 0, b.pathErr("lseek", syscall.ENXIO)
	}
	// The descriptor's file position is never used for I/O, so moving
	// it here disturbs nothing.
	n, err := unix.Seek(b.fd, off, whence)
	if err != nil {
		return 0, b.pathErr("lseek", err)
	}
	return n, nil
}

// Fd calls fn with the blob's descriptor, after applying a pending mtime,
// for what the blob does not model itself (fstat, fchmod, fchown,
// utimens, statx). fn must not change the file's size or contents.
func (b *Blob) Fd(fn func(fd int) error) error {
	if err := b.rlock(); err != nil {
		return err
	}
	defer b.mu.RUnlock()
	if err := b.applyMtimeLocked(); err != nil {
		return err
	}
	return fn(b.fd)
}

// DiscardMtime forgets a pending mtime, before an explicit utimens.
func (b *Blob) DiscardMtime() { b.mtime.Store(0) }

// applyMtimeLocked sets the file's mtime to the time of the last write,
// if one is pending. b.mu must be held (shared is enough).
func (b *Blob) applyMtimeLocked() error {
	ns := b.mtime.Swap(0)
	if ns == 0 {
		return nil
	}
	ts := []unix.Timespec{{Nsec: unix.UTIME_OMIT}, unix.NsecToTimespec(ns)}
	if err := unix.UtimesNanoAt(b.fd, "", ts, unix.AT_EMPTY_PATH); err != nil {
		if b.mtimeRefused(err) {
			// Made immutable or append-only behind the daemon, after
			// the write: the file keeps the mtime it had then (see
			// flags.go).
			return nil
		}
		return b.pathErr("utimens", err)
	}
	return nil
}

// markDirty records that [off, end) was written, and whether the write
// changed the size. A write that grew the file by ftruncate (not
// Options.Preallocate's fallocate) got its mtime from the ftruncate
// (growLocked), so it leaves none pending: a file written once, as a
// new small file is, then costs no utimensat at close.
func (b *Blob) markDirty(off, end int64, extended bool) {
	if !extended || b.store.opts.Preallocate {
		b.mtime.Store(time.Now().UnixNano())
	}
	b.dirtyLedger(off, end, extended)
}

// dirtyLedger adds the pages of [off, end) to the dirty ledger; meta says
// the size or allocation changed too.
func (b *Blob) dirtyLedger(off, end int64, meta bool) {
	now := time.Now()
	b.dmu.Lock()
	if b.dirty.empty() {
		b.dirtySince = now
	}
	b.dirty.addRange(off/int64(pageSize), pagesCeil(end))
	if meta {
		b.metaDirty = true
	}
	b.dmu.Unlock()
}

// Unsynced returns how many bytes the daemon wrote into the mapping and has
// not msynced yet, and since when the oldest of them has waited.
func (b *Blob) Unsynced() (bytes int64, since time.Time) {
	b.dmu.Lock()
	defer b.dmu.Unlock()
	return b.dirty.count * int64(pageSize), b.dirtySince
}

// NoteCaps tells the blob its file was given file capabilities (a
// security.capability xattr), which its next write must remove.
func (b *Blob) NoteCaps() { b.caps.Store(true) }

// removeCaps removes the file's capabilities after a write, once.
func (b *Blob) removeCaps() error {
	// A load first: on every write, a plain read of a line readers
	// share, not an atomic write to it.
	if !b.caps.Load() || !b.caps.Swap(false) {
		return nil
	}
	if err := b.rlock(); err != nil {
		return err
	}
	defer b.mu.RUnlock()
	err := unix.Fremovexattr(b.fd, capabilityXattr)
	if err != nil && !errors.Is(err, unix.ENODATA) {
		b.caps.Store(true)
		return b.pathErr("removexattr", fmt.Errorf("%s after a write: %w", capabilityXattr, err))
	}
	return nil
}

// capabilityXattr holds a file's capabilities.
const capabilityXattr = "security.capability"

// afterWrite applies the store's writeback policy to a write of [off, end).
func (b *Blob) afterWrite(off, end int64, extended bool) error {
	if err := b.removeCaps(); err != nil {
		return err
	}
	switch b.store.opts.Policy.Kind {
	case PolicyWriteThrough:
		return b.syncRange(off, end, extended)
	case PolicyAsync:
		return b.startWriteback(off, end)
	}
	return nil
}

// syncRange msyncs (MS_SYNC) the pages of [off, end) and, if the write
// changed the size, fdatasyncs, so that the range is durable on return.
func (b *Blob) syncRange(off, end int64, meta bool) error {
	unlock, err := b.syncLock()
	if err != nil {
		return err
	}
	defer unlock()
	if err := b.cutErr("msync"); err != nil {
		return err
	}
	first, last := off/int64(pageSize), pagesCeil(end)
	b.dmu.Lock()
	b.dirty.removeRange(first, last)
	if meta {
		b.metaDirty = false
	}
	b.dmu.Unlock()
	var pages pageSet
	pages.addRange(first, last)
	err = b.syncLocked(&pages, meta, false)
	if err == nil {
		b.simSynced(&pages, meta, false)
	} else {
		b.dmu.Lock()
		if b.dirty.empty() {
			b.dirtySince = time.Now()
		}
		b.dirty.addRange(first, last)
		b.metaDirty = b.metaDirty || meta
		b.dmu.Unlock()
	}
	return err
}

// startWriteback schedules writeback of [off, end) and does not wait
// (see PolicyAsync). The pages stay counted as unsynced.
func (b *Blob) startWriteback(off, end int64) error {
	if err := b.rlock(); err != nil {
		return err
	}
	defer b.mu.RUnlock()
	lo := off / int64(pageSize) * int64(pageSize)
	start := time.Now()
	if err := unix.SyncFileRange(b.fd, lo, roundUp(end)-lo, unix.SYNC_FILE_RANGE_WRITE); err != nil {
		return b.pathErr("sync_file_range", err)
	}
	b.store.stats.recordAsync(roundUp(end)-lo, time.Since(start))
	return nil
}

// Flush is called at every close of a descriptor of the file. It applies
// a pending mtime, so that the file's times are final when close(2)
// returns (as they are on a local filesystem, where write sets them), and
// under the close policy it syncs the blob.
func (b *Blob) Flush() error {
	if b.store.opts.Policy.Kind == PolicyClose {
		return b.Sync() // applies the mtime too
	}
	if b.mtime.Load() == 0 {
		return nil // nothing pending (an evicted blob applied it)
	}
	if err := b.rlock(); err != nil {
		return err
	}
	defer b.mu.RUnlock()
	return b.applyMtimeLocked()
}

// Fsync is fsync(2) or fdatasync(2) of the file: Sync, unless the store
// was opened with IgnoreFsync.
func (b *Blob) Fsync() error {
	if b.store.opts.IgnoreFsync {
		b.store.stats.ignoredFsyncs.Add(1)
		return nil
	}
	return b.Sync()
}

// Resident returns how many bytes of the file are in memory now, by
// mincore(2) over the mapping.
func (b *Blob) Resident() (int64, error) {
	b.mu.RLock()
	defer b.mu.RUnlock()
	if b.size == 0 || b.fd < 0 {
		return 0, nil
	}
	n := roundUp(b.size)
	vec := make([]byte, n/int64(pageSize))
	if err := mincore(b.data[:n], vec); err != nil {
		return 0, b.pathErr("mincore", err)
	}
	var pages int64
	for _, v := range vec {
		pages += int64(v & 1)
	}
	return pages * int64(pageSize), nil
}

// Sync makes everything written to the blob durable: msync(MS_SYNC) of
// exactly the pages dirtied since the last Sync, then fdatasync if the size
// or the allocation changed (or of the whole file, if the blob may hold
// pages dirtied before this daemon tracked it).
func (b *Blob) Sync() error {
	b.dmu.Lock()
	clean := b.dirty.empty() && !b.metaDirty && !b.wholeSync
	b.dmu.Unlock()
	// After a power cut nothing can be made durable: a write that
	// landed before the cut was put back by it (which leaves the blob
	// clean), so even a clean blob's sync must fail. Checked after
	// clean was read: the cut sets the flag before it cleans a blob.
	if err := b.cutErr("fsync"); err != nil {
		return err
	}
	if clean && b.mtime.Load() == 0 {
		return nil
	}
	unlock, err := b.syncLock()
	if err != nil {
		return err
	}
	defer unlock()
	if err := b.cutErr("fsync"); err != nil {
		return err
	}
	if err := b.applyMtimeLocked(); err != nil {
		return err
	}
	b.dmu.Lock()
	dirty, meta, whole := b.dirty, b.metaDirty, b.wholeSync
	b.dirty, b.metaDirty, b.wholeSync = pageSet{}, false, false
	b.dmu.Unlock()

	err = b.syncLocked(&dirty, meta, whole)
	if err == nil {
		b.simSynced(&dirty, meta, whole)
	} else {
		// Nothing is known to be durable: keep it all for the next try.
		b.dmu.Lock()
		if b.dirty.empty() && !dirty.empty() {
			b.dirtySince = time.Now()
		}
		b.dirty.merge(&dirty)
		b.metaDirty = b.metaDirty || meta
		b.wholeSync = b.wholeSync || whole
		b.dmu.Unlock()
	}
	return err
}

func (b *Blob) syncLocked(dirty *pageSet, meta, whole bool) error {
	st := &b.store.stats
	if !b.writable && !dirty.empty() {
		// Written with write(2) through the append descriptor: msync
		// of a read-only mapping syncs nothing (flags.go).
		whole = true
	}
	if whole {
		start := time.Now()
		if err := syscall.Fdatasync(b.fd); err != nil {
			return b.pathErr("fdatasync", err)
		}
		st.recordSync(b.size, time.Since(start))
		return nil
	}
	var err error
	dirty.runs(func(first, end int64) bool {
		lo := first * int64(pageSize)
		hi := min(end*int64(pageSize), int64(len(b.data)))
		if lo >= hi {
			return true
		}
		start := time.Now()
		if e := unix.Msync(b.data[lo:hi], unix.MS_SYNC); e != nil {
			err = b.pathErr("msync", fmt.Errorf("bytes %d-%d: %w", lo, hi, e))
			return false
		}
		st.recordSync(hi-lo, time.Since(start))
		return true
	})
	if err != nil {
		return err
	}
	if meta {
		start := time.Now()
		if err := syscall.Fdatasync(b.fd); err != nil {
			return b.pathErr("fdatasync", err)
		}
		st.recordSync(0, time.Since(start))
	}
	return nil
}

// faulted works out why an access at off faulted and returns the error to
// give the caller, or nil when the access may be retried another way: a
// read with pread (the file still covers off), a write because the
// faulting page could be allocated now. It refreshes the size if the blob was
// truncated behind the daemon's back.
func (b *Blob) faulted(op string, off int64, write bool) error {
	b.store.stats.faults.Add(1)
	if err := b.lock(); err != nil {
		return err
	}
	defer b.mu.Unlock()
	var st syscall.Stat_t
	if err := syscall.Fstat(b.fd, &st); err != nil {
		return b.pathErr(op, fmt.Errorf("fault at offset %d, and fstat failed (%v): %w", off, err, syscall.EIO))
	}
	if st.Size <= off {
		old := b.size
		b.setSizeLocked(st.Size)
		return b.pathErr(op, fmt.Errorf("fault at offset %d: blob shrank behind mmapfs's back from %d to %d bytes: %w", off, old, st.Size, syscall.EIO))
	}
	if !write {
		return nil
	}
	if err := b.faultFlagsLocked(off); err != nil {
		return err
	}
	return b.allocatePageLocked(off)
}

// refreshSizeLocked re-reads the file's size after a failed grow, which may
// have extended it part of the way. b.mu must be held exclusively.
func (b *Blob) refreshSizeLocked() {
	var st syscall.Stat_t
	if syscall.Fstat(b.fd, &st) == nil && st.Size != b.size {
		b.setSizeLocked(st.Size)
	}
}

// setSizeLocked adopts a size the file has now, remapping if needed. A size
// the mapping cannot cover is clipped to the mapping: reads past it then
// stop short instead of faulting. b.mu must be held exclusively.
func (b *Blob) setSizeLocked(size int64) {
	if size > int64(len(b.data)) && b.ensureCapLocked(size) != nil {
		size = int64(len(b.data))
	}
	b.size = size
	b.dmu.Lock()
	b.dirty.removeFrom(pagesCeil(size))
	b.dmu.Unlock()
}

// upgrade replaces a read-only descriptor and mapping with a writable one
// on fd (O_RDWR), which the blob then owns. It maps fd before it lets go
// of anything, so that a failure leaves the blob read-only and usable. It
// returns whether it took fd (not if the blob is writable already or the
// upgrade failed) and whether the blob became resident by it (it had been
// dropped).
func (b *Blob) upgrade(fd int) (owned, nowResident bool, err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.writable {
		return false, false, nil
	}
	oldFd, oldData := b.fd, b.data
	b.fd, b.data, b.writable = fd, nil, true
	if b.size > 0 {
		if err := b.ensureCapLocked(b.size); err != nil {
			b.fd, b.data, b.writable = oldFd, oldData, false
			return false, false, err
		}
	}
	b.used.Store(true)
	// O_RDWR was allowed: the file has neither flag now (unless one is
	// being set this instant: ask the file), and the blob writes
	// through its mapping again.
	f, ferr := fileFlags(b.fd)
	if ferr != nil {
		f = 0 // the O_RDWR open is proof enough
	}
	b.flags.Store(f)
	if oldFd < 0 {
		return true, true, nil
	}
	errs := []error{b.store.unmapLater(oldData)}
	if err := syscall.Close(oldFd); err != nil {
		errs = append(errs, b.pathErr("close", err))
	}
	return true, false, errors.Join(errs...)
}

// close drops the mapping (to the store's batch of unmaps, see unmap.go)
// and the descriptors, leaving fd open if the power-cut record took it.
func (b *Blob) close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	errs := []error{b.applyMtimeLocked(), b.unmapLocked()}
	if b.fdKept {
		b.fd = -1
	}
	if b.fd >= 0 {
		if err := syscall.Close(b.fd); err != nil {
			errs = append(errs, b.pathErr("close", err))
		}
		b.fd = -1
	}
	if b.afd >= 0 {
		if err := syscall.Close(b.afd); err != nil {
			errs = append(errs, b.pathErr("close", err))
		}
		b.afd = -1
	}
	return errors.Join(errs...)
}

func fallocate(fd int, mode uint32, off, length int64) error {
	for {
		err := syscall.Fallocate(fd, mode, off, length)
		if err != syscall.EINTR {
			if err != nil {
				return err
			}
			return nil
		}
	}
}

func roundUp(n int64) int64 {
	p := int64(pageSize)
	return (n + p - 1) / p * p
}

func pagesCeil(n int64) int64 {
	return (n + int64(pageSize) - 1) / int64(pageSize)
}
