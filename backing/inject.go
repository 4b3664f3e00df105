package backing

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// Fault injection's hooks (Options.Inject). The rules are the caller's
// (fs/inject); the store only asks before its own work on a file and
// fails that work as its device would. It never changes a file otherwise:
// a failed sync leaves the pages dirty (to be synced by the next one), and
// a lost writeback puts the pages back to the content they had at their
// last sync, which the power-cut journal keeps, then writes that content
// to the file, as the disk already holds it.
//
// A rule's delay is served by the wait the hook returns, which the store
// calls holding none of the blob's locks: a slow msync or fault holds up
// the request that meets it, not the other requests on the file.

// WritebackLost is the error an Options.Inject hook returns from "msync"
// to make the failed sync lose its pages, as Linux does when writeback
// fails ("fsyncgate"): the pages it was to write get their last synced
// content back (the power-cut journal's; past the last synced size,
// zeros, as a file's unwritten blocks read) and are no longer dirty, so
// the next sync succeeds without them. The error is recorded as Linux
// records it in the file's errseq: each open of the file made before it
// (an ErrMark), and the first made after it while no open has reported
// it, reports it at its next fsync, once (FsyncAs). It needs
// Options.PowerCutSim, and a blob the daemon writes through its mapping;
// otherwise (without the simulation, or on an append-only file, which is
// written with write(2) and mapped read-only) the sync only fails, as an
// Options.Inject error does.
type WritebackLost struct{ Err error }

func (e *WritebackLost) Error() string {
	return fmt.Sprintf("%v; the pages it could not write are lost (put back to their last synced content)", e.Err)
}

func (e *WritebackLost) Unwrap() error { return e.Err }

// Owner is the mount's side of a blob: the file it serves as clients see
// it. Fault injection needs its path now (a rule's path= follows
// renames) and tells it when pages changed behind the clients' caches (a
// lost writeback's put-back). Its methods are called with none of the
// blob's locks held, except Path, which is called with b.mu held and
// must not call into the store.
type Owner interface {
	// Path returns the file's path now, relative to the store root.
	Path() string
	// Invalidate tells the clients that bytes [off, off+n) of the file
	// changed under their caches.
	Invalidate(off, n int64)
}

// PutBackWaiter is an Owner whose Invalidate may deliver its news after
// it returns (from a goroutine, as it must when a request holding the
// pages is what lost them): WaitPutBack waits until what Invalidate was
// told so far has reached the clients. The store calls it before
// returning from a sync a client asked for that reports a lost
// writeback (FsyncAs, FlushAs), so that the client's next read, by any
// descriptor, comes after it: what Linux promises after fsyncgate, that
// readers see what the disk has.
type PutBackWaiter interface {
	WaitPutBack()
}

// SetOwner tells the blob which file of the mount it serves now (the
// latest open's); Path and the put-back's invalidation go to it.
func (b *Blob) SetOwner(o Owner) {
	if p := b.owner.Load(); p != nil && *p == o {
		return
	}
	b.owner.Store(&o)
}

// Path returns the blob's path now: its owner's (SetOwner), or else the
// name it was first opened by. It takes no lock of the blob.
func (b *Blob) Path() string {
	if p := b.owner.Load(); p != nil {
		return (*p).Path()
	}
	return b.name
}

// ask asks the hook about op on the blob, carrying n bytes; it returns
// the wait to serve first (nil for none) and the error to fail the work
// with. It takes no lock of the blob itself.
func (b *Blob) ask(op string, n int64) (wait func(), err error) {
	hook := b.store.opts.Inject
	if hook == nil {
		return nil, nil
	}
	return hook(op, b, n)
}

// injectFault asks the hook before a copy of n bytes to or from the
// mapping (op names the copy in the error), and serves its delay: call
// it with no lock of the blob held.
func (b *Blob) injectFault(op string, n int) error {
	wait, err := b.ask("fault", int64(n))
	if wait != nil {
		wait()
	}
	return b.faultErr(op, err)
}

