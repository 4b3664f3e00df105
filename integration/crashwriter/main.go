// Command crashwriter is the client workload of mmapfs's crash and
// power-cut tests (integration/crash_test.go, powercut_test.go). It runs in
// its own process, so that it outlives the daemon it is talking to and
// sees the daemon's death as errors (ENOTCONN, EIO, SIGBUS on a mapping)
// instead of dying with it.
//
// It makes seeded random changes under -dir: creates, appends, overwrites,
// writes through a shared mapping followed by msync(MS_SYNC), fsync and
// fdatasync, renames, mkdir, closes and reopens, and fsyncs of directories
// after the creates, renames and mkdirs that need one to be durable. Every
// system call is reported on stdout, one line each, before it is made and
// after it returned, so that the test can rebuild what was acknowledged:
//
//	B SEQ OP ARGS...   about to make call SEQ
//	D SEQ              call SEQ succeeded
//	E SEQ ERROR        call SEQ failed; the writer stops here
//
// OP and ARGS:
//
//	mkdir DIR                 mkdir(DIR)
//	create ID PATH            open(PATH, O_CREAT|O_EXCL|O_RDWR): file ID
//	open ID PATH              reopen file ID (it was closed)
//	close ID                  close(file ID)
//	write ID OFF LEN          pwrite of LEN bytes at OFF
//	mmapw ID OFF LEN          store LEN bytes at OFF through a MAP_SHARED
//	                          mapping of the file, msync(MS_SYNC) it, munmap
//	fsync ID, fdatasync ID    of file ID
//	fsyncdir DIR              open DIR, fsync it, close it
//	rename ID OLD NEW         rename(OLD, NEW); NEW never existed
//
// The data of call SEQ is crashdata.Data(seed, SEQ, LEN). Paths are relative to
// -dir, "." is -dir itself. Names are never reused.
//
// The first line is "START", printed once the writer is running.
//
// The writer stops at the first failed call (exit 0), after -ops calls or
// after -duration. With -idle it then prints "IDLE" and waits for its stdin
// to close before it exits, keeping its files open.
package main

import (
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mmapfs/mmapfs/integration/crashwriter/crashdata"
)

const (
	maxFiles = 12
	maxDirs  = 6
	maxSize  = 384 << 10 // appends stop here
	pageSize = 4096
	maxChunk = 64 << 10
)

type file struct {
	id   int
	path string
	fd   int // -1 when closed
	size int64
}

type writer struct {
	dir    string
	seed   uint64
	rng    *rand.Rand
	seq    int
	files  []*file
	dirs   []string
	nextID int
	name   int
	failed bool
}

func main() {
	dir := flag.String("dir", "", "directory to work in (on the mount)")
	seed := flag.Uint64("seed", 1, "seed of the workload")
	ops := flag.Int("ops", 0, "stop after this many calls (0: no limit)")
	duration := flag.Duration("duration", 10*time.Second, "stop after this long")
	idle := flag.Bool("idle", false, `once stopped (not by an error), print "IDLE" and wait for stdin to close`)
	flag.Parse()
	if *dir == "" {
		fmt.Fprintln(os.Stderr, "crashwriter: -dir is required")
		os.Exit(2)
	}
	// A page fault on a mapping of the mount whose daemon died is a
	// SIGBUS: make it a panic that mmapw recovers from.
	debug.SetPanicOnFault(true)
	runtime.LockOSThread()

	fmt.Println("START")
	w := &writer{dir: *dir, seed: *seed, rng: rand.New(rand.NewPCG(*seed, 0x6d6d6170)), dirs: []string{"."}}
	deadline := time.Now().Add(*duration)
	for !w.failed && (*ops == 0 || w.seq < *ops) && time.Now().Before(deadline) {
		w.step()
	}
	if !w.failed && *idle {
		fmt.Println("IDLE")
		buf := make([]byte, 1)
		for {
			if _, err := os.Stdin.Read(buf); err != nil {
				break
			}
		}
	}
	for _, f := range w.files {
		if f.fd >= 0 {
			unix.Close(f.fd)
		}
	}
}

