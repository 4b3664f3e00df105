package fsx

import (
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mmapfs/mmapfs/integration/mapfault"
)

// opsTable lists the operations, by weight: a step draws one at random.
var opsTable = []struct {
	name   string
	weight int
	fn     func(*Checker, *file) error
}{
	{"read", 160, (*Checker).opRead},
	{"write", 200, (*Checker).opWrite},
	{"mapread", 90, (*Checker).opMapRead},
	{"mapwrite", 100, (*Checker).opMapWrite},
	{"truncate", 60, (*Checker).opTruncate},
	{"falloc", 35, (*Checker).opFallocate},
	{"falloc-keep", 30, (*Checker).opFallocateKeepSize},
	{"punch", 50, (*Checker).opPunchHole},
	{"fsync", 30, (*Checker).opFsync},
	{"fdatasync", 15, (*Checker).opFdatasync},
	{"reopen", 30, (*Checker).opReopen},
	{"freshread", 30, (*Checker).opFreshRead},
	{"remount", 2, (*Checker).opRemount},
	{"crash", 1, (*Checker).opCrash},
}

var totalWeight = func() int {
	n := 0
	for _, op := range opsTable {
		n += op.weight
	}
	return n
}()

func (x *Checker) doStep() error {
	fl := x.files[x.rng.IntN(len(x.files))]
	r := x.rng.IntN(totalWeight)
	for _, op := range opsTable {
		if r < op.weight {
			if op.name == "remount" && x.hooks.Remount == nil || op.name == "crash" && x.hooks.Kill == nil {
				op = opsTable[0] // read instead
			}
			x.counts[op.name]++
			t0 := time.Now()
			err := op.fn(x, fl)
			x.times[op.name] += time.Since(t0)
			return err
		}
		r -= op.weight
	}
	panic("unreachable")
}

// pickLen returns a length in 1..maxLen, mostly short, sometimes whole
// pages.
func (x *Checker) pickLen() int64 {
	var n int64
	switch x.rng.IntN(4) {
	case 0:
		n = 1 + x.rng.Int64N(512)
	case 1:
		n = 1 + x.rng.Int64N(16<<10)
	default:
		n = 1 + x.rng.Int64N(maxLen)
	}
	if x.rng.IntN(4) == 0 {
		n = min((n+pageSize-1)&^(pageSize-1), maxLen)
	}
	return n
}

// maybeAlign page-aligns off one time in three.
func (x *Checker) maybeAlign(off int64) int64 {
	if x.rng.IntN(3) == 0 {
		return off &^ (pageSize - 1)
	}
	return off
}

// pickExtent returns a range for a write or a fallocate: mostly inside the
// file, sometimes at EOF, sometimes past it (a hole); it ends at most at
// maxSize.
func (x *Checker) pickExtent(size int64) (off, n int64) {
	n = x.pickLen()
	r := x.rng.IntN(100)
	switch {
	case r < 65 && size > 0:
		off = x.rng.Int64N(size)
	case r < 82:
		off = size
	default:
		off = size + x.rng.Int64N(1<<20)
	}
	off = x.maybeAlign(off)
	if off >= maxSize-1 {
		off = x.maybeAlign(x.rng.Int64N(maxSize / 2))
	}
	n = min(n, maxSize-off)
	return off, n
}

// pickReadRange returns a range to read: mostly inside, sometimes across
// or past EOF.
func (x *Checker) pickReadRange(size int64) (off, n int64) {
	n = x.pickLen()
	if x.rng.IntN(8) == 0 {
		off = size + x.rng.Int64N(64<<10) - min(size, 4<<10)
	} else {
		off = x.rng.Int64N(size + 1)
	}
	return x.maybeAlign(off), n
}

// randBytes returns n random bytes (valid until the next call).
func (x *Checker) randBytes(n int64) []byte {
	if int64(cap(x.scratch)) < n+8 {
		x.scratch = make([]byte, n+8)
	}
	b := x.scratch[:n+8]
	for i := int64(0); i < n; i += 8 {
		binary.LittleEndian.PutUint64(b[i:], x.rng.Uint64())
	}
	return b[:n]
}

