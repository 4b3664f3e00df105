package tracereport

import (
	"math/bits"

	"github.com/mmapfs/mmapfs/cmd/mmapfs/ktrace"
)

// Window is a readahead of a file: what the kernel's page_cache_sync_ra
// or page_cache_async_ra event gave, and the window the kernel read from
// it.
//
// The events fire when readahead is asked for, before the kernel decides
// the window (mm/readahead.c): Index is the page that asked (a cache
// miss, or the folio carrying the PG_readahead marker), ReqCount the
// pages the reader asked for, and Size, AsyncSize and RAPages the file's
// readahead state as it was: the previous window's size, its async part,
// and the maximum. Start, Pages and Lookahead are the window the kernel
// then read, worked out the way mm/readahead.c does: for an async
// readahead (a hit on the marker of a sequential stream) the next window
// [Index+AsyncSize, +get_next_ra_size(Size)), all of it the next
// lookahead; for a sync readahead at the start of a file, or right after
// the previous read position, or asking for more than the maximum, the
// initial window [Index, +get_init_ra_size(ReqCount)). Other sync
// readaheads (random reads, a window sized from what the page cache
// already holds) depend on the cache: Pages is 0 there, unknown. The
// maximum taken is RAPages (or ReqCount if larger: the kernel's bdi
// io_pages may cap that, which the event does not give), and large
// folios may round the window; so Pages is what the kernel aims at, to
// within a folio.
type Window struct {
	// Kind is WindowSync, WindowAsync or WindowAround.
	Kind      string
	Index     uint64
	ReqCount  uint64
	Size      uint32
	AsyncSize uint32
	RAPages   uint32

	Start     uint64
	Pages     uint32
	Lookahead uint32

	// Time is the event's (mono ns); Pid its task.
	Time int64
	Pid  int
}

// Window kinds.
const (
	// WindowSync and WindowAsync are the windows of page_cache_sync_ra
	// and page_cache_async_ra events.
	WindowSync  = "sync"
	WindowAsync = "async"
	// WindowAround is the read-around of a fault on a mapping without
	// MADV_SEQUENTIAL: the kernel reads [Index-RAPages/2, +RAPages)
	// around the faulting page, with no readahead event (filemap.c
	// do_sync_mmap_readahead), so it is worked out from the fault.
	WindowAround = "around"
)

// Async says whether w is an async readahead's window.
func (w *Window) Async() bool { return w.Kind == WindowAsync }

// aroundWindow is the read-around window of a fault at index, for a
// file whose maximum readahead is raPages.
func aroundWindow(index uint64, raPages uint32, t int64, pid int) Window {
	half := uint64(raPages / 2)
	start := uint64(0)
	if index > half {
		start = index - half
	}
	return Window{Kind: WindowAround, Index: index, RAPages: raPages, Start: start, Pages: raPages, Lookahead: raPages / 4, Time: t, Pid: pid}
}

// newWindow makes the Window of a readahead event.
func newWindow(e *ktrace.Event) Window {
	w := Window{
		Kind: WindowSync, Index: e.Index, ReqCount: e.ReqCount,
		Size: e.Size, AsyncSize: e.AsyncSize, RAPages: e.RAPages, Time: e.Time, Pid: e.Pid,
	}
	if e.Kind == ktrace.AsyncReadahead {
		w.Kind = WindowAsync
	}
	req := max(w.ReqCount, 1)
	maxPages := max(uint64(w.RAPages), req)
	if w.RAPages == 0 {
		// Readahead is off: the kernel reads the requested pages only.
		w.Start, w.Pages = w.Index, uint32(min(req, 1<<31))
		return w
	}
	if w.Async() {
		w.Start = w.Index + uint64(w.AsyncSize)
		w.Pages = uint32(nextRASize(uint64(w.Size), maxPages))
		w.Lookahead = w.Pages
		return w
	}
	prevIndex, seq := uint64(0), false
	if e.PrevPos >= 0 {
		prevIndex = uint64(e.PrevPos) / pageSize
		seq = prevIndex <= w.Index && w.Index-prevIndex <= 1
	}
	w.Start = w.Index
	if w.Index == 0 || req > uint64(w.RAPages) || seq {
		size := initRASize(req, maxPages)
		w.Pages = uint32(size)
		if size > req {
			w.Lookahead = uint32(size - req)
		} else {
			w.Lookahead = uint32(size >> 1)
		}
	}
	return w
}

// initRASize is mm/readahead.c's get_init_ra_size.
func initRASize(size, maxPages uint64) uint64 {
	n := uint64(1)
	if size > 1 {
		n = 1 << bits.Len64(size-1)
	}
	switch {
	case n <= maxPages/32:
		return n * 4
	case n <= maxPages/4:
		return n * 2
	}
	return maxPages
}

// nextRASize is mm/readahead.c's get_next_ra_size.
func nextRASize(cur, maxPages uint64) uint64 {
	switch {
	case cur < maxPages/16:
		return 4 * cur
	case cur <= maxPages/2:
		return 2 * cur
	}
	return maxPages
}

// covers says whether the READ whose first page is first was read ahead
// by w: within the window, or, where the window cannot be told or may
// be rounded, from the asking page on by at most the maximum (and the
// previous lookahead, for an async one).
func (w *Window) covers(first uint64) bool {
	if w.Pages > 0 && first >= w.Start && first < w.Start+uint64(w.Pages) {
		return true
	}
	span := max(w.ReqCount, uint64(w.RAPages), uint64(w.Pages))
	if w.Async() {
		span += uint64(w.AsyncSize)
	}
	return first >= w.Index && first < w.Index+span
}
