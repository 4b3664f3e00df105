package backing

import (
	"errors"
	"fmt"
	"slices"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/mmapfs/mmapfs/fs/wire"
)

// The power cut itself (Store.PowerCut, and PowerCutPlan for a dry run):
// every page the journal (journal.go) saved goes back into its file and
// every file back to its last synced size, in open files and in files
// closed since; then the store refuses every change (cutErr).

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
		if n, err := pwriteAll(fd, buf, at); err != nil {
			return fmt.Errorf("power cut: putting back bytes %d-%d of %s: %w", at+int64(n), at+int64(len(buf)), name, err)
		}
	}
	if err := syscall.Fdatasync(fd); err != nil {
		return fmt.Errorf("power cut: fdatasync %s: %w", name, err)
	}
	return nil
}
