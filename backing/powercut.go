package backing

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/mmapfs/mmapfs/fs/wire"
)

// The power-cut simulation (Options.PowerCutSim).
//
// A process crash loses nothing the daemon copied into a mapping: the page
// is in the kernel's page cache. A power cut loses every page that had not
// reached the disk, and only msync/fdatasync promise that one has. With the
// simulation on, the daemon keeps, for every page it changes after that
// page's last sync, the content the page had at that sync (copied out of
// the mapping just before the first change), and for every file the size
// it had at its last fdatasync. PowerCut then puts every such page back and
// every file back to that size: the store holds what a worst-case power cut
// now would have left of what went through the daemon. (The namespace is
// not simulated: creates, renames and unlinks are as the store's
// filesystem has them.)
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

// syncLock takes b.mu for a sync: shared, or exclusive under the power-cut
// simulation (see simSynced). It returns the unlock.
func (b *Blob) syncLock() (func(), error) {
	if b.sim == nil {
		if err := b.rlock(); err != nil {
			return nil, err
		}
		return b.mu.RUnlock, nil
	}
	if err := b.lock(); err != nil {
		return nil, err
	}
	return b.mu.Unlock, nil
}

// errCut is the cause of every change refused after PowerCut.
var errCut = fmt.Errorf("the power was cut (mmapfs powercut), the file can no longer change: %w", syscall.EIO)

// cutErr returns the error a change of the blob gets once the power was
// cut, or nil.
func (b *Blob) cutErr(op string) error {
	if b.store.cut.Load() {
		return b.pathErr(op, errCut)
	}
	return nil
}

// ErrNoSim is returned by PowerCut on a store opened without
// Options.PowerCutSim: it does not know what the pages held at their last
// sync.
var ErrNoSim = errors.New("the power-cut simulation is off (mount with --powercut-sim)")

// cutFileOf describes what putting sim back would do to a file of size
// size. sim.mu must be held.
func cutFileOf(name string, open bool, size int64, sim *simFile) wire.CutFile {
	f := wire.CutFile{Name: name, Open: open, Size: size, Synced: sim.syncedSize, Ranges: []wire.RiskRange{}}
	if size > sim.syncedSize {
		f.Cutoff = size - sim.syncedSize
	}
	idx := make([]int64, 0, len(sim.pages))
	for p := range sim.pages {
		idx = append(idx, p)
	}
	slices.Sort(idx)
	ps := int64(pageSize)
	for _, p := range idx {
		n := int64(len(sim.pages[p]))
		f.Restored += n
		last := len(f.Ranges) - 1
		switch {
		case last >= 0 && f.Ranges[last].Off+f.Ranges[last].Len == p*ps:
			f.Ranges[last].Len += n
		case len(f.Ranges) < maxRiskRanges:
			f.Ranges = append(f.Ranges, wire.RiskRange{Off: p * ps, Len: n})
		default:
			f.More++
		}
	}
	return f
}

