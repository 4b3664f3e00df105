package backing

import (
	"math/bits"
	"slices"
)

// chunkWords is the size of one bitmap chunk in 64-bit words: 64 words
// cover 4096 pages, 16 MiB of file with 4 KiB pages, in 512 bytes.
const chunkWords = 64

const chunkPages = chunkWords * 64

type chunk [chunkWords]uint64

// pageSet is a sparse set of page numbers, kept as bitmap chunks so that a
// huge sparse file costs memory only where it was written. The zero value
// is empty and ready to use. It is not safe for concurrent use; its owner
// guards it.
type pageSet struct {
	chunks map[int64]*chunk
	count  int64 // pages in the set
}

// addRange adds pages [first, end).
func (s *pageSet) addRange(first, end int64) {
	if first >= end {
		return
	}
	if s.chunks == nil {
		s.chunks = make(map[int64]*chunk)
	}
	for p := first; p < end; {
		ci := p / chunkPages
		c := s.chunks[ci]
		if c == nil {
			c = new(chunk)
			s.chunks[ci] = c
		}
		chunkEnd := min(end, (ci+1)*chunkPages)
		for p < chunkEnd {
			w, mask, next := wordMask(p, chunkEnd)
			s.count += int64(bits.OnesCount64(mask &^ c[w]))
			c[w] |= mask
			p = next
		}
	}
}

// wordMask returns, for page p of a chunk whose pages of interest end at
// chunkEnd, the word of the chunk p falls in, the mask of the pages of
// [p, chunkEnd) in that word, and the first page past them.
func wordMask(p, chunkEnd int64) (w int64, mask uint64, next int64) {
	bit := p % chunkPages
	lo := bit % 64
	hi := min(int64(64), lo+(chunkEnd-p))
	return bit / 64, maskBits(lo, hi), p + hi - lo
}

// maskBits returns a word with bits [lo, hi) set, 0 <= lo < hi <= 64.
func maskBits(lo, hi int64) uint64 {
	m := ^uint64(0) << uint(lo)
	if hi < 64 {
		m &= (uint64(1) << uint(hi)) - 1
	}
	return m
}

// removeFrom removes every page >= first.
func (s *pageSet) removeFrom(first int64) {
	for ci, c := range s.chunks {
		start := ci * chunkPages
		if start+chunkPages <= first {
			continue
		}
		for w := range c {
			wStart := start + int64(w)*64
			if wStart+64 <= first {
				continue
			}
			keep := uint64(0)
			if first > wStart {
				keep = maskBits(0, first-wStart)
			}
			s.count -= int64(bits.OnesCount64(c[w] &^ keep))
			c[w] &= keep
		}
		if *c == (chunk{}) {
			delete(s.chunks, ci)
		}
	}
}

// removeRange removes pages [first, end).
func (s *pageSet) removeRange(first, end int64) {
	for p := first; p < end; {
		ci := p / chunkPages
		chunkEnd := min(end, (ci+1)*chunkPages)
		c := s.chunks[ci]
		if c == nil {
			p = chunkEnd
			continue
		}
		for p < chunkEnd {
			w, mask, next := wordMask(p, chunkEnd)
			s.count -= int64(bits.OnesCount64(mask & c[w]))
			c[w] &^= mask
			p = next
		}
		if *c == (chunk{}) {
			delete(s.chunks, ci)
		}
	}
}

// merge adds every page of o to s.
func (s *pageSet) merge(o *pageSet) {
	o.runs(func(first, end int64) bool {
		s.addRange(first, end)
		return true
	})
}

// runs calls fn for each maximal run of consecutive pages [first, end), in
// ascending order, until fn returns false.
func (s *pageSet) runs(fn func(first, end int64) bool) {
	keys := make([]int64, 0, len(s.chunks))
	for ci := range s.chunks {
		keys = append(keys, ci)
	}
	slices.Sort(keys)
	runStart, runEnd := int64(-1), int64(-1)
	for _, ci := range keys {
		c := s.chunks[ci]
		for w, word := range c {
			for word != 0 {
				b := int64(bits.TrailingZeros64(word))
				p := ci*chunkPages + int64(w)*64 + b
				// Length of the run of ones starting at b in this word.
				n := int64(bits.TrailingZeros64(^(word >> uint(b))))
				if n > 64-b {
					n = 64 - b
				}
				if p == runEnd {
					runEnd = p + n
				} else {
					if runStart >= 0 && !fn(runStart, runEnd) {
						return
					}
					runStart, runEnd = p, p+n
				}
				word &^= maskBits(b, b+n)
			}
		}
	}
	if runStart >= 0 {
		fn(runStart, runEnd)
	}
}

// empty reports whether the set has no pages.
func (s *pageSet) empty() bool { return s.count == 0 }

// has reports whether page p is in the set.
func (s *pageSet) has(p int64) bool {
	if p < 0 {
		return false
	}
	c := s.chunks[p/chunkPages]
	if c == nil {
		return false
	}
	bit := p % chunkPages
	return c[bit/64]&(uint64(1)<<uint(bit%64)) != 0
}
