package backing

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
)

type run struct{ first, end int64 }

func runsOf(s *pageSet) []run {
	var rs []run
	s.runs(func(first, end int64) bool {
		rs = append(rs, run{first, end})
		return true
	})
	return rs
}

// modelRuns returns the maximal runs of a set of pages.
func modelRuns(m map[int64]bool) []run {
	keys := make([]int64, 0, len(m))
	for p, ok := range m {
		if ok {
			keys = append(keys, p)
		}
	}
	slices.Sort(keys)
	var rs []run
	for _, p := range keys {
		if n := len(rs); n > 0 && rs[n-1].end == p {
			rs[n-1].end++
		} else {
			rs = append(rs, run{p, p + 1})
		}
	}
	return rs
}

// checkSet checks s against the model and its own invariants.
func checkSet(t *testing.T, what string, s *pageSet, m map[int64]bool) {
	t.Helper()
	want := modelRuns(m)
	got := runsOf(s)
	if !slices.Equal(got, want) {
		t.Fatalf("%s: runs %v, want %v", what, got, want)
	}
	var n int64
	for _, r := range want {
		n += r.end - r.first
	}
	if s.count != n {
		t.Fatalf("%s: count %d, want %d", what, s.count, n)
	}
	if s.empty() != (n == 0) {
		t.Fatalf("%s: empty() = %v with %d pages", what, s.empty(), n)
	}
	// No empty chunks are kept by removeFrom, and bits agree with count.
	var bitsSet int64
	for ci, c := range s.chunks {
		for _, w := range c {
			for ; w != 0; w &= w - 1 {
				bitsSet++
			}
		}
		if ci < 0 {
			t.Fatalf("%s: negative chunk index %d", what, ci)
		}
	}
	if bitsSet != s.count {
		t.Fatalf("%s: %d bits set, count %d", what, bitsSet, s.count)
	}
}

func TestMaskBits(t *testing.T) {
	for lo := int64(0); lo < 64; lo++ {
		for hi := lo + 1; hi <= 64; hi++ {
			var want uint64
			for b := lo; b < hi; b++ {
				want |= 1 << uint(b)
			}
			if got := maskBits(lo, hi); got != want {
				t.Fatalf("maskBits(%d, %d) = %#x, want %#x", lo, hi, got, want)
			}
		}
	}
}

func TestPageSetTable(t *testing.T) {
	const C = chunkPages
	type op struct {
		remove     bool
		first, end int64 // addRange(first, end) or removeFrom(first)
	}
	add := func(first, end int64) op { return op{first: first, end: end} }
	rem := func(first int64) op { return op{remove: true, first: first} }
	tests := []struct {
		name string
		ops  []op
		want []run
	}{
		{"empty", nil, nil},
		{"empty range", []op{add(5, 5), add(7, 3)}, nil},
		{"one page", []op{add(0, 1)}, []run{{0, 1}}},
		{"last bit of a word", []op{add(63, 64)}, []run{{63, 64}}},
		{"across a word", []op{add(63, 65)}, []run{{63, 65}}},
		{"whole word", []op{add(64, 128)}, []run{{64, 128}}},
		{"adjacent words join", []op{add(0, 64), add(64, 128)}, []run{{0, 128}}},
		{"many words", []op{add(3, 1000)}, []run{{3, 1000}}},
		{"last page of a chunk", []op{add(C-1, C)}, []run{{C - 1, C}}},
		{"across a chunk", []op{add(C-1, C+1)}, []run{{C - 1, C + 1}}},
		{"adjacent chunks join", []op{add(C-64, C), add(C, C+64)}, []run{{C - 64, C + 64}}},
		{"whole chunks", []op{add(C, 3*C)}, []run{{C, 3 * C}}},
		{"across many chunks", []op{add(5, 3*C+7)}, []run{{5, 3*C + 7}}},
		{"far apart", []op{add(1<<40, 1<<40+2), add(1, 2)}, []run{{1, 2}, {1 << 40, 1<<40 + 2}}},
		{"overlap", []op{add(10, 20), add(15, 30), add(5, 12)}, []run{{5, 30}}},
		{"gap of one", []op{add(0, 10), add(11, 20)}, []run{{0, 10}, {11, 20}}},
		{"fill the gap", []op{add(0, 10), add(11, 20), add(10, 11)}, []run{{0, 20}}},
		{"remove all", []op{add(0, 100), rem(0)}, nil},
		{"remove past end", []op{add(0, 100), rem(100)}, []run{{0, 100}}},
		{"remove inside a word", []op{add(0, 100), rem(70)}, []run{{0, 70}}},
		{"remove at word boundary", []op{add(0, 200), rem(128)}, []run{{0, 128}}},
		{"remove one before word boundary", []op{add(0, 200), rem(127)}, []run{{0, 127}}},
		{"remove at chunk boundary", []op{add(C-10, C+10), rem(C)}, []run{{C - 10, C}}},
		{"remove one past chunk boundary", []op{add(C-10, C+10), rem(C + 1)}, []run{{C - 10, C + 1}}},
		{"remove drops later chunks", []op{add(0, 1), add(5*C, 5*C+1), add(9*C, 10*C), rem(2)}, []run{{0, 1}}},
		{"remove then add", []op{add(0, 100), rem(50), add(60, 70)}, []run{{0, 50}, {60, 70}}},
		{"remove from empty", []op{rem(0)}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var s pageSet
			m := map[int64]bool{}
			for _, o := range tc.ops {
				if o.remove {
					s.removeFrom(o.first)
					for p := range m {
						if p >= o.first {
							delete(m, p)
						}
					}
				} else {
					s.addRange(o.first, o.end)
					for p := o.first; p < o.end; p++ {
						m[p] = true
					}
				}
			}
			got := runsOf(&s)
			if !slices.Equal(got, tc.want) {
				t.Fatalf("runs = %v, want %v", got, tc.want)
			}
			checkSet(t, tc.name, &s, m)
			if tc.want == nil && len(s.chunks) != 0 && slices.ContainsFunc(tc.ops, func(o op) bool { return o.remove }) {
				t.Errorf("%d chunks left after removing everything", len(s.chunks))
			}
		})
	}
}