// faultErr is the error of a copy the hook failed with err (nil: none).
func (b *Blob) faultErr(op string, err error) error {
	if err == nil {
		return nil
	}
	return b.pathErr(op, fmt.Errorf("page fault on the mapping: %w", err))
}

// injectSync asks the hook before a sync of the blob, and serves its
// delay, holding none of the blob's locks: the pages stay in the ledger
// meanwhile, for any other sync to take. n is the bytes it is to write
// (its dirty pages, or the whole file); a sync with nothing to write but
// the size (meta) is asked too, with n 0. It returns the error to fail
// the sync with (syncTakenLocked), nil to let it run.
func (b *Blob) injectSync(n int64) error {
	wait, err := b.ask("msync", n)
	if wait != nil {
		wait()
	}
	if err != nil {
		return b.pathErr("msync", err)
	}
	return nil
}

// loseWritebackLocked is a sync of pages (meta, whole as for
// syncTakenLocked) that failed with err, a *WritebackLost: the pages get
// their last synced content back, that content is written to the file,
// and they leave the ledger; the size (meta, whole) stays owed. The loss
// is recorded (recordLostLocked) and the pages put back are noted for
// the owner's invalidation (notifyPutBack, after the unlock). b.mu must
// be held exclusively (the simulation's syncLock).
func (b *Blob) loseWritebackLocked(pages *pageSet, meta, whole bool, err error) error {
	sim := b.sim
	ps := int64(pageSize)
	var lose pageSet
	sim.mu.Lock()
	if whole {
		for p := range sim.pages {
			lose.addRange(p, p+1)
		}
		if b.size > sim.syncedSize {
			lose.addRange(sim.syncedSize/ps, pagesCeil(b.size))
		}
	} else {
		lose.merge(pages)
	}
	if lose.empty() && !meta && !whole {
		// Another sync took the pages between the rule's decision
		// (made before the lock) and this one: nothing was owed, so
		// nothing is lost, and no fsync may be told otherwise.
		sim.mu.Unlock()
		return nil
	}
	var errs []error
	lose.runs(func(first, end int64) bool {
		for p := first; p < end; p++ {
			lo := p * ps
			hi := min(lo+ps, b.size, int64(len(b.data)))
			if lo >= hi {
				return false // past the end: so is every later page
			}
			if saved, ok := sim.pages[p]; ok {
				m := min(int64(len(saved)), hi-lo, max(sim.syncedSize-lo, 0))
				if _, err := copyGuarded(b.data[lo:lo+m], saved[:m], lo); err != nil {
					errs = append(errs, fmt.Errorf("putting back the last synced content at %d: %w", lo, err))
					continue
				}
				// Dropped only when put back whole: a page the file's
				// present size clips keeps its synced content for a
				// power cut that brings the synced size back.
				if lo+int64(len(saved)) <= hi {
					b.store.stats.simBytes.Add(-int64(len(saved)))
					delete(sim.pages, p)
				}
			}
			if z := max(lo, sim.syncedSize); z < hi {
				if _, err := copyGuarded(b.data[z:hi], zeroPage[:hi-z], z); err != nil {
					errs = append(errs, fmt.Errorf("zeroing bytes %d-%d past the last synced size: %w", z, hi, err))
				}
			}
		}
		return true
	})
	sim.mu.Unlock()
	// The disk holds that content already (or will: the pages may have
	// been written back with the lost content meanwhile): write it.
	lose.runs(func(first, end int64) bool {
		lo := first * ps
		hi := min(end*ps, int64(len(b.data)))
		if lo >= hi {
			return false
		}
		if e := unix.Msync(b.data[lo:hi], unix.MS_SYNC); e != nil {
			errs = append(errs, b.pathErr("msync", fmt.Errorf("writing back the synced content of bytes %d-%d: %w", lo, hi, e)))
		}
		return true
	})
	b.dmu.Lock()
	b.metaDirty = b.metaDirty || meta
	b.wholeSync = b.wholeSync || whole
	b.recordLostLocked(err)
	b.putBack.merge(&lose)
	b.dmu.Unlock()
	if len(errs) > 0 {
		// The pages could not all be put back: keep them owed, as
		// after any failed sync, and say why.
		b.requeueLocked(pages, meta, whole)
		return errors.Join(append([]error{err}, errs...)...)
	}
	return err
}

