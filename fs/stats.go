package fs

import (
	"runtime"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/mmapfs/mmapfs/backing"
	"github.com/mmapfs/mmapfs/backing/latency"
)

// counters are the mount's running figures of the FUSE side, updated
// atomically on every request.
type counters struct {
	ops          [numOps]opCounter
	bytesRead    atomic.Int64
	bytesWritten atomic.Int64
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

// atRiskListed bounds the files the stats list as at risk.
const atRiskListed = 100

// Snapshot is what the stats file holds, as JSON. Scripts depend on the
// top-level keys policy, unsynced_bytes, oldest_unsynced_seconds,
// msync_calls, msync_bytes, mappings, mapped_bytes, resident_bytes and ops
// (with count per op): keep them stable.
type Snapshot struct {
	Policy                string             `json:"policy"`
	Switches              Switches           `json:"switches"`
	BDI                   *BDI               `json:"bdi,omitempty"`
	Store                 string             `json:"store"`
	UptimeSeconds         float64            `json:"uptime_seconds"`
	UnsyncedBytes         int64              `json:"unsynced_bytes"`
	OldestUnsyncedSeconds float64            `json:"oldest_unsynced_seconds"`
	AtRisk                []backing.RiskFile `json:"at_risk"`                // files with unsynced writes, oldest first (at most atRiskListed)
	PowerCut              *PowerCutStats     `json:"powercut_sim,omitempty"` // with --powercut-sim only
	MsyncCalls            int64              `json:"msync_calls"`
	MsyncBytes            int64              `json:"msync_bytes"`
	MsyncLatency          Latency            `json:"msync_latency"`
	AsyncWritebackCalls   int64              `json:"async_writeback_calls"`
	AsyncWritebackBytes   int64              `json:"async_writeback_bytes"`
	IgnoredFsyncs         int64              `json:"ignored_fsyncs"`
	PeriodicPassErrors    int64              `json:"periodic_pass_errors"`
	LastPassError         string             `json:"last_pass_error,omitempty"`
	Mappings              int64              `json:"mappings"`
	MappedBytes           int64              `json:"mapped_bytes"`
	ResidentBytes         int64              `json:"resident_bytes"`
	OpenBlobs             int                `json:"open_blobs"`
	ResidentBlobs         int                `json:"resident_blobs"`
	MaxResident           int                `json:"max_resident"`
	Evictions             int64              `json:"evictions"`
	Reopens               int64              `json:"reopens"`
	EvictErrors           int64              `json:"evict_errors"`
	LastEvictError        string             `json:"last_evict_error,omitempty"`
	BlobsOpened           int64              `json:"blobs_opened"`
	Remaps                int64              `json:"remaps"`
	Faults                int64              `json:"faults"`
	MadviseErrors         int64              `json:"madvise_errors"`
	BytesRead             int64              `json:"bytes_read"`
	BytesWritten          int64              `json:"bytes_written"`
	DaemonPageFaults      Faults             `json:"daemon_page_faults"`
	HeapAllocBytes        int64              `json:"heap_alloc_bytes"`
	HeapSysBytes          int64              `json:"heap_sys_bytes"`
	Ops                   map[string]OpStats `json:"ops"`
}

// PowerCutStats are the power-cut simulation's figures.
type PowerCutStats struct {
	SavedBytes    int64  `json:"saved_bytes"`   // last synced page content kept (its memory cost)
	Files         int    `json:"files"`         // files a cut now would change
	Cut           bool   `json:"cut"`           // the power was cut: files can no longer change
	RecordErrors  int64  `json:"record_errors"` // descriptors of closed files' records that failed to close
	LastRecordErr string `json:"last_record_error,omitempty"`
}

// Switches are the mount's settings, as the stats report them.
type Switches struct {
	KeepCache         bool    `json:"keep_cache"`
	AutoInvalData     bool    `json:"auto_inval_data"`
	DirectIO          bool    `json:"direct_io"`
	WritebackCache    bool    `json:"writeback_cache"`
	AttrTimeoutSecs   float64 `json:"attr_timeout_seconds"`
	EntryTimeoutSecs  float64 `json:"entry_timeout_seconds"`
	MaxWrite          int     `json:"max_write"` // in force: --max-write, or 128 KiB for 0, within the kernel's bound
	MaxReadahead      int     `json:"max_readahead"`
	ReadOnly          bool    `json:"read_only"`
	AllowOther        bool    `json:"allow_other"`
	Madvise           string  `json:"madvise"`
	Populate          bool    `json:"populate"`
	Preallocate       bool    `json:"preallocate"`
	UnsafeIgnoreFsync bool    `json:"unsafe_ignore_fsync"`
}

// Latency summarizes a latency histogram, in microseconds. Quantiles are
// upper bounds: the edge of the power-of-two bucket they fall in.
type Latency struct {
	Count  int64   `json:"count"`
	MeanUs float64 `json:"mean_us"`
	P50Us  float64 `json:"p50_us"`
	P90Us  float64 `json:"p90_us"`
	P99Us  float64 `json:"p99_us"`
}

// OpStats are one FUSE op's figures.
type OpStats struct {
	Count  int64 `json:"count"`
	Errors int64 `json:"errors"`
	Latency
}

// Faults are the daemon's own page faults (getrusage).
type Faults struct {
	Minor int64 `json:"minor"`
	Major int64 `json:"major"`
}

func summarize(s latency.Snapshot) Latency {
	us := func(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
	return Latency{
		Count:  s.Count,
		MeanUs: us(s.Mean()),
		P50Us:  us(s.Quantile(0.5)),
		P90Us:  us(s.Quantile(0.9)),
		P99Us:  us(s.Quantile(0.99)),
	}
}

// snapshot gathers the mount's figures now.
func (m *mountState) snapshot() (*Snapshot, error) {
	bs, err := m.store.Stats()
	if err != nil {
		return nil, err
	}
	o := m.opts
	s := &Snapshot{
		Policy: o.Store.Policy.String(),
		Switches: Switches{
			KeepCache:         o.KeepCache,
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
		Store:               m.store.Root(),
		UptimeSeconds:       time.Since(m.started).Seconds(),
		UnsyncedBytes:       bs.UnsyncedBytes,
		MsyncCalls:          bs.SyncCalls,
		MsyncBytes:          bs.SyncBytes,
		MsyncLatency:        summarize(bs.SyncLatency),
		AsyncWritebackCalls: bs.AsyncCalls,
		AsyncWritebackBytes: bs.AsyncBytes,
		IgnoredFsyncs:       bs.IgnoredFsyncs,
		PeriodicPassErrors:  bs.PassErrors,
		LastPassError:       bs.LastPassError,
		Mappings:            bs.Mappings,
		MappedBytes:         bs.MappedBytes,
		ResidentBytes:       bs.ResidentBytes,
		OpenBlobs:           bs.OpenBlobs,
		ResidentBlobs:       bs.Resident,
		MaxResident:         bs.MaxResident,
		Evictions:           bs.Evictions,
		Reopens:             bs.Reopens,
		EvictErrors:         bs.EvictErrors,
		LastEvictError:      bs.LastEvictErr,
		BlobsOpened:         bs.Opens,
		Remaps:              bs.Remaps,
		Faults:              bs.Faults,
		MadviseErrors:       bs.AdviceErrors,
		BytesRead:           m.stats.bytesRead.Load(),
		BytesWritten:        m.stats.bytesWritten.Load(),
		Ops:                 make(map[string]OpStats),
	}
	s.AtRisk = m.store.AtRisk(atRiskListed)
	if bs.PowerCutSim {
		s.PowerCut = &PowerCutStats{SavedBytes: bs.SimBytes, Files: bs.SimFiles, Cut: bs.PowerCut,
			RecordErrors: bs.SimErrors, LastRecordErr: bs.LastSimError}
	}
	if !bs.OldestDirty.IsZero() {
		s.OldestUnsyncedSeconds = time.Since(bs.OldestDirty).Seconds()
	}
	if dev := m.dev.Load(); dev != nil {
		if b, err := readBDI(*dev); err == nil {
			s.BDI = &b
		}
	}
	// The daemon's own Go heap: what it costs besides the page cache of
	// the blobs (which resident_bytes counts, and the kernel accounts to
	// the page cache, not to the daemon).
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	s.HeapAllocBytes, s.HeapSysBytes = int64(ms.HeapAlloc), int64(ms.HeapSys)
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err == nil {
		s.DaemonPageFaults = Faults{Minor: ru.Minflt, Major: ru.Majflt}
	}
	for i := range m.stats.ops {
		c := &m.stats.ops[i]
		h := c.hist.Snapshot()
		if h.Count == 0 {
			continue
		}
		s.Ops[opNames[i]] = OpStats{Count: h.Count, Errors: c.errors.Load(), Latency: summarize(h)}
	}
	return s, nil
}
