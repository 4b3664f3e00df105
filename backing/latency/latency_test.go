package latency

import (
	"sync"
	"testing"
	"time"
)

func TestBuckets(t *testing.T) {
	var h Histogram
	for _, d := range []time.Duration{0, 500 * time.Nanosecond, time.Microsecond, 3 * time.Microsecond, time.Millisecond, time.Hour, -time.Second} {
		h.Observe(d)
	}
	s := h.Snapshot()
	// bucket i holds [2^(i-1), 2^i) µs; bucket 0 under 1 µs.
	want := map[int]int64{0: 3, 1: 1, 2: 1, 10: 1, Buckets - 1: 1}
	for i, c := range s.Counts {
		if c != want[i] {
			t.Errorf("bucket %d (< %v) = %d, want %d", i, UpperBound(i), c, want[i])
		}
	}
	if s.Count != 7 {
		t.Errorf("count = %d, want 7", s.Count)
	}
}

func TestQuantileAndMean(t *testing.T) {
	var h Histogram
	if q := h.Snapshot().Quantile(0.5); q != 0 {
		t.Errorf("quantile of an empty histogram = %v", q)
	}
	for i := 0; i < 99; i++ {
		h.Observe(10 * time.Microsecond) // bucket [8, 16) µs
	}
	h.Observe(5 * time.Millisecond) // bucket [4096, 8192) µs
	s := h.Snapshot()
	if got, want := s.Quantile(0.5), 16*time.Microsecond; got != want {
		t.Errorf("p50 = %v, want %v", got, want)
	}
	if got, want := s.Quantile(0.99), 16*time.Microsecond; got != want {
		t.Errorf("p99 = %v, want %v", got, want)
	}
	if got, want := s.Quantile(1), 8192*time.Microsecond; got != want {
		t.Errorf("p100 = %v, want %v", got, want)
	}
	if got, want := s.Mean(), (99*10*time.Microsecond+5*time.Millisecond)/100; got != want {
		t.Errorf("mean = %v, want %v", got, want)
	}
}

func TestConcurrentObserve(t *testing.T) {
	var h Histogram
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 1000; i++ {
				h.Observe(time.Duration(i) * time.Microsecond)
			}
		}()
	}
	wg.Wait()
	if n := h.Snapshot().Count; n != 8000 {
		t.Errorf("count = %d, want 8000", n)
	}
}
