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

	"github.com/mmapfs/mmapfs/fs/wire"
)

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
	// idle is guarded by store.mu: the blob is released (refs == 0) and
	// kept for the periodic pass, counted in Store.idle.
	idle bool

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

	// ra is what the daemon read in ahead of a sequential reader
	// (readahead.go); it has its own lock.
	ra readState

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
	// The record of lost writebacks (fault injection's WritebackLost,
	// inject.go), Linux's errseq of the file: lostSeq counts them,
	// lostLatest is the latest, lostErr is the latest while no open has
	// reported it (nil once one has; Store.Release carries it over to the
	// file's next blob). Each open reports what was recorded after its
	// ErrMark, once (takeLost). ownMark is the mark of the syncs asked
	// for without an open (Fsync, Flush).
	lostSeq    uint64
	lostLatest error
	lostErr    error
	ownMark    ErrMark
	// putBack are the pages a lost writeback put back that the owner has
	// not been told of yet (notifyPutBack).
	putBack pageSet

	// owner is the file of the mount the blob serves (SetOwner), nil
	// until one is set. Read and stored without a lock.
	owner atomic.Pointer[Owner]

	// sim is the power-cut simulation's record of the file (see
	// journal.go); nil when the simulation is off. The pointer is read
	// only; what it points to has its own lock.
	sim *simFile

	// mtime is the time of the last write not yet applied to the file's
	// mtime (unix nanoseconds), or 0. Writes through a mapping do not
	// update mtime once a page is dirty, so the daemon sets it lazily.
	mtime atomic.Int64

	// syncCalls and syncBytes count the msync and fdatasync calls made
	// on the blob and the bytes they covered (recordSync, SyncCounts).
	syncCalls, syncBytes atomic.Uint64
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
	return b.readAt(p, off, b.store.opts.Inject != nil)
}

// readAt is ReadAt; ask says to ask the fault-injection hook first.
func (b *Blob) readAt(p []byte, off int64, ask bool) (int, error) {
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
	if ask {
		if wait, err := b.ask("fault", end-off); wait != nil || err != nil {
			// The delay is served without the lock, so that it holds
			// up this read only; the file may change meanwhile, so
			// the read starts again after it (asking no more).
			b.mu.RUnlock()
			if wait != nil {
				wait()
			}
			if err != nil {
				return 0, b.faultErr("read", err)
			}
			return b.readAt(p, off, false)
		}
	}
	b.readInLocked(off, end)
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
		b.store.stats.add(wire.Mappings, 1)
	} else {
		data, err := unix.Mremap(b.data, int(capacity), unix.MREMAP_MAYMOVE)
		if err != nil {
			return b.pathErr("mremap", fmt.Errorf("%d to %d bytes: %w", len(b.data), capacity, err))
		}
		b.store.stats.add(wire.MappedBytes, -int64(len(b.data)))
		b.data = data
		b.store.stats.add(wire.Remaps, 1)
	}
	b.store.stats.add(wire.MappedBytes, int64(len(b.data)))
	// Advice is a hint: a kernel or filesystem that does not take it
	// (MADV_HUGEPAGE on a kernel without transparent huge pages) is no
	// reason to fail the open. The error is kept for stats. mremap
	// keeps a mapping's advice, but the grown part is given it again
	// with the rest (MADV_WILLNEED reads it in).
	for _, adv := range b.store.opts.Advice.madv() {
		if err := unix.Madvise(b.data, adv); err != nil {
			b.store.stats.add(wire.MadviseErrors, 1)
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

// faulted works out why an access at off faulted and returns the error to
// give the caller, or nil when the access may be retried another way: a
// read with pread (the file still covers off), a write because the
// faulting page could be allocated now. It refreshes the size if the blob was
// truncated behind the daemon's back.
func (b *Blob) faulted(op string, off int64, write bool) error {
	b.store.stats.add(wire.Faults, 1)
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