func (x *Checker) opRead(fl *file) error {
	off, n := x.pickReadRange(fl.size())
	x.logf("read      %s %#x..%#x (%#x bytes; size %#x)", fl.name, off, off+n, n, fl.size())
	if err := x.checkRange(fl, "read", off, n); err != nil {
		return err
	}
	return x.checkSize(fl)
}

func (x *Checker) opWrite(fl *file) error {
	size := fl.size()
	off, n := x.pickExtent(size)
	data := x.randBytes(n)
	x.logf("write     %s %#x..%#x (%#x bytes; size %#x)", fl.name, off, off+n, n, size)
	if _, err := fl.f.WriteAt(data, off); err != nil {
		return fmt.Errorf("pwrite: %w", err)
	}
	if off+n > size {
		fl.resize(off + n)
	}
	copy(fl.data[off:], data)
	return x.checkAfter(fl, "write", off, n)
}

// pickWindow returns a page-aligned window of the file to map that holds
// [off, off+n): the whole file one time in eight.
func (x *Checker) pickWindow(size, off, n int64) (pgoff, length int64) {
	if x.rng.IntN(8) == 0 {
		return 0, size
	}
	pgoff = off &^ (pageSize - 1)
	return pgoff, min((off+n+pageSize-1)&^(pageSize-1), size) - pgoff
}

func (x *Checker) opMapRead(fl *file) error {
	size := fl.size()
	if size == 0 {
		x.logf("mapread   %s (empty file, skipped)", fl.name)
		return x.checkSize(fl)
	}
	off := x.rng.Int64N(size)
	n := min(x.pickLen(), size-off)
	if x.rng.IntN(4) == 0 {
		// To EOF, which checks the rest of the last page.
		n = min(x.pickLen(), size)
		off = size - n
	}
	pgoff, length := x.pickWindow(size, off, n)
	// A window that reaches EOF maps the whole last page: past EOF it
	// must read zeros.
	maplen := length
	if pgoff+length == size {
		maplen = (length + pageSize - 1) &^ (pageSize - 1)
	}
	x.logf("mapread   %s %#x..%#x (window %#x..%#x; size %#x)", fl.name, pgoff, pgoff+length, pgoff, pgoff+maplen, size)
	b, err := unix.Mmap(fl.fd, pgoff, int(maplen), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return fmt.Errorf("mmap(PROT_READ, MAP_SHARED) %s at %#x, %#x bytes: %w", fl.name, pgoff, maplen, err)
	}
	got := make([]byte, maplen)
	faulted, addr := mapfault.Catch(func() { copy(got, b) })
	if err := unix.Munmap(b); err != nil {
		return fmt.Errorf("munmap: %w", err)
	}
	if faulted {
		return fmt.Errorf("mapped read of %s: fault at file offset %#x (size %#x)", fl.name, pgoff+mapfault.Offset(b, addr), size)
	}
	if want := fl.data[pgoff : pgoff+length]; !slices.Equal(got[:length], want) {
		return fmt.Errorf("mapped read of %s: %s", fl.name, diff(pgoff, got[:length], want))
	}
	if tail := got[length:]; !allZero(tail) {
		return fmt.Errorf("mapped read of %s: the last page past EOF (file offsets %#x..%#x) is not zero: %s",
			fl.name, size, pgoff+maplen, diff(size, tail, make([]byte, len(tail))))
	}
	return x.checkSize(fl)
}

