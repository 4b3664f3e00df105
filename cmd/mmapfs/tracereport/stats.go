package tracereport

import (
	"math"
	"sort"
)

// reservoirSize bounds the latencies kept per op and cause: past it a
// uniform sample of them is kept (max stays exact).
const reservoirSize = 16384

// reservoir keeps a bounded uniform sample of values, and their max.
type reservoir struct {
	n    uint64
	max  int64
	vals []int64
	rng  uint64
}

func (r *reservoir) add(v int64) {
	r.n++
	if v > r.max || r.n == 1 {
		r.max = v
	}
	if len(r.vals) < reservoirSize {
		r.vals = append(r.vals, v)
		return
	}
	// xorshift64: deterministic, enough for sampling.
	r.rng ^= r.rng << 13
	r.rng ^= r.rng >> 7
	r.rng ^= r.rng << 17
	if j := r.rng % r.n; j < reservoirSize {
		r.vals[j] = v
	}
}

// quantiles returns the q-quantiles (nearest rank) of the sample.
func (r *reservoir) quantiles(qs ...float64) []int64 {
	out := make([]int64, len(qs))
	if len(r.vals) == 0 {
		return out
	}
	s := append([]int64(nil), r.vals...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	for i, q := range qs {
		k := int(math.Ceil(q*float64(len(s)))) - 1
		k = max(0, min(k, len(s)-1))
		out[i] = s[k]
	}
	return out
}

type opKey struct{ op, cause string }

type opAgg struct {
	count, bytes uint64
	lat, svc     reservoir
}

type windowKey struct {
	kind  string
	pages uint32
}

type fileAgg struct{ added, deleted uint64 }

type layerAgg struct {
	added, deleted uint64
	files          map[uint64]*fileAgg
	otherFiles     fileAgg // of files past maxFiles
}

type throttleKey struct {
	layer string
	pid   int
}

type throttleAgg struct {
	comm       string
	count      uint64
	total, max int64
}

// stats is the Collector's running summary; guarded by Collector.mu.
type stats struct {
	events, records, requests uint64
	own, givenUp, incomplete  uint64
	historyDropped            uint64
	missing                   map[string]uint64
	daemonLost, daemonDrops   uint64
	ops                       map[opKey]*opAgg
	windows                   map[windowKey]uint64
	layers                    map[string]*layerAgg
	throttled                 map[throttleKey]*throttleAgg
	samples                   uint64
	maxDirty, maxWriteback    uint64
	first, last               int64 // request times, mono ns
}

func newStats() stats {
	return stats{
		missing:   make(map[string]uint64),
		ops:       make(map[opKey]*opAgg),
		windows:   make(map[windowKey]uint64),
		layers:    map[string]*layerAgg{layerMount: {files: map[uint64]*fileAgg{}}, layerStore: {files: map[uint64]*fileAgg{}}},
		throttled: make(map[throttleKey]*throttleAgg),
	}
}

func (s *stats) request(r *Request) {
	s.requests++
	if len(r.Missing) > 0 {
		s.incomplete++
	}
	for _, m := range r.Missing {
		s.missing[m]++
	}
	k := opKey{r.Op, r.CauseLabel()}
	a := s.ops[k]
	if a == nil {
		a = &opAgg{}
		a.lat.rng, a.svc.rng = 0x9e3779b97f4a7c15, 0xbf58476d1ce4e5b9
		s.ops[k] = a
	}
	a.count++
	if r.Opcode == opRead || r.Opcode == opWrite {
		if r.Missing == nil || !contains(r.Missing, PartDaemon) {
			a.bytes += uint64(r.Result)
		} else {
			a.bytes += uint64(r.Length)
		}
	}
	if r.Latency >= 0 {
		a.lat.add(r.Latency)
	}
	if !contains(r.Missing, PartDaemon) {
		a.svc.add(r.Service)
	}
	t := r.Send
	if t == 0 {
		t = r.Start
	}
	if s.first == 0 || t < s.first {
		s.first = t
	}
	if t > s.last {
		s.last = t
	}
}

func contains(s []string, x string) bool {
	for _, v := range s {
		if v == x {
			return true
		}
	}
	return false
}

func (s *stats) window(w Window) { s.windows[windowKey{w.Kind, w.Pages}]++ }

func (s *stats) pages(layer string, ino uint64, add bool, n uint64) {
	l := s.layers[layer]
	f := l.files[ino]
	if f == nil {
		if len(l.files) < maxFiles {
			f = &fileAgg{}
			l.files[ino] = f
		} else {
			f = &l.otherFiles
		}
	}
	if add {
		l.added += n
		f.added += n
	} else {
		l.deleted += n
		f.deleted += n
	}
}

func (s *stats) throttle(layer string, pid int, comm string, pause int64) {
	k := throttleKey{layer, pid}
	a := s.throttled[k]
	if a == nil {
		if len(s.throttled) >= maxThrottled {
			k = throttleKey{layer, -1}
			comm = "(others)"
			a = s.throttled[k]
		}
		if a == nil {
			a = &throttleAgg{}
			s.throttled[k] = a
		}
	}
	a.comm = comm
	a.count++
	a.total += pause
	a.max = max(a.max, pause)
}

func (s *stats) sample(x *Sample) {
	s.samples++
	s.maxDirty = max(s.maxDirty, x.Dirty)
	s.maxWriteback = max(s.maxWriteback, x.Writeback)
}
