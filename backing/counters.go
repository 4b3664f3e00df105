package backing

import (
	"sync/atomic"
	"time"

	"github.com/mmapfs/mmapfs/backing/latency"
)

// counters are the store's running figures, updated atomically.
type counters struct {
	opens       atomic.Int64
	mappings    atomic.Int64
	mappedBytes atomic.Int64
	remaps      atomic.Int64
	faults      atomic.Int64
	syncCalls   atomic.Int64
	syncBytes   atomic.Int64
	syncNanos   atomic.Int64
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

func (c *counters) recordSync(bytes int64, d time.Duration) {
	c.syncCalls.Add(1)
	c.syncBytes.Add(bytes)
	c.syncNanos.Add(int64(d))
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
