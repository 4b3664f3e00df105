package backing

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// TestFaultReadTruncatedBehindBack truncates a mapped blob from outside;
// a read of the vanished pages faults, which must come back as EIO.
func TestFaultReadTruncatedBehindBack(t *testing.T) {
	s := newStore(t)
	b := openBlob(t, s, "f")
	defer release(t, s, b)
	mustWrite(t, b, pattern(1, 0, 64<<10), 0)
	if err := os.Truncate(filepath.Join(s.Root(), "f"), 0); err != nil {
		t.Fatal(err)
	}
	faults := mustStats(t, s).Faults
	n, err := b.ReadAt(make([]byte, 100), 8192)
	if n != 0 {
		t.Errorf("ReadAt of a vanished page returned %d bytes", n)
	}
	wantErrno(t, "ReadAt after external truncate", err, syscall.EIO)
	if got := b.Size(); got != 0 {
		t.Fatalf("after the fault Size() = %d, want 0", got)
	}
	if got := mustStats(t, s).Faults; got != faults+1 {
		t.Errorf("Faults = %d, want %d", got, faults+1)
	}
	mustRead(t, b, 8192, 100, 0)
	if got := unsynced(b); got != 0 {
		t.Errorf("Unsynced %d after the blob shrank to 0", got)
	}
	// The blob works again: regrowth, contents, sync.
	p := pattern(2, 10000, 3000)
	mustWrite(t, b, p, 10000)
	got := mustRead(t, b, 0, 20000, 13000)
	checkZero(t, "hole after regrowth", got[:10000])
	checkBytes(t, "data after regrowth", got[10000:], p)
	if err := b.Sync(); err != nil {
		t.Fatal(err)
	}
}

// TestFaultReadPartiallyTruncated: an outside truncate to a size inside a
// page. A read that starts in the kept part faults on the first vanished
// page; the blob adopts the file's size.
func TestFaultReadPartiallyTruncated(t *testing.T) {
	s := newStore(t)
	b := openBlob(t, s, "f")
	defer release(t, s, b)
	data := pattern(1, 0, 64<<10)
	mustWrite(t, b, data, 0)
	const newSize = 4096 + 100
	if err := os.Truncate(filepath.Join(s.Root(), "f"), newSize); err != nil {
		t.Fatal(err)
	}
	_, err := b.ReadAt(make([]byte, 32<<10), 0)
	wantErrno(t, "ReadAt across vanished pages", err, syscall.EIO)
	if got := b.Size(); got != newSize {
		t.Fatalf("Size() = %d, want %d", got, newSize)
	}
	checkBytes(t, "kept", mustRead(t, b, 0, 32<<10, newSize), data[:newSize])
}

// TestFaultWriteTruncatedBehindBack: a write inside the size the blob knows
// but past the file's real end faults. The code promises EIO (faulted finds
// the file shrank) and adopts the new size; the daemon survives and the
// next write regrows the blob.
func TestFaultWriteTruncatedBehindBack(t *testing.T) {
	s := newStore(t)
	b := openBlob(t, s, "f")
	defer release(t, s, b)
	mustWrite(t, b, pattern(1, 0, 64<<10), 0)
	if err := os.Truncate(filepath.Join(s.Root(), "f"), 0); err != nil {
		t.Fatal(err)
	}
	n, err := b.WriteAt(pattern(2, 8192, 100), 8192)
	if n != 0 {
		t.Errorf("faulting WriteAt returned %d", n)
	}
	wantErrno(t, "WriteAt after external truncate", err, syscall.EIO)
	if got := b.Size(); got != 0 {
		t.Fatalf("after the fault Size() = %d, want 0", got)
	}
	if fs := fileSize(t, s, "f"); fs != 0 {
		t.Fatalf("the failed write changed the file's size to %d", fs)
	}
	// Same write again: now it extends, and succeeds.
	p := pattern(3, 8192, 100)
	mustWrite(t, b, p, 8192)
	got := mustRead(t, b, 0, 10000, 8292)
	checkZero(t, "hole", got[:8192])
	checkBytes(t, "data", got[8192:], p)
	f, err := os.ReadFile(filepath.Join(s.Root(), "f"))
	if err != nil {
		t.Fatal(err)
	}
	checkBytes(t, "file", f, got)
}

