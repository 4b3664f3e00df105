package backing

import (
	"fmt"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// The power-cut simulation's journal (Options.PowerCutSim).
//
// A process crash loses nothing the daemon copied into a mapping: the page
// is in the kernel's page cache. A power cut loses every page that had not
// reached the disk, and only msync/fdatasync promise that one has. With the
// simulation on, the daemon keeps, for every page it changes after that
// page's last sync, the content the page had at that sync (copied out of
// the mapping just before the first change), and for every file the size
// it had at its last fdatasync. PowerCut (powercut.go) then puts every
// such page back and every file back to that size: the store holds what a
// worst-case power cut now would have left of what went through the
// daemon. (The namespace is not simulated: creates, renames and unlinks
// are as the store's filesystem has them.)
//
// Invariant, per blob: a page of the file below syncedSize that is not in
// simFile.pages holds, in the mapping, its last synced content. Every
// change to the file's bytes (write, truncate, hole punch) calls simSave
// for the pages it changes before it changes them, under b.mu; a sync
// drops the saved pages it made durable while it holds b.mu exclusively,
// so that no write slips in between the msync and the drop.
// simFile is what the simulation keeps of one file.
type simFile struct {
	// mu guards the fields below. Taken after Blob.mu, or under
	// Store.mu for a file no one is using (see the lock tree in doc.go).
	mu         sync.Mutex
	syncedSize int64            // the size at the last fdatasync (or at the first open)
	pages      map[int64][]byte // page index → its content at its last sync (clipped at syncedSize)
}

func newSimFile(size int64) *simFile {
	return &simFile{syncedSize: size, pages: make(map[int64][]byte)}
}

// pending reports whether a cut would change the file, whose size is size.
// sim.mu must be held.
func (sim *simFile) pendingLocked(size int64) bool {
	return len(sim.pages) > 0 || sim.syncedSize != size
}

// dropLocked forgets saved pages; keep says which to keep. sim.mu must be
// held.
func (sim *simFile) dropLocked(c *counters, keep func(p int64) bool) {
	for p, buf := range sim.pages {
		if keep == nil || !keep(p) {
			c.simBytes.Add(-int64(len(buf)))
			delete(sim.pages, p)
		}
	}
}

// simClosed is a file closed with a pending simulation record. It stays
// reachable to be put back: by file handle, or by a descriptor kept open
// when the store cannot reopen by handle.
type simClosed struct {
	sim  *simFile
	name string           // the blob's name when it was closed
	size int64            // its size then
	fh   *unix.FileHandle // nil if fd is used
	fd   int              // -1 if fh is used
	gen  uint64           // Store.gen when it was recorded
}

// simSave keeps the last synced content of the pages of [lo, hi) that are
// about to change and have not changed since their last sync. b.mu must
// be held (shared is enough) with the blob resident.
func (b *Blob) simSave(lo, hi int64) error {
	sim := b.sim
	if sim == nil || hi <= lo {
		return nil
	}
	ps := int64(pageSize)
	sim.mu.Lock()
	defer sim.mu.Unlock()
	// Bytes at or past limit hold nothing a power cut would bring
	// back: past syncedSize the file would be cut off, and between size
	// and syncedSize a truncate saved the pages already.
	limit := min(sim.syncedSize, b.size)
	for p := lo / ps; p*ps < hi && p*ps < limit; p++ {
		if _, ok := sim.pages[p]; ok {
			continue
		}
		at := p * ps
		buf := make([]byte, min(ps, limit-at))
		if _, err := copyGuarded(buf, b.data[at:at+int64(len(buf))], at); err != nil {
			return b.pathErr("write", fmt.Errorf("power-cut simulation: saving the page at %d before changing it: %w", at, syscall.EIO))
		}
		sim.pages[p] = buf
		b.store.stats.simBytes.Add(int64(len(buf)))
	}
	return nil
}

// simSynced forgets the saved pages a successful sync made durable: the
// pages msynced; or, after an fdatasync (which writes back every page of
// the file, and its size), all of them, taking the size as synced too.
// b.mu must be held exclusively, since the sync began.
func (b *Blob) simSynced(pages *pageSet, meta, whole bool) {
	sim := b.sim
	if sim == nil {
		return
	}
	sim.mu.Lock()
	defer sim.mu.Unlock()
	if whole || meta {
		sim.syncedSize = b.size
		sim.dropLocked(&b.store.stats, nil)
		return
	}
	sim.dropLocked(&b.store.stats, func(p int64) bool { return !pages.has(p) })
}

// simPending reports whether a power cut now would change the file.
func (b *Blob) simPending() bool {
	if b.sim == nil {
		return false
	}
	b.mu.RLock()
	defer b.mu.RUnlock()
	b.sim.mu.Lock()
	defer b.sim.mu.Unlock()
	return b.sim.pendingLocked(b.size)
}

// recordSimLocked keeps b's simulation record when b is closed with
// changes not synced, so that PowerCut can still put them back, and
// returns the record of the file it replaces (nil if none), which the
// caller closes once s.mu is released. It makes no system call: the record
// reopens the file by the handle newBlob took (b.fh, which the sweep does
// not change for a blob of the simulation), or, without one, keeps the
// blob's own descriptor, which b.close then leaves open (b.fdKept). s.mu
// must be held and b have no references left: nothing can reopen or
// upgrade it then, and the sweep drops no blob of the simulation that
// lacks a handle, so b.fd does not change under it.
func (s *Store) recordSimLocked(b *Blob) *simClosed {
	sim := b.sim
	sim.mu.Lock()
	pending := sim.pendingLocked(b.size)
	sim.mu.Unlock()
	if !pending {
		return nil
	}
	c := &simClosed{sim: sim, name: b.name, size: b.size, fh: b.fh, fd: -1}
	if c.fh == nil {
		c.fd = b.fd
		b.fdKept = true
	}
	s.gen++
	c.gen = s.gen
	old := s.simClosed[b.key]
	s.simClosed[b.key] = c
	return old
}

// takeSimLocked returns the simulation record of a file being opened: the
// one kept when it was closed, or a new one, and the closed record it
// took over (nil if none), which the caller closes once s.mu is released.
// s.mu must be held.
func (s *Store) takeSimLocked(key fileKey, size int64) (*simFile, *simClosed) {
	if !s.opts.PowerCutSim {
		return nil, nil
	}
	if c := s.simClosed[key]; c != nil {
		delete(s.simClosed, key)
		return c.sim, c
	}
	return newSimFile(size), nil
}

// forgetSimLocked drops the records of closed files made durable by a
// syncfs that began at gen, and returns them for the caller to close once
// s.mu is released. s.mu must be held.
func (s *Store) forgetSimLocked(gen uint64) []*simClosed {
	var forgotten []*simClosed
	for key, c := range s.simClosed {
		if c.gen <= gen {
			c.sim.mu.Lock()
			c.sim.dropLocked(&s.stats, nil)
			c.sim.mu.Unlock()
			forgotten = append(forgotten, c)
			delete(s.simClosed, key)
		}
	}
	return forgotten
}

// close closes the descriptor the record keeps, if any (none for nil).
func (c *simClosed) close() error {
	if c == nil || c.fd < 0 {
		return nil
	}
	err := syscall.Close(c.fd)
	c.fd = -1
	if err != nil {
		return fmt.Errorf("power-cut simulation: closing the record of %s: %w", c.name, err)
	}
	return nil
}
