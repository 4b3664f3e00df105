package integration

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/mmapfs/mmapfs/internal/procstat"
)

// Reads of pages not in the page cache (issue 16). The daemon serves a
// READ by copying out of its mapping of the store's file; a fault in a
// mapping reads around itself by the store device's read_ahead_kb (8 MiB
// on a virtio disk), so a cold 4 KiB read through the mount used to bring
// 8 MiB into the store's page cache. What a cold read brings in must be
// what the READ asked for, as a read(2) of the store file does, and a cold
// sequential read must still come in ahead of the copy, not page by page.

const (
	coldPiece  = 4096
	coldPieces = 64
	coldSpan   = 256 << 20 // the sparse files the random reads pick from
)

// coldOffsets are coldPieces page-aligned offsets spread over coldSpan,
// none at 0 (the kernel's first readahead there reads 16 KiB) and no two
// adjacent (adjacent reads look sequential to the kernel's readahead).
func coldOffsets() []int64 {
	var offs []int64
	stride := int64(coldSpan / coldPieces)
	for i := int64(0); i < coldPieces; i++ {
		// A page in the middle part of each stride, varying from one
		// to the next.
		page := (i*7919)%(stride/coldPiece/2) + stride/coldPiece/4
		offs = append(offs, i*stride+page*coldPiece)
	}
	return offs
}

// coldPieceData is the content of the piece at off.
func coldPieceData(off int64) []byte {
	b := bytes.Repeat([]byte{byte(off >> 12), byte(off >> 20)}, coldPiece/2)
	copy(b, fmt.Sprintf("piece at %d\n", off))
	return b
}

// writeColdFile makes path a sparse coldSpan file holding coldPieceData at
// every coldOffsets offset, synced.
func writeColdFile(t *testing.T, path string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(coldSpan); err != nil {
		t.Fatal(err)
	}
	for _, off := range coldOffsets() {
		if _, err := f.WriteAt(coldPieceData(off), off); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
}

// dropCache drops path's pages from the page cache (its writeback done
// first) and fails the test if they do not go: no one may map the file.
func dropCache(t *testing.T, path string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	for range 10 {
		if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
			t.Fatalf("fadvise(DONTNEED) %s: %v", path, err)
		}
		if cachedBytes(t, path) == 0 {
			return
		}
	}
	t.Fatalf("%s: %d bytes still in the page cache after fadvise(DONTNEED)", path, cachedBytes(t, path))
}

// cachedBytes returns how many bytes of path are in the page cache, by
// cachestat(2).
func cachedBytes(t *testing.T, path string) int64 {
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
	return int64(cs.Cache) * int64(os.Getpagesize())
}

// readPieces reads every coldOffsets piece of path with pread and checks
// its content.
func readPieces(t *testing.T, path string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got := make([]byte, coldPiece)
	for _, off := range coldOffsets() {
		if _, err := f.ReadAt(got, off); err != nil {
			t.Fatalf("pread %s at %d: %v", path, off, err)
		}
		if !bytes.Equal(got, coldPieceData(off)) {
			t.Fatalf("pread %s at %d: got %q..., want %q...", path, off, got[:24], coldPieceData(off)[:24])
		}
	}
}

// majorFaults returns the major page faults of process pid so far.
func majorFaults(t *testing.T, pid int) int64 {
	t.Helper()
	st, err := procstat.OfPid(pid)
	if err != nil {
		t.Fatal(err)
	}
	return st.MajFlt
}

// mountReadahead returns the read_ahead_kb of the mount's bdi, in bytes.
func mountReadahead(t *testing.T, mnt string) int64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(mnt, &st); err != nil {
		t.Fatal(err)
	}
	p := fmt.Sprintf("/sys/class/bdi/%d:%d/read_ahead_kb", unix.Major(st.Dev), unix.Minor(st.Dev))
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		t.Fatalf("%s: %v", p, err)
	}
	return kb << 10
}