func (x *Checker) opMapWrite(fl *file) error {
	size := fl.size()
	if size == 0 {
		x.logf("mapwrite  %s (empty file, skipped)", fl.name)
		return x.checkSize(fl)
	}
	off := x.maybeAlign(x.rng.Int64N(size))
	n := min(x.pickLen(), size-off)
	pgoff, length := x.pickWindow(size, off, n)
	data := x.randBytes(n)
	x.logf("mapwrite  %s %#x..%#x (%#x bytes; window %#x..%#x; size %#x)", fl.name, off, off+n, n, pgoff, pgoff+length, size)
	b, err := unix.Mmap(fl.fd, pgoff, int(length), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return fmt.Errorf("mmap(PROT_READ|PROT_WRITE, MAP_SHARED) %s at %#x, %#x bytes: %w", fl.name, pgoff, length, err)
	}
	faulted, addr := mapfault.Catch(func() { copy(b[off-pgoff:], data) })
	var serr error
	if !faulted {
		serr = unix.Msync(b, unix.MS_SYNC)
	}
	if err := unix.Munmap(b); err != nil {
		return fmt.Errorf("munmap: %w", err)
	}
	if faulted {
		return fmt.Errorf("mapped write to %s: fault at file offset %#x (size %#x)", fl.name, pgoff+mapfault.Offset(b, addr), size)
	}
	if serr != nil {
		return fmt.Errorf("msync(MS_SYNC): %w", serr)
	}
	copy(fl.data[off:], data)
	return x.checkAfter(fl, "mapwrite", off, n)
}

func (x *Checker) opTruncate(fl *file) error {
	size := fl.size()
	var newSize int64
	switch r := x.rng.IntN(100); {
	case r < 5:
		newSize = 0
	case r < 50:
		newSize = x.rng.Int64N(size + 1)
	default:
		newSize = min(size+x.rng.Int64N(1<<20), maxSize)
	}
	newSize = x.maybeAlign(newSize)
	how := "ftruncate"
	if x.rng.IntN(4) == 0 {
		how = "truncate" // by path: a setattr without a file handle
	}
	x.logf("%-9s %s to %#x (size %#x)", how, fl.name, newSize, size)
	var err error
	if how == "ftruncate" {
		err = unix.Ftruncate(fl.fd, newSize)
	} else {
		err = unix.Truncate(filepath.Join(x.cfg.Dir, fl.name), newSize)
	}
	if err != nil {
		return fmt.Errorf("%s to %#x: %w", how, newSize, err)
	}
	fl.resize(newSize)
	lo := min(size, newSize)
	return x.checkAfter(fl, how, lo, max(size, newSize)-lo)
}

// pickFallocExtent is pickExtent for fallocate: anywhere up to a little
// past EOF.
func (x *Checker) pickFallocExtent(size int64) (off, n int64) {
	if x.rng.IntN(4) == 0 {
		return x.pickExtent(size)
	}
	n = x.pickLen()
	off = x.maybeAlign(x.rng.Int64N(size + 1))
	n = min(n, maxSize-off)
	return off, n
}

func (x *Checker) opFallocate(fl *file) error {
	size := fl.size()
	off, n := x.pickFallocExtent(size)
	x.logf("falloc    %s %#x..%#x (%#x bytes, mode 0; size %#x)", fl.name, off, off+n, n, size)
	if err := unix.Fallocate(fl.fd, 0, off, n); err != nil {
		return fmt.Errorf("fallocate(mode 0, %#x, %#x): %w", off, n, err)
	}
	if off+n > size {
		fl.resize(off + n)
	}
	return x.checkAfter(fl, "fallocate(mode 0)", off, n)
}

func (x *Checker) opFallocateKeepSize(fl *file) error {
	size := fl.size()
	off, n := x.pickFallocExtent(size)
	x.logf("falloc-ks %s %#x..%#x (%#x bytes, KEEP_SIZE; size %#x)", fl.name, off, off+n, n, size)
	if err := unix.Fallocate(fl.fd, unix.FALLOC_FL_KEEP_SIZE, off, n); err != nil {
		return fmt.Errorf("fallocate(KEEP_SIZE, %#x, %#x): %w", off, n, err)
	}
	return x.checkAfter(fl, "fallocate(KEEP_SIZE)", off, n)
}

func (x *Checker) opPunchHole(fl *file) error {
	size := fl.size()
	off, n := x.pickFallocExtent(size)
	x.logf("punch     %s %#x..%#x (%#x bytes; size %#x)", fl.name, off, off+n, n, size)
	if err := unix.Fallocate(fl.fd, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, n); err != nil {
		return fmt.Errorf("fallocate(PUNCH_HOLE|KEEP_SIZE, %#x, %#x): %w", off, n, err)
	}
	if off < size {
		clear(fl.data[off:min(off+n, size)])
	}
	return x.checkAfter(fl, "punch hole", off, n)
}

