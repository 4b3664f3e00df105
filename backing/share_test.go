package backing

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

func TestSharedBlob(t *testing.T) {
	s := newStore(t)
	a := openBlob(t, s, "one")
	b := openBlob(t, s, "one")
	if a != b {
		t.Fatalf("two opens of one name gave different Blobs")
	}
	if err := os.Link(filepath.Join(s.Root(), "one"), filepath.Join(s.Root(), "two")); err != nil {
		t.Fatal(err)
	}
	c, err := s.Open("two", unix.O_RDONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if c != a {
		t.Fatalf("a hard link opened by its other name gave a different Blob")
	}
	if st := mustStats(t, s); st.Opens != 1 || st.Mappings != 0 {
		t.Fatalf("Opens %d, Mappings %d; want 1, 0 (one blob, empty)", st.Opens, st.Mappings)
	}
	data := pattern(1, 0, 20000)
	mustWrite(t, a, data, 0)
	checkBytes(t, "through the link", mustRead(t, c, 0, 30000, 20000), data)

	release(t, s, a)
	mustWrite(t, b, pattern(2, 100, 10), 100)
	copy(data[100:], pattern(2, 100, 10))
	checkBytes(t, "after one release", mustRead(t, c, 0, 20000, 20000), data)
	release(t, s, c)
	checkBytes(t, "after two releases", mustRead(t, b, 0, 20000, 20000), data)
	if st := mustStats(t, s); st.Mappings != 1 {
		t.Fatalf("Mappings %d while one reference is left, want 1", st.Mappings)
	}
	// Find while open.
	var st syscall.Stat_t
	if err := syscall.Stat(filepath.Join(s.Root(), "two"), &st); err != nil {
		t.Fatal(err)
	}
	if f := s.Find(&st); f != b {
		t.Fatalf("Find = %p, want %p", f, b)
	} else {
		release(t, s, f)
	}
	release(t, s, b)
	if st := mustStats(t, s); st.Mappings != 0 || st.MappedBytes != 0 {
		t.Fatalf("after the last Release: Mappings %d, MappedBytes %d", st.Mappings, st.MappedBytes)
	}
	if f := s.Find(&st); f != nil {
		t.Fatalf("Find after the last Release = %p, want nil", f)
	}
	// A new open is a new Blob that sees the data.
	d := openBlob(t, s, "two")
	defer release(t, s, d)
	checkBytes(t, "reopened", mustRead(t, d, 0, 20000, 20000), data)
	if got := mustStats(t, s).Opens; got != 2 {
		t.Fatalf("Opens = %d, want 2", got)
	}
}

func TestOpenFlags(t *testing.T) {
	s := newStore(t)
	if _, err := s.Open("missing", unix.O_RDWR, 0); !os.IsNotExist(err) {
		t.Fatalf("Open of a missing blob: %v, want ENOENT", err)
	}
	b := openBlob(t, s, "f")
	mustWrite(t, b, pattern(1, 0, 9000), 0)
	release(t, s, b)
	if _, err := s.Open("f", unix.O_RDWR|unix.O_CREAT|unix.O_EXCL, 0o644); !os.IsExist(err) {
		t.Fatalf("O_EXCL on an existing blob: %v, want EEXIST", err)
	}
	// O_TRUNC truncates through the blob.
	b, err := s.Open("f", unix.O_WRONLY|unix.O_TRUNC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if b.Size() != 0 || fileSize(t, s, "f") != 0 {
		t.Fatalf("after O_TRUNC: Size %d, file %d", b.Size(), fileSize(t, s, "f"))
	}
	release(t, s, b)
	// Escapes from the store are refused.
	if err := os.Symlink("f", filepath.Join(s.Root(), "link")); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"../x", "/etc/passwd", "link"} {
		if b, err := s.Open(name, unix.O_RDONLY, 0); err == nil {
			release(t, s, b)
			t.Errorf("Open(%q) succeeded", name)
		}
	}
	if err := os.Mkdir(filepath.Join(s.Root(), "dir"), 0o755); err != nil {
		t.Fatal(err)
	}
	if b, err := s.Open("dir", unix.O_RDONLY, 0); err == nil {
		release(t, s, b)
		t.Errorf("Open of a directory succeeded")
	}
	if st := mustStats(t, s); st.Mappings != 0 {
		t.Errorf("Mappings %d after failed opens", st.Mappings)
	}
}

// TestUpgradeReadOnly builds a read-only blob the way Open does when the
// daemon cannot open the file O_RDWR (as root it always can), then opens it
// read-write.
func TestUpgradeReadOnly(t *testing.T) {
	s := newStore(t)
	path := filepath.Join(s.Root(), "ro")
	data := pattern(1, 0, 3*4096+5)
	if err := os.WriteFile(path, data, 0o444); err != nil {
		t.Fatal(err)
	}
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	ro, err := s.acquire(fd, "ro", false)
	if err != nil {
		t.Fatalf("acquire read-only: %v", err)
	}
	if ro.Writable() {
		t.Fatalf("read-only blob says Writable")
	}
	checkBytes(t, "read-only", mustRead(t, ro, 0, 20000, len(data)), data)
	_, err = ro.WriteAt([]byte{1}, 0)
	wantErrno(t, "WriteAt on read-only blob", err, syscall.EBADF)
	_, err = ro.WriteAt([]byte{1}, 1<<20)
	wantErrno(t, "extending WriteAt on read-only blob", err, syscall.EBADF)
	wantErrno(t, "Truncate on read-only blob", ro.Truncate(0), syscall.EBADF)
	wantErrno(t, "Allocate on read-only blob", ro.Allocate(0, 10, 0), syscall.EBADF)
	if ro.Size() != int64(len(data)) || fileSize(t, s, "ro") != int64(len(data)) {
		t.Fatalf("refused writes changed the size")
	}

	// A second read-only acquire shares it and stays read-only.
	fd2, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	ro2, err := s.acquire(fd2, "ro", false)
	if err != nil || ro2 != ro || ro.Writable() {
		t.Fatalf("second read-only acquire: %p, %v, writable %v", ro2, err, ro.Writable())
	}
	release(t, s, ro2)

	mapped := mustStats(t, s).MappedBytes
	rwb, err := s.Open("ro", unix.O_RDWR, 0)
	if err != nil {
		t.Fatalf("Open O_RDWR: %v", err)
	}
	if rwb != ro {
		t.Fatalf("read-write open gave a different Blob")
	}
	if !ro.Writable() {
		t.Fatalf("Writable() did not flip after the read-write open")
	}
	if st := mustStats(t, s); st.Mappings != 1 || st.MappedBytes != mapped {
		t.Errorf("after upgrade: Mappings %d, MappedBytes %d; want 1, %d", st.Mappings, st.MappedBytes, mapped)
	}
	checkBytes(t, "after upgrade", mustRead(t, ro, 0, 20000, len(data)), data)
	p := pattern(2, 4000, 5000)
	mustWrite(t, ro, p, 4000)
	copy(data[4000:], p)
	checkBytes(t, "written after upgrade", mustRead(t, ro, 0, 20000, len(data)), data)
	f, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	checkBytes(t, "file after upgrade", f, data)
	release(t, s, rwb)
	release(t, s, ro)
	if st := mustStats(t, s); st.Mappings != 0 {
		t.Fatalf("Mappings %d after releasing all", st.Mappings)
	}
	// Only one descriptor was kept: the read-only one was closed at the
	// upgrade and the read-write one at the last Release. A leak shows as
	// an fd still open on the file.
	if n := openFdsOn(t, path); n != 0 {
		t.Errorf("%d descriptors still open on the blob", n)
	}
}

// openFdsOn counts this process's descriptors open on path.
func openFdsOn(t *testing.T, path string) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("no /proc/self/fd: %v", err)
	}
	n := 0
	for _, e := range ents {
		if l, err := os.Readlink(filepath.Join("/proc/self/fd", e.Name())); err == nil && l == path {
			n++
		}
	}
	return n
}

