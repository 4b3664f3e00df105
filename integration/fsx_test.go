package integration

// fsx: a randomized model checker in the spirit of fsx(8). A seeded random
// mix of read, write, mapped read, mapped write (MAP_SHARED + msync),
// truncate, fallocate (mode 0, KEEP_SIZE, PUNCH_HOLE), fsync, fdatasync,
// close/reopen, remount and (single client only) a SIGKILL of the daemon
// is applied to a few files on the mount, and every step is checked
// against an in-memory model of the files: the size (fstat) and the bytes
// the step touched after every step; the whole of every file, through the
// mount and as a blob in the store, every fsxFullEvery steps, after a
// remount or a crash and at the end. MAP_SHARED mappings of the mount are
// made by this process: the daemon is another one.
//
// With MMAPFS_INTEGRATION_FS=loopback the checker runs against go-fuse's
// loopback (the fsync and 2clients runs), a check of the checker itself.
//
// CI runs -fsx.ops operations under each writeback policy, with
// --writeback-cache and with --direct-io, and once with two client
// processes that work on their own files of one mount at the same time
// (the test binary run again; see fsxClientEnv). A failure prints the seed,
// the step, the last operations and the command that replays it:
//
//	go test -race -count=1 -run 'TestFsx/fsync$' ./integration/ -fsx.seed S -fsx.ops N
//
// Soak a configuration for as long as asked:
//
//	go test -race -count=1 -timeout 0 -run 'TestFsx/fsync$' -v ./integration/ -fsx.duration 10m

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"hash/fnv"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

var (
	fsxOps      = flag.Int("fsx.ops", 500, "fsx: operations per run (per client)")
	fsxSeed     = flag.Uint64("fsx.seed", 0, "fsx: seed (0: pick one at random and print it); every run derives its own seed from it and its name")
	fsxDuration = flag.Duration("fsx.duration", 0, "fsx: run each configuration for this long instead of -fsx.ops operations")
	fsxFiles    = flag.Int("fsx.files", 3, "fsx: files per client")
)

const (
	fsxMaxSize   = 8 << 20   // files stay below this
	fsxMaxLen    = 256 << 10 // longest read, write, fallocate
	fsxPage      = 4096
	fsxFullEvery = 200 // steps between whole-file checks
	fsxLogKeep   = 50  // operations shown on a failure

	// fsxClientEnv makes the test binary an fsx client (see fsxClientMain):
	// its value is the client's fsxConfig as JSON.
	fsxClientEnv = "MMAPFS_INTEGRATION_FSX_CLIENT"
	// Lines a client writes to its stdout for the test that runs it.
	fsxCtlRemount = "FSXCTL remount" // all my files are closed: remount, then send "go"
	fsxCtlDone    = "FSXCTL done "   // followed by the summary
)

// fsxConfig is one run of the checker.
type fsxConfig struct {
	Name           string // for messages: the subtest, and the client
	Mnt, Store     string
	Prefix         string // file names are Prefix+"f0", Prefix+"f1", ...
	Files          int
	Ops            int           // steps, if Duration is 0
	Duration       time.Duration // run for this long
	Seed           uint64
	WritebackCache bool   // the mount buffers writes: fsync before reading the blobs
	Remount        bool   // include remounts in the mix
	Replay         string // command line that replays the run, with %d for -fsx.ops
}

// fsxFile is one file under test and its model.
type fsxFile struct {
	name string
	f    *os.File // nil while closed (during a remount)
	fd   int
	data []byte // the model: the file's contents, len(data) is its size
}

func (fl *fsxFile) size() int64 { return int64(len(fl.data)) }

// fsx is the state of one run.
type fsx struct {
	cfg   fsxConfig
	rng   *rand.Rand
	files []*fsxFile
	// remount stops the daemon (all files closed) and start starts a new
	// one; remount nil: no remounts. start may be nil.
	remount, start func() error
	// kill and restart crash the daemon (SIGKILL) and start a new one on
	// the same store; nil: no crashes.
	kill, restart func() error

	step    int
	log     []string // the last fsxLogKeep operations, a ring
	nlog    int
	counts  map[string]int
	times   map[string]time.Duration
	scratch []byte
	rbuf    []byte
}

func newFsx(cfg fsxConfig, remount func() error) *fsx {
	if cfg.Files < 1 {
		cfg.Files = 1
	}
	return &fsx{
		cfg:     cfg,
		rng:     rand.New(rand.NewPCG(cfg.Seed, cfg.Seed^0x9E3779B97F4A7C15)),
		remount: remount,
		log:     make([]string, fsxLogKeep),
		counts:  map[string]int{},
		times:   map[string]time.Duration{},
	}
}

// fsxSeedFor derives the seed of the run named name from the master seed,
// so that the runs of one invocation differ and each replays from the
// master seed and its name.
func fsxSeedFor(master uint64, name string) uint64 {
	h := fnv.New64a()
	binary.Write(h, binary.LittleEndian, master)
	h.Write([]byte(name))
	s := h.Sum64()
	if s == 0 {
		s = 1
	}
	return s
}

