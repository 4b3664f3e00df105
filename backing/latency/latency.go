// Package latency is a fixed-bucket, lock-free latency histogram for the
// daemon's hot paths: Observe is a few atomic adds and never allocates.
// It must never take a lock or allocate on Observe.
package latency

import (
	"math/bits"
	"sync/atomic"
	"time"
)

// Buckets is the number of buckets. Bucket i counts durations d with
// 2^(i-1) µs <= d < 2^i µs (bucket 0: under 1 µs); the last bucket also
// takes everything longer.
const Buckets = 28

// Histogram counts durations in power-of-two microsecond buckets. The zero
// value is ready to use; it is safe for concurrent use.
type Histogram struct {
	counts [Buckets]atomic.Int64
	sum    atomic.Int64 // nanoseconds
}

// Observe records one duration.
func (h *Histogram) Observe(d time.Duration) {
	us := uint64(max(d, 0) / time.Microsecond)
	i := min(bits.Len64(us), Buckets-1)
	h.counts[i].Add(1)
	h.sum.Add(int64(d))
}

// Snapshot is a histogram's state at one moment.
type Snapshot struct {
	Counts [Buckets]int64
	Count  int64
	Sum    time.Duration
}

// Snapshot returns the counts now. Concurrent Observes may or may not be
// in it.
func (h *Histogram) Snapshot() Snapshot {
	var s Snapshot
	for i := range h.counts {
		s.Counts[i] = h.counts[i].Load()
		s.Count += s.Counts[i]
	}
	s.Sum = time.Duration(h.sum.Load())
	return s
}

// UpperBound returns the upper edge of bucket i (exclusive); the last
// bucket has none and reports the largest Duration.
func UpperBound(i int) time.Duration {
	if i >= Buckets-1 {
		return time.Duration(1<<63 - 1)
	}
	return time.Duration(uint64(1)<<uint(i)) * time.Microsecond
}

// Quantile returns an upper bound for the q-quantile (0 < q <= 1): the
// upper edge of the bucket it falls in. 0 when empty.
func (s Snapshot) Quantile(q float64) time.Duration {
	if s.Count == 0 {
		return 0
	}
	rank := int64(q*float64(s.Count) + 0.5)
	rank = max(rank, 1)
	var seen int64
	for i, c := range s.Counts {
		seen += c
		if seen >= rank {
			if i == Buckets-1 {
				return UpperBound(Buckets - 2)
			}
			return UpperBound(i)
		}
	}
	return UpperBound(Buckets - 2)
}

// Mean returns the mean duration, 0 when empty.
func (s Snapshot) Mean() time.Duration {
	if s.Count == 0 {
		return 0
	}
	return s.Sum / time.Duration(s.Count)
}
