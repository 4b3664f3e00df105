package backing

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// chattr sets and clears FS_*_FL flags of path (as chattr does: get,
// change, set) and, the first time it is called for path, registers a
// cleanup that clears the immutable and append-only flags, so that
// t.TempDir can remove the file (cleanups run last registered first).
func chattr(t testing.TB, path string, set, clear uint32) {
	t.Helper()
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("open %s: %v", path, err)
	}
	defer unix.Close(fd)
	old, err := unix.IoctlGetUint32(fd, unix.FS_IOC_GETFLAGS)
	if err != nil {
		t.Skipf("FS_IOC_GETFLAGS on %s: %v", path, err)
	}
	if err := unix.IoctlSetPointerInt(fd, unix.FS_IOC_SETFLAGS, int(int32(old|set)&^int32(clear))); err != nil {
		t.Fatalf("FS_IOC_SETFLAGS %s: %v", path, err)
	}
	if set != 0 {
		t.Cleanup(func() {
			fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
			if err != nil {
				return // removed by the test
			}
			defer unix.Close(fd)
			f, err := unix.IoctlGetUint32(fd, unix.FS_IOC_GETFLAGS)
			if err == nil && f&(fsImmutableFl|fsAppendFl) != 0 {
				if err := unix.IoctlSetPointerInt(fd, unix.FS_IOC_SETFLAGS, int(int32(f&^(fsImmutableFl|fsAppendFl)))); err != nil {
					t.Errorf("clearing the flags of %s: %v", path, err)
				}
			}
		})
	}
}

// blobSetFlags sets or clears flags through the blob, as the mount does.
func blobSetFlags(t testing.TB, b *Blob, set, clear uint32) {
	t.Helper()
	out := make([]byte, 4)
	if err := b.FileAttr(unix.FS_IOC_GETFLAGS, nil, out); err != nil {
		t.Fatalf("FileAttr GETFLAGS: %v", err)
	}
	f := binary.NativeEndian.Uint32(out)&^clear | set
	in := binary.NativeEndian.AppendUint32(nil, f)
	if err := b.FileAttr(unix.FS_IOC_SETFLAGS, in, nil); err != nil {
		t.Fatalf("FileAttr SETFLAGS %#x: %v", f, err)
	}
}

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("chattr +i and +a need CAP_LINUX_IMMUTABLE")
	}
}

// TestFlagsImmutableThroughBlob checks that a blob made immutable through
// FileAttr refuses every change with EPERM, as the file's own descriptor
// does on ext4, keeps what was written, and syncs and closes cleanly.
func TestFlagsImmutableThroughBlob(t *testing.T) {
	needRoot(t)
	dir := t.TempDir()
	s := newStoreAt(t, dir)
	b := openBlob(t, s, "i")
	want := pattern(1, 0, 3*int(pagesz())+10)
	mustWrite(t, b, want, 0)
	path := filepath.Join(dir, "i")
	chattr(t, path, 0, 0) // skips where the filesystem has no flags
	t.Cleanup(func() { chattr(t, path, 0, fsImmutableFl) })
	blobSetFlags(t, b, fsImmutableFl, 0)

	_, err := b.WriteAt([]byte("x"), 0)
	wantErrno(t, "write into an immutable blob", err, syscall.EPERM)
	_, err = b.WriteAt([]byte("x"), int64(len(want)))
	wantErrno(t, "append to an immutable blob", err, syscall.EPERM)
	wantErrno(t, "truncate", b.Truncate(0), syscall.EPERM)
	wantErrno(t, "fallocate", b.Allocate(0, 2*pagesz(), 0), syscall.EPERM)
	got := mustRead(t, b, 0, len(want), len(want))
	checkBytes(t, "after refused writes", got, want)
	if err := b.Sync(); err != nil {
		t.Fatalf("Sync of an immutable blob: %v", err)
	}
	// A new writable open is the store's filesystem's to refuse.
	_, err = s.Open("i", unix.O_RDWR, 0)
	wantErrno(t, "O_RDWR open of an immutable file", err, syscall.EPERM)
	_, err = s.Open("i", unix.O_WRONLY|unix.O_APPEND, 0)
	wantErrno(t, "O_WRONLY|O_APPEND open of an immutable file", err, syscall.EPERM)

	blobSetFlags(t, b, 0, fsImmutableFl)
	mustWrite(t, b, []byte("y"), 0)
	release(t, s, b)
	disk, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	want[0] = 'y'
	checkBytes(t, "file", disk, want)
}