// TestFaultWritePartiallyTruncated: a write that straddles the file's real
// end after an outside truncate fails with EIO. Its bytes in the last,
// partial page land past EOF in the page cache; when the blob grows again
// the range between the old EOF and the new data must read as zeros (a
// failed write must not resurface).
func TestFaultWritePartiallyTruncated(t *testing.T) {
	t.Run("tempdir", func(t *testing.T) { testFaultWritePartiallyTruncated(t, t.TempDir()) })
	t.Run("tmpfs", func(t *testing.T) { testFaultWritePartiallyTruncated(t, mountTmpfs(t, "4m")) })
}

func testFaultWritePartiallyTruncated(t *testing.T, dir string) {
	s := newStoreAt(t, dir)
	b := openBlob(t, s, "f")
	defer release(t, s, b)
	mustWrite(t, b, make([]byte, 64<<10), 0)
	const newSize = 4096 + 100
	if err := os.Truncate(filepath.Join(s.Root(), "f"), newSize); err != nil {
		t.Fatal(err)
	}
	_, err := b.WriteAt(pattern(2, 0, 16<<10), 0)
	wantErrno(t, "WriteAt across the file's end", err, syscall.EIO)
	if got := b.Size(); got != newSize {
		t.Fatalf("Size() = %d, want %d", got, newSize)
	}
	// Grow past the partial page again.
	mustWrite(t, b, []byte{7}, 20000)
	got := mustRead(t, b, 0, 20001, 20001)
	for i := newSize; i < 20000; i++ {
		if got[i] != 0 {
			t.Fatalf("BUG: byte %d, past the file's end when the write failed, reads %#x after regrowth, want 0 (the failed write's bytes resurfaced)", i, got[i])
		}
	}
}

// TestENOSPCExtend fills a small tmpfs and extends a blob on it.
func TestENOSPCExtend(t *testing.T) {
	dir := mountTmpfs(t, "1m")
	s := newStoreAt(t, dir)
	b := openBlob(t, s, "b")
	defer release(t, s, b)
	data := pattern(1, 0, 8192)
	mustWrite(t, b, data, 0)
	filler := fill(t, dir)

	p := pattern(2, 8192, 64<<10)
	n, err := b.WriteAt(p, 8192)
	if n != 0 {
		t.Errorf("failed WriteAt returned %d", n)
	}
	wantErrno(t, "extending WriteAt on a full tmpfs", err, syscall.ENOSPC)
	if b.Size() != 8192 || fileSize(t, s, "b") != 8192 {
		t.Fatalf("after ENOSPC: Size %d, file %d, want 8192", b.Size(), fileSize(t, s, "b"))
	}
	checkBytes(t, "data after ENOSPC", mustRead(t, b, 0, 1<<20, 8192), data)
	// Also a write far past the end (leaving a hole).
	_, err = b.WriteAt(p, 1<<20)
	wantErrno(t, "sparse extending WriteAt on a full tmpfs", err, syscall.ENOSPC)
	if b.Size() != 8192 {
		t.Fatalf("after ENOSPC: Size %d", b.Size())
	}
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	mustWrite(t, b, p, 8192)
	checkBytes(t, "after freeing space", mustRead(t, b, 0, 1<<20, 8192+len(p)), append(data, p...))
	if err := b.Sync(); err != nil {
		t.Fatal(err)
	}
}

