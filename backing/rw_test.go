package backing

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestRoundTrip(t *testing.T) {
	s := newStore(t)
	sizes := []int{0, 1, 4095, 4096, 4097, 1<<20 + 3}
	offs := []int64{0, 1, 7, 4095, 4096, 4097, 12345}
	for _, n := range sizes {
		for _, off := range offs {
			t.Run(fmt.Sprintf("n=%d/off=%d", n, off), func(t *testing.T) {
				name := fmt.Sprintf("rt-%d-%d", n, off)
				b := openBlob(t, s, name)
				defer release(t, s, b)
				p := pattern(byte(n), off, n)
				mustWrite(t, b, p, off)
				wantSize := off + int64(n)
				if n == 0 {
					wantSize = 0 // an empty write does not extend
				}
				if got := b.Size(); got != wantSize {
					t.Fatalf("Size() = %d, want %d", got, wantSize)
				}
				if n == 0 {
					return
				}
				checkBytes(t, "ReadAt", mustRead(t, b, off, n, n), p)
				// The hole before off reads as zeros.
				checkZero(t, "hole before off", mustRead(t, b, 0, int(off), int(off)))
				// A read that runs past EOF is clipped.
				got := mustRead(t, b, off, n+100, n)
				checkBytes(t, "clipped ReadAt", got, p)
				// A read starting inside runs to EOF.
				mid := off + int64(n)/2
				got = mustRead(t, b, mid, n, int(off+int64(n)-mid))
				checkBytes(t, "ReadAt from middle", got, p[mid-off:])
				// At and after EOF: 0, no error.
				mustRead(t, b, wantSize, 10, 0)
				mustRead(t, b, wantSize+1<<20, 10, 0)
				// The file, read through the page cache, holds the same bytes.
				f, err := os.ReadFile(filepath.Join(s.Root(), name))
				if err != nil {
					t.Fatal(err)
				}
				if int64(len(f)) != wantSize {
					t.Fatalf("file is %d bytes, want %d", len(f), wantSize)
				}
				checkBytes(t, "file contents", f[off:], p)
				checkZero(t, "file hole", f[:off])
			})
		}
	}
	if st := mustStats(t, s); st.Mappings != 0 || st.MappedBytes != 0 {
		t.Errorf("after releasing everything: Mappings %d, MappedBytes %d; want 0, 0", st.Mappings, st.MappedBytes)
	}
}

// TestOverwriteUnaligned overwrites ranges inside a blob at unaligned
// offsets and checks against a model.
func TestOverwriteUnaligned(t *testing.T) {
	s := newStore(t)
	b := openBlob(t, s, "ow")
	defer release(t, s, b)
	const size = 5*4096 + 123
	model := pattern(1, 0, size)
	mustWrite(t, b, model, 0)
	for i, r := range []struct {
		off int64
		n   int
	}{{0, 1}, {4095, 2}, {4094, 4098}, {100, 3 * 4096}, {size - 1, 1}, {size - 5000, 5000}, {1, size - 2}} {
		p := pattern(byte(i+2), r.off, r.n)
		mustWrite(t, b, p, r.off)
		copy(model[r.off:], p)
		checkBytes(t, fmt.Sprintf("after write %d", i), mustRead(t, b, 0, size, size), model)
		if b.Size() != size {
			t.Fatalf("in-place write changed Size to %d", b.Size())
		}
	}
	// The file agrees.
	f, err := os.ReadFile(filepath.Join(s.Root(), "ow"))
	if err != nil {
		t.Fatal(err)
	}
	checkBytes(t, "file", f, model)
	// Writes to the file by another process show through the mapping.
	if err := os.WriteFile(filepath.Join(s.Root(), "ow"), pattern(9, 0, size), 0o644); err != nil {
		t.Fatal(err)
	}
	checkBytes(t, "after external write", mustRead(t, b, 0, size, size), pattern(9, 0, size))
}

func TestReadWriteEdgeCases(t *testing.T) {
	s := newStore(t)
	b := openBlob(t, s, "edge")
	defer release(t, s, b)

	// Empty blob: no mapping, reads return 0.
	if st := mustStats(t, s); st.Mappings != 0 {
		t.Errorf("empty blob has %d mappings, want 0", st.Mappings)
	}
	mustRead(t, b, 0, 10, 0)
	if n, err := b.ReadAt(nil, 0); n != 0 || err != nil {
		t.Errorf("ReadAt(nil, 0) = %d, %v", n, err)
	}
	if n, err := b.WriteAt(nil, 100); n != 0 || err != nil || b.Size() != 0 {
		t.Errorf("WriteAt(nil, 100) = %d, %v, size %d; want 0, nil, 0", n, err, b.Size())
	}

	_, err := b.ReadAt(make([]byte, 1), -1)
	wantErrno(t, "ReadAt at -1", err, syscall.EINVAL)
	_, err = b.WriteAt([]byte{1}, -1)
	wantErrno(t, "WriteAt at -1", err, syscall.EINVAL)
	_, err = b.WriteAt([]byte{1}, MaxFileSize)
	wantErrno(t, "WriteAt at MaxFileSize", err, syscall.EFBIG)
	_, err = b.WriteAt(make([]byte, 2), MaxFileSize-1)
	wantErrno(t, "WriteAt across MaxFileSize", err, syscall.EFBIG)
	_, err = b.WriteAt([]byte{1}, 1<<62)
	wantErrno(t, "WriteAt at 2^62", err, syscall.EFBIG)
	// off + len overflows int64.
	_, err = b.WriteAt(make([]byte, 16), 1<<63-8)
	wantErrno(t, "WriteAt overflowing int64", err, syscall.EFBIG)
	if b.Size() != 0 {
		t.Fatalf("failed writes changed Size to %d", b.Size())
	}
	if st := mustStats(t, s); st.Mappings != 0 {
		t.Errorf("failed writes left %d mappings", st.Mappings)
	}
	// A read far past EOF with a huge offset.
	mustRead(t, b, 1<<62, 10, 0)
}

