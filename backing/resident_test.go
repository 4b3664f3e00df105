package backing

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mmapfs/mmapfs/fs/wire"
)

func newBoundedStore(t *testing.T, max int) (*Store, string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("dropping blobs needs open_by_handle_at, which needs root")
	}
	dir := t.TempDir()
	s, err := Open(dir, Options{MaxResident: max})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	if !s.canReopen {
		t.Skip("the temporary directory's filesystem cannot reopen by handle")
	}
	return s, dir
}

func content(i int) []byte {
	return bytes.Repeat([]byte(fmt.Sprintf("blob %d|", i)), 1000+i)
}

// TestResidentBound: with many blobs open and a bound of 4, at most 4 are
// resident, and each still reads and writes its own data.
func TestResidentBound(t *testing.T) {
	s, dir := newBoundedStore(t, 4)
	const n = 20
	blobs := make([]*Blob, n)
	for i := range blobs {
		blobs[i] = openBlob(t, s, fmt.Sprintf("f%d", i))
		if _, err := blobs[i].WriteAt(content(i), 0); err != nil {
			t.Fatal(err)
		}
		if st := mustStats(t, s); st.Resident > 4 {
			t.Fatalf("after opening %d blobs: %d resident, bound 4", i+1, st.Resident)
		}
	}
	// Renamed in the store while dropped: the handle follows the file.
	if err := os.Rename(filepath.Join(dir, "f0"), filepath.Join(dir, "renamed")); err != nil {
		t.Fatal(err)
	}
	for round := 0; round < 2; round++ {
		for i, b := range blobs {
			want := content(i)
			got := make([]byte, len(want)+10)
			n, err := b.ReadAt(got, 0)
			if err != nil || !bytes.Equal(got[:n], want) {
				t.Fatalf("round %d, blob %d: read %d bytes, %v; content right: %v", round, i, n, err, bytes.Equal(got[:n], want))
			}
		}
	}
	st := mustStats(t, s)
	if st.Resident > 4 || st.Evictions == 0 || st.Reopens == 0 || st.MaxResident != 4 {
		t.Errorf("stats: %d resident (bound %d), %d evictions, %d reopens", st.Resident, st.MaxResident, st.Evictions, st.Reopens)
	}
	if st.Mappings > 4 {
		t.Errorf("%d mappings live with a bound of 4", st.Mappings)
	}
	for _, b := range blobs {
		if err := s.Release(b); err != nil {
			t.Fatal(err)
		}
	}
	if st := mustStats(t, s); st.Resident != 0 || st.Mappings != 0 {
		t.Errorf("after releasing all: %d resident, %d mappings", st.Resident, st.Mappings)
	}
}

// TestResidentDirtySurvivesDrop: pages written before a blob was dropped
// are still owed, and a Sync after the drop msyncs them.
func TestResidentDirtySurvivesDrop(t *testing.T) {
	s, _ := newBoundedStore(t, 1)
	a := openBlob(t, s, "a")
	defer s.Release(a)
	if _, err := a.WriteAt([]byte("dirty"), 3*int64(pageSize)); err != nil {
		t.Fatal(err)
	}
	b := openBlob(t, s, "b") // drops a
	defer s.Release(b)
	if _, err := b.WriteAt([]byte("x"), 0); err != nil {
		t.Fatal(err)
	}
	if n, _ := a.Unsynced(); n != int64(pageSize) {
		t.Errorf("a's unsynced bytes after being dropped: %d, want one page", n)
	}
	before := mustStats(t, s)
	if before.Evictions == 0 {
		t.Fatalf("a was not dropped: %+v", before)
	}
	if err := a.Sync(); err != nil {
		t.Fatal(err)
	}
	after := mustStats(t, s)
	if n, _ := a.Unsynced(); n != 0 || after.SyncBytes-before.SyncBytes < int64(pageSize) {
		t.Errorf("after Sync: unsynced %d, synced %d bytes", n, after.SyncBytes-before.SyncBytes)
	}
}

