package backing

import (
	"errors"
	"fmt"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mmapfs/mmapfs/fs/wire"
)

// The changes: WriteAt, Truncate and Allocate, the three entry points
// that change a file's bytes or size, each pass one gate (beginChange:
// the lock, the power not cut, the flags, a descriptor that writes), and
// a change that fails puts the size back with one helper (putSizeBack).
//
// A write's route, in this order: WriteAt (a file with a flag goes to
// writeFlagged, flags.go) → writeOnce: beginChange, populateForWriteLocked,
// simSave (the power-cut journal, journal.go), copyGuarded (fault.go);
// past the end of the file growLocked and ensureCapLocked (blob.go) first,
// allocatePageLocked after a fault → markDirty (the dirty ledger,
// pageset.go) → afterWrite (the policy, sync.go).

// MaxFileSize is the largest file a blob may grow to. Past it a write or a
// truncate fails with EFBIG. It bounds the address space one mapping can
// take (the store's own filesystem may set a lower limit, which comes back
// from fallocate or ftruncate as EFBIG too).
const MaxFileSize = int64(1) << 45 // 32 TiB

// beginChange is the gate of every change to the file: it takes b.mu,
// exclusively if excl, else shared (enough for a copy into the mapping
// below the end of the file), with the blob resident, and checks that op
// may change the file now: the power was not cut, none of the flags in
// deny is set, and the blob has a descriptor that writes (with mapped: a
// writable mapping). It returns that descriptor with b.mu held, or an
// error with b.mu released.
func (b *Blob) beginChange(op string, excl bool, deny uint32, mapped bool) (int, error) {
	var err error
	if excl {
		err = b.lock()
	} else {
		err = b.rlock()
	}
	if err != nil {
		return -1, err
	}
	wfd := b.writeFdLocked()
	err = b.cutErr(op)
	if err == nil && deny != 0 {
		err = b.flagErr(op, b.flags.Load()&deny)
	}
	if err == nil && (wfd < 0 || mapped && !b.writable) {
		err = b.pathErr(op, fmt.Errorf("blob is mapped read-only: %w", syscall.EBADF))
	}
	if err == nil {
		return wfd, nil
	}
	if excl {
		b.mu.Unlock()
	} else {
		b.mu.RUnlock()
	}
	return -1, err
}

// putSizeBackLocked gives the file its size old again, through fd (a
// descriptor that writes), after a change that failed with err and may
// have changed it, and returns err. If that fails too it returns both and
// the blob takes the size the file has: the daemon's view and the file
// agree either way. b.mu must be held exclusively.
func (b *Blob) putSizeBackLocked(fd int, old int64, err error) error {
	if terr := syscall.Ftruncate(fd, old); terr != nil {
		b.refreshSizeLocked()
		return errors.Join(err, b.pathErr("ftruncate", terr))
	}
	b.setSizeLocked(old)
	return err
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
	if err := b.injectFault("write", len(p)); err != nil {
		return 0, err
	}
	if b.flags.Load() != 0 {
		return b.writeFlagged(p, off, false)
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

// writeOnce does one attempt of WriteAt. extended reports whether it
// changed the file's size.
func (b *Blob) writeOnce(p []byte, off, end int64) (n int, extended bool, err error) {
	// WriteAt saw no flag: the copy goes through the mapping.
	if _, err := b.beginChange("write", false, 0, true); err != nil {
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

	if _, err := b.beginChange("write", true, 0, true); err != nil {
		return 0, false, err
	}
	defer b.mu.Unlock()
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
		return n, false, b.putSizeBackLocked(b.fd, old, err)
	}
	return n, true, nil
}

// populateForWriteLocked brings the pages of [off, end) below the end of the
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
		return b.putSizeBackLocked(b.fd, b.size, b.pathErr("grow", fmt.Errorf("to %d bytes: %w", end, err)))
	}
	if err := b.ensureCapLocked(end); err != nil {
		// The file grew but the mapping could not.
		return b.putSizeBackLocked(b.fd, b.size, err)
	}
	b.size = end
	b.dmu.Lock()
	b.metaDirty = true
	b.dmu.Unlock()
	return nil
}

// zeroPage is a page of zeros, copied from, never into.
var zeroPage = make([]byte, pageSize)

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
	if _, err := copyGuarded(b.data[b.size:end], zeroPage[:end-b.size], b.size); err != nil {
		return b.pathErr("grow", fmt.Errorf("clearing past the end of file at %d: %w", b.size, syscall.EIO))
	}
	return nil
}

// allocatePageLocked allocates the page of the file at off, after a write
// into it faulted: ENOSPC (or EDQUOT) if the store has no room for it, nil
// if it could be allocated now. b.mu must be held.
func (b *Blob) allocatePageLocked(off int64) error {
	page := off / int64(pageSize) * int64(pageSize)
	b.store.stats.add(wire.Faults, 1)
	err := fallocate(b.fd, unix.FALLOC_FL_KEEP_SIZE, page, int64(pageSize))
	switch {
	case err == nil:
		return nil
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT):
		return b.pathErr("write", fmt.Errorf("fault at offset %d, no space to fill the page: %w", off, err))
	}
	return b.pathErr("write", fmt.Errorf("fault at offset %d: %w", off, syscall.EIO))
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

// Truncate sets the file's size, as ftruncate does: growing leaves a hole
// that reads as zeros, shrinking drops the bytes past size.
func (b *Blob) Truncate(size int64) error {
	if size < 0 {
		return b.pathErr("truncate", syscall.EINVAL)
	}
	if size > MaxFileSize {
		return b.pathErr("truncate", fmt.Errorf("%d bytes is past the maximum file size %d: %w", size, MaxFileSize, syscall.EFBIG))
	}
	// ftruncate of an immutable or append-only file is EPERM,
	// whatever the size and the descriptor.
	wfd, err := b.beginChange("truncate", true, flagImmutable|flagAppend, false)
	if err != nil {
		return err
	}
	defer b.mu.Unlock()
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
			return b.putSizeBackLocked(wfd, b.size, err)
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
	// An append-only file takes fallocate that allocates (the store's
	// filesystem refuses the rest itself), through whichever
	// descriptor may change it.
	wfd, err := b.beginChange("fallocate", true, flagImmutable, false)
	if err != nil {
		return err
	}
	defer b.mu.Unlock()
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