// call reports call seq, runs fn and reports its outcome. It returns false
// (and marks the writer failed) if fn failed.
func (w *writer) call(fn func() error, op string, args ...any) bool {
	if w.failed {
		return false
	}
	w.seq++
	var b strings.Builder
	fmt.Fprintf(&b, "B %d %s", w.seq, op)
	for _, a := range args {
		fmt.Fprintf(&b, " %v", a)
	}
	b.WriteByte('\n')
	os.Stdout.WriteString(b.String())
	if err := fn(); err != nil {
		w.failed = true
		fmt.Printf("E %d %s\n", w.seq, strings.ReplaceAll(err.Error(), "\n", " "))
		return false
	}
	fmt.Printf("D %d\n", w.seq)
	return true
}

func (w *writer) abs(rel string) string { return filepath.Join(w.dir, rel) }

func (w *writer) newName(dir, prefix string) string {
	w.name++
	return path.Join(dir, prefix+strconv.Itoa(w.name))
}

func (w *writer) pick() *file {
	if len(w.files) == 0 {
		return nil
	}
	return w.files[w.rng.IntN(len(w.files))]
}

// ensureOpen reopens f if it was closed.
func (w *writer) ensureOpen(f *file) bool {
	if f.fd >= 0 {
		return true
	}
	return w.call(func() error {
		fd, err := unix.Open(w.abs(f.path), unix.O_RDWR|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		f.fd = fd
		return nil
	}, "open", f.id, f.path)
}

func (w *writer) step() {
	r := w.rng.IntN(100)
	switch {
	case r < 8 || len(w.files) == 0:
		if len(w.files) < maxFiles {
			w.create()
		} else {
			w.appendTo(w.pick())
		}
	case r < 33:
		w.appendTo(w.pick())
	case r < 53:
		w.overwrite(w.pick())
	case r < 63:
		w.mmapWrite(w.pick())
	case r < 75:
		w.fsync(w.pick(), "fsync")
	case r < 80:
		w.fsync(w.pick(), "fdatasync")
	case r < 85:
		w.rename(w.pick())
	case r < 88:
		if len(w.dirs) < maxDirs {
			w.mkdir()
		} else {
			w.fsyncDir(w.dirs[w.rng.IntN(len(w.dirs))])
		}
	case r < 95:
		if f := w.pick(); f.fd >= 0 {
			w.call(func() error {
				err := unix.Close(f.fd)
				f.fd = -1
				return err
			}, "close", f.id)
		}
	default:
		w.fsyncDir(w.dirs[w.rng.IntN(len(w.dirs))])
	}
}

// length returns a write length: mostly small, sometimes over the
// mount's 128 KiB request size so that a write takes several requests.
func (w *writer) length() int {
	switch r := w.rng.IntN(20); {
	case r == 0:
		return 128<<10 + w.rng.IntN(160<<10)
	case r < 6:
		return 1 + w.rng.IntN(100)
	default:
		return 1 + w.rng.IntN(maxChunk)
	}
}

func (w *writer) create() {
	dir := w.dirs[w.rng.IntN(len(w.dirs))]
	f := &file{id: w.nextID, path: w.newName(dir, "f"), fd: -1}
	w.nextID++
	ok := w.call(func() error {
		fd, err := unix.Open(w.abs(f.path), unix.O_CREAT|unix.O_EXCL|unix.O_RDWR|unix.O_CLOEXEC, 0o644)
		if err != nil {
			return err
		}
		f.fd = fd
		return nil
	}, "create", f.id, f.path)
	if !ok {
		return
	}
	w.files = append(w.files, f)
	// The usual way to create a file durably: write it, fsync it, fsync
	// its directory. Now and then the crash comes between those.
	if w.rng.IntN(4) > 0 {
		w.write(f, 0, w.length())
	}
	if w.rng.IntN(4) > 0 {
		w.fsync(f, "fsync")
		w.fsyncDir(dir)
	}
}

func (w *writer) write(f *file, off int64, n int) {
	if !w.ensureOpen(f) {
		return
	}
	data := crashdata.Data(w.seed, w.seq+1, n)
	w.call(func() error {
		for done := 0; done < len(data); {
			m, err := unix.Pwrite(f.fd, data[done:], off+int64(done))
			if err != nil {
				return err
			}
			if m == 0 {
				return errors.New("short write")
			}
			done += m
		}
		f.size = max(f.size, off+int64(n))
		return nil
	}, "write", f.id, off, n)
}

func (w *writer) appendTo(f *file) {
	if f.size >= maxSize {
		w.overwrite(f)
		return
	}
	w.write(f, f.size, w.length())
}

func (w *writer) overwrite(f *file) {
	if f.size == 0 {
		w.write(f, 0, w.length())
		return
	}
	off := w.rng.Int64N(f.size)
	w.write(f, off, w.length())
}

// mmapWrite stores into a shared mapping of the file, inside its size, and
// msyncs it.
func (w *writer) mmapWrite(f *file) {
	if f.size == 0 {
		w.appendTo(f)
		return
	}
	if !w.ensureOpen(f) {
		return
	}
	off := w.rng.Int64N(f.size)
	n := 1 + w.rng.Int64N(min(f.size-off, 48<<10))
	mapOff := off &^ (pageSize - 1)
	data := crashdata.Data(w.seed, w.seq+1, int(n))
	w.call(func() (err error) {
		m, err := unix.Mmap(f.fd, mapOff, int(off+n-mapOff), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
		if err != nil {
			return fmt.Errorf("mmap: %w", err)
		}
		defer func() {
			if r := recover(); r != nil {
				err = fmt.Errorf("fault storing into the mapping: %v", r)
			}
			if e := unix.Munmap(m); e != nil && err == nil {
				err = fmt.Errorf("munmap: %w", e)
			}
		}()
		copy(m[off-mapOff:], data)
		if err := unix.Msync(m, unix.MS_SYNC); err != nil {
			return fmt.Errorf("msync: %w", err)
		}
		return nil
	}, "mmapw", f.id, off, n)
}

func (w *writer) fsync(f *file, op string) {
	if !w.ensureOpen(f) {
		return
	}
	w.call(func() error {
		if op == "fdatasync" {
			return unix.Fdatasync(f.fd)
		}
		return unix.Fsync(f.fd)
	}, op, f.id)
}

func (w *writer) fsyncDir(dir string) {
	w.call(func() error {
		fd, err := unix.Open(w.abs(dir), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("open: %w", err)
		}
		defer unix.Close(fd)
		return unix.Fsync(fd)
	}, "fsyncdir", dir)
}

func (w *writer) rename(f *file) {
	oldDir := path.Dir(f.path)
	newDir := w.dirs[w.rng.IntN(len(w.dirs))]
	newPath := w.newName(newDir, "f")
	old := f.path
	ok := w.call(func() error {
		if err := unix.Rename(w.abs(old), w.abs(newPath)); err != nil {
			return err
		}
		f.path = newPath
		return nil
	}, "rename", f.id, old, newPath)
	if !ok || w.rng.IntN(5) == 0 {
		return
	}
	w.fsyncDir(newDir)
	if oldDir != newDir {
		w.fsyncDir(oldDir)
	}
}

func (w *writer) mkdir() {
	parent := w.dirs[w.rng.IntN(len(w.dirs))]
	if strings.Count(parent, "/") >= 1 {
		parent = "."
	}
	d := w.newName(parent, "d")
	ok := w.call(func() error { return unix.Mkdir(w.abs(d), 0o755) }, "mkdir", d)
	if !ok {
		return
	}
	// Files go into it only once it is durable.
	if w.fsyncDir(parent); !w.failed {
		w.dirs = append(w.dirs, d)
	}
}
