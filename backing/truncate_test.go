package backing

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

func fileSize(t *testing.T, s *Store, name string) int64 {
	t.Helper()
	fi, err := os.Stat(filepath.Join(s.Root(), name))
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

func truncate(t *testing.T, b *Blob, size int64) {
	t.Helper()
	if err := b.Truncate(size); err != nil {
		t.Fatalf("Truncate(%d): %v", size, err)
	}
	if got := b.Size(); got != size {
		t.Fatalf("after Truncate(%d): Size() = %d", size, got)
	}
}

func TestTruncateDown(t *testing.T) {
	for _, to := range []int64{1, 4095, 4096, 4097, 10000} {
		t.Run(fmt.Sprint(to), func(t *testing.T) {
			s := newStore(t)
			b := openBlob(t, s, "t")
			defer release(t, s, b)
			const size = 64 << 10
			data := pattern(1, 0, size)
			mustWrite(t, b, data, 0)
			truncate(t, b, to)
			if fs := fileSize(t, s, "t"); fs != to {
				t.Fatalf("file size %d, want %d", fs, to)
			}
			checkBytes(t, "kept", mustRead(t, b, 0, size, int(to)), data[:to])
			mustRead(t, b, to, 100, 0)
			mustRead(t, b, 32<<10, 100, 0)

			// Growing again by a write past the old end: the truncated
			// range reads as zeros, not as the old data.
			p := pattern(2, size-10, 10)
			mustWrite(t, b, p, size-10)
			if b.Size() != size {
				t.Fatalf("Size() = %d, want %d", b.Size(), size)
			}
			got := mustRead(t, b, 0, size, size)
			checkBytes(t, "kept after regrowth", got[:to], data[:to])
			checkZero(t, "truncated range after regrowth", got[to:size-10])
			checkBytes(t, "new tail", got[size-10:], p)

			// Same through Truncate up.
			truncate(t, b, to)
			truncate(t, b, size)
			got = mustRead(t, b, 0, size, size)
			checkBytes(t, "kept after truncate up", got[:to], data[:to])
			checkZero(t, "truncated range after truncate up", got[to:])
			f, err := os.ReadFile(filepath.Join(s.Root(), "t"))
			if err != nil {
				t.Fatal(err)
			}
			checkBytes(t, "file", f, got)
		})
	}
}

func TestTruncateUp(t *testing.T) {
	s := newStore(t)
	b := openBlob(t, s, "up")
	defer release(t, s, b)
	data := pattern(1, 0, 5000)
	mustWrite(t, b, data, 0)
	const size = 3<<20 + 17
	truncate(t, b, size)
	if fs := fileSize(t, s, "up"); fs != size {
		t.Fatalf("file size %d", fs)
	}
	got := mustRead(t, b, 0, size+10, size)
	checkBytes(t, "old data", got[:5000], data)
	checkZero(t, "extension", got[5000:])
	// Writes into the extension work in place.
	p := pattern(2, size-4097, 4097)
	mustWrite(t, b, p, size-4097)
	checkBytes(t, "write in extension", mustRead(t, b, size-4097, 4097, 4097), p)
	// Truncate up an empty blob.
	e := openBlob(t, s, "empty")
	defer release(t, s, e)
	truncate(t, e, 12345)
	checkZero(t, "truncated-up empty blob", mustRead(t, e, 0, 20000, 12345))
}

func TestTruncateZeroUnmaps(t *testing.T) {
	s := newStore(t)
	b := openBlob(t, s, "z")
	defer release(t, s, b)
	mustWrite(t, b, pattern(1, 0, 100000), 0)
	st := mustStats(t, s)
	if st.Mappings != 1 || st.MappedBytes == 0 {
		t.Fatalf("Mappings %d, MappedBytes %d; want 1, >0", st.Mappings, st.MappedBytes)
	}
	truncate(t, b, 0)
	st = mustStats(t, s)
	if st.Mappings != 0 || st.MappedBytes != 0 {
		t.Fatalf("after Truncate(0): Mappings %d, MappedBytes %d; want 0, 0", st.Mappings, st.MappedBytes)
	}
	mustRead(t, b, 0, 10, 0)
	truncate(t, b, 0) // again, with no mapping
	// And it grows again from nothing.
	p := pattern(3, 10, 10)
	mustWrite(t, b, p, 10)
	got := mustRead(t, b, 0, 100, 20)
	checkZero(t, "hole", got[:10])
	checkBytes(t, "data", got[10:], p)
	if st := mustStats(t, s); st.Mappings != 1 {
		t.Fatalf("after regrowth: Mappings %d", st.Mappings)
	}
}

func TestTruncateErrors(t *testing.T) {
	s := newStore(t)
	b := openBlob(t, s, "e")
	defer release(t, s, b)
	mustWrite(t, b, []byte("hello"), 0)
	wantErrno(t, "Truncate(-1)", b.Truncate(-1), syscall.EINVAL)
	wantErrno(t, "Truncate(MaxFileSize+1)", b.Truncate(MaxFileSize+1), syscall.EFBIG)
	if b.Size() != 5 {
		t.Fatalf("failed truncates changed Size to %d", b.Size())
	}
	checkBytes(t, "data", mustRead(t, b, 0, 10, 5), []byte("hello"))
}

func TestAllocate(t *testing.T) {
	s := newStore(t)
	b := openBlob(t, s, "a")
	defer release(t, s, b)
	path := filepath.Join(s.Root(), "a")

	// Mode 0 extends.
	if err := b.Allocate(0, 10000, 0); err != nil {
		t.Fatalf("Allocate(0, 10000, 0): %v", err)
	}
	if b.Size() != 10000 || fileSize(t, s, "a") != 10000 {
		t.Fatalf("after Allocate: Size %d, file %d; want 10000", b.Size(), fileSize(t, s, "a"))
	}
	checkZero(t, "allocated", mustRead(t, b, 0, 10000, 10000))

	// KEEP_SIZE does not.
	if err := b.Allocate(8192, 1<<20, unix.FALLOC_FL_KEEP_SIZE); err != nil {
		t.Fatalf("Allocate KEEP_SIZE: %v", err)
	}
	if b.Size() != 10000 || fileSize(t, s, "a") != 10000 {
		t.Fatalf("after KEEP_SIZE: Size %d, file %d; want 10000", b.Size(), fileSize(t, s, "a"))
	}
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	if st.Blocks*512 < 1<<20 {
		t.Errorf("KEEP_SIZE allocation not allocated: st_blocks %d", st.Blocks)
	}

	// Mode 0 inside the size changes nothing visible.
	data := pattern(1, 0, 10000)
	mustWrite(t, b, data, 0)
	if err := b.Allocate(100, 200, 0); err != nil {
		t.Fatal(err)
	}
	checkBytes(t, "after Allocate inside", mustRead(t, b, 0, 10000, 10000), data)

	// Punch a hole: the range reads zeros through the mapping.
	if err := b.Allocate(4096, 4096, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE); err != nil {
		t.Fatalf("punch hole: %v", err)
	}
	got := mustRead(t, b, 0, 10000, 10000)
	checkBytes(t, "before hole", got[:4096], data[:4096])
	checkZero(t, "hole", got[4096:8192])
	checkBytes(t, "after hole", got[8192:], data[8192:])
	// An unaligned punch zeroes exactly its bytes.
	if err := b.Allocate(100, 50, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE); err != nil {
		t.Fatalf("unaligned punch hole: %v", err)
	}
	got = mustRead(t, b, 0, 10000, 10000)
	checkBytes(t, "before small hole", got[:100], data[:100])
	checkZero(t, "small hole", got[100:150])
	checkBytes(t, "after small hole", got[150:4096], data[150:4096])
	if b.Size() != 10000 {
		t.Fatalf("punching changed Size to %d", b.Size())
	}

	// Extending allocate past the mapping's capacity, then write there.
	if err := b.Allocate(10000, 5<<20, 0); err != nil {
		t.Fatal(err)
	}
	if b.Size() != 10000+5<<20 {
		t.Fatalf("Size %d", b.Size())
	}
	p := pattern(4, 5<<20, 5000)
	mustWrite(t, b, p, 5<<20)
	checkBytes(t, "write into allocated range", mustRead(t, b, 5<<20, 5000, 5000), p)

	wantErrno(t, "Allocate negative offset", b.Allocate(-1, 10, 0), syscall.EINVAL)
	wantErrno(t, "Allocate zero length", b.Allocate(0, 0, 0), syscall.EINVAL)
	wantErrno(t, "Allocate past MaxFileSize", b.Allocate(MaxFileSize, 1, 0), syscall.EFBIG)
	// PUNCH_HOLE without KEEP_SIZE is refused by the kernel, and must not
	// change the size.
	sz := b.Size()
	if err := b.Allocate(sz-10, 1<<20, unix.FALLOC_FL_PUNCH_HOLE); err == nil {
		t.Errorf("PUNCH_HOLE without KEEP_SIZE succeeded")
	}
	if b.Size() != sz || fileSize(t, s, "a") != sz {
		t.Errorf("failed Allocate changed size: %d, file %d, want %d", b.Size(), fileSize(t, s, "a"), sz)
	}
}

func TestSeekDataHole(t *testing.T) {
	s := newStore(t)
	b := openBlob(t, s, "seek")
	defer release(t, s, b)
	const mib = 1 << 20
	// Data at [1 MiB, 1 MiB+5000) and [3 MiB, 3 MiB+4096), size 5 MiB.
	mustWrite(t, b, pattern(1, mib, 5000), mib)
	mustWrite(t, b, pattern(2, 3*mib, 4096), 3*mib)
	truncate(t, b, 5*mib)

	f, err := os.Open(filepath.Join(s.Root(), "seek"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fd := int(f.Fd())
	for _, whence := range []int{unix.SEEK_DATA, unix.SEEK_HOLE} {
		for _, off := range []int64{0, 1, 4096, mib - 1, mib, mib + 4999, mib + 5000, 2 * mib, 3*mib + 1, 3*mib + 4096, 4 * mib, 5*mib - 1} {
			want, werr := unix.Seek(fd, off, whence)
			got, gerr := b.Seek(off, whence)
			if werr != nil {
				if !errors.Is(gerr, werr) {
					t.Errorf("Seek(%d, %d): %d, %v; lseek on the file: %v", off, whence, got, gerr, werr)
				}
				continue
			}
			if gerr != nil || got != want {
				t.Errorf("Seek(%d, %d) = %d, %v; lseek on the file = %d", off, whence, got, gerr, want)
			}
		}
		// At and after EOF: ENXIO.
		for _, off := range []int64{5 * mib, 5*mib + 1, 1 << 40} {
			_, err := b.Seek(off, whence)
			wantErrno(t, fmt.Sprintf("Seek(%d, %d)", off, whence), err, syscall.ENXIO)
		}
	}
	// The blob found data where it is.
	if got, err := b.Seek(0, unix.SEEK_DATA); err != nil || got > mib {
		t.Errorf("SEEK_DATA from 0 = %d, %v; want <= %d", got, err, mib)
	}
	if got, err := b.Seek(3*mib+4096, unix.SEEK_DATA); err == nil {
		t.Errorf("SEEK_DATA in trailing hole = %d, want ENXIO", got)
	}
	// An empty blob: everything is past EOF.
	e := openBlob(t, s, "empty")
	defer release(t, s, e)
	_, err = e.Seek(0, unix.SEEK_DATA)
	wantErrno(t, "Seek on empty blob", err, syscall.ENXIO)
}