// fsxFailure is a mismatch or an unexpected error, with what replays it.
type fsxFailure struct {
	msg string
}

func (e *fsxFailure) Error() string { return e.msg }

// logf records the operation of the current step (before it runs).
func (x *fsx) logf(format string, args ...any) {
	s := fmt.Sprintf("%7d ", x.step) + fmt.Sprintf(format, args...)
	x.log[x.nlog%len(x.log)] = s
	x.nlog++
}

func (x *fsx) lastOps() []string {
	var out []string
	n := min(x.nlog, len(x.log))
	for i := x.nlog - n; i < x.nlog; i++ {
		out = append(out, x.log[i%len(x.log)])
	}
	return out
}

// fail wraps err with the seed, the step, the files' model sizes, the last
// operations and the replay command.
func (x *fsx) fail(err error) error {
	var b strings.Builder
	fmt.Fprintf(&b, "fsx %s: FAILED at step %d (seed %d): %v\n", x.cfg.Name, x.step, x.cfg.Seed, err)
	fmt.Fprintf(&b, "model sizes:")
	for _, fl := range x.files {
		fmt.Fprintf(&b, " %s=%#x", fl.name, fl.size())
	}
	fmt.Fprintf(&b, "\nlast %d operations (step, op, file, range; sizes in the model before the op):\n", min(x.nlog, len(x.log)))
	for _, s := range x.lastOps() {
		b.WriteString("  " + s + "\n")
	}
	if x.cfg.Replay != "" {
		fmt.Fprintf(&b, "replay: "+x.cfg.Replay+"\n", x.step)
	}
	return &fsxFailure{b.String()}
}

func (x *fsx) summary(elapsed time.Duration) string {
	keys := make([]string, 0, len(x.counts))
	for k := range x.counts {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s %d %.0fms", k, x.counts[k], x.times[k].Seconds()*1000))
	}
	if d := x.times["(full check)"]; d > 0 {
		parts = append(parts, fmt.Sprintf("full checks %.0fms", d.Seconds()*1000))
	}
	return fmt.Sprintf("seed %d: %d ops in %.1fs (%s)", x.cfg.Seed, x.step, elapsed.Seconds(), strings.Join(parts, ", "))
}

// run creates the files and applies the steps. It returns a *fsxFailure
// on the first mismatch.
func (x *fsx) run() error {
	for i := 0; i < x.cfg.Files; i++ {
		fl := &fsxFile{name: fmt.Sprintf("%sf%d", x.cfg.Prefix, i)}
		x.files = append(x.files, fl)
		if err := x.open(fl, os.O_RDWR|os.O_CREATE|os.O_TRUNC); err != nil {
			return x.fail(err)
		}
	}
	start := time.Now()
	for x.step = 1; ; x.step++ {
		if x.cfg.Duration > 0 {
			if time.Since(start) >= x.cfg.Duration {
				break
			}
		} else if x.step > x.cfg.Ops {
			break
		}
		if err := x.doStep(); err != nil {
			return x.fail(err)
		}
		if x.step%fsxFullEvery == 0 {
			t0 := time.Now()
			if err := x.checkAll("periodic check"); err != nil {
				return x.fail(err)
			}
			x.times["(full check)"] += time.Since(t0)
		}
	}
	x.step--
	// The end: every file whole, then closed and checked through a new
	// descriptor and as a blob.
	if err := x.checkAll("final check"); err != nil {
		return x.fail(err)
	}
	for _, fl := range x.files {
		if err := x.close(fl); err != nil {
			return x.fail(err)
		}
	}
	for _, fl := range x.files {
		if err := x.open(fl, os.O_RDONLY); err != nil {
			return x.fail(err)
		}
		err := x.checkFile(fl, "final check after close")
		if cerr := x.close(fl); err == nil {
			err = cerr
		}
		if err != nil {
			return x.fail(err)
		}
	}
	return nil
}

func (x *fsx) open(fl *fsxFile, flags int) error {
	f, err := os.OpenFile(filepath.Join(x.cfg.Mnt, fl.name), flags, 0o644)
	if err != nil {
		return fmt.Errorf("open %s: %v", fl.name, err)
	}
	fl.f, fl.fd = f, int(f.Fd())
	if flags&os.O_TRUNC != 0 {
		fl.data = fl.data[:0]
	}
	return nil
}

func (x *fsx) close(fl *fsxFile) error {
	f := fl.f
	fl.f, fl.fd = nil, -1
	if err := f.Close(); err != nil {
		return fmt.Errorf("close %s: %v", fl.name, err)
	}
	return nil
}

