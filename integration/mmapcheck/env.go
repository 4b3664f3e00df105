package mmapcheck

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/mmapfs/mmapfs/integration/mapfault"
)

const pageSize = 4096

// env is one guarantee's run: its directory, its seed, the descriptors and
// mappings it holds (closed and unmapped when it ends, however it ends),
// and the step it is at. It is used by one goroutine.
type env struct {
	cfg  *Config
	c    *Check
	g    *Guarantee
	dir  string // the guarantee's own directory
	seed uint64

	stepNo   int
	stepName string
	files    []*os.File
	maps     [][]byte
	notes    []string // what the guarantee could not check, for a pass
}

// step names what the guarantee does next, for a failure's reproduction.
func (e *env) step(format string, args ...any) {
	e.stepNo++
	e.stepName = fmt.Sprintf(format, args...)
}

// fail is a failure at the current step.
func (e *env) fail(expected, format string, args ...any) error {
	return &failure{expected: expected, seen: fmt.Sprintf(format, args...)}
}

// runGuarded runs fn; an unexpected fault on a mapping (every expected one
// is caught where it is expected) is a failure, not a crash.
func (e *env) runGuarded(fn func(*env) error) (err error) {
	faulted, addr := mapfault.Catch(func() { err = fn(e) })
	if faulted {
		where := "outside the check's mappings"
		for _, m := range e.maps {
			if off := mapfault.Offset(m, addr); off >= 0 && off < int64(len(m)) {
				where = fmt.Sprintf("at offset %d of a %d-byte mapping", off, len(m))
			}
		}
		return e.fail("no fault on a mapping inside its file", "SIGBUS or SIGSEGV %s", where)
	}
	return err
}

// path is the path of a file of the guarantee.
func (e *env) path(name string) string { return filepath.Join(e.dir, name) }

// rel is a file's name relative to cfg.Dir.
func (e *env) rel(name string) string {
	return filepath.Join(e.c.rel, e.g.Name, name)
}

// pattern is n bytes of data derived from the guarantee's seed and k.
func (e *env) pattern(n int, k uint64) []byte {
	b := make([]byte, n)
	x := (e.seed+k)*0x9E3779B97F4A7C15 + 0x2545F4914F6CDD1D
	for i := range b {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		b[i] = byte(x)
	}
	return b
}

// create makes name holding data.
func (e *env) create(name string, data []byte) error {
	e.step("create %s with %d bytes (write(2))", name, len(data))
	if err := os.WriteFile(e.path(name), data, 0o644); err != nil {
		return fmt.Errorf("creating %s: %w", name, err)
	}
	return nil
}

// open opens name and keeps the descriptor until the guarantee ends.
func (e *env) open(name string, flag int) (*os.File, error) {
	f, err := os.OpenFile(e.path(name), flag, 0)
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", name, err)
	}
	e.files = append(e.files, f)
	return f, nil
}

// sharedFile creates name holding data, opens it read-write and maps its
// first length bytes MAP_SHARED, for reading and writing: how most
// guarantees begin.
func (e *env) sharedFile(name string, data []byte, length int) (*os.File, []byte, error) {
	if err := e.create(name, data); err != nil {
		return nil, nil, err
	}
	f, err := e.open(name, os.O_RDWR)
	if err != nil {
		return nil, nil, err
	}
	e.step("mmap %s, MAP_SHARED", name)
	b, err := e.mmap(f, 0, length, rw, shared)
	if err != nil {
		return nil, nil, err
	}
	return f, b, nil
}

