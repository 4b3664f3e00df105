package backing

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/mmapfs/mmapfs/fs/wire"
)

// newStore opens a store on a fresh temporary directory and closes it at the
// end of the test, failing the test if Close fails.
func newStore(tb testing.TB) *Store {
	tb.Helper()
	return newStoreAt(tb, tb.TempDir())
}

func newStoreAt(tb testing.TB, dir string) *Store {
	tb.Helper()
	return newStoreWith(tb, dir, Options{})
}

// newStoreWith opens a store at dir with opts, closed at the test's end.
func newStoreWith(tb testing.TB, dir string, opts Options) *Store {
	tb.Helper()
	s, err := Open(dir, opts)
	if err != nil {
		tb.Fatalf("Open(%q): %v", dir, err)
	}
	tb.Cleanup(func() {
		if err := s.Close(); err != nil {
			tb.Errorf("Store.Close: %v", err)
		}
	})
	return s
}

const rw = unix.O_RDWR | unix.O_CREAT

// openBlob opens name read-write, creating it.
func openBlob(tb testing.TB, s *Store, name string) *Blob {
	tb.Helper()
	b, err := s.Open(name, rw, 0o644)
	if err != nil {
		tb.Fatalf("Store.Open(%q): %v", name, err)
	}
	return b
}

func release(tb testing.TB, s *Store, b *Blob) {
	tb.Helper()
	if err := s.Release(b); err != nil {
		tb.Fatalf("Release(%s): %v", b.Name(), err)
	}
}

// pattern returns n bytes that depend on seed and on their position, so
// that misplaced bytes show.
func pattern(seed byte, off int64, n int) []byte {
	p := make([]byte, n)
	for i := range p {
		x := uint64(off+int64(i))*0x9E3779B97F4A7C15 + uint64(seed)*0x100000001B3
		p[i] = byte(x>>56) | 1 // never 0, so that zeros stand out
	}
	return p
}

func mustWrite(tb testing.TB, b *Blob, p []byte, off int64) {
	tb.Helper()
	n, err := b.WriteAt(p, off)
	if err != nil || n != len(p) {
		tb.Fatalf("WriteAt(%d bytes, %d) = %d, %v", len(p), off, n, err)
	}
}

// mustRead reads n bytes at off and fails unless it gets exactly want bytes.
func mustRead(tb testing.TB, b *Blob, off int64, n, want int) []byte {
	tb.Helper()
	p := make([]byte, n)
	got, err := b.ReadAt(p, off)
	if err != nil || got != want {
		tb.Fatalf("ReadAt(%d bytes, %d) = %d, %v; want %d, nil", n, off, got, err, want)
	}
	return p[:got]
}

func checkBytes(tb testing.TB, what string, got, want []byte) {
	tb.Helper()
	if bytes.Equal(got, want) {
		return
	}
	if len(got) != len(want) {
		tb.Fatalf("%s: got %d bytes, want %d", what, len(got), len(want))
	}
	for i := range got {
		if got[i] != want[i] {
			tb.Fatalf("%s: first difference at byte %d: got %#x, want %#x", what, i, got[i], want[i])
		}
	}
}

func isZero(p []byte) bool {
	for _, c := range p {
		if c != 0 {
			return false
		}
	}
	return true
}

func checkZero(tb testing.TB, what string, p []byte) {
	tb.Helper()
	for i, c := range p {
		if c != 0 {
			tb.Fatalf("%s: byte %d is %#x, want 0", what, i, c)
		}
	}
}

func wantErrno(tb testing.TB, what string, err error, errno syscall.Errno) {
	tb.Helper()
	if !errors.Is(err, errno) {
		tb.Fatalf("%s: error %v, want %v (%d)", what, err, errno, int(errno))
	}
	// The package promises a syscall.Errno at the bottom of the chain.
	var e syscall.Errno
	if !errors.As(err, &e) {
		tb.Fatalf("%s: %v has no syscall.Errno in its chain", what, err)
	}
}

func pagesz() int64 { return int64(pageSize) }

// mountTmpfs mounts a tmpfs of the given size (mount(8) syntax, e.g. "1m")
// on a fresh directory and unmounts it when the test ends. It skips the
// test when not root or when the mount fails.
func mountTmpfs(t *testing.T, size string) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("mounting a tmpfs needs root")
	}
	dir := filepath.Join(t.TempDir(), "tmpfs")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size, "tmpfs", dir).CombinedOutput()
	if err != nil {
		t.Skipf("cannot mount tmpfs: %v: %s", err, out)
	}
	// Registered after TempDir's cleanup, so it runs before it.
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
	return dir
}

// fill writes a file in dir until the filesystem is full and returns its
// path.
func fill(t *testing.T, dir string) string {
	t.Helper()
	path := filepath.Join(dir, "filler")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 4096)
	for {
		if _, err := f.Write(buf); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("filling %s: %v", dir, err)
			}
			return path
		}
	}
}

// testStats are the store's figures the tests look at, by name.
type testStats struct {
	Opens, Mappings, MappedBytes, Remaps, Faults int64
	SyncCalls, SyncBytes, Evictions, Reopens     int64
	OpenBlobs, Resident, MaxResident             int64
	PowerCutSim                                  bool
	SimBytes                                     int64
	SimFiles                                     int
}

// mustStats returns the store's figures, failing the test on an error.
func mustStats(t testing.TB, s *Store) testStats {
	t.Helper()
	st, err := s.Stats()
	if err != nil {
		t.Fatalf("stats: %v", err)
	}
	f := st.Figures
	ts := testStats{
		Opens: f.Get(wire.BlobsOpened), Mappings: f.Get(wire.Mappings), MappedBytes: f.Get(wire.MappedBytes),
		Remaps: f.Get(wire.Remaps), Faults: f.Get(wire.Faults), SyncCalls: f.Get(wire.MsyncCalls),
		SyncBytes: f.Get(wire.MsyncBytes), Evictions: f.Get(wire.Evictions), Reopens: f.Get(wire.Reopens),
		OpenBlobs: f.Get(wire.OpenBlobs), Resident: f.Get(wire.ResidentBlobs), MaxResident: f.Get(wire.MaxResident),
	}
	if p := st.PowerCut; p != nil {
		ts.PowerCutSim, ts.SimBytes, ts.SimFiles = true, p.SavedBytes, p.Files
	}
	return ts
}
