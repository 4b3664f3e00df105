package integration

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// The data path: read, write, truncate, fallocate, lseek on the mount.

func TestWriteReadSizes(t *testing.T) {
	t.Parallel()
	m := startMount(t)
	for i, n := range []int{0, 1, 4095, 4096, 4097, 1<<20 + 3} {
		name := fmt.Sprintf("size-%d", n)
		data := pattern(n, uint64(i))
		writeFile(t, filepath.Join(m.mnt, name), data)
		if st := lstat(t, filepath.Join(m.mnt, name)); st.Size != int64(n) {
			t.Errorf("%s: size on the mount %d, want %d", name, st.Size, n)
		}
		checkBoth(t, m, name, data)
	}
}

func TestPreadPwrite(t *testing.T) {
	t.Parallel()
	m := startMount(t)
	p := filepath.Join(m.mnt, "f")
	want := pattern(10000, 10)
	writeFile(t, p, want)
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	writes := []struct {
		off int
		n   int
	}{
		{0, 10}, {4090, 12}, {8191, 1}, {9999, 1}, {9995, 100}, {12000, 5000}, {4096, 4096},
	}
	for i, w := range writes {
		data := pattern(w.n, uint64(100+i))
		if n, err := f.WriteAt(data, int64(w.off)); err != nil || n != w.n {
			t.Fatalf("pwrite %d bytes at %d: %d, %v", w.n, w.off, n, err)
		}
		if end := w.off + w.n; end > len(want) {
			want = append(want, make([]byte, end-len(want))...)
		}
		copy(want[w.off:], data)
	}
	for _, r := range []struct{ off, n int }{{0, 17000}, {1, 1}, {4095, 2}, {10000, 2000}, {16999, 1}, {4000, 9000}} {
		got := make([]byte, r.n)
		n, err := f.ReadAt(got, int64(r.off))
		if err != nil || n != r.n || !bytes.Equal(got, want[r.off:r.off+r.n]) {
			t.Errorf("pread %d bytes at %d: n=%d err=%v, %s", r.n, r.off, n, err, diffBytes(got[:n], want[r.off:r.off+r.n]))
		}
	}
	// At and past EOF.
	buf := make([]byte, 100)
	if n, err := f.ReadAt(buf, int64(len(want))); n != 0 || err != io.EOF {
		t.Errorf("pread at EOF: %d, %v; want 0, EOF", n, err)
	}
	if n, err := f.ReadAt(buf, int64(len(want)-10)); n != 10 || err != io.EOF {
		t.Errorf("pread across EOF: %d, %v; want 10, EOF", n, err)
	}
	if n, err := f.ReadAt(buf, 1<<40); n != 0 || err != io.EOF {
		t.Errorf("pread far past EOF: %d, %v; want 0, EOF", n, err)
	}
	checkBoth(t, m, "f", want)
}

func TestTruncate(t *testing.T) {
	t.Parallel()
	m := startMount(t)
	p := filepath.Join(m.mnt, "f")
	data := pattern(8192, 11)
	writeFile(t, p, data)
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	steps := []struct {
		size  int64
		byFd  bool
		descr string
	}{
		{20000, true, "ftruncate up"},
		{100, true, "ftruncate down"},
		{8192, false, "truncate(path) up again"},
		{4096, false, "truncate(path) down to a page boundary"},
		{4097, true, "ftruncate up by one byte"},
		{0, true, "ftruncate to zero"},
		{3 << 20, true, "ftruncate up to 3 MiB"},
	}
	want := data
	for _, s := range steps {
		if s.byFd {
			err = f.Truncate(s.size)
		} else {
			err = os.Truncate(p, s.size)
		}
		if err != nil {
			t.Fatalf("%s to %d: %v", s.descr, s.size, err)
		}
		if int64(len(want)) > s.size {
			want = want[:s.size]
		} else {
			want = append(want, make([]byte, int(s.size)-len(want))...)
		}
		if st := lstat(t, p); st.Size != s.size {
			t.Errorf("%s: size %d, want %d", s.descr, st.Size, s.size)
		}
		got := make([]byte, len(want)+1)
		n, _ := f.ReadAt(got, 0)
		if !bytes.Equal(got[:n], want) {
			t.Errorf("%s to %d: read through the open file: %s", s.descr, s.size, diffBytes(got[:n], want))
		}
		checkBoth(t, m, "f", want)
	}
	// Writing after shrinking, then growing: the old bytes must not come back.
	if err := f.Truncate(0); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(bytes.Repeat([]byte{0xAA}, 8192), 0); err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(10); err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(8192); err != nil {
		t.Fatal(err)
	}
	want = append(bytes.Repeat([]byte{0xAA}, 10), make([]byte, 8182)...)
	checkBoth(t, m, "f", want)
}

func TestNegativeTruncate(t *testing.T) {
	t.Parallel()
	m := startMount(t)
	p := filepath.Join(m.mnt, "f")
	writeFile(t, p, []byte("data"))
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	wantErrno(t, "ftruncate -1", unix.Ftruncate(int(f.Fd()), -1), syscall.EINVAL)
	wantErrno(t, "truncate(path) -1", unix.Truncate(p, -1), syscall.EINVAL)
	checkBoth(t, m, "f", []byte("data"))
}