func (x *Checker) opFsync(fl *file) error {
	x.logf("fsync     %s (size %#x)", fl.name, fl.size())
	if err := fl.f.Sync(); err != nil {
		return fmt.Errorf("fsync: %w", err)
	}
	return x.checkSize(fl)
}

func (x *Checker) opFdatasync(fl *file) error {
	x.logf("fdatasync %s (size %#x)", fl.name, fl.size())
	if err := unix.Fdatasync(fl.fd); err != nil {
		return fmt.Errorf("fdatasync: %w", err)
	}
	return x.checkSize(fl)
}

func (x *Checker) opReopen(fl *file) error {
	flags := os.O_RDWR
	what := "reopen"
	if x.rng.IntN(10) == 0 {
		flags |= os.O_TRUNC
		what = "reopen O_TRUNC"
	}
	x.logf("%-9s %s (size %#x)", what, fl.name, fl.size())
	if err := x.close(fl); err != nil {
		return err
	}
	if err := x.open(fl, flags); err != nil {
		return err
	}
	return x.checkAfter(fl, what, 0, 0)
}

// opFreshRead reads through a second, read-only descriptor opened for the
// purpose.
func (x *Checker) opFreshRead(fl *file) error {
	off, n := x.pickReadRange(fl.size())
	x.logf("freshread %s %#x..%#x (%#x bytes; size %#x)", fl.name, off, off+n, n, fl.size())
	f, err := os.Open(filepath.Join(x.cfg.Dir, fl.name))
	if err != nil {
		return fmt.Errorf("open %s read-only: %w", fl.name, err)
	}
	tmp := &file{name: fl.name + " (second descriptor)", f: f, fd: int(f.Fd()), data: fl.data}
	err = x.checkRange(tmp, "freshread", off, n)
	if err == nil {
		err = x.checkSize(tmp)
	}
	if cerr := f.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("close the second descriptor of %s: %w", fl.name, cerr)
	}
	return err
}

func (x *Checker) opRemount(*file) error {
	x.logf("remount   (closes and reopens every file)")
	for _, fl := range x.files {
		if err := x.close(fl); err != nil {
			return err
		}
	}
	if err := x.hooks.Remount(); err != nil {
		return fmt.Errorf("remount: %w", err)
	}
	return x.reopenAll("after remount")
}

// opCrash kills the daemon with every file open. Every byte written
// before must be in the blobs (the README's durability contract for a
// process crash): write() returned after the daemon copied the data into
// its mapping of the blob, and mapped writes were msynced. With the
// writeback cache, written data may be only in the mount's page cache,
// which dies with the connection: fsync first.
func (x *Checker) opCrash(*file) error {
	x.logf("crash     (SIGKILL the daemon with every file open, then mount again)")
	if x.cfg.WritebackCache {
		for _, fl := range x.files {
			if err := fl.f.Sync(); err != nil {
				return fmt.Errorf("fsync %s before the crash: %w", fl.name, err)
			}
		}
	}
	if err := x.hooks.Kill(); err != nil {
		return fmt.Errorf("kill: %w", err)
	}
	for _, fl := range x.files {
		if err := x.checkBlob(fl, "after SIGKILL of the daemon"); err != nil {
			return err
		}
	}
	for _, fl := range x.files {
		fl.f.Close() // on the dead mount: ENOTCONN is fine
		fl.f, fl.fd = nil, -1
	}
	if err := x.hooks.Restart(); err != nil {
		return fmt.Errorf("restart after the crash: %w", err)
	}
	return x.reopenAll("after the crash and a new mount")
}

// reopenAll opens every file again, read-write, after a remount or a
// crash, and checks them whole.
func (x *Checker) reopenAll(what string) error {
	for _, fl := range x.files {
		if err := x.open(fl, os.O_RDWR); err != nil {
			return err
		}
	}
	return x.checkAll(what)
}