// TestGrowthRemaps appends across the mapping's capacity many times.
func TestGrowthRemaps(t *testing.T) {
	s := newStore(t)
	b := openBlob(t, s, "grow")
	defer release(t, s, b)
	const chunk = 3000 // not a page multiple: appends straddle pages
	const total = 2 << 20
	before := mustStats(t, s).Remaps
	var off int64
	for i := 0; off < total; i++ {
		mustWrite(t, b, pattern(7, off, chunk), off)
		off += chunk
		if b.Size() != off {
			t.Fatalf("after append %d: Size() = %d, want %d", i, b.Size(), off)
		}
	}
	st := mustStats(t, s)
	remaps := st.Remaps - before
	// The mapping starts at one page and at least doubles: growing to 2 MiB
	// takes at least log2(2 MiB/8 KiB) remaps, and headroom keeps it far
	// below one per append.
	if remaps < 5 || remaps > 20 {
		t.Errorf("%d remaps for %d appends, want between 5 and 20", remaps, off/chunk)
	}
	if st.Mappings != 1 {
		t.Errorf("Mappings = %d, want 1", st.Mappings)
	}
	if st.MappedBytes < off || st.MappedBytes > 2*off+int64(pageSize) || st.MappedBytes%int64(pageSize) != 0 {
		t.Errorf("MappedBytes = %d for a %d-byte blob", st.MappedBytes, off)
	}
	checkBytes(t, "contents", mustRead(t, b, 0, int(off), int(off)), pattern(7, 0, int(off)))
	f, err := os.ReadFile(filepath.Join(s.Root(), "grow"))
	if err != nil {
		t.Fatal(err)
	}
	checkBytes(t, "file", f, pattern(7, 0, int(off)))
}