func TestEmptyFile(t *testing.T) {
	t.Parallel()
	m := startMount(t)
	p := filepath.Join(m.mnt, "empty")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Errorf("fsync of an empty file: %v", err)
	}
	buf := make([]byte, 10)
	if n, err := f.ReadAt(buf, 0); n != 0 || err != io.EOF {
		t.Errorf("read of an empty file: %d, %v", n, err)
	}
	if err := f.Close(); err != nil {
		t.Errorf("close of an empty file: %v", err)
	}
	checkBoth(t, m, "empty", []byte{})
	// Open for writing and close without writing; open O_TRUNC.
	for _, flag := range []int{os.O_RDWR, os.O_WRONLY | os.O_TRUNC, os.O_RDONLY} {
		f, err := os.OpenFile(p, flag, 0)
		if err != nil {
			t.Fatalf("open flags %#x: %v", flag, err)
		}
		if err := f.Close(); err != nil {
			t.Errorf("close flags %#x: %v", flag, err)
		}
	}
	checkBoth(t, m, "empty", []byte{})
	// Truncate a full file to empty through O_TRUNC.
	writeFile(t, p, pattern(5000, 12))
	writeFile(t, p, nil)
	checkBoth(t, m, "empty", []byte{})
}

func TestSparseFile(t *testing.T) {
	t.Parallel()
	m := startMount(t)
	p := filepath.Join(m.mnt, "sparse")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	const off = 1 << 30
	if _, err := f.WriteAt([]byte{0x5A}, off); err != nil {
		t.Fatalf("write 1 byte at 1 GiB: %v", err)
	}
	if st := lstat(t, p); st.Size != off+1 {
		t.Errorf("size on the mount: %d, want %d", st.Size, off+1)
	}
	for _, o := range []int64{0, 4096, off / 2, off - 65536} {
		buf := make([]byte, 65536)
		n, err := f.ReadAt(buf, o)
		if err != nil || n != len(buf) || !isZero(buf) {
			t.Errorf("read 64 KiB of the hole at %d: n=%d err=%v zero=%v", o, n, err, isZero(buf[:n]))
		}
	}
	buf := make([]byte, 10)
	if n, err := f.ReadAt(buf, off-5); n != 6 || err != io.EOF || !bytes.Equal(buf[:6], []byte{0, 0, 0, 0, 0, 0x5A}) {
		t.Errorf("read across the last byte: %d, %v, % x", n, err, buf[:n])
	}
	if err := f.Sync(); err != nil {
		t.Errorf("fsync: %v", err)
	}
	st := lstat(t, filepath.Join(m.store, "sparse"))
	if st.Size != off+1 {
		t.Errorf("blob size %d, want %d", st.Size, off+1)
	}
	if used := st.Blocks * 512; used >= 1<<20 {
		t.Errorf("blob uses %d bytes on disk (st_blocks %d), want < 1 MiB: the hole was filled", used, st.Blocks)
	}
}