func TestPageSetRunsStop(t *testing.T) {
	var s pageSet
	s.addRange(0, 1)
	s.addRange(2, 3)
	s.addRange(chunkPages+5, chunkPages+6)
	var seen []run
	s.runs(func(first, end int64) bool {
		seen = append(seen, run{first, end})
		return len(seen) < 2
	})
	if want := []run{{0, 1}, {2, 3}}; !slices.Equal(seen, want) {
		t.Fatalf("runs stopping after 2 saw %v, want %v", seen, want)
	}
	seen = nil
	s.runs(func(first, end int64) bool {
		seen = append(seen, run{first, end})
		return false
	})
	if len(seen) != 1 {
		t.Fatalf("runs returning false at once saw %v", seen)
	}
}

func TestPageSetMerge(t *testing.T) {
	var a, b pageSet
	a.addRange(0, 10)
	a.addRange(chunkPages-3, chunkPages+3)
	b.addRange(5, 20)
	b.addRange(3*chunkPages, 3*chunkPages+64)
	a.merge(&b)
	want := []run{{0, 20}, {chunkPages - 3, chunkPages + 3}, {3 * chunkPages, 3*chunkPages + 64}}
	if got := runsOf(&a); !slices.Equal(got, want) {
		t.Fatalf("merge: %v, want %v", got, want)
	}
	if a.count != 20+6+64 {
		t.Fatalf("count %d", a.count)
	}
	var empty pageSet
	a.merge(&empty)
	empty.merge(&a)
	if got := runsOf(&empty); !slices.Equal(got, want) {
		t.Fatalf("merge into empty: %v", got)
	}
}

func TestPageSetRandom(t *testing.T) {
	for seed := uint64(1); seed <= 12; seed++ {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			r := rand.New(rand.NewPCG(seed, seed*7))
			// Pages cluster around word and chunk boundaries, where the
			// arithmetic can go wrong.
			limit := int64(3*chunkPages + 200)
			point := func() int64 {
				switch r.IntN(3) {
				case 0:
					return r.Int64N(limit)
				case 1:
					return r.Int64N(4)*chunkPages + r.Int64N(9) - 4
				default:
					return r.Int64N(limit/64)*64 + r.Int64N(5) - 2
				}
			}
			var s pageSet
			m := map[int64]bool{}
			for i := 0; i < 300; i++ {
				a := max(point(), 0)
				switch r.IntN(10) {
				case 0:
					s.removeFrom(a)
					for p := range m {
						if p >= a {
							delete(m, p)
						}
					}
				default:
					n := r.Int64N(70)
					if r.IntN(8) == 0 {
						n = r.Int64N(2 * chunkPages)
					}
					s.addRange(a, a+n)
					for p := a; p < a+n; p++ {
						m[p] = true
					}
				}
				if i%7 == 0 {
					checkSet(t, fmt.Sprintf("step %d", i), &s, m)
				}
			}
			checkSet(t, "end", &s, m)
		})
	}
}