// notifyPutBack tells the owner (SetOwner) which pages a lost writeback
// put back, so that no client reads the lost content from its cache.
// Call it holding none of the blob's locks: the kernel's invalidation
// waits for the pages' locks, which a read waiting on b.mu may hold.
func (b *Blob) notifyPutBack() {
	b.dmu.Lock()
	if b.putBack.empty() {
		b.dmu.Unlock()
		return
	}
	lose := b.putBack
	b.putBack = pageSet{}
	b.dmu.Unlock()
	p := b.owner.Load()
	if p == nil {
		return
	}
	ps := int64(pageSize)
	lose.runs(func(first, end int64) bool {
		(*p).Invalidate(first*ps, (end-first)*ps)
		return true
	})
}

// waitPutBack waits for the owner's invalidation of pages put back to
// be delivered (PutBackWaiter). Call it holding none of the blob's locks,
// from a sync a client asked for (fsync, flush), never from inside a
// WRITE: the kernel holds that request's pages until its reply, and the
// invalidation waits for them.
func (b *Blob) waitPutBack() {
	if p := b.owner.Load(); p != nil {
		if w, ok := (*p).(PutBackWaiter); ok {
			w.WaitPutBack()
		}
	}
}

// ErrMark is one open file description's place in its blob's record of
// lost writebacks, as Linux's f_wb_err is in the file's errseq: an fsync
// through it reports a loss recorded after it was made, once. Make it
// with Blob.Mark at open; it is guarded by the blob's dmu.
type ErrMark struct{ seq uint64 }

// recordLostLocked records a lost writeback (err) in the blob's errseq.
// b.dmu must be held.
func (b *Blob) recordLostLocked(err error) {
	b.lostSeq++
	b.lostLatest = err
	b.lostErr = err // not seen by any open yet
}

// Mark returns a new open's place in the blob's errseq: it will report
// the losses recorded from now on, and the latest one too if no open has
// reported it yet (as Linux's errseq_sample gives a file opened after an
// error nobody has seen).
func (b *Blob) Mark() *ErrMark {
	b.dmu.Lock()
	defer b.dmu.Unlock()
	b.adoptLostLocked()
	m := &ErrMark{seq: b.lostSeq}
	if b.lostErr != nil {
		m.seq--
	}
	return m
}

// adoptLostLocked records a loss the store carried over for the blob
// (lostErr set by Store.install, with nothing recorded yet). b.dmu must
// be held.
func (b *Blob) adoptLostLocked() {
	if b.lostErr != nil && b.lostSeq == 0 {
		b.lostSeq, b.lostLatest = 1, b.lostErr
	}
}

// takeLost returns the latest lost writeback recorded since m last
// reported one (nil if none) and moves m past it: one report per open,
// however many of its fsyncs run at once.
func (b *Blob) takeLost(m *ErrMark) error {
	b.dmu.Lock()
	defer b.dmu.Unlock()
	b.adoptLostLocked()
	if m.seq >= b.lostSeq {
		return nil
	}
	m.seq = b.lostSeq
	b.lostErr = nil // seen
	return b.lostLatest
}

// reportedAs is the error of a sync a client asked for through m (fsync,
// or the close policy's flush) that returned err: a lost writeback is
// not returned as the sync's own error but through m (takeLost), so
// that each open reports it once, whichever sync lost the pages.
func (b *Blob) reportedAs(m *ErrMark, err error) error {
	if onlyLost(err) {
		err = nil
	}
	lost := b.takeLost(m)
	if lost != nil {
		b.waitPutBack()
	}
	if err == nil {
		return lost
	}
	return err
}

// onlyLost reports whether err is a lost writeback and nothing else (not
// joined with a failure to put the pages back).
func onlyLost(err error) bool {
	var lost *WritebackLost
	if !errors.As(err, &lost) {
		return false
	}
	_, joined := err.(interface{ Unwrap() []error })
	return !joined
}