// TestFlagsAppendOnlyOpen checks a blob first opened while its file is
// append-only: only O_APPEND opens are writable, writes land at the end,
// a page sent again is taken, anything that would rewrite the file is
// EPERM, and fsync makes the appends durable (they are counted unsynced
// until then).
func TestFlagsAppendOnlyOpen(t *testing.T) {
	needRoot(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "a")
	start := pattern(2, 0, 5000)
	if err := os.WriteFile(path, start, 0o644); err != nil {
		t.Fatal(err)
	}
	chattr(t, path, fsAppendFl, 0)
	s := newStoreAt(t, dir)

	_, err := s.Open("a", unix.O_WRONLY, 0)
	wantErrno(t, "O_WRONLY open of an append-only file", err, syscall.EPERM)
	_, err = s.Open("a", unix.O_RDWR, 0)
	wantErrno(t, "O_RDWR open", err, syscall.EPERM)
	_, err = s.Open("a", unix.O_WRONLY|unix.O_APPEND|unix.O_TRUNC, 0)
	wantErrno(t, "O_APPEND|O_TRUNC open", err, syscall.EPERM)

	b, err := s.Open("a", unix.O_RDWR|unix.O_APPEND, 0)
	if err != nil {
		t.Fatalf("O_RDWR|O_APPEND open of an append-only file: %v", err)
	}
	defer release(t, s, b)
	if b.Writable() {
		t.Fatalf("append-only blob mapped writable")
	}
	more := pattern(3, 5000, 3000)
	mustWrite(t, b, more, 5000)
	want := append(append([]byte{}, start...), more...)
	if n, _ := b.Unsynced(); n == 0 {
		t.Errorf("an append counts nothing unsynced")
	}
	// Sent again with more (the writeback cache resends a page).
	again := append(append([]byte{}, want[4096:]...), pattern(4, 8000, 100)...)
	mustWrite(t, b, again, 4096)
	want = append(want, pattern(4, 8000, 100)...)
	// Rewriting is refused, at or below the end, and past it.
	_, err = b.WriteAt([]byte("zz"), 10)
	wantErrno(t, "write below the end", err, syscall.EPERM)
	_, err = b.WriteAt([]byte("zz"), int64(len(want))+1)
	wantErrno(t, "write past the end", err, syscall.EPERM)
	wantErrno(t, "truncate", b.Truncate(int64(len(want))), syscall.EPERM)
	wantErrno(t, "punch", b.Allocate(0, pagesz(), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE), syscall.EPERM)
	if err := b.Allocate(0, int64(len(want))+2*pagesz(), unix.FALLOC_FL_KEEP_SIZE); err != nil {
		t.Errorf("fallocate KEEP_SIZE of an append-only file: %v (ext4 allows it)", err)
	}
	got := mustRead(t, b, 0, len(want)+10, len(want))
	checkBytes(t, "through the mapping", got, want)
	if err := b.Fsync(); err != nil {
		t.Fatalf("fsync: %v", err)
	}
	if n, _ := b.Unsynced(); n != 0 {
		t.Errorf("unsynced after fsync: %d bytes", n)
	}
	disk, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	checkBytes(t, "file", disk, want)
}