// TestUpgradeMapFailure: when the read-write mapping cannot be made at an
// upgrade (mmap fails: ENOMEM when the process is out of mappings or
// address space; here the new descriptor is /dev/null, which cannot be
// mapped), the Blob, still held by its other openers, must stay usable: no
// access may panic on a missing mapping.
func TestUpgradeMapFailure(t *testing.T) {
	s := newStore(t)
	path := filepath.Join(s.Root(), "u")
	data := pattern(1, 0, 10000)
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	b, err := s.acquire(fd, "u", false)
	if err != nil {
		t.Fatal(err)
	}
	defer release(t, s, b)
	bad, err := unix.Open("/dev/null", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Skip(err)
	}
	owned, _, err := b.upgrade(bad)
	if !owned {
		unix.Close(bad)
	}
	if err == nil {
		t.Fatalf("upgrade to an unmappable descriptor succeeded")
	}
	t.Logf("upgrade: owned %v, %v", owned, err)

	// guard runs fn and turns a panic into a test error. ReadAt and
	// writeOnce hold b.mu shared without defer, so a panic leaves it
	// held: give it back so that the cleanup does not deadlock.
	guard := func(what string, fn func()) {
		t.Helper()
		defer func() {
			if r := recover(); r != nil {
				b.mu.RUnlock()
				t.Errorf("BUG: %s after a failed upgrade panicked (this kills the daemon): %v", what, r)
			}
		}()
		fn()
	}
	guard("ReadAt", func() {
		buf := make([]byte, 20000)
		n, err := b.ReadAt(buf, 0)
		t.Logf("ReadAt after failed upgrade: %d, %v", n, err)
		if err == nil {
			checkBytes(t, "ReadAt after failed upgrade", buf[:n], data[:n])
		}
	})
	guard("WriteAt", func() {
		n, err := b.WriteAt([]byte("x"), 5)
		t.Logf("WriteAt after failed upgrade: %d, %v", n, err)
	})
}