// The operations, by weight.
var fsxOpsTable = []struct {
	name   string
	weight int
	fn     func(*fsx, *fsxFile) error
}{
	{"read", 160, (*fsx).opRead},
	{"write", 200, (*fsx).opWrite},
	{"mapread", 90, (*fsx).opMapRead},
	{"mapwrite", 100, (*fsx).opMapWrite},
	{"truncate", 60, (*fsx).opTruncate},
	{"falloc", 35, (*fsx).opFallocate},
	{"falloc-keep", 30, (*fsx).opFallocateKeepSize},
	{"punch", 50, (*fsx).opPunchHole},
	{"fsync", 30, (*fsx).opFsync},
	{"fdatasync", 15, (*fsx).opFdatasync},
	{"reopen", 30, (*fsx).opReopen},
	{"freshread", 30, (*fsx).opFreshRead},
	{"remount", 2, (*fsx).opRemount},
	{"crash", 1, (*fsx).opCrash},
}

var fsxTotalWeight = func() int {
	n := 0
	for _, op := range fsxOpsTable {
		n += op.weight
	}
	return n
}()

func (x *fsx) doStep() error {
	fl := x.files[x.rng.IntN(len(x.files))]
	r := x.rng.IntN(fsxTotalWeight)
	for _, op := range fsxOpsTable {
		if r < op.weight {
			if op.name == "remount" && x.remount == nil || op.name == "crash" && x.kill == nil {
				op = fsxOpsTable[0] // read instead
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

// pickLen returns a length in 1..fsxMaxLen, mostly short, sometimes whole
// pages.
func (x *fsx) pickLen() int64 {
	var n int64
	switch x.rng.IntN(4) {
	case 0:
		n = 1 + x.rng.Int64N(512)
	case 1:
		n = 1 + x.rng.Int64N(16<<10)
	default:
		n = 1 + x.rng.Int64N(fsxMaxLen)
	}
	if x.rng.IntN(4) == 0 {
		n = min((n+fsxPage-1)&^(fsxPage-1), fsxMaxLen)
	}
	return n
}

// maybeAlign page-aligns off one time in three.
func (x *fsx) maybeAlign(off int64) int64 {
	if x.rng.IntN(3) == 0 {
		return off &^ (fsxPage - 1)
	}
	return off
}

// pickExtent returns a range for a write or a fallocate: mostly inside the
// file, sometimes at EOF, sometimes past it (a hole); it ends at most at
// fsxMaxSize.
func (x *fsx) pickExtent(size int64) (off, n int64) {
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
	if off >= fsxMaxSize-1 {
		off = x.maybeAlign(x.rng.Int64N(fsxMaxSize / 2))
	}
	n = min(n, fsxMaxSize-off)
	return off, n
}

// pickReadRange returns a range to read: mostly inside, sometimes across
// or past EOF.
func (x *fsx) pickReadRange(size int64) (off, n int64) {
	n = x.pickLen()
	if x.rng.IntN(8) == 0 {
		off = size + x.rng.Int64N(64<<10) - min(size, 4<<10)
	} else {
		off = x.rng.Int64N(size + 1)
	}
	return x.maybeAlign(off), n
}

// randBytes returns n random bytes (valid until the next call).
func (x *fsx) randBytes(n int64) []byte {
	if int64(cap(x.scratch)) < n+8 {
		x.scratch = make([]byte, n+8)
	}
	b := x.scratch[:n+8]
	for i := int64(0); i < n; i += 8 {
		binary.LittleEndian.PutUint64(b[i:], x.rng.Uint64())
	}
	return b[:n]
}

// resize makes the model size n, zero-filling what it grows.
func resize(fl *fsxFile, n int64) {
	old := fl.size()
	if n <= old {
		fl.data = fl.data[:n]
		return
	}
	if n > int64(cap(fl.data)) {
		d := make([]byte, n, min(max(n, 2*int64(cap(fl.data))), fsxMaxSize+fsxMaxLen))
		copy(d, fl.data)
		fl.data = d
		return
	}
	fl.data = fl.data[:n]
	clear(fl.data[old:])
}

// pread reads up to n bytes at off, to EOF.
func (x *fsx) pread(fl *fsxFile, off, n int64) ([]byte, error) {
	if int64(cap(x.rbuf)) < n {
		x.rbuf = make([]byte, n)
	}
	buf := x.rbuf[:n]
	got := 0
	for int64(got) < n {
		m, err := unix.Pread(fl.fd, buf[got:], off+int64(got))
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return buf[:got], fmt.Errorf("pread %s at %#x, %#x bytes: %v (after %#x bytes)", fl.name, off, n, err, got)
		}
		if m == 0 {
			break
		}
		got += m
	}
	return buf[:got], nil
}

// modelRange is what a read of n bytes at off should return.
func modelRange(fl *fsxFile, off, n int64) []byte {
	size := fl.size()
	lo := min(off, size)
	hi := min(off+n, size)
	return fl.data[lo:hi]
}

// checkSize compares the size fstat reports with the model.
func (x *fsx) checkSize(fl *fsxFile) error {
	var st unix.Stat_t
	if err := unix.Fstat(fl.fd, &st); err != nil {
		return fmt.Errorf("fstat %s: %v", fl.name, err)
	}
	if st.Size != fl.size() {
		return fmt.Errorf("%s: fstat size %#x (%d), model %#x (%d)", fl.name, st.Size, st.Size, fl.size(), fl.size())
	}
	return nil
}

// checkRange reads n bytes at off through the descriptor and compares
// them with the model.
func (x *fsx) checkRange(fl *fsxFile, what string, off, n int64) error {
	got, err := x.pread(fl, off, n)
	if err != nil {
		return fmt.Errorf("%s: %v", what, err)
	}
	want := modelRange(fl, off, n)
	if !slices.Equal(got, want) {
		return fmt.Errorf("%s: %s: pread at %#x, %#x bytes: %s", what, fl.name, off, n, fsxDiff(min(off, fl.size()), got, want))
	}
	return nil
}

// checkAfter is the check of every step: the size, and the range it
// touched plus a page either side.
func (x *fsx) checkAfter(fl *fsxFile, what string, off, n int64) error {
	if err := x.checkSize(fl); err != nil {
		return fmt.Errorf("after %s: %v", what, err)
	}
	lo := max(off-fsxPage, 0)
	return x.checkRange(fl, "after "+what, lo, off+n+fsxPage-lo)
}

// checkFile compares the whole file with the model, through the mount.
func (x *fsx) checkFile(fl *fsxFile, what string) error {
	if err := x.checkSize(fl); err != nil {
		return fmt.Errorf("%s: %v", what, err)
	}
	return x.checkRange(fl, what+" (whole file through the mount)", 0, fl.size()+fsxPage)
}

// checkBlob compares the blob in the store with the model.
func (x *fsx) checkBlob(fl *fsxFile, what string) error {
	got, err := os.ReadFile(filepath.Join(x.cfg.Store, fl.name))
	if err != nil {
		return fmt.Errorf("%s: read blob: %v", what, err)
	}
	if !slices.Equal(got, fl.data) {
		return fmt.Errorf("%s: %s: blob in the store: %s", what, fl.name, fsxDiff(0, got, fl.data))
	}
	return nil
}

// checkAll compares every file with the model, through the mount and as a
// blob. With the writeback cache, written data may still be only in the
// mount's page cache: fsync first.
func (x *fsx) checkAll(what string) error {
	for _, fl := range x.files {
		if err := x.checkFile(fl, what); err != nil {
			return err
		}
		if x.cfg.WritebackCache {
			if err := fl.f.Sync(); err != nil {
				return fmt.Errorf("%s: fsync %s before reading its blob: %v", what, fl.name, err)
			}
		}
		if err := x.checkBlob(fl, what); err != nil {
			return err
		}
	}
	return nil
}

// fsxDiff describes how got differs from want; base is the file offset of
// their first byte.
func fsxDiff(base int64, got, want []byte) string {
	n := min(len(got), len(want))
	i := 0
	for i < n && got[i] == want[i] {
		i++
	}
	if i == n {
		return fmt.Sprintf("got %#x bytes, want %#x (equal up to the shorter: file offset %#x)", len(got), len(want), base+int64(n))
	}
	last, count := i, 0
	gotZero := true
	for j := i; j < n; j++ {
		if got[j] != want[j] {
			last = j
			count++
			if got[j] != 0 {
				gotZero = false
			}
		}
	}
	end := min(i+16, n)
	return fmt.Sprintf("got %#x bytes, want %#x; first difference at file offset %#x: got % x, want % x; %d bytes differ, the last at %#x; the wrong bytes are all zero: %v",
		len(got), len(want), base+int64(i), got[i:end], want[i:end], count, base+int64(last), gotZero)
}

// The operations.

func (x *fsx) opRead(fl *fsxFile) error {
	off, n := x.pickReadRange(fl.size())
	x.logf("read      %s %#x..%#x (%#x bytes; size %#x)", fl.name, off, off+n, n, fl.size())
	if err := x.checkRange(fl, "read", off, n); err != nil {
		return err
	}
	return x.checkSize(fl)
}

func (x *fsx) opWrite(fl *fsxFile) error {
	size := fl.size()
	off, n := x.pickExtent(size)
	data := x.randBytes(n)
	x.logf("write     %s %#x..%#x (%#x bytes; size %#x)", fl.name, off, off+n, n, size)
	if _, err := fl.f.WriteAt(data, off); err != nil {
		return fmt.Errorf("pwrite: %v", err)
	}
	if off+n > size {
		resize(fl, off+n)
	}
	copy(fl.data[off:], data)
	return x.checkAfter(fl, "write", off, n)
}

// pickWindow returns a page-aligned window of the file to map that holds
// [off, off+n): the whole file one time in eight.
func (x *fsx) pickWindow(size, off, n int64) (pgoff, length int64) {
	if x.rng.IntN(8) == 0 {
		return 0, size
	}
	pgoff = off &^ (fsxPage - 1)
	return pgoff, min((off+n+fsxPage-1)&^(fsxPage-1), size) - pgoff
}

func (x *fsx) opMapRead(fl *fsxFile) error {
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
		maplen = (length + fsxPage - 1) &^ (fsxPage - 1)
	}
	x.logf("mapread   %s %#x..%#x (window %#x..%#x; size %#x)", fl.name, pgoff, pgoff+length, pgoff, pgoff+maplen, size)
	b, err := unix.Mmap(fl.fd, pgoff, int(maplen), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return fmt.Errorf("mmap(PROT_READ, MAP_SHARED) %s at %#x, %#x bytes: %v", fl.name, pgoff, maplen, err)
	}
	got := make([]byte, maplen)
	faulted, addr := faults(func() { copy(got, b) })
	if err := unix.Munmap(b); err != nil {
		return fmt.Errorf("munmap: %v", err)
	}
	if faulted {
		return fmt.Errorf("mapped read of %s: fault at file offset %#x (size %#x)", fl.name, pgoff+int64(addr-uintptrOf(b)), size)
	}
	if want := fl.data[pgoff : pgoff+length]; !slices.Equal(got[:length], want) {
		return fmt.Errorf("mapped read of %s: %s", fl.name, fsxDiff(pgoff, got[:length], want))
	}
	if tail := got[length:]; !isZero(tail) {
		return fmt.Errorf("mapped read of %s: the last page past EOF (file offsets %#x..%#x) is not zero: %s",
			fl.name, size, pgoff+maplen, fsxDiff(size, tail, make([]byte, len(tail))))
	}
	return x.checkSize(fl)
}

func uintptrOf(b []byte) uintptr {
	if len(b) == 0 {
		return 0
	}
	return uintptr(unsafe.Pointer(&b[0]))
}

func (x *fsx) opMapWrite(fl *fsxFile) error {
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
		return fmt.Errorf("mmap(PROT_READ|PROT_WRITE, MAP_SHARED) %s at %#x, %#x bytes: %v", fl.name, pgoff, length, err)
	}
	faulted, addr := faults(func() { copy(b[off-pgoff:], data) })
	var serr error
	if !faulted {
		serr = unix.Msync(b, unix.MS_SYNC)
	}
	if err := unix.Munmap(b); err != nil {
		return fmt.Errorf("munmap: %v", err)
	}
	if faulted {
		return fmt.Errorf("mapped write to %s: fault at file offset %#x (size %#x)", fl.name, pgoff+int64(addr-uintptrOf(b)), size)
	}
	if serr != nil {
		return fmt.Errorf("msync(MS_SYNC): %v", serr)
	}
	copy(fl.data[off:], data)
	return x.checkAfter(fl, "mapwrite", off, n)
}

func (x *fsx) opTruncate(fl *fsxFile) error {
	size := fl.size()
	var newSize int64
	switch r := x.rng.IntN(100); {
	case r < 5:
		newSize = 0
	case r < 50:
		newSize = x.rng.Int64N(size + 1)
	default:
		newSize = min(size+x.rng.Int64N(1<<20), fsxMaxSize)
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
		err = unix.Truncate(filepath.Join(x.cfg.Mnt, fl.name), newSize)
	}
	if err != nil {
		return fmt.Errorf("%s to %#x: %v", how, newSize, err)
	}
	resize(fl, newSize)
	lo := min(size, newSize)
	return x.checkAfter(fl, how, lo, max(size, newSize)-lo)
}

// pickFallocExtent is pickExtent for fallocate: anywhere up to a little
// past EOF.
func (x *fsx) pickFallocExtent(size int64) (off, n int64) {
	if x.rng.IntN(4) == 0 {
		return x.pickExtent(size)
	}
	n = x.pickLen()
	off = x.maybeAlign(x.rng.Int64N(size + 1))
	n = min(n, fsxMaxSize-off)
	return off, n
}

func (x *fsx) opFallocate(fl *fsxFile) error {
	size := fl.size()
	off, n := x.pickFallocExtent(size)
	x.logf("falloc    %s %#x..%#x (%#x bytes, mode 0; size %#x)", fl.name, off, off+n, n, size)
	if err := unix.Fallocate(fl.fd, 0, off, n); err != nil {
		return fmt.Errorf("fallocate(mode 0, %#x, %#x): %v", off, n, err)
	}
	if off+n > size {
		resize(fl, off+n)
	}
	return x.checkAfter(fl, "fallocate(mode 0)", off, n)
}

func (x *fsx) opFallocateKeepSize(fl *fsxFile) error {
	size := fl.size()
	off, n := x.pickFallocExtent(size)
	x.logf("falloc-ks %s %#x..%#x (%#x bytes, KEEP_SIZE; size %#x)", fl.name, off, off+n, n, size)
	if err := unix.Fallocate(fl.fd, unix.FALLOC_FL_KEEP_SIZE, off, n); err != nil {
		return fmt.Errorf("fallocate(KEEP_SIZE, %#x, %#x): %v", off, n, err)
	}
	return x.checkAfter(fl, "fallocate(KEEP_SIZE)", off, n)
}

func (x *fsx) opPunchHole(fl *fsxFile) error {
	size := fl.size()
	off, n := x.pickFallocExtent(size)
	x.logf("punch     %s %#x..%#x (%#x bytes; size %#x)", fl.name, off, off+n, n, size)
	if err := unix.Fallocate(fl.fd, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, n); err != nil {
		return fmt.Errorf("fallocate(PUNCH_HOLE|KEEP_SIZE, %#x, %#x): %v", off, n, err)
	}
	if off < size {
		clear(fl.data[off:min(off+n, size)])
	}
	return x.checkAfter(fl, "punch hole", off, n)
}

func (x *fsx) opFsync(fl *fsxFile) error {
	x.logf("fsync     %s (size %#x)", fl.name, fl.size())
	if err := fl.f.Sync(); err != nil {
		return fmt.Errorf("fsync: %v", err)
	}
	return x.checkSize(fl)
}

func (x *fsx) opFdatasync(fl *fsxFile) error {
	x.logf("fdatasync %s (size %#x)", fl.name, fl.size())
	if err := unix.Fdatasync(fl.fd); err != nil {
		return fmt.Errorf("fdatasync: %v", err)
	}
	return x.checkSize(fl)
}

func (x *fsx) opReopen(fl *fsxFile) error {
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
func (x *fsx) opFreshRead(fl *fsxFile) error {
	off, n := x.pickReadRange(fl.size())
	x.logf("freshread %s %#x..%#x (%#x bytes; size %#x)", fl.name, off, off+n, n, fl.size())
	f, err := os.Open(filepath.Join(x.cfg.Mnt, fl.name))
	if err != nil {
		return fmt.Errorf("open %s read-only: %v", fl.name, err)
	}
	tmp := &fsxFile{name: fl.name + " (second descriptor)", f: f, fd: int(f.Fd()), data: fl.data}
	err = x.checkRange(tmp, "freshread", off, n)
	if err == nil {
		err = x.checkSize(tmp)
	}
	if cerr := f.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("close the second descriptor of %s: %v", fl.name, cerr)
	}
	return err
}

func (x *fsx) opRemount(*fsxFile) error {
	x.logf("remount   (closes and reopens every file)")
	err := func() error {
		for _, fl := range x.files {
			if err := x.close(fl); err != nil {
				return err
			}
		}
		if err := x.remount(); err != nil {
			return fmt.Errorf("remount: %v", err)
		}
		return nil
	}()
	if err != nil {
		return err
	}
	if x.start != nil {
		if err := x.start(); err != nil {
			return fmt.Errorf("remount: %v", err)
		}
	}
	for _, fl := range x.files {
		if err := x.open(fl, os.O_RDWR); err != nil {
			return err
		}
	}
	return x.checkAll("after remount")
}

// opCrash kills the daemon with every file open. Every byte written
// before must be in the blobs (the README's durability contract for a
// process crash): write() returned after the daemon copied the data into
// its mapping of the blob, and mapped writes were msynced. With the
// writeback cache, written data may be only in the mount's page cache,
// which dies with the connection: fsync first.
func (x *fsx) opCrash(*fsxFile) error {
	x.logf("crash     (SIGKILL the daemon with every file open, then mount again)")
	if x.cfg.WritebackCache {
		for _, fl := range x.files {
			if err := fl.f.Sync(); err != nil {
				return fmt.Errorf("fsync %s before the crash: %v", fl.name, err)
			}
		}
	}
	if err := x.kill(); err != nil {
		return fmt.Errorf("kill: %v", err)
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
	if err := x.restart(); err != nil {
		return fmt.Errorf("restart after the crash: %v", err)
	}
	for _, fl := range x.files {
		if err := x.open(fl, os.O_RDWR); err != nil {
			return err
		}
	}
	return x.checkAll("after the crash and a new mount")
}

// The test.

// fsxRuns are the configurations CI runs: every writeback policy, and the
// kernel's caching switches that change the data path most.
var fsxRuns = []struct {
	name  string
	flags []string
}{
	{"fsync", []string{"--writeback", "fsync"}},
	{"write-through", []string{"--writeback", "write-through"}},
	{"close", []string{"--writeback", "close"}},
	{"periodic-50ms", []string{"--writeback", "periodic:50ms"}},
	{"async", []string{"--writeback", "async"}},
	{"none", []string{"--writeback", "none"}},
	{"writeback-cache", []string{"--writeback-cache"}},
	{"direct-io", []string{"--direct-io"}},
}

// fsxClients is how many processes the multi-client run starts.
const fsxClients = 2

func fsxMasterSeed(t *testing.T) uint64 {
	if *fsxSeed != 0 {
		return *fsxSeed
	}
	return rand.Uint64()%1_000_000_000 + 1
}

func fsxReplay(name string, master uint64) string {
	extra := ""
	if *fsxFiles != 3 {
		extra = fmt.Sprintf(" -fsx.files %d", *fsxFiles)
	}
	return fmt.Sprintf("go test -race -count=1 -run 'TestFsx/%s$' ./integration/ -fsx.seed %d -fsx.ops %%d%s", name, master, extra)
}

func TestFsx(t *testing.T) {
	t.Parallel()
	master := fsxMasterSeed(t)
	t.Logf("fsx master seed %d (replay any run with -fsx.seed %d)", master, master)
	for _, r := range fsxRuns {
		t.Run(r.name, func(t *testing.T) {
			t.Parallel()
			flags := r.flags
			if loopbackMode {
				if r.name != "fsync" {
					t.Skip("mmapfs flags")
				}
				flags = nil
			}
			fsxSingle(t, r.name, master, flags)
		})
	}
	t.Run(fmt.Sprintf("%dclients", fsxClients), func(t *testing.T) {
		t.Parallel()
		fsxMulti(t, fmt.Sprintf("%dclients", fsxClients), master)
	})
}

func fsxSingle(t *testing.T, name string, master uint64, flags []string) {
	m := startMount(t, flags...)
	cfg := fsxConfig{
		Name:           name,
		Mnt:            m.mnt,
		Store:          m.store,
		Files:          *fsxFiles,
		Ops:            *fsxOps,
		Duration:       *fsxDuration,
		Seed:           fsxSeedFor(master, name),
		WritebackCache: slices.Contains(flags, "--writeback-cache"),
		Remount:        true,
		Replay:         fsxReplay(name, master),
	}
	var holders []string // who held the mount busy during a remount
	x := newFsx(cfg, func() error {
		stop := fsxWatchHolders(m.mnt, &holders)
		defer stop()
		m.stop(t)
		return nil
	})
	x.start = func() error { m.start(t); return nil }
	x.kill = func() error { m.kill(t); return nil }
	x.restart = func() error {
		if err := forceUnmount(m.mnt); err != nil {
			return err
		}
		m.start(t)
		return nil
	}
	reported := false
	defer func() {
		// A t.Fatal in the harness (a remount that failed) ends the
		// run without a failure of ours: show the operations anyway.
		if t.Failed() && !reported {
			t.Log(x.fail(errors.New("the harness failed the test")))
			if len(holders) > 0 {
				t.Logf("processes seen with the mount open during the remount:\n%s", strings.Join(holders, "\n"))
			}
		}
		for _, fl := range x.files {
			if fl.f != nil {
				fl.f.Close()
			}
		}
	}()
	start := time.Now()
	err := x.run()
	reported = true
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("fsx %s: %s", name, x.summary(time.Since(start)))
}

// fsxMsg is a line of a client's stdout, or its end (eof).
type fsxMsg struct {
	client int
	line   string
	eof    bool
}

// fsxMulti runs fsxClients client processes, each on its own files of one
// mount with its own seed and model. A client that draws a remount closes
// its files and asks for one; the test remounts once every client still
// running has asked, and lets them go on.
func fsxMulti(t *testing.T, name string, master uint64) {
	var flags []string
	if !loopbackMode {
		flags = []string{"--writeback", "periodic:50ms"}
	}
	m := startMount(t, flags...)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	msgs := make(chan fsxMsg, 16)
	quit := make(chan struct{})
	defer close(quit)
	type client struct {
		cmd     *exec.Cmd
		stdin   io.WriteCloser
		stderr  syncBuffer
		waiting bool
		done    bool
		summary string
		exited  chan struct{}
	}
	clients := make([]*client, fsxClients)
	for i := range clients {
		c := &client{exited: make(chan struct{})}
		clients[i] = c
		cname := fmt.Sprintf("%s/client%d", name, i)
		cfg := fsxConfig{
			Name:     cname,
			Mnt:      m.mnt,
			Store:    m.store,
			Prefix:   fmt.Sprintf("c%d-", i),
			Files:    *fsxFiles,
			Ops:      *fsxOps,
			Duration: *fsxDuration,
			Seed:     fsxSeedFor(master, cname),
			Remount:  true,
			Replay:   fsxReplay(name, master) + " (client " + fmt.Sprint(i) + " failed at that step; the other client runs alongside)",
		}
		js, err := json.Marshal(cfg)
		if err != nil {
			t.Fatal(err)
		}
		c.cmd = exec.Command(self, "-test.run=^$")
		c.cmd.Env = append(os.Environ(), fsxClientEnv+"="+string(js))
		c.cmd.Stderr = &c.stderr
		c.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if c.stdin, err = c.cmd.StdinPipe(); err != nil {
			t.Fatal(err)
		}
		stdout, err := c.cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := c.cmd.Start(); err != nil {
			t.Fatalf("start client %d: %v", i, err)
		}
		// Registered after the mount's cleanup, so run before it: no
		// client holds the mount busy when it is stopped.
		t.Cleanup(func() {
			select {
			case <-c.exited:
			default:
				c.cmd.Process.Kill()
				<-c.exited
			}
		})
		go func() {
			send := func(msg fsxMsg) {
				select {
				case msgs <- msg:
				case <-quit:
				}
			}
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				send(fsxMsg{client: i, line: sc.Text()})
			}
			// Wait closes the pipe: only once it has been read to EOF.
			c.cmd.Wait()
			close(c.exited)
			send(fsxMsg{client: i, eof: true})
		}()
	}
	start := time.Now()
	remounts := 0
	idle := 5 * time.Minute
	for {
		running, waiting := 0, 0
		for _, c := range clients {
			if !c.done {
				running++
				if c.waiting {
					waiting++
				}
			}
		}
		if running == 0 {
			break
		}
		if waiting > 0 && waiting == running {
			m.remount(t)
			remounts++
			for _, c := range clients {
				if c.waiting {
					c.waiting = false
					io.WriteString(c.stdin, "go\n")
				}
			}
			continue
		}
		var msg fsxMsg
		select {
		case msg = <-msgs:
		case <-time.After(idle):
			t.Fatalf("no word from the fsx clients for %v", idle)
		}
		c := clients[msg.client]
		switch {
		case msg.eof:
			c.done = true
		case msg.line == fsxCtlRemount:
			c.waiting = true
		case strings.HasPrefix(msg.line, fsxCtlDone):
			c.summary = strings.TrimPrefix(msg.line, fsxCtlDone)
		default:
			t.Logf("client %d: %s", msg.client, msg.line)
		}
	}
	for i, c := range clients {
		<-c.exited
		c.stdin.Close()
		if ps := c.cmd.ProcessState; !ps.Success() || c.summary == "" {
			t.Errorf("fsx client %d failed (%v):\n%s", i, ps, c.stderr.String())
			continue
		}
		t.Logf("fsx %s client %d: %s", name, i, c.summary)
	}
	t.Logf("fsx %s: %d remounts in %.1fs", name, remounts, time.Since(start).Seconds())
}

// fsxClientMain is the test binary run as an fsx client by fsxMulti: it
// runs the configuration in cfgJSON and returns the exit status. A remount
// is asked of the test over stdout and waits for "go" on stdin.
func fsxClientMain(cfgJSON string) int {
	var cfg fsxConfig
	if err := json.Unmarshal([]byte(cfgJSON), &cfg); err != nil {
		fmt.Fprintf(os.Stderr, "fsx client: bad config: %v\n", err)
		return 2
	}
	in := bufio.NewScanner(os.Stdin)
	remount := func() error {
		fmt.Fprintln(os.Stdout, fsxCtlRemount)
		if !in.Scan() {
			return fmt.Errorf("no go-ahead from the test: %v", in.Err())
		}
		if in.Text() != "go" {
			return fmt.Errorf("the test said %q", in.Text())
		}
		return nil
	}
	x := newFsx(cfg, remount)
	start := time.Now()
	if err := x.run(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Fprintln(os.Stdout, fsxCtlDone+x.summary(time.Since(start)))
	return 0
}

// An fsx client is this test binary run again with fsxClientEnv set. It
// has to take over before TestMain, which would build the daemon and start
// a watchdog: hence init.
func init() {
	cfg := os.Getenv(fsxClientEnv)
	if cfg == "" {
		return
	}
	os.Unsetenv(fsxClientEnv)
	os.Exit(fsxClientMain(cfg))
}

// fsxWatchHolders polls /proc for processes that hold files of mnt open
// (descriptors, mappings, cwd) until stop is called, and appends what it
// sees to *seen: a remount that fails with EBUSY says who held the mount.
func fsxWatchHolders(mnt string, seen *[]string) (stop func()) {
	done := make(chan struct{})
	finished := make(chan struct{})
	found := map[string]bool{}
	go func() {
		defer close(finished)
		for {
			for _, h := range fsxMountHolders(mnt) {
				if !found[h] {
					found[h] = true
					*seen = append(*seen, time.Now().Format("15:04:05.000 ")+h)
				}
			}
			select {
			case <-done:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	return func() {
		close(done)
		<-finished
	}
}

// fsxMountHolders lists the processes with a descriptor, a mapping or a
// working directory under mnt.
func fsxMountHolders(mnt string) []string {
	var out []string
	procs, _ := os.ReadDir("/proc")
	self := os.Getpid()
	for _, p := range procs {
		pid := p.Name()
		if pid[0] < '0' || pid[0] > '9' {
			continue
		}
		var what []string
		dir := "/proc/" + pid
		fds, _ := os.ReadDir(dir + "/fd")
		for _, fd := range fds {
			if l, err := os.Readlink(dir + "/fd/" + fd.Name()); err == nil && (l == mnt || strings.HasPrefix(l, mnt+"/")) {
				what = append(what, "fd "+fd.Name()+" -> "+l)
			}
		}
		if l, err := os.Readlink(dir + "/cwd"); err == nil && (l == mnt || strings.HasPrefix(l, mnt+"/")) {
			what = append(what, "cwd "+l)
		}
		if b, err := os.ReadFile(dir + "/maps"); err == nil && strings.Contains(string(b), mnt+"/") {
			what = append(what, "maps a file of the mount")
		}
		if len(what) == 0 {
			continue
		}
		cmd, _ := os.ReadFile(dir + "/cmdline")
		me := ""
		if pid == fmt.Sprint(self) {
			me = " (this test process)"
		}
		out = append(out, fmt.Sprintf("pid %s%s %q: %s", pid, me, strings.ReplaceAll(string(cmd), "\x00", " "), strings.Join(what, "; ")))
	}
	return out
}
