package backing

import (
	"errors"
	"fmt"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mmapfs/mmapfs/fs/wire"
)

// Durability: Sync and the policies' syncs msync exactly the pages the
// daemon dirtied (the ledger, pageset.go) and fdatasync when the size or
// the allocation changed; see the package doc, Durability.

// testHookSyncfs, set only by tests, runs in Store.syncfs once it has
// read the generation it will forget up to and before the syncfs itself:
// a blob closed dirty then is one closed during syncfs, whose pages it
// need not cover. (Declared here with the syncs; syncfs is in store.go.)
var testHookSyncfs atomic.Pointer[func(s *Store)]

// syncRange msyncs (MS_SYNC) the pages of [off, end) and, if the write
// changed the size, fdatasyncs, so that the range is durable on return.
func (b *Blob) syncRange(off, end int64, meta bool) error {
	first, last := off/int64(pageSize), pagesCeil(end)
	var injErr error
	if b.store.opts.Inject != nil {
		injErr = b.injectSync((last - first) * int64(pageSize))
	}
	unlock, err := b.syncLock("msync")
	if err != nil {
		return err
	}
	b.dmu.Lock()
	b.dirty.removeRange(first, last)
	if meta {
		b.metaDirty = false
	}
	b.dmu.Unlock()
	var pages pageSet
	pages.addRange(first, last)
	err = b.syncTakenLocked(&pages, meta, false, injErr)
	unlock()
	b.notifyPutBack()
	// A lost writeback is the write's error (the policy's sync of it
	// failed) and stays recorded for every open's next fsync (takeLost),
	// as Linux reports a writeback error to each file's fsync.
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
func (b *Blob) Flush() error { return b.FlushAs(&b.ownMark) }

// FlushAs is Flush through the open m (Mark): the close policy's sync
// reports a lost writeback once per open, as FsyncAs does.
func (b *Blob) FlushAs(m *ErrMark) error {
	if b.store.opts.Policy.Kind == PolicyClose {
		return b.reportedAs(m, b.Sync()) // applies the mtime too
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
// A lost writeback is reported once to the syncs asked for without an
// open (the blob's own mark); FsyncAs reports it once per open.
func (b *Blob) Fsync() error { return b.FsyncAs(&b.ownMark) }

// FsyncAs is Fsync through the open m (Mark): it reports a lost
// writeback recorded since m last reported one (Linux's errseq: each
// open made before the loss sees it once, whichever sync lost the pages,
// and concurrent fsyncs through one open see it once between them).
func (b *Blob) FsyncAs(m *ErrMark) error {
	if b.store.opts.IgnoreFsync {
		b.store.stats.add(wire.IgnoredFsyncs, 1)
		return nil
	}
	return b.reportedAs(m, b.Sync())
}

// Sync makes everything written to the blob durable: msync(MS_SYNC) of
// exactly the pages dirtied since the last Sync, then fdatasync if the size
// or the allocation changed (or of the whole file, if the blob may hold
// pages dirtied before this daemon tracked it).
func (b *Blob) Sync() error {
	b.dmu.Lock()
	clean := b.dirty.empty() && !b.metaDirty && !b.wholeSync
	n, whole := b.dirty.count*int64(pageSize), b.wholeSync
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
	// Fault injection is asked before the lock, so that a delay holds
	// up this sync only (the pages stay owed meanwhile, for any other
	// sync to take); a sync of the size alone is asked too.
	var injErr error
	if !clean && b.store.opts.Inject != nil {
		if whole {
			n = b.Size()
		}
		injErr = b.injectSync(n)
	}
	unlock, err := b.syncLock("fsync")
	if err != nil {
		return err
	}
	err = b.syncAllLocked(injErr)
	unlock()
	b.notifyPutBack()
	return err
}

// syncAllLocked is Sync's work under its lock: the pending mtime, then
// everything the ledger owes (injErr: fault injection's answer, as for
// syncTakenLocked).
func (b *Blob) syncAllLocked(injErr error) error {
	if err := b.applyMtimeLocked(); err != nil {
		return err
	}
	b.dmu.Lock()
	dirty, meta, whole := b.dirty, b.metaDirty, b.wholeSync
	b.dirty, b.metaDirty, b.wholeSync = pageSet{}, false, false
	b.dmu.Unlock()
	return b.syncTakenLocked(&dirty, meta, whole, injErr)
}

// syncTakenLocked syncs pages, which the caller took out of the dirty
// ledger, and the size or the whole file (meta, whole) as syncLocked
// does. On success the power-cut journal forgets what became durable; on
// failure nothing is known to be durable, and it all goes back into the
// ledger for the next try. b.mu must be held as syncLock takes it.
//
// Fault injection (Options.Inject, inject.go) may fail the sync before it
// starts (injErr, which the caller asked for before the lock: see
// injectSync), or lose its pages (a *WritebackLost, under the simulation,
// on a blob written through its mapping: an append-only file's is
// read-only, so its sync only fails).
func (b *Blob) syncTakenLocked(pages *pageSet, meta, whole bool, injErr error) error {
	err := injErr
	var lost *WritebackLost
	if err != nil && errors.As(err, &lost) {
		if b.sim != nil && b.writable && !b.AppendOnly() {
			return b.loseWritebackLocked(pages, meta, whole, err)
		}
		// Nothing to put back through: a plain failure.
		err = b.pathErr("msync", lost.Err)
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
