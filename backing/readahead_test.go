package backing

import (
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
