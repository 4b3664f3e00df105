package backing

import (
	"errors"
	"fmt"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mmapfs/mmapfs/fs/wire"
)

// Durability: Sync and the policies' syncs msync exactly the pages the
// daemon dirtied (the ledger, pageset.go) and fdatasync when the size or
// the allocation changed; see the package doc, Durability.

// syncRange msyncs (MS_SYNC) the pages of [off, end) and, if the write
// changed the size, fdatasyncs, so that the range is durable on return.
func (b *Blob) syncRange(off, end int64, meta bool) error {
	unlock, err := b.syncLock("msync")
	if err != nil {
		return err
	}
	defer unlock()
	first, last := off/int64(pageSize), pagesCeil(end)
	b.dmu.Lock()
	b.dirty.removeRange(first, last)
	if meta {
		b.metaDirty = false
	}
	b.dmu.Unlock()
	var pages pageSet
	pages.addRange(first, last)
	err = b.syncTakenLocked(&pages, meta, false)
	var lost *WritebackLost
	if errors.As(err, &lost) {
		b.reported(err) // the write that made it reports it
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
		return b.reported(b.Sync()) // applies the mtime too
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
		b.store.stats.add(wire.IgnoredFsyncs, 1)
		return nil
	}
	return b.reported(b.Sync())
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
	unlock, err := b.syncLock("fsync")
	if err != nil {
		return err
	}
	defer unlock()
	if err := b.applyMtimeLocked(); err != nil {
		return err
	}
	b.dmu.Lock()
	dirty, meta, whole := b.dirty, b.metaDirty, b.wholeSync
	b.dirty, b.metaDirty, b.wholeSync = pageSet{}, false, false
	b.dmu.Unlock()
	return b.syncTakenLocked(&dirty, meta, whole)
}

// syncTakenLocked syncs pages, which the caller took out of the dirty
// ledger, and the size or the whole file (meta, whole) as syncLocked
// does. On success the power-cut journal forgets what became durable; on
// failure nothing is known to be durable, and it all goes back into the
// ledger for the next try. b.mu must be held as syncLock takes it.
//
// Fault injection (Options.Inject, inject.go) may fail the sync before it
// starts, or lose its pages (a *WritebackLost, under the simulation).
func (b *Blob) syncTakenLocked(pages *pageSet, meta, whole bool) error {
	err := b.injectSyncLocked(pages, whole)
	var lost *WritebackLost
	if err != nil && b.sim != nil && errors.As(err, &lost) {
		return b.loseWritebackLocked(pages, meta, whole, err)
	}
	if err == nil {
		err = b.syncLocked(pages, meta, whole)
	}
	if err == nil {
		b.simSynced(pages, meta, whole)
		return nil
	}
	b.requeueLocked(pages, meta, whole)
	return err
}

// requeueLocked puts pages (and meta, whole) of a failed sync back into
// the ledger for the next try. b.mu must be held as syncLock takes it.
func (b *Blob) requeueLocked(pages *pageSet, meta, whole bool) {
	b.dmu.Lock()
	if b.dirty.empty() && !pages.empty() {
		b.dirtySince = time.Now()
	}
	b.dirty.merge(pages)
	b.metaDirty = b.metaDirty || meta
	b.wholeSync = b.wholeSync || whole
	b.dmu.Unlock()
}

// syncLocked makes dirty durable: msync(MS_SYNC) of each run of its
// pages, then fdatasync if meta (the size or allocation changed); with
// whole, one fdatasync of the whole file instead. Each call is counted.
// b.mu must be held as syncLock takes it.
func (b *Blob) syncLocked(dirty *pageSet, meta, whole bool) error {
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
		b.recordSync(b.size, time.Since(start))
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
		b.recordSync(hi-lo, time.Since(start))
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
		b.recordSync(0, time.Since(start))
	}
	return nil
}

// syncLock takes b.mu for a sync (op names it in errors): shared, or
// exclusive under the power-cut simulation (see simSynced). It returns
// the unlock; after a power cut it fails, as nothing can be made durable.
func (b *Blob) syncLock(op string) (func(), error) {
	lock, unlock := b.rlock, b.mu.RUnlock
	if b.sim != nil {
		lock, unlock = b.lock, b.mu.Unlock
	}
	if err := lock(); err != nil {
		return nil, err
	}
	if err := b.cutErr(op); err != nil {
		unlock()
		return nil, err
	}
	return unlock, nil
}
