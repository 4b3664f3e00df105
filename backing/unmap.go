package backing

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mmapfs/mmapfs/fs/wire"
)

// Unmapping a mapping the daemon has written through costs a TLB
// shootdown: an interrupt to every other CPU running one of the daemon's
// threads, and a wait for each to answer (in a virtual machine, an exit
// per CPU). A profile of create+write 1 KiB+close of 10,000 files put
// 4.6 % of the daemon's samples in munmap, most of it there
// (smp_call_function_many_cond, flush_tlb_mm_range), about 15 us a file.
// One munmap over several mappings costs one shootdown. So a blob that
// lets go of a small mapping (at its last release, when the sweep drops
// it, when it is truncated to nothing or upgraded to a writable mapping)
// hands it to the store's unmapBatch, which unmaps a batch at once,
// merging the mappings that lie end to end
// (the kernel places successive mappings next to each other, top down,
// so most do).
//
// A mapping waiting in the batch is no longer used by anyone, but it
// still holds its file: an unlinked blob's space comes back when the
// batch goes, at most batchDelay later (or at Stats or Close).

const (
	batchMaxLen   = 1 << 20 // larger mappings are unmapped at once
	batchCount    = 64      // a batch goes when it holds this many mappings
	batchMaxBytes = 16 << 20
	batchDelay    = 20 * time.Millisecond // or this long after its first
)

// unmapBatch holds mappings of released blobs waiting to be unmapped.
// Its zero value is empty and ready.
type unmapBatch struct {
	mu      sync.Mutex
	pending []pendingMap // guarded by mu
	bytes   int64        // guarded by mu
	timer   *time.Timer  // guarded by mu; set while pending is not empty
}

type pendingMap struct {
	addr uintptr
	data []byte // the exact slice mmap/mremap returned
}

// unmapLater unmaps data, a mapping of a blob that no one uses any more,
// now or with a batch. Stats count it as mapped until it is unmapped.
func (s *Store) unmapLater(data []byte) error {
	if len(data) == 0 {
		return nil
	}
	if len(data) > batchMaxLen {
		return s.unmapNow([]pendingMap{{mappingAddr(data), data}})
	}
	u := &s.unmaps
	u.mu.Lock()
	u.pending = append(u.pending, pendingMap{mappingAddr(data), data})
	u.bytes += int64(len(data))
	if len(u.pending) < batchCount && u.bytes < batchMaxBytes {
		if u.timer == nil {
			u.timer = time.AfterFunc(batchDelay, func() {
				if err := s.flushUnmaps(); err != nil {
					s.stats.fail(wire.EvictErrors, err)
				}
			})
		}
		u.mu.Unlock()
		return nil
	}
	batch := u.takeLocked()
	u.mu.Unlock()
	return s.unmapNow(batch)
}

// takeLocked empties the batch and returns what it held. u.mu must be
// held.
func (u *unmapBatch) takeLocked() []pendingMap {
	batch := u.pending
	u.pending, u.bytes = nil, 0
	if u.timer != nil {
		u.timer.Stop()
		u.timer = nil
	}
	return batch
}

// flushUnmaps unmaps every mapping waiting in the batch.
func (s *Store) flushUnmaps() error {
	s.unmaps.mu.Lock()
	batch := s.unmaps.takeLocked()
	s.unmaps.mu.Unlock()
	return s.unmapNow(batch)
}

// unmapNow unmaps the mappings of batch, one munmap per run of them that
// lie end to end. A run whose munmap fails is unmapped one mapping at a
// time.
func (s *Store) unmapNow(batch []pendingMap) error {
	if len(batch) == 0 {
		return nil
	}
	slices.SortFunc(batch, func(a, b pendingMap) int {
		switch {
		case a.addr < b.addr:
			return -1
		case a.addr > b.addr:
			return 1
		}
		return 0
	})
	var errs []error
	for i := 0; i < len(batch); {
		j, end := i+1, batch[i].addr+uintptr(len(batch[i].data))
		for j < len(batch) && batch[j].addr == end {
			end += uintptr(len(batch[j].data))
			j++
		}
		run := batch[i:j]
		if err := munmapRange(run[0].addr, end-run[0].addr); err != nil {
			for _, m := range run {
				if err := unix.Munmap(m.data); err != nil {
					errs = append(errs, fmt.Errorf("munmap of a dropped mapping's %d bytes: %w", len(m.data), err))
					continue
				}
				s.stats.add(wire.Mappings, -1)
				s.stats.add(wire.MappedBytes, -int64(len(m.data)))
			}
		} else {
			s.stats.add(wire.Mappings, -int64(len(run)))
			s.stats.add(wire.MappedBytes, -int64(end-run[0].addr))
		}
		i = j
	}
	return errors.Join(errs...)
}
