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

// WritebackLost is the error an Options.Inject hook returns from "msync"
// to make the failed sync lose its pages, as Linux does when writeback
// fails ("fsyncgate"): the error is reported once (to the fsync that made
// it; after a sync of the daemon's own, the periodic pass, to the next
// fsync: lostErr), the pages it was to write get their last synced content back (the
// power-cut journal's; past the last synced size, zeros, as a file's
// unwritten blocks read) and are no longer dirty, so the next sync
// succeeds without them. It needs Options.PowerCutSim; without it the
// sync only fails.
type WritebackLost struct{ Err error }

func (e *WritebackLost) Error() string {
	return fmt.Sprintf("%v; the pages it could not write are lost (put back to their last synced content)", e.Err)
}

func (e *WritebackLost) Unwrap() error { return e.Err }

// injectFault asks the hook before a copy of n bytes to or from the
// mapping (op names the copy in the error).
func (b *Blob) injectFault(op string, n int) error {
	hook := b.store.opts.Inject
	if hook == nil {
		return nil
	}
	if err := hook("fault", b.name, int64(n)); err != nil {
		return b.pathErr(op, fmt.Errorf("page fault on the mapping: %w", err))
	}
	return nil
}

// injectSyncLocked asks the hook before a sync of pages (or of the whole
// file). b.mu must be held as syncLock takes it.
func (b *Blob) injectSyncLocked(pages *pageSet, whole bool) error {
	hook := b.store.opts.Inject
	if hook == nil || (pages.empty() && !whole) {
		return nil
	}
	n := pages.count * int64(pageSize)
	if whole {
		n = b.size
	}
	if err := hook("msync", b.name, n); err != nil {
		return b.pathErr("msync", err)
	}
	return nil
}

// loseWritebackLocked is a sync of pages (meta, whole as for
// syncTakenLocked) that failed with err, a *WritebackLost: the pages get
// their last synced content back, that content is written to the file,
// and they leave the ledger; the size (meta, whole) stays owed. b.mu must
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
	b.lostErr = err
	b.dmu.Unlock()
	if len(errs) > 0 {
		// The pages could not all be put back: keep them owed, as
		// after any failed sync, and say why.
		b.requeueLocked(pages, meta, whole)
		return errors.Join(append([]error{err}, errs...)...)
	}
	return err
}

// reported returns the error of a sync a client asked for (fsync, or the
// close policy's flush): err, or else a lost writeback not reported yet
// (lostErr). Either way a lost writeback counts as reported: Linux
// reports a writeback error to the next fsync, once.
func (b *Blob) reported(err error) error {
	b.dmu.Lock()
	lost := b.lostErr
	b.lostErr = nil
	b.dmu.Unlock()
	if err == nil {
		return lost
	}
	return err
}
