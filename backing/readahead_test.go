package backing

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// cachedOf returns how many bytes of path are in the page cache.
func cachedOf(t *testing.T, path string) int64 {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var cs unix.Cachestat_t
	if err := unix.Cachestat(uint(f.Fd()), &unix.CachestatRange{}, &cs, 0); err != nil {
		if err == unix.ENOSYS {
			t.Skip("cachestat(2) needs Linux 6.5")
		}
		t.Fatalf("cachestat %s: %v", path, err)
	}
	return int64(cs.Cache) * pagesz()
}

// majflt returns the process's major faults so far.
func majflt(t *testing.T) int64 {
	t.Helper()
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		t.Fatal(err)
	}
	return ru.Majflt
}

// TestReadAhead: under the default advice a cold one-page read brings that
// page into the page cache and no read-around, and a cold read of many
// pages is read in ahead of the copy (not a major fault per page); under
// AdviceRandom the same read faults page by page; AdviceWillNeed reads the
// same one page for a read, after what MADV_WILLNEED read at the map.
// Not parallel: it counts the process's major faults.
func TestReadAhead(t *testing.T) {
	const size = 64 << 20
	for _, tc := range []struct {
		adv        Advice
		readsAhead bool
	}{
		{AdviceNormal, true},
		{AdviceRandom, false},
		{AdviceWillNeed, true},
	} {
		t.Run(tc.adv.String(), func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "f")
			// Sparse: its pages come into the page cache (as
			// zeros) without I/O, as read-around or readahead
			// brings them.
			if err := os.WriteFile(path, nil, 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.Truncate(path, size); err != nil {
				t.Fatal(err)
			}
			s := newStoreWith(t, dir, Options{Advice: tc.adv})
			b := openBlob(t, s, "f")
			defer release(t, s, b)
			before := cachedOf(t, path)

			off := int64(size / 2)
			mustRead(t, b, off, int(pagesz()), int(pagesz()))
			got := cachedOf(t, path) - before
			t.Logf("%s: a cold read of one page brought %d bytes in (%d by the map)", tc.adv, got, before)
			if got > 4*pagesz() {
				t.Errorf("%s: a cold read of one page brought %d bytes into the page cache: the fault read around itself", tc.adv, got)
			}

			const pages = 64
			at := off + 1<<20
			faults := majflt(t)
			mustRead(t, b, at, pages*int(pagesz()), pages*int(pagesz()))
			faults = majflt(t) - faults
			t.Logf("%s: a cold read of %d pages: %d major faults", tc.adv, pages, faults)
			if tc.readsAhead && faults > pages/4 {
				t.Errorf("%s: a cold read of %d pages made %d major faults: not read in ahead of the copy", tc.adv, pages, faults)
			}
			if !tc.readsAhead && faults < pages/2 {
				t.Errorf("%s: a cold read of %d pages made %d major faults; want one a page (the daemon reads nothing ahead under %s)", tc.adv, pages, faults, tc.adv)
			}
		})
	}
}

// TestAdviceMadv: the advice each value gives a mapping, and which ones
// read a READ's range in ahead.
func TestAdviceMadv(t *testing.T) {
	want := map[Advice][]int{
		AdviceNormal:     {unix.MADV_RANDOM},
		AdviceRandom:     {unix.MADV_RANDOM},
		AdviceSequential: {unix.MADV_SEQUENTIAL},
		AdviceWillNeed:   {unix.MADV_RANDOM, unix.MADV_WILLNEED},
		AdviceHugePage:   {unix.MADV_HUGEPAGE},
	}
	for a, w := range want {
		got := a.madv()
		if len(got) != len(w) {
			t.Errorf("%s: madvise %v, want %v", a, got, w)
			continue
		}
		for i := range w {
			if got[i] != w[i] {
				t.Errorf("%s: madvise %v, want %v", a, got, w)
			}
		}
		if ahead := a == AdviceNormal || a == AdviceWillNeed; a.readsAhead() != ahead {
			t.Errorf("%s: readsAhead %v, want %v", a, a.readsAhead(), ahead)
		}
	}
}

// TestReadPlan: the windows read in ahead of a sequential stream of
// 128 KiB READs double up to the cap and keep ahead of the reader; a
// READ elsewhere gets exactly its range and starts a new stream.
func TestReadPlan(t *testing.T) {
	const k = 1 << 10
	var r readState
	type step struct {
		first, last, from, to int64
		window                bool
	}
	for i, s := range []step{
		{0, 128 * k, 0, 128 * k, false},            // a first READ: its range
		{128 * k, 256 * k, 128 * k, 384 * k, true}, // goes on: a window of 256 KiB
		{256 * k, 384 * k, 384 * k, 896 * k, true}, // in its second half: the next, 512 KiB
		{384 * k, 512 * k, 0, 0, true},             // covered, not due
		{512 * k, 640 * k, 0, 0, true},             // covered, not due
		{640 * k, 768 * k, 896 * k, 1920 * k, true},
		{768 * k, 896 * k, 0, 0, true},
		{1536 * k, 1664 * k, 1920 * k, 3968 * k, true},              // 2 MiB: the cap
		{3200 * k, 3328 * k, 3968 * k, 6016 * k, true},              // stays 2 MiB
		{64 << 20, 64<<20 + 128*k, 64 << 20, 64<<20 + 128*k, false}, // elsewhere: its range
		{64<<20 + 128*k, 64<<20 + 256*k, 64<<20 + 128*k, 64<<20 + 384*k, true},
		{8 * k, 16 * k, 8 * k, 16 * k, false}, // back: its range
	} {
		from, to, window := r.plan(s.first, s.last, 2<<20)
		if from != s.from || to != s.to || window != s.window {
			t.Errorf("step %d: plan(%d, %d) = [%d, %d) window %v; want [%d, %d) window %v", i, s.first, s.last, from, to, window, s.from, s.to, s.window)
		}
	}
	// A cap no larger than the READ: nothing but the READ's range.
	var q readState
	for _, first := range []int64{0, 128 * k, 256 * k} {
		if from, to, window := q.plan(first, first+128*k, 128*k); from != first || to != first+128*k || window {
			t.Errorf("cap 128 KiB: plan(%d) = [%d, %d) window %v; want the READ's range", first, from, to, window)
		}
	}
}

// BenchmarkReadAtAdvice: warm reads of 128 KiB and 1 MiB, in order, under
// each advice: what the read-in costs a read whose pages are all cached.
func BenchmarkReadAtAdvice(b *testing.B) {
	const size = 16 << 20
	for _, adv := range []Advice{AdviceNormal, AdviceRandom, AdviceSequential} {
		for _, n := range []int{128 << 10, 1 << 20} {
			b.Run(fmt.Sprintf("%s/%d", adv, n), func(b *testing.B) {
				dir := b.TempDir()
				if err := os.WriteFile(filepath.Join(dir, "f"), bytes.Repeat([]byte{1}, size), 0o644); err != nil {
					b.Fatal(err)
				}
				s := newStoreWith(b, dir, Options{Advice: adv})
				bl := openBlob(b, s, "f")
				defer release(b, s, bl)
				buf := make([]byte, n)
				slots := int64(size / n)
				b.SetBytes(int64(n))
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					off := int64(i) % slots * int64(n)
					if m, err := bl.ReadAt(buf, off); err != nil || m != n {
						b.Fatalf("ReadAt = %d, %v", m, err)
					}
				}
			})
		}
	}
}