// mmap maps length bytes of f from off. A refused MAP_SHARED mapping is a
// *refusedError.
func (e *env) mmap(f *os.File, off int64, length, prot, flags int) ([]byte, error) {
	b, err := unix.Mmap(int(f.Fd()), off, length, prot, flags)
	if err != nil {
		what := fmt.Sprintf("mmap(%s, %s) of %s, %d bytes", protText(prot), flagsText(flags), filepath.Base(f.Name()), length)
		if flags&unix.MAP_SHARED != 0 && !errors.Is(err, unix.EACCES) {
			return nil, &refusedError{what: what, err: errnoErr(err)}
		}
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	e.maps = append(e.maps, b)
	return b, nil
}

// munmap unmaps a mapping of e.mmap.
func (e *env) munmap(b []byte) error {
	for i, m := range e.maps {
		if len(m) > 0 && &m[0] == &b[0] {
			e.maps = append(e.maps[:i], e.maps[i+1:]...)
			if err := unix.Munmap(b); err != nil {
				return fmt.Errorf("munmap: %w", err)
			}
			return nil
		}
	}
	return errors.New("munmap of a mapping the check did not make")
}

// replaceMap records that mremap moved old to b.
func (e *env) replaceMap(old, b []byte) {
	for i, m := range e.maps {
		if len(m) > 0 && &m[0] == &old[0] {
			e.maps[i] = b
		}
	}
}

// closeFile closes one of e's descriptors.
func (e *env) closeFile(f *os.File) error {
	for i, g := range e.files {
		if g == f {
			e.files = append(e.files[:i], e.files[i+1:]...)
		}
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("closing %s: %w", filepath.Base(f.Name()), err)
	}
	return nil
}

// closeAll unmaps and closes whatever the guarantee left.
func (e *env) closeAll() {
	for _, m := range e.maps {
		unix.Munmap(m) //nolint:errcheck // the guarantee ended; nothing to report it to
	}
	e.maps = nil
	for _, f := range e.files {
		f.Close()
	}
	e.files = nil
}

// load copies n bytes at off out of mapping b, or reports the fault.
func load(b []byte, off, n int) (got []byte, faulted bool) {
	got = make([]byte, n)
	faulted, _ = mapfault.Catch(func() { copy(got, b[off:off+n]) })
	return got, faulted
}

// store copies data into mapping b at off, or reports the fault.
func store(b []byte, off int, data []byte) (faulted bool) {
	faulted, _ = mapfault.Catch(func() { copy(b[off:], data) })
	return faulted
}

// mapped checks that mapping b holds want at off.
func (e *env) mapped(what string, b []byte, off int, want []byte) error {
	got, faulted := load(b, off, len(want))
	if faulted {
		return e.fail(fmt.Sprintf("%s readable at %d..%d", what, off, off+len(want)), "SIGBUS")
	}
	if !bytes.Equal(got, want) {
		return e.fail(fmt.Sprintf("%s holds the file's bytes at %d..%d", what, off, off+len(want)), "%s", diffAt(off, got, want))
	}
	return nil
}

// put stores data into mapping b at off; a fault is a failure.
func (e *env) put(what string, b []byte, off int, data []byte) error {
	e.step("store %d bytes at %d through %s", len(data), off, what)
	if store(b, off, data) {
		return e.fail(fmt.Sprintf("a store at %d..%d through %s succeeds", off, off+len(data), what), "SIGBUS")
	}
	return nil
}

// msync syncs mapping b with flags.
func (e *env) msync(b []byte, flags int) error {
	e.step("msync(%s)", msyncText(flags))
	if err := unix.Msync(b, flags); err != nil {
		return e.fail(fmt.Sprintf("msync(%s) succeeds", msyncText(flags)), "%s", errnoText(err))
	}
	return nil
}

// verify checks that name holds want, read with read(2) through a fresh
// descriptor, and then with cfg.Verify.
func (e *env) verify(name string, want []byte, when string) error {
	e.step("read %s through a fresh descriptor %s", name, when)
	got, err := os.ReadFile(e.path(name))
	if err != nil {
		return fmt.Errorf("reading %s %s: %w", name, when, err)
	}
	if !bytes.Equal(got, want) {
		return e.fail(fmt.Sprintf("read(2) of %s %s gives its %d bytes", name, when, len(want)), "%s", diffAt(0, got, want))
	}
	if e.cfg.Verify != nil {
		if err := e.cfg.Verify(e.rel(name), want); err != nil {
			return e.fail(fmt.Sprintf("%s holds its %d bytes %s", name, len(want), when), "%v", err)
		}
	}
	return nil
}

// readAt reads n bytes of f at off with pread(2); a short read returns
// what was read.
func readAt(f *os.File, off int64, n int) ([]byte, error) {
	b := make([]byte, n)
	got, err := f.ReadAt(b, off)
	if got == n {
		err = nil
	}
	if err != nil && got < n && errors.Is(err, io.EOF) {
		err = nil
	}
	return b[:got], err
}

// diffAt describes how got, read at base, differs from want.
func diffAt(base int, got, want []byte) string {
	n := min(len(got), len(want))
	i := 0
	for i < n && got[i] == want[i] {
		i++
	}
	if i == n {
		if len(got) == len(want) {
			return "the same bytes"
		}
		return fmt.Sprintf("%d bytes instead of %d (equal up to the shorter)", len(got), len(want))
	}
	end := min(i+8, n)
	return fmt.Sprintf("at offset %d: % x instead of % x", base+i, got[i:end], want[i:end])
}

func isZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

func protText(prot int) string {
	switch prot {
	case unix.PROT_READ:
		return "PROT_READ"
	case unix.PROT_READ | unix.PROT_WRITE:
		return "PROT_READ|PROT_WRITE"
	case unix.PROT_WRITE:
		return "PROT_WRITE"
	}
	return fmt.Sprintf("prot %#x", prot)
}

func flagsText(flags int) string {
	if flags&unix.MAP_SHARED != 0 {
		return "MAP_SHARED"
	}
	return "MAP_PRIVATE"
}

func msyncText(flags int) string {
	switch flags {
	case unix.MS_SYNC:
		return "MS_SYNC"
	case unix.MS_ASYNC:
		return "MS_ASYNC"
	case unix.MS_INVALIDATE:
		return "MS_INVALIDATE"
	}
	return fmt.Sprintf("%#x", flags)
}

// errnoErr is err with its errno's name in its text.
func errnoErr(err error) error {
	return &namedErr{err: err}
}

type namedErr struct{ err error }

func (n *namedErr) Error() string { return errnoText(n.err) }
func (n *namedErr) Unwrap() error { return n.err }