// PowerCutPlan lists what PowerCut would put back now, without doing it.
func (s *Store) PowerCutPlan() (wire.CutReport, error) {
	if !s.opts.PowerCutSim {
		return wire.CutReport{}, ErrNoSim
	}
	var r wire.CutReport
	var errs []error
	for _, b := range s.pinAll() {
		b.mu.RLock()
		b.sim.mu.Lock()
		if b.sim.pendingLocked(b.size) {
			r.Add(cutFileOf(b.name, true, b.size, b.sim))
		}
		b.sim.mu.Unlock()
		b.mu.RUnlock()
		errs = append(errs, s.Release(b))
	}
	s.mu.Lock()
	for _, c := range s.simClosed {
		c.sim.mu.Lock()
		r.Add(cutFileOf(c.name, false, c.size, c.sim))
		c.sim.mu.Unlock()
	}
	s.mu.Unlock()
	r.Sort()
	return r, errors.Join(errs...)
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

// PowerCut simulates a power cut now: every page the daemon changed since
// its last sync gets its last synced content back and every file its last
// synced size, in open files and in files closed since; then the store's
// filesystem is synced so that the result is on disk. From then on every
// change to a blob fails with EIO, as it would with the power off; reads
// see what survived. It can be done once.
func (s *Store) PowerCut() (wire.CutReport, error) {
	if !s.opts.PowerCutSim {
		return wire.CutReport{}, ErrNoSim
	}
	if !s.cut.CompareAndSwap(false, true) {
		return wire.CutReport{}, fmt.Errorf("the power was cut already: %w", syscall.EALREADY)
	}
	r := wire.CutReport{Done: true}
	var errs []error
	for _, b := range s.pinAll() {
		f, pending, err := b.cut()
		if pending {
			r.Add(f)
		}
		errs = append(errs, err, s.Release(b))
	}
	s.mu.Lock()
	closed := s.simClosed
	s.simClosed = make(map[fileKey]*simClosed)
	s.mu.Unlock()
	for _, c := range closed {
		f, err := s.cutClosed(c)
		r.Add(f)
		errs = append(errs, err)
	}
	if err := s.syncfs(); err != nil {
		errs = append(errs, err)
	}
	r.Sort()
	return r, errors.Join(errs...)
}

// cut puts the blob back to its last synced state.
func (b *Blob) cut() (f wire.CutFile, pending bool, err error) {
	if err := b.lock(); err != nil {
		return wire.CutFile{Name: b.name, Open: true}, true, err
	}
	defer b.mu.Unlock()
	sim := b.sim
	sim.mu.Lock()
	defer sim.mu.Unlock()
	if !sim.pendingLocked(b.size) {
		return wire.CutFile{}, false, nil
	}
	f = cutFileOf(b.name, true, b.size, sim)
	if err := restoreFlagged(b.fd, b.writable, b.name, sim); err != nil {
		return f, true, err
	}
	b.setSizeLocked(sim.syncedSize)
	b.dmu.Lock()
	b.dirty, b.metaDirty, b.wholeSync = pageSet{}, false, false
	b.dmu.Unlock()
	sim.dropLocked(&b.store.stats, nil)
	return f, true, nil
}

// cutClosed puts a closed file back to its last synced state.
func (s *Store) cutClosed(c *simClosed) (f wire.CutFile, err error) {
	c.sim.mu.Lock()
	defer c.sim.mu.Unlock()
	f = cutFileOf(c.name, false, c.size, c.sim)
	defer c.sim.dropLocked(&s.stats, nil)
	fd := c.fd
	c.fd = -1
	writable := false // a descriptor the record kept may be read-only
	if c.fh != nil {
		writable = true
		fd, err = unix.OpenByHandleAt(s.rootFd, *c.fh, unix.O_RDWR|unix.O_CLOEXEC)
		if errors.Is(err, syscall.EPERM) {
			// Immutable or append-only: restoreFlagged lifts that.
			writable = false
			fd, err = unix.OpenByHandleAt(s.rootFd, *c.fh, unix.O_RDONLY|unix.O_CLOEXEC)
		}
		if errors.Is(err, syscall.ESTALE) || errors.Is(err, syscall.ENOENT) {
			f.Gone = true
			return f, nil
		}
		if err != nil {
			return f, fmt.Errorf("power cut: reopening %s: %w", c.name, err)
		}
	}
	defer func() {
		if cerr := syscall.Close(fd); cerr != nil {
			err = errors.Join(err, fmt.Errorf("power cut: closing %s: %w", c.name, cerr))
		}
	}()
	var st syscall.Stat_t
	if err := syscall.Fstat(fd, &st); err != nil {
		return f, fmt.Errorf("power cut: fstat %s: %w", c.name, err)
	}
	if st.Nlink == 0 {
		f.Gone = true
		return f, nil
	}
	return f, restoreFlagged(fd, writable, c.name, c.sim)
}

// restoreFlagged is restore for a file that may be immutable or
// append-only, or open read-only on fd (an append-only file's blob is):
// then it restores through a writable descriptor of its own, with the
// flags lifted for the while (liftFlags).
func restoreFlagged(fd int, writable bool, name string, sim *simFile) error {
	if writable {
		err := restore(fd, name, sim)
		if !errors.Is(err, syscall.EPERM) {
			return err
		}
		// Refused at the ftruncate, before anything changed.
	}
	return liftFlags(fd, name, func(wfd int) error { return restore(wfd, name, sim) })
}

// restore writes sim's saved pages back into the file on fd and gives it
// its synced size, then fdatasyncs it. sim.mu must be held.
func restore(fd int, name string, sim *simFile) error {
	if err := syscall.Ftruncate(fd, sim.syncedSize); err != nil {
		return fmt.Errorf("power cut: truncating %s to its synced size %d: %w", name, sim.syncedSize, err)
	}
	ps := int64(pageSize)
	for p, buf := range sim.pages {
		at := p * ps
		if at >= sim.syncedSize {
			continue
		}
		buf = buf[:min(int64(len(buf)), sim.syncedSize-at)]
		for len(buf) > 0 {
			n, err := unix.Pwrite(fd, buf, at)
			if err != nil {
				return fmt.Errorf("power cut: putting back bytes %d-%d of %s: %w", at, at+int64(len(buf)), name, err)
			}
			buf, at = buf[n:], at+int64(n)
		}
	}
	if err := syscall.Fdatasync(fd); err != nil {
		return fmt.Errorf("power cut: fdatasync %s: %w", name, err)
	}
	return nil
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
