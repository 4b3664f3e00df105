package fs

import (
	"os"
	"runtime"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/mmapfs/mmapfs/backing/latency"
	"github.com/mmapfs/mmapfs/fs/wire"
)

// counters are the mount's running figures of the FUSE side, updated
// atomically on every request.
type counters struct {
	ops          [numOps]opCounter
	bytesRead    atomic.Int64
	bytesWritten atomic.Int64
	// autoCacheKept and autoCacheDropped count the opens auto-cache
	// decided (autocache.go).
	autoCacheKept, autoCacheDropped atomic.Int64
}

type opCounter struct {
	errors atomic.Int64
	hist   latency.Histogram
}

// done records one request of op that started at start and ended with st.
func (c *counters) done(op opIndex, start time.Time, st fuse.Status) {
	c.ops[op].hist.Observe(time.Since(start))
	if st != fuse.OK {
		c.ops[op].errors.Add(1)
	}
}

func summarize(s latency.Snapshot) wire.Latency {
	us := func(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
	return wire.Latency{
		Count:  s.Count,
		MeanUs: us(s.Mean()),
		P50Us:  us(s.Quantile(0.5)),
		P90Us:  us(s.Quantile(0.9)),
		P99Us:  us(s.Quantile(0.99)),
	}
}

// snapshot gathers the mount's figures now: the store's, and the FUSE
// side's and the daemon's own.
func (m *mountState) snapshot() (*wire.Snapshot, error) {
	bs, err := m.store.Stats()
	if err != nil {
		return nil, err
	}
	o := m.opts
	s := &wire.Snapshot{
		Policy: o.Store.Policy.String(),
		Switches: wire.Switches{
			Profile:           o.Profile,
			KeepCache:         o.KeepCache,
			AutoCache:         o.AutoCache,
			AutoInvalData:     !o.ExplicitInvalData,
			DirectIO:          o.DirectIO,
			WritebackCache:    o.WritebackCache,
			AttrTimeoutSecs:   o.AttrTimeout.Seconds(),
			EntryTimeoutSecs:  o.EntryTimeout.Seconds(),
			MaxWrite:          effectiveMaxWrite(o.MaxWrite),
			MaxReadahead:      o.MaxReadahead,
			ReadOnly:          o.ReadOnly,
			AllowOther:        o.AllowOther,
			Madvise:           o.Store.Advice.String(),
			Populate:          o.Store.Populate,
			Preallocate:       o.Store.Preallocate,
			UnsafeIgnoreFsync: o.Store.IgnoreFsync,
		},
		Store:        m.store.Root(),
		AtRisk:       m.store.AtRisk(wire.AtRiskListed),
		PowerCut:     bs.PowerCut,
		MsyncLatency: summarize(bs.SyncLatency),
		Ops:          make(map[string]wire.OpStats),
		Inject:       m.inj.List(),
		Transport:    m.transportStats(),
		Figures:      bs.Figures,
	}
	f := &s.Figures
	f.SetSince(wire.Uptime, m.started)
	f.Set(wire.BytesRead, m.stats.bytesRead.Load())
	f.Set(wire.BytesWritten, m.stats.bytesWritten.Load())
	f.Set(wire.AutoCacheKept, m.stats.autoCacheKept.Load())
	f.Set(wire.AutoCacheDropped, m.stats.autoCacheDropped.Load())
	if dev := m.dev.Load(); dev != nil {
		if b, err := readBDI(*dev); err == nil {
			s.BDI = &b
		}
	}
	mountDev := ""
	if dev := m.dev.Load(); dev != nil {
		mountDev = *dev
	}
	ensureDebugfs(m.log)
	s.BDISources = livePaths.measureBDIs(f, mountDev, livePaths.storeBDI(m.rootDev), int64(os.Getpagesize()))
	// The daemon's own Go heap: what it costs besides the page cache of
	// the blobs (which resident_bytes counts, and the kernel accounts to
	// the page cache, not to the daemon).
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	f.Set(wire.HeapAlloc, int64(ms.HeapAlloc))
	f.Set(wire.HeapSys, int64(ms.HeapSys))
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err == nil {
		f.Set(wire.MinorFaults, ru.Minflt)
		f.Set(wire.MajorFaults, ru.Majflt)
	}
	for i := range m.stats.ops {
		c := &m.stats.ops[i]
		h := c.hist.Snapshot()
		if h.Count == 0 {
			continue
		}
		s.Ops[opNames[i]] = wire.OpStats{Count: h.Count, Errors: c.errors.Load(), Latency: summarize(h)}
	}
	return s, nil
}
