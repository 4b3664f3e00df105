package backing

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// dropCache writes the file at path out and drops its pages from the page
// cache, so that every page of it is cold.
func dropCache(t *testing.T, path string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
		t.Fatalf("fadvise DONTNEED %s: %v", path, err)
	}
}

// TestNotResident: a cold file's pages are all not resident, clipped to
// the range and the size, over more pages than one mincore vector holds;
// once read, none; and asking allocates nothing (not parallel: counting
// allocations needs the process to itself).
func TestNotResident(t *testing.T) {
	dir := t.TempDir()
	s := newStoreAt(t, dir)
	pages := int64(residentChunk + residentChunk/2)
	size := pages*pagesz() - 100 // the last page partly
	if err := os.WriteFile(filepath.Join(dir, "cold"), pattern(1, 0, int(size)), 0o644); err != nil {
		t.Fatal(err)
	}
	dropCache(t, filepath.Join(dir, "cold"))
	b := openBlob(t, s, "cold")
	defer release(t, s, b)
	for _, c := range []struct {
		what   string
		off, n int64
		want   int
	}{
		{"the whole file", 0, size, int(pages)},
		{"past its end", 0, 10 * size, int(pages)},
		{"one byte", 5, 1, 1},
		{"across a page boundary", pagesz() - 1, 2, 2},
		{"the last byte", size - 1, 1, 1},
		{"at EOF", size, 4096, 0},
		{"nothing", 0, 0, 0},
	} {
		got, err := b.NotResident(c.off, c.n)
		if err != nil || got != c.want {
			t.Errorf("NotResident(%d, %d), %s, of a cold file: %d, %v; want %d", c.off, c.n, c.what, got, err, c.want)
		}
	}
	allocs := testing.AllocsPerRun(20, func() {
		if _, err := b.NotResident(0, size); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("NotResident allocates %.1f times a call, want 0", allocs)
	}
	mustRead(t, b, 0, int(size), int(size))
	if got, err := b.NotResident(0, size); err != nil || got != 0 {
		t.Errorf("NotResident of a file just read: %d, %v; want 0", got, err)
	}
}

// TestSyncCounts: a blob counts the msyncs and fdatasyncs made on it and
// their bytes; a clean Sync adds none.
func TestSyncCounts(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	b := openBlob(t, s, "f")
	defer release(t, s, b)
	if calls, bytes := b.SyncCounts(); calls != 0 || bytes != 0 {
		t.Fatalf("a new blob's sync counts: %d calls, %d bytes; want 0", calls, bytes)
	}
	mustWrite(t, b, pattern(2, 0, 3*int(pagesz())), 0)
	if err := b.Sync(); err != nil {
		t.Fatal(err)
	}
	calls, bytes := b.SyncCounts()
	// One msync of the three pages, one fdatasync for the new size.
	if calls != 2 || bytes != 3*uint64(pagesz()) {
		t.Errorf("after a sync of 3 new pages: %d calls, %d bytes; want 2 calls, %d bytes", calls, bytes, 3*pagesz())
	}
	if err := b.Sync(); err != nil {
		t.Fatal(err)
	}
	if c2, b2 := b.SyncCounts(); c2 != calls || b2 != bytes {
		t.Errorf("a clean Sync changed the counts: %d calls, %d bytes, from %d, %d", c2, b2, calls, bytes)
	}
	var st unix.Stat_t
	if err := b.Fd(func(fd int) error { return unix.Fstat(fd, &st) }); err != nil {
		t.Fatal(err)
	}
	if b.Ino() != st.Ino {
		t.Errorf("Ino %d, fstat's %d", b.Ino(), st.Ino)
	}
}