// TestFlagsAppendOnlyLater checks a blob writable before its file became
// append-only through FileAttr: its descriptor, as on ext4, may still
// write anywhere and extend the file; truncate is EPERM.
func TestFlagsAppendOnlyLater(t *testing.T) {
	needRoot(t)
	dir := t.TempDir()
	s := newStoreAt(t, dir)
	b := openBlob(t, s, "l")
	path := filepath.Join(dir, "l")
	want := pattern(5, 0, 6000)
	mustWrite(t, b, want, 0)
	chattr(t, path, 0, 0)
	t.Cleanup(func() { chattr(t, path, 0, fsAppendFl) })
	blobSetFlags(t, b, fsAppendFl, 0)
	mustWrite(t, b, []byte("ab"), 100)
	copy(want[100:], "ab")
	tail := pattern(6, 6000, 9000)
	mustWrite(t, b, tail, 6000)
	want = append(want, tail...)
	wantErrno(t, "truncate", b.Truncate(10), syscall.EPERM)
	got := mustRead(t, b, 0, len(want)+1, len(want))
	checkBytes(t, "through the mapping", got, want)
	if err := b.Fsync(); err != nil {
		t.Fatalf("fsync: %v", err)
	}
	release(t, s, b)
	disk, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	checkBytes(t, "file", disk, want)
}

// TestFlagsImmutableBehind checks a file made immutable behind the
// daemon while its blob is mapped writable: writes either land or fail
// with EPERM (never a dead daemon), nothing written before is lost, and
// sync and close succeed.
func TestFlagsImmutableBehind(t *testing.T) {
	needRoot(t)
	dir := t.TempDir()
	s := newStoreAt(t, dir)
	b := openBlob(t, s, "b")
	path := filepath.Join(dir, "b")
	want := pattern(7, 0, 4*int(pagesz()))
	mustWrite(t, b, want, 0)
	if err := b.Sync(); err != nil {
		t.Fatal(err)
	}
	// Dirty one page again, so that one is writable in the mapping and
	// the others are clean (msync write-protected them).
	mustWrite(t, b, []byte("D"), 0)
	want[0] = 'D'
	chattr(t, path, fsImmutableFl, 0)
	for i := range int64(4) {
		_, err := b.WriteAt([]byte("W"), i*pagesz()+1)
		switch {
		case err == nil:
			want[i*pagesz()+1] = 'W'
		case i > 0:
			wantErrno(t, "write into a clean page of a file made immutable behind", err, syscall.EPERM)
		default:
			t.Logf("write into the dirty page: %v", err)
		}
	}
	_, err := b.WriteAt([]byte("x"), int64(len(want)))
	wantErrno(t, "append after the blob learned", err, syscall.EPERM)
	wantErrno(t, "truncate", b.Truncate(0), syscall.EPERM)
	if err := b.Sync(); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	release(t, s, b)
	disk, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	checkBytes(t, "file", disk, want)
}

// TestFlagsPowerCut checks that the power-cut simulation puts back an
// append-only file (open and closed) to its synced size, lifting the flag
// for the while and leaving it set.
func TestFlagsPowerCut(t *testing.T) {
	needRoot(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "p")
	closed := filepath.Join(dir, "q")
	start := pattern(8, 0, 3000)
	for _, p := range []string{path, closed} {
		if err := os.WriteFile(p, start, 0o644); err != nil {
			t.Fatal(err)
		}
		chattr(t, p, fsAppendFl, 0)
	}
	s := newSimStore(t, dir, Policy{Kind: PolicyFsync})
	for _, name := range []string{"p", "q"} {
		b, err := s.Open(name, unix.O_WRONLY|unix.O_APPEND, 0)
		if err != nil {
			t.Fatalf("open %s: %v", name, err)
		}
		mustWrite(t, b, pattern(9, 3000, 5000), 3000)
		if name == "q" {
			release(t, s, b)
		} else {
			defer release(t, s, b)
		}
	}
	rep, err := s.PowerCut()
	if err != nil {
		t.Fatalf("PowerCut: %v", err)
	}
	if len(rep.Files) != 2 {
		t.Errorf("cut: %+v, want p and q", rep.Files)
	}
	for _, p := range []string{path, closed} {
		disk, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		checkBytes(t, p+" after the cut", disk, start)
		fd, err := unix.Open(p, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		f, err := unix.IoctlGetUint32(fd, unix.FS_IOC_GETFLAGS)
		unix.Close(fd)
		if err != nil || f&fsAppendFl == 0 {
			t.Errorf("%s after the cut: flags %#x (%v), want append-only still", p, f, err)
		}
	}
}