// TestColdRead: random 4 KiB reads of pages not in the page cache, through
// the mount with pread and through a client mapping, bring into the
// store's page cache what the reads asked for (as pread of the store file
// itself does), not the read-around of a fault; a cold sequential read is
// read in ahead of the daemon's copy, not faulted in page by page.
func TestColdRead(t *testing.T) {
	t.Parallel()
	store := t.TempDir()
	for _, name := range []string{"native", "pread", "mmap"} {
		writeColdFile(t, filepath.Join(store, name))
	}
	seq := bytes.Repeat([]byte("sequential, cold, read once\n"), (32<<20)/28)
	writeFile(t, filepath.Join(store, "seq"), seq)
	m := startMountAt(t, store, t.TempDir())
	asked := int64(coldPieces * coldPiece)

	// The same reads on the store's file itself: what ext4 brings in.
	native := filepath.Join(store, "native")
	dropCache(t, native)
	readPieces(t, native)
	nativeCached := cachedBytes(t, native)
	t.Logf("pread of the store's file: %d pieces of %d bytes brought %d bytes into the page cache", coldPieces, coldPiece, nativeCached)

	t.Run("pread", func(t *testing.T) {
		blob := filepath.Join(store, "pread")
		dropCache(t, blob)
		readPieces(t, filepath.Join(m.mnt, "pread"))
		got := cachedBytes(t, blob)
		t.Logf("pread through the mount: %d bytes into the store's page cache for %d bytes read (%.1fx; the store's file itself: %.1fx)",
			got, asked, float64(got)/float64(asked), float64(nativeCached)/float64(asked))
		if limit := max(4*asked, 2*nativeCached); got > limit {
			t.Errorf("cold 4 KiB reads through the mount brought %d bytes into the store's page cache for %d bytes read (%.0fx; at most %d): each READ's fault read around itself",
				got, asked, float64(got)/float64(asked), limit)
		}
	})

	t.Run("mmap", func(t *testing.T) {
		blob := filepath.Join(store, "mmap")
		dropCache(t, blob)
		f, err := os.Open(filepath.Join(m.mnt, "mmap"))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		data, err := syscall.Mmap(int(f.Fd()), 0, coldSpan, syscall.PROT_READ, syscall.MAP_SHARED)
		if err != nil {
			t.Fatal(err)
		}
		defer syscall.Munmap(data)
		for _, off := range coldOffsets() {
			if want := coldPieceData(off); !bytes.Equal(data[off:off+coldPiece], want) {
				t.Fatalf("mapping of the mount at %d: got %q..., want %q...", off, data[off:off+24], want[:24])
			}
		}
		// A fault in the client's mapping of the mount is a READ of
		// the mount's read-around (its bdi's read_ahead_kb): that
		// much a fault may bring in, and no more.
		ra := mountReadahead(t, m.mnt)
		got := cachedBytes(t, blob)
		t.Logf("client mapping of the mount: %d bytes into the store's page cache for %d faults (mount read-around %d bytes)", got, coldPieces, ra)
		if limit := int64(coldPieces) * 2 * max(ra, coldPiece); got > limit {
			t.Errorf("%d faults in a client mapping of the mount brought %d bytes into the store's page cache (at most %d: twice the mount's read-around of %d bytes each)",
				coldPieces, got, limit, ra)
		}
	})

	t.Run("sequential", func(t *testing.T) {
		blob := filepath.Join(store, "seq")
		dropCache(t, blob)
		before := majorFaults(t, m.pid())
		got := readFile(t, filepath.Join(m.mnt, "seq"))
		faults := majorFaults(t, m.pid()) - before
		if !bytes.Equal(got, seq) {
			t.Fatalf("cold sequential read of %d bytes: got %d bytes, not the file's", len(seq), len(got))
		}
		cached := cachedBytes(t, blob)
		pages := int64(len(seq)) / int64(os.Getpagesize())
		t.Logf("cold sequential read of %d bytes: %d bytes into the store's page cache, %d major faults in the daemon (%d pages)", len(seq), cached, faults, pages)
		if cached < int64(len(seq))&^int64(os.Getpagesize()-1) {
			t.Errorf("cold sequential read of %d bytes left %d bytes of the store's file in the page cache, want all of it", len(seq), cached)
		}
		// Read in ahead of the copy, a READ's range waits for its I/O
		// about once; faulted in page by page, every page is a major
		// fault.
		if faults > pages/4 {
			t.Errorf("cold sequential read of %d pages: %d major faults in the daemon (at most %d): the pages were faulted in one by one, not read in ahead of the copy",
				pages, faults, pages/4)
		}
	})
}