func TestAppendTwoDescriptors(t *testing.T) {
	t.Parallel()
	m := startMount(t)
	p := filepath.Join(m.mnt, "log")
	writeFile(t, p, []byte("start\n"))
	open := func() *os.File {
		f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	f1, f2 := open(), open()
	defer f1.Close()
	defer f2.Close()
	var want strings.Builder
	want.WriteString("start\n")
	for i := 0; i < 50; i++ {
		f := f1
		if i%2 == 1 {
			f = f2
		}
		line := fmt.Sprintf("line %d from fd %d %s\n", i, i%2+1, strings.Repeat("x", i*37%300))
		if _, err := f.Write([]byte(line)); err != nil {
			t.Fatalf("append %d: %v", i, err)
		}
		want.WriteString(line)
	}
	// An O_APPEND write ignores the file offset.
	if _, err := f1.Seek(0, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	if _, err := f1.Write([]byte("end\n")); err != nil {
		t.Fatal(err)
	}
	want.WriteString("end\n")
	checkBoth(t, m, "log", []byte(want.String()))
}

func TestFallocate(t *testing.T) {
	t.Parallel()
	m := startMount(t)
	p := filepath.Join(m.mnt, "f")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fd := int(f.Fd())
	if _, err := f.WriteAt([]byte("hello"), 0); err != nil {
		t.Fatal(err)
	}
	if err := unix.Fallocate(fd, 0, 0, 10000); err != nil {
		t.Fatalf("fallocate(mode 0, 0, 10000): %v", err)
	}
	want := append([]byte("hello"), make([]byte, 9995)...)
	if st := lstat(t, p); st.Size != 10000 {
		t.Errorf("size after fallocate(mode 0) to 10000: %d", st.Size)
	}
	checkBoth(t, m, "f", want)
	if err := unix.Fallocate(fd, unix.FALLOC_FL_KEEP_SIZE, 10000, 8192); err != nil {
		t.Fatalf("fallocate(KEEP_SIZE, 10000, 8192): %v", err)
	}
	if st := lstat(t, p); st.Size != 10000 {
		t.Errorf("size on the mount after fallocate(KEEP_SIZE): %d, want 10000", st.Size)
	}
	checkBoth(t, m, "f", want)
	// Inside the file, fallocate keeps the data.
	if err := unix.Fallocate(fd, 0, 0, 100); err != nil {
		t.Fatalf("fallocate(mode 0, 0, 100): %v", err)
	}
	checkBoth(t, m, "f", want)
	// A write after KEEP_SIZE preallocation extends the file normally.
	if _, err := f.WriteAt([]byte("tail"), 12000); err != nil {
		t.Fatal(err)
	}
	want = append(want, make([]byte, 2000)...)
	want = append(want, "tail"...)
	checkBoth(t, m, "f", want)
}

func TestSeekDataHole(t *testing.T) {
	t.Parallel()
	m := startMount(t)
	p := filepath.Join(m.mnt, "sparse")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	const mib = 1 << 20
	for _, w := range []struct{ off, n int64 }{{0, 4096}, {mib, 8192}, {3 * mib, 100}} {
		if _, err := f.WriteAt(pattern(int(w.n), uint64(w.off)), w.off); err != nil {
			t.Fatal(err)
		}
	}
	size := int64(4*mib + 123)
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatalf("fsync: %v", err)
	}
	blob, err := os.Open(filepath.Join(m.store, "sparse"))
	if err != nil {
		t.Fatal(err)
	}
	defer blob.Close()
	offsets := []int64{0, 1, 4095, 4096, 8192, mib - 1, mib, mib + 4096, mib + 8192, mib + mib/2,
		3*mib - 1, 3 * mib, 3*mib + 100, 3*mib + 4096, size - 1, size, size + 1, 1 << 40}
	for _, whence := range []int{unix.SEEK_DATA, unix.SEEK_HOLE} {
		name := map[int]string{unix.SEEK_DATA: "SEEK_DATA", unix.SEEK_HOLE: "SEEK_HOLE"}[whence]
		for _, off := range offsets {
			got, gerr := unix.Seek(int(f.Fd()), off, whence)
			want, werr := unix.Seek(int(blob.Fd()), off, whence)
			if got != want || errnoOf(gerr) != errnoOf(werr) {
				t.Errorf("lseek(%d, %s): mount %d (%s), store blob %d (%s)", off, name, got, errnoName(errnoOf(gerr)), want, errnoName(errnoOf(werr)))
			}
		}
	}
}

func TestDaemonMapsBlob(t *testing.T) {
	t.Parallel()
	if loopbackMode {
		t.Skip("the loopback does not map files")
	}
	m := startMount(t)
	writeFile(t, filepath.Join(m.mnt, "mapped"), pattern(10000, 13))
	writeFile(t, filepath.Join(m.mnt, "other"), pattern(10000, 14))
	store, err := filepath.EvalSymlinks(m.store)
	if err != nil {
		t.Fatal(err)
	}
	blob := filepath.Join(store, "mapped")
	f, err := os.Open(filepath.Join(m.mnt, "mapped"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Read(make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	maps, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", m.pid()))
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, line := range strings.Split(string(maps), "\n") {
		if strings.HasSuffix(line, " "+blob) {
			found = true
			if fields := strings.Fields(line); len(fields) < 2 || !strings.Contains(fields[1], "s") {
				t.Errorf("daemon maps the blob privately, want MAP_SHARED: %s", line)
			}
		}
	}
	if !found {
		t.Errorf("/proc/%d/maps of the daemon does not map %s while it is open:\n%s", m.pid(), blob, maps)
	}
}

// TestFileTooBig requires the errno that the underlying filesystem gives
// natively for writes and truncates past the largest file size.
func TestFileTooBig(t *testing.T) {
	t.Parallel()
	m := startMount(t)
	native, err := os.Create(filepath.Join(t.TempDir(), "native"))
	if err != nil {
		t.Fatal(err)
	}
	defer native.Close()
	f, err := os.Create(filepath.Join(m.mnt, "f"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, off := range []int64{1 << 62, 1<<63 - 2} {
		_, werr := unix.Pwrite(int(native.Fd()), []byte("x"), off)
		_, gerr := unix.Pwrite(int(f.Fd()), []byte("x"), off)
		if werr == nil {
			t.Fatalf("native pwrite at %d succeeded", off)
		}
		wantErrno(t, fmt.Sprintf("pwrite at %d", off), gerr, errnoOf(werr))

		werr = unix.Ftruncate(int(native.Fd()), off)
		gerr = unix.Ftruncate(int(f.Fd()), off)
		wantErrno(t, fmt.Sprintf("ftruncate to %d", off), gerr, errnoOf(werr))
	}
	if st := lstat(t, filepath.Join(m.mnt, "f")); st.Size != 0 {
		t.Errorf("size after the failed writes: %d, want 0", st.Size)
	}
	// The daemon survived and the file still works.
	if _, err := f.WriteAt([]byte("ok"), 0); err != nil {
		t.Errorf("write after EFBIG: %v", err)
	}
	checkBoth(t, m, "f", []byte("ok"))
}
