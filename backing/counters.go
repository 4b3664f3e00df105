package backing

import (
	"errors"
	"sync/atomic"
	"time"

	"github.com/mmapfs/mmapfs/backing/latency"
	"github.com/mmapfs/mmapfs/fs/wire"
)

// counters are the store's running figures, updated atomically. Each is
// a figure of wire's list: report says which.
type counters struct {
	opens       atomic.Int64
	mappings    atomic.Int64
	mappedBytes atomic.Int64
	remaps      atomic.Int64
	faults      atomic.Int64
	syncCalls   atomic.Int64
	syncBytes   atomic.Int64
	syncHist    latency.Histogram
	asyncCalls  atomic.Int64
	asyncBytes  atomic.Int64

	evictions     atomic.Int64
	reopens       atomic.Int64
	evictErrors   atomic.Int64
	lastEvictErr  atomic.Pointer[string]
	ignoredFsyncs atomic.Int64
	adviceErrors  atomic.Int64
	passErrors    atomic.Int64
	lastPassError atomic.Pointer[string]
	simBytes      atomic.Int64 // bytes the power-cut simulation holds
	simErrors     atomic.Int64
	lastSimError  atomic.Pointer[string]
}

// report sets the figures of v that the counters count.
func (c *counters) report(v *wire.Values) {
	v.Set(wire.BlobsOpened, c.opens.Load())
	v.Set(wire.Mappings, c.mappings.Load())
	v.Set(wire.MappedBytes, c.mappedBytes.Load())
	v.Set(wire.Remaps, c.remaps.Load())
	v.Set(wire.Faults, c.faults.Load())
	v.Set(wire.MsyncCalls, c.syncCalls.Load())
	v.Set(wire.MsyncBytes, c.syncBytes.Load())
	v.Set(wire.AsyncCalls, c.asyncCalls.Load())
	v.Set(wire.AsyncBytes, c.asyncBytes.Load())
	v.Set(wire.Evictions, c.evictions.Load())
	v.Set(wire.Reopens, c.reopens.Load())
	v.Set(wire.EvictErrors, c.evictErrors.Load())
	v.SetLastError(wire.EvictErrors, last(&c.lastEvictErr))
	v.Set(wire.IgnoredFsyncs, c.ignoredFsyncs.Load())
	v.Set(wire.MadviseErrors, c.adviceErrors.Load())
	v.Set(wire.PassErrors, c.passErrors.Load())
	v.SetLastError(wire.PassErrors, last(&c.lastPassError))
}

// last returns the message p holds, "" for none.
func last(p *atomic.Pointer[string]) string {
	if msg := p.Load(); msg != nil {
		return *msg
	}
	return ""
}

func (c *counters) recordSync(bytes int64, d time.Duration) {
	c.syncCalls.Add(1)
	c.syncBytes.Add(bytes)
	c.syncHist.Observe(d)
}

func (c *counters) recordAsync(bytes int64, d time.Duration) {
	c.asyncCalls.Add(1)
	c.asyncBytes.Add(bytes)
}

func (c *counters) setEvictError(err error) {
	c.evictErrors.Add(1)
	msg := err.Error()
	c.lastEvictErr.Store(&msg)
}

func (c *counters) setSimError(err error) {
	c.simErrors.Add(1)
	msg := err.Error()
	c.lastSimError.Store(&msg)
}

func (c *counters) setPassError(err error) {
	c.passErrors.Add(1)
	msg := err.Error()
	c.lastPassError.Store(&msg)
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

// Stats returns the store's figures now. It walks every open blob's
// mapping with mincore, so it is for a stats reader, not a hot path.
func (s *Store) Stats() (Stats, error) {
	// Mappings waiting to be unmapped would count as live: unmap them.
	flushErr := s.flushUnmaps()
	c := &s.stats
	st := Stats{SyncLatency: c.syncHist.Snapshot()}
	f := &st.Figures
	c.report(f)
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
		n, err := b.Resident()
		resident += n
		if b.simPending() {
			sim.Files++
		}
		errs = append(errs, err, s.Release(b))
	}
	f.Set(wire.ResidentBytes, resident)
	return st, errors.Join(errs...)
}