// TestSparseWriteAt1GiB writes at 1 GiB into an empty blob.
func TestSparseWriteAt1GiB(t *testing.T) {
	s := newStore(t)
	b := openBlob(t, s, "sparse")
	defer release(t, s, b)
	const off = int64(1) << 30
	p := pattern(3, off, 5000)
	mustWrite(t, b, p, off)
	if got := b.Size(); got != off+int64(len(p)) {
		t.Fatalf("Size() = %d, want %d", got, off+int64(len(p)))
	}
	checkBytes(t, "data", mustRead(t, b, off, len(p), len(p)), p)
	// Sample the hole, including its last bytes before the data.
	buf := make([]byte, 64<<10)
	for _, at := range []int64{0, 4096, 1 << 20, 512 << 20, off - int64(len(buf))} {
		n, err := b.ReadAt(buf, at)
		if err != nil || n != len(buf) {
			t.Fatalf("ReadAt hole at %d = %d, %v", at, n, err)
		}
		checkZero(t, fmt.Sprintf("hole at %d", at), buf)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(filepath.Join(s.Root(), "sparse"), &st); err != nil {
		t.Fatal(err)
	}
	if st.Size != off+int64(len(p)) {
		t.Errorf("st_size = %d", st.Size)
	}
	// 1 GiB of hole must not be allocated: allow 1 MiB (the data plus the
	// hole pages we read, which a filesystem may not allocate anyway).
	if st.Blocks*512 > 1<<20 {
		t.Errorf("st_blocks = %d (%d bytes): the hole was allocated", st.Blocks, st.Blocks*512)
	}
}

// TestMtime: writes through the mapping set the file's mtime lazily, when
// Fd or Sync or the last Release applies it.
func TestMtime(t *testing.T) {
	s := newStore(t)
	b := openBlob(t, s, "m")
	path := filepath.Join(s.Root(), "m")
	mustWrite(t, b, make([]byte, 8192), 0)
	old := time.Unix(1000000000, 0)
	if err := os.Chtimes(path, old, old); err != nil {
		t.Fatal(err)
	}
	b.DiscardMtime()
	mtime := func() time.Time {
		t.Helper()
		var st syscall.Stat_t
		if err := b.Fd(func(fd int) error { return syscall.Fstat(fd, &st) }); err != nil {
			t.Fatal(err)
		}
		return time.Unix(st.Mtim.Unix())
	}
	if got := mtime(); !got.Equal(old) {
		t.Fatalf("mtime %v after DiscardMtime, want %v", got, old)
	}
	before := time.Now()
	mustWrite(t, b, []byte{1}, 10) // in place: the page is dirty already
	if got := mtime(); got.Before(before.Add(-time.Second)) {
		t.Fatalf("mtime %v after a write at %v", got, before)
	}
	if err := os.Chtimes(path, old, old); err != nil {
		t.Fatal(err)
	}
	mustWrite(t, b, []byte{1}, 20)
	release(t, s, b)
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.ModTime().Before(before.Add(-time.Second)) {
		t.Fatalf("mtime %v after the last Release, want the time of the last write", fi.ModTime())
	}
}

// TestMtimeExtendingWrite: a write that grows the file takes its mtime
// from the ftruncate that grows it, leaves none pending (so that closing a
// file written once costs no utimensat), and an older pending mtime is not
// applied over it.
func TestMtimeExtendingWrite(t *testing.T) {
	s := newStore(t)
	b := openBlob(t, s, "m")
	defer release(t, s, b)
	path := filepath.Join(s.Root(), "m")
	mustWrite(t, b, make([]byte, 8192), 0)
	old := time.Unix(1000000000, 0)
	if err := os.Chtimes(path, old, old); err != nil {
		t.Fatal(err)
	}
	b.DiscardMtime()
	mustWrite(t, b, []byte{1}, 10) // in place: pending
	if b.mtime.Load() == 0 {
		t.Fatal("no mtime pending after a write in place")
	}
	pending := time.Unix(0, b.mtime.Load())
	time.Sleep(20 * time.Millisecond) // past the kernel's coarse clock tick
	mustWrite(t, b, []byte{2}, 8192)  // extends the file
	if ns := b.mtime.Load(); ns != 0 {
		t.Fatalf("mtime %v pending after an extending write; want none", time.Unix(0, ns))
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if !fi.ModTime().After(pending) {
		t.Fatalf("mtime %v after an extending write, want later than the pending %v of the write before", fi.ModTime(), pending)
	}
}

// TestWriteDirtiesOnlyItsPages: 4 KiB writes into a region of the file
// not in the page cache (a hole here) dirty 4 KiB each, not the large folio the
// mapping's read-around would bring the page in as (ext4 makes them, and
// a store through a mapping dirties the whole folio, which a sync then
// writes out whole): writing every fourth page, the process's
// write_bytes, which the kernel counts as folios are dirtied, grows by
// about what was written. (On a store filesystem without large folios it
// holds anyway.)
func TestWriteDirtiesOnlyItsPages(t *testing.T) {
	if _, err := os.Stat("/proc/self/io"); err != nil {
		t.Skip("no /proc/self/io:", err)
	}
	s := newStore(t)
	b := openBlob(t, s, "f")
	defer release(t, s, b)
	const size = 16 << 20
	if err := b.Truncate(size); err != nil {
		t.Fatal(err)
	}
	page := pattern(3, 0, int(pagesz()))
	var written int64
	before := writeBytes(t)
	for off := int64(0); off < size; off += 4 * pagesz() {
		mustWrite(t, b, page, off)
		written += pagesz()
	}
	if got := writeBytes(t) - before; got > written*9/8 {
		t.Errorf("%d bytes written into every fourth page dirtied %d bytes", written, got)
	}
}

// writeBytes returns the process's write_bytes from /proc/self/io.
func writeBytes(t *testing.T) int64 {
	t.Helper()
	raw, err := os.ReadFile("/proc/self/io")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if v, ok := strings.CutPrefix(line, "write_bytes: "); ok {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatalf("no write_bytes in /proc/self/io:\n%s", raw)
	return 0
}

// TestStoreCloseWithOpenBlobs: Close tears down blobs still open.
func TestStoreCloseWithOpenBlobs(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		b := openBlob(t, s, fmt.Sprint(i))
		mustWrite(t, b, pattern(byte(i), 0, 10000), 0)
	}
	if st := mustStats(t, s); st.Mappings != 3 {
		t.Fatalf("Mappings %d", st.Mappings)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if st := mustStats(t, s); st.Mappings != 0 || st.MappedBytes != 0 {
		t.Fatalf("after Close: Mappings %d, MappedBytes %d", st.Mappings, st.MappedBytes)
	}
	for i := 0; i < 3; i++ {
		path := filepath.Join(dir, fmt.Sprint(i))
		f, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		checkBytes(t, path, f, pattern(byte(i), 0, 10000))
		if n := openFdsOn(t, path); n != 0 {
			t.Errorf("%d descriptors still open on %s", n, path)
		}
	}
	if _, err := Open(filepath.Join(dir, "0"), Options{}); err == nil {
		t.Errorf("Open of a regular file as a store succeeded")
	}
	if _, err := Open(filepath.Join(dir, "missing"), Options{}); !os.IsNotExist(err) {
		t.Errorf("Open of a missing store: %v", err)
	}
}
