package backing

import (
	"errors"
	"fmt"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/mmapfs/mmapfs/backing/latency"
	"github.com/mmapfs/mmapfs/fs/wire"
)

// counters are the store's running figures, updated atomically: the
// figures of wire's list it counts (by their wire.ID: add, fail), the
// sync latencies, and the power-cut simulation's own figures; and how
// Stats counts resident bytes.
type counters struct {
	figures      *wire.Counters // set by Open, read only
	syncHist     latency.Histogram
	simBytes     atomic.Int64 // bytes the power-cut simulation holds
	simErrors    atomic.Int64
	lastSimError atomic.Pointer[string]
	// noCachestat says cachestat(2) is not available to the daemon
	// (ENOSYS: a kernel before 6.5, or a seccomp filter that refuses
	// it): Blob.Resident uses mincore(2) from then on (resident.go).
	noCachestat atomic.Bool
	// statsGen counts InterruptStats calls: a Stats call that sees it
	// change stops.
	statsGen atomic.Uint64
}

// add adds n to the figure id.
func (c *counters) add(id wire.ID, n int64) { c.figures.Add(id, n) }

// fail counts an error of the figure id and keeps it as its last one.
func (c *counters) fail(id wire.ID, err error) { c.figures.Fail(id, err) }

func (c *counters) recordSync(bytes int64, d time.Duration) {
	c.add(wire.MsyncCalls, 1)
	c.add(wire.MsyncBytes, bytes)
	c.syncHist.Observe(d)
}

func (c *counters) recordAsync(bytes int64, d time.Duration) {
	c.add(wire.AsyncCalls, 1)
	c.add(wire.AsyncBytes, bytes)
}

func (c *counters) setSimError(err error) {
	c.simErrors.Add(1)
	msg := err.Error()
	c.lastSimError.Store(&msg)
}

// last returns the message p holds, "" for none.
func last(p *atomic.Pointer[string]) string {
	if msg := p.Load(); msg != nil {
		return *msg
	}
	return ""
}

// Stats is a snapshot of the store's figures.
type Stats struct {
	// Figures are the store's figures of wire's list: its counters, and
	// its levels now (unsynced bytes and their age, open and resident
	// blobs and the bound on them, resident bytes).
	Figures wire.Values
	// SyncLatency is the histogram of msync and fdatasync latencies.
	SyncLatency latency.Snapshot
	// PowerCut is the power-cut simulation's figures; nil when it is
	// off.
	PowerCut *wire.PowerCutStats
}

// ErrStatsInterrupted is Stats' error when InterruptStats stopped it. It
// carries ENOTCONN, what a reader of a mount that has gone away gets (not
// EINTR, which Go's os.Open, for one, would retry).
var ErrStatsInterrupted = fmt.Errorf("stats interrupted: the mount is being unmounted: %w", syscall.ENOTCONN)

// InterruptStats makes every Stats call under way stop at its next blob
// (or chunk of mincore) and return ErrStatsInterrupted; later calls are
// not affected. The daemon calls it before it unmounts: a stats file
// being rendered is an open file of the mount, which the unmount would
// otherwise wait for.
func (s *Store) InterruptStats() { s.stats.statsGen.Add(1) }

// Stats returns the store's figures now. It makes a few system calls per
// open blob (Blob.Resident: a dup and a cachestat, or mincore a chunk at
// a time where the kernel has no cachestat), so it is for a stats reader,
// not a hot path; with cachestat its cost does not grow with the size of
// the open files, and it never holds a blob's lock for more than one
// short call. InterruptStats stops it.
func (s *Store) Stats() (Stats, error) {
	gen := s.stats.statsGen.Load()
	stopped := func() bool { return s.stats.statsGen.Load() != gen }
	// Mappings waiting to be unmapped would count as live: unmap them.
	flushErr := s.flushUnmaps()
	c := &s.stats
	st := Stats{SyncLatency: c.syncHist.Snapshot()}
	f := &st.Figures
	c.figures.Report(f)
	unsynced, oldest := s.Unsynced()
	f.Set(wire.UnsyncedBytes, unsynced)
	f.SetSince(wire.OldestUnsynced, oldest)
	if s.canReopen && s.opts.MaxResident > 0 {
		f.Set(wire.MaxResident, int64(s.opts.MaxResident))
	}
	var sim wire.PowerCutStats
	if s.opts.PowerCutSim {
		sim = wire.PowerCutStats{SavedBytes: c.simBytes.Load(), Cut: s.cut.Load(),
			RecordErrors: c.simErrors.Load(), LastRecordErr: last(&c.lastSimError)}
		st.PowerCut = &sim
	}
	s.mu.Lock()
	f.Set(wire.ResidentBlobs, int64(s.resident))
	sim.Files = len(s.simClosed)
	s.mu.Unlock()
	pinned := s.pinAll()
	f.Set(wire.OpenBlobs, int64(len(pinned)))
	var resident int64
	errs := []error{flushErr}
	for _, b := range pinned {
		var n int64
		var err error
		if !stopped() {
			n, err = b.resident(stopped)
		}
		resident += n
		if b.simPending() {
			sim.Files++
		}
		errs = append(errs, err, s.Release(b))
	}
	if stopped() {
		errs = append(errs, ErrStatsInterrupted)
	}
	f.Set(wire.ResidentBytes, resident)
	return st, errors.Join(errs...)
}