// TestENOSPCHole writes into a hole of a sparse blob on a full tmpfs: the
// page fault cannot allocate, which must be ENOSPC, not a dead daemon.
func TestENOSPCHole(t *testing.T) {
	dir := mountTmpfs(t, "1m")
	s := newStoreAt(t, dir)
	b := openBlob(t, s, "b")
	defer release(t, s, b)
	truncate(t, b, 256<<10) // all hole
	mustWrite(t, b, []byte("x"), 0)
	filler := fill(t, dir)

	faults := mustStats(t, s).Faults
	p := pattern(2, 8192, 4096)
	n, err := b.WriteAt(p, 8192)
	if n != 0 {
		t.Errorf("failed WriteAt returned %d", n)
	}
	wantErrno(t, "WriteAt into a hole on a full tmpfs", err, syscall.ENOSPC)
	if mustStats(t, s).Faults == faults {
		t.Errorf("the fault was not counted")
	}
	// A write straddling a present page and a hole: ENOSPC too.
	_, err = b.WriteAt(pattern(3, 0, 8192), 100)
	wantErrno(t, "WriteAt from a page into a hole on a full tmpfs", err, syscall.ENOSPC)
	if b.Size() != 256<<10 {
		t.Fatalf("Size changed to %d", b.Size())
	}
	// Reading a hole must not kill the daemon; through a shared mapping
	// tmpfs allocates a page even to read, so on a full tmpfs this may
	// fail, but only with an error.
	buf := make([]byte, 4096)
	if n, err := b.ReadAt(buf, 64<<10); err != nil {
		t.Logf("ReadAt of a hole on a full tmpfs: %v", err)
	} else if n != len(buf) || !isZero(buf) {
		t.Errorf("ReadAt of a hole = %d bytes, zero %v", n, isZero(buf))
	}

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	mustWrite(t, b, p, 8192)
	checkBytes(t, "after freeing space", mustRead(t, b, 8192, 4096, 4096), p)
	checkZero(t, "hole before", mustRead(t, b, 4096, 4096, 4096))
}

// TestReopenAfterFailedMapKeepsClosedDirty: a blob closed with unsynced
// pages that then fails to reopen (here mmap fails because the file was
// grown from outside past the address space) must not make the store forget
// what that blob owes the disk.
func TestReopenAfterFailedMapKeepsClosedDirty(t *testing.T) {
	dir := mountTmpfs(t, "1m") // tmpfs: a sparse file may be huge
	s := newStoreAt(t, dir)
	ps := pagesz()
	b := openBlob(t, s, "c")
	mustWrite(t, b, make([]byte, 4*ps), 0)
	if err := b.Sync(); err != nil {
		t.Fatal(err)
	}
	mustWrite(t, b, []byte{1}, 0)
	mustWrite(t, b, []byte{2}, 2*ps)
	release(t, s, b)
	if got := storeUnsynced(s); got != 2*ps {
		t.Fatalf("Store.Unsynced = %d, want %d", got, 2*ps)
	}
	path := filepath.Join(dir, "c")
	if err := os.Truncate(path, 1<<50); err != nil {
		t.Skipf("cannot make a 1 PiB sparse file: %v", err)
	}
	if b, err := s.Open("c", rw, 0); err == nil {
		release(t, s, b)
		t.Skip("mapping a 1 PiB blob succeeded")
	} else {
		t.Logf("Open of a 1 PiB blob: %v", err)
	}
	if err := os.Truncate(path, 4*ps); err != nil {
		t.Fatal(err)
	}
	if got := storeUnsynced(s); got != 2*ps {
		t.Errorf("BUG: after a failed reopen Store.Unsynced = %d, want %d (the closed blob's pages were forgotten)", got, 2*ps)
	}
	b = openBlob(t, s, "c")
	defer release(t, s, b)
	before := mustStats(t, s).SyncBytes
	if err := b.Sync(); err != nil {
		t.Fatal(err)
	}
	if d := mustStats(t, s).SyncBytes - before; d < 2*ps {
		t.Errorf("BUG: Sync after a failed reopen covered %d bytes; the 2 pages written before the close were never synced", d)
	}
}