// TestResidentUnlinkedPinned: an open blob whose file was unlinked is never
// dropped, since closing its descriptor would free the file.
func TestResidentUnlinkedPinned(t *testing.T) {
	s, dir := newBoundedStore(t, 1)
	a := openBlob(t, s, "a")
	defer s.Release(a)
	want := content(7)
	if _, err := a.WriteAt(want, 0); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(dir, "a")); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 5; i++ {
		b := openBlob(t, s, fmt.Sprintf("b%d", i))
		if _, err := b.WriteAt([]byte("x"), 0); err != nil {
			t.Fatal(err)
		}
		if err := s.Release(b); err != nil {
			t.Fatal(err)
		}
	}
	got := make([]byte, len(want))
	if n, err := a.ReadAt(got, 0); err != nil || n != len(want) || !bytes.Equal(got, want) {
		t.Errorf("unlinked blob after pressure: %d bytes, %v", n, err)
	}
}

// TestResidentConcurrent: many goroutines reading, writing, truncating and
// syncing 40 blobs through a bound of 6, under -race.
func TestResidentConcurrent(t *testing.T) {
	s, _ := newBoundedStore(t, 6)
	const n = 40
	blobs := make([]*Blob, n)
	for i := range blobs {
		blobs[i] = openBlob(t, s, fmt.Sprintf("f%d", i))
		if _, err := blobs[i].WriteAt(content(i), 0); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := 0; k < 300; k++ {
				i := (g*7 + k*13) % n
				b := blobs[i]
				want := content(i)
				switch k % 5 {
				case 0, 1, 2:
					got := make([]byte, 64)
					if _, err := b.ReadAt(got, 0); err != nil || !bytes.Equal(got, want[:64]) {
						errs <- fmt.Errorf("blob %d: read %q, %v", i, got, err)
						return
					}
				case 3:
					if _, err := b.WriteAt(want[:64], 0); err != nil {
						errs <- err
						return
					}
				case 4:
					if err := b.Sync(); err != nil {
						errs <- err
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if st := mustStats(t, s); st.Resident > 6+8 {
		// Blobs in use cannot be dropped; at most one per goroutine over.
		t.Errorf("%d resident with a bound of 6 and 8 goroutines", st.Resident)
	}
	for _, b := range blobs {
		if err := s.Release(b); err != nil {
			t.Fatal(err)
		}
	}
}

// TestResidentReadOnlyUpgrade: a read-only blob dropped and then opened
// for writing becomes writable and resident.
func TestResidentReadOnlyUpgrade(t *testing.T) {
	s, dir := newBoundedStore(t, 1)
	if err := os.WriteFile(filepath.Join(dir, "ro"), content(3), 0o644); err != nil {
		t.Fatal(err)
	}
	fd, err := unix.Open(filepath.Join(dir, "ro"), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	ro, err := s.acquire(fd, "ro", false)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Release(ro)
	other := openBlob(t, s, "other") // drops ro
	defer s.Release(other)
	rw2 := openBlob(t, s, "ro")
	defer s.Release(rw2)
	if rw2 != ro || !ro.Writable() {
		t.Fatalf("reopen for writing: same blob %v, writable %v", rw2 == ro, ro.Writable())
	}
	if _, err := ro.WriteAt([]byte("W"), 0); err != nil {
		t.Fatal(err)
	}
}

// bigSparse is the size of the sparse files of the resident-bytes tests:
// mincore over one of them whole takes a 16 MiB vector.
const bigSparse = int64(64) << 30

// openBigSparse creates name in s as a sparse file of bigSparse bytes
// with one byte written at each of offs by pwrite(2), which puts exactly
// those pages in the page cache (a write into a hole reads nothing
// around it), then opens it (mapped, not populated) until the test ends.
func openBigSparse(tb testing.TB, s *Store, dir, name string, offs ...int64) *Blob {
	tb.Helper()
	f, err := os.OpenFile(filepath.Join(dir, name), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		tb.Fatal(err)
	}
	err = f.Truncate(bigSparse)
	for _, off := range offs {
		if err == nil {
			_, err = f.WriteAt([]byte{1}, off)
		}
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		tb.Fatal(err)
	}
	b, err := s.Open(name, unix.O_RDWR, 0)
	if err != nil {
		tb.Fatalf("Store.Open(%q): %v", name, err)
	}
	tb.Cleanup(func() { release(tb, s, b) })
	return b
}

// allocated returns the bytes the Go heap allocated while f ran (all
// goroutines').
func allocated(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// TestResidentBytesBigSparse: a 64 GiB sparse blob with three pages in
// the page cache counts those three pages, in the blob's Resident and in
// the store's resident_bytes, and counting allocates nothing like the
// 16 MiB vector that mincore over the whole mapping takes. The mincore
// fallback, a chunk at a time, counts the same pages without it either.
// Not parallel: it measures the heap.
func TestResidentBytesBigSparse(t *testing.T) {
	dir := t.TempDir()
	s := newStoreAt(t, dir)
	ps := pagesz()
	b := openBigSparse(t, s, dir, "big", 0, 1<<30+5, bigSparse-1)
	want := 3 * ps

	var got int64
	var err error
	heap := allocated(func() {
		for range 10 {
			if got, err = b.Resident(); err != nil {
				break
			}
		}
	})
	if err != nil {
		t.Fatalf("Resident: %v", err)
	}
	if got != want {
		t.Errorf("Resident = %d bytes, want %d (3 pages of a sparse 64 GiB file)", got, want)
	}
	if heap > 1<<20 {
		t.Errorf("10 Resident calls on a 64 GiB blob allocated %d bytes: it must not grow with the file's size", heap)
	}
	st, err := s.Stats()
	if err != nil {
		t.Fatalf("Stats: %v", err)
	}
	if n := st.Figures.Get(wire.ResidentBytes); n != want {
		t.Errorf("resident_bytes = %d, want %d", n, want)
	}

	var mc int64
	heap = allocated(func() { mc, err = b.residentMincore(nil) })
	if err != nil {
		t.Fatalf("residentMincore: %v", err)
	}
	if mc != want {
		t.Errorf("residentMincore = %d bytes, want %d", mc, want)
	}
	if heap > 1<<20 {
		t.Errorf("residentMincore on a 64 GiB blob allocated %d bytes (the whole mapping's vector is 16 MiB)", heap)
	}
}

// TestResidentBytesPageCache: resident_bytes counts the file's pages in
// the page cache whoever brought them in (here another descriptor's
// reads, the blob's mapping never touched): cachestat and mincore over
// the blob's MAP_SHARED mapping agree, page for page.
func TestResidentBytesPageCache(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := newStoreAt(t, dir)
	ps := pagesz()
	path := filepath.Join(dir, "f")
	if err := os.WriteFile(path, pattern(3, 0, int(64*ps)), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// Written back, then dropped from the page cache; then two pages
	// read again, with readahead off.
	if err := unix.Fdatasync(int(f.Fd())); err != nil {
		t.Fatal(err)
	}
	if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
		t.Fatal(err)
	}
	b := openBlob(t, s, "f")
	defer release(t, s, b)
	if got, err := b.Resident(); err != nil || got != 0 {
		t.Fatalf("after dropping the file's pages: Resident = %d, %v; want 0", got, err)
	}
	if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_RANDOM); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1)
	for _, off := range []int64{5 * ps, 40*ps + 7} {
		if _, err := f.ReadAt(buf, off); err != nil {
			t.Fatal(err)
		}
	}
	got, err := b.Resident()
	if err != nil {
		t.Fatal(err)
	}
	mc, err := b.residentMincore(nil)
	if err != nil {
		t.Fatal(err)
	}
	if got != 2*ps || mc != got {
		t.Errorf("two pages read by another descriptor: cachestat says %d bytes, mincore %d; want %d for both", got, mc, 2*ps)
	}
}

// TestResidentBytesConcurrent: counting resident bytes (by cachestat,
// unlocked on a duplicate descriptor, and by mincore a chunk at a time)
// while other goroutines grow, shrink, write and sync the blobs and the
// store drops and reopens them through a bound of 4, under -race: no
// error, no race, and never more than the largest size.
func TestResidentBytesConcurrent(t *testing.T) {
	s, _ := newBoundedStore(t, 4)
	const n, most = 12, 64 << 10
	blobs := make([]*Blob, n)
	for i := range blobs {
		blobs[i] = openBlob(t, s, fmt.Sprintf("f%d", i))
	}
	defer func() {
		for _, b := range blobs {
			release(t, s, b)
		}
	}()
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	stop := make(chan struct{})
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := range 200 {
				b := blobs[(g*5+k*7)%n]
				var err error
				switch k % 4 {
				case 0:
					_, err = b.WriteAt(pattern(byte(k), 0, most), 0)
				case 1:
					err = b.Truncate(int64(k%3) * 4096)
				case 2:
					_, err = b.WriteAt([]byte("x"), int64(k%16)*4096)
				case 3:
					err = b.Sync()
				}
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	var readers sync.WaitGroup
	for r := range 2 {
		readers.Add(1)
		go func() {
			defer readers.Done()
			for k := 0; ; k++ {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := s.Stats(); err != nil {
					errs <- err
					return
				}
				b := blobs[(r+k)%n]
				got, err := b.Resident()
				if k%2 == 1 {
					got, err = b.residentMincore(nil)
				}
				if err != nil || got < 0 || got > most {
					errs <- fmt.Errorf("%s: resident %d bytes, %v; want 0 to %d", b.Name(), got, err, most)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(stop)
	readers.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// TestStatsInterrupted: a Stats call counting by the mincore fallback
// (here 16 sparse 64 GiB blobs, several seconds of mincore) stops with
// ErrStatsInterrupted when InterruptStats is called, and the next Stats
// call counts again.
func TestStatsInterrupted(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := newStoreAt(t, dir)
	for i := range 16 {
		openBigSparse(t, s, dir, fmt.Sprintf("big%d", i), 4096)
	}
	s.stats.noCachestat.Store(true)
	done := make(chan error, 1)
	go func() {
		_, err := s.Stats()
		done <- err
	}()
	// Until it returns: an interruption before it began would not
	// stop it.
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	var err error
wait:
	for {
		select {
		case err = <-done:
			break wait
		case <-tick.C:
			s.InterruptStats()
		}
	}
	if !errors.Is(err, ErrStatsInterrupted) {
		t.Fatalf("Stats interrupted under way: %v, want ErrStatsInterrupted", err)
	}
	s.stats.noCachestat.Store(false)
	st, err := s.Stats()
	if err != nil {
		t.Fatalf("Stats after the interruption: %v", err)
	}
	if n := st.Figures.Get(wire.ResidentBytes); n != 16*pagesz() {
		t.Errorf("resident_bytes after the interruption = %d, want %d", n, 16*pagesz())
	}
}

// BenchmarkStatsManyBigFiles: the store's figures with 16 sparse 64 GiB
// files open, each with a few pages in the page cache (what a stats
// reader costs the daemon per reading), counted by cachestat(2) and by
// the mincore(2) fallback.
func BenchmarkStatsManyBigFiles(b *testing.B) {
	dir := b.TempDir()
	s := newStoreAt(b, dir)
	const files = 16
	for i := range files {
		name := fmt.Sprintf("big%d", i)
		openBigSparse(b, s, dir, name, 0, 1<<20, 1<<30, bigSparse-1)
	}
	for _, mode := range []string{"cachestat", "mincore"} {
		b.Run(mode, func(b *testing.B) {
			s.stats.noCachestat.Store(mode == "mincore")
			b.ReportAllocs()
			for b.Loop() {
				if _, err := s.Stats(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
