// Package fsx is a randomized model checker for the files of a directory,
// in the spirit of fsx(8), written for mmapfs's mounts but for any
// directory a client can open, map and truncate files in.
//
// A seeded random mix of read, write, mapped read, mapped write
// (MAP_SHARED + msync), truncate (by descriptor and by path), fallocate
// (mode 0, KEEP_SIZE, PUNCH_HOLE), fsync, fdatasync, close/reopen, a read
// through a second descriptor and, where the caller can do them, a
// remount and a SIGKILL of the daemon is applied to a few files, and every
// step is checked against an in-memory model of the files: the size
// (fstat) and the bytes the step touched after every step; the whole of
// every file, through the directory and (with Config.Store) as the file
// that backs it, every 200 steps, after a remount or a crash and at
// the end. A failure reports the seed, the step, the model's sizes, the
// last operations and the command that replays it.
//
// The checker makes MAP_SHARED mappings of the files in its own process.
// It must never run in the process that serves Config.Dir (a process that
// serves a FUSE mount and page-faults on it can deadlock), never touch a
// name under Config.Dir but its own (Config.Prefix+"f0", "f1", ...), never
// write under Config.Store, and never leave a descriptor or a mapping
// behind when Run returns. It knows nothing of testing: the integration
// tests (integration/fsx_test.go) run it under their harness, and a
// command could run it on a directory of its own.
package fsx

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

const (
	maxSize   = 8 << 20   // files stay below this
	maxLen    = 256 << 10 // longest read, write, fallocate
	pageSize  = 4096
	fullEvery = 200 // steps between whole-file checks
	logKeep   = 50  // operations shown on a failure
)

// Config is one run of the checker.
type Config struct {
	Name string // names the run in messages
	// Dir is the directory whose files are checked.
	Dir string
	// Store, if set, is where the content of each file of Dir is found
	// under the same name (mmapfs's store; the loopback's original
	// directory): every whole-file check also reads it there. "": no
	// such check, and no crashes (Hooks.Kill).
	Store          string
	Prefix         string        // file names are Prefix+"f0", Prefix+"f1", ...
	Files          int           // how many files (at least one)
	Ops            int           // steps, if Duration is 0
	Duration       time.Duration // run for this long instead
	Seed           uint64
	WritebackCache bool   // Dir buffers writes (FUSE's writeback cache): fsync before reading Store
	Replay         string // command line that replays the run, with %d for the number of steps
}

// Hooks are what the checker asks of whoever serves Config.Dir. A nil hook
// leaves its operation out of the mix (a read takes its place).
type Hooks struct {
	// Remount is called with every file closed: it unmounts Dir and
	// mounts it again.
	Remount func() error
	// Kill kills the daemon serving Dir with every file open (SIGKILL):
	// every byte written before must then be in Store. Restart mounts
	// Dir again once the files on the dead mount are closed. Both or
	// neither.
	Kill, Restart func() error
}

// file is one file under test and its model.
type file struct {
	name string
	f    *os.File // nil while closed (during a remount)
	fd   int
	data []byte // the model: the file's contents, len(data) is its size
}

func (fl *file) size() int64 { return int64(len(fl.data)) }

// resize makes the model size n, zero-filling what it grows.
func (fl *file) resize(n int64) {
	old := fl.size()
	if n <= old {
		fl.data = fl.data[:n]
		return
	}
	if n > int64(cap(fl.data)) {
		d := make([]byte, n, min(max(n, 2*int64(cap(fl.data))), maxSize+maxLen))
		copy(d, fl.data)
		fl.data = d
		return
	}
	fl.data = fl.data[:n]
	clear(fl.data[old:])
}

// Checker is one run of the checker. It is used by one goroutine.
type Checker struct {
	cfg   Config
	hooks Hooks
	rng   *rand.Rand
	files []*file

	step    int
	log     []string // the last logKeep operations, a ring
	nlog    int
	counts  map[string]int
	times   map[string]time.Duration
	elapsed time.Duration // of Run
	scratch []byte
	rbuf    []byte
}

// New returns a checker for cfg that asks hooks for remounts and crashes.
// It touches no file until Run.
func New(cfg Config, hooks Hooks) (*Checker, error) {
	if cfg.Dir == "" {
		return nil, errors.New("fsx: no directory to check")
	}
	if (hooks.Kill == nil) != (hooks.Restart == nil) {
		return nil, errors.New("fsx: Hooks.Kill and Hooks.Restart go together")
	}
	if hooks.Kill != nil && cfg.Store == "" {
		return nil, errors.New("fsx: crashes (Hooks.Kill) need Config.Store, where the data must be after one")
	}
	cfg.Files = max(cfg.Files, 1)
	return &Checker{
		cfg:    cfg,
		hooks:  hooks,
		rng:    rand.New(rand.NewPCG(cfg.Seed, cfg.Seed^0x9E3779B97F4A7C15)),
		log:    make([]string, logKeep),
		counts: map[string]int{},
		times:  map[string]time.Duration{},
	}, nil
}

// failure is a mismatch or an unexpected error, with what replays it.
type failure struct {
	msg string
	err error
}

func (e *failure) Error() string { return e.msg }
func (e *failure) Unwrap() error { return e.err }

// logf records the operation of the current step (before it runs).
func (x *Checker) logf(format string, args ...any) {
	s := fmt.Sprintf("%7d ", x.step) + fmt.Sprintf(format, args...)
	x.log[x.nlog%len(x.log)] = s
	x.nlog++
}

func (x *Checker) lastOps() []string {
	var out []string
	n := min(x.nlog, len(x.log))
	for i := x.nlog - n; i < x.nlog; i++ {
		out = append(out, x.log[i%len(x.log)])
	}
	return out
}

// Failure wraps err with the seed, the step, the files' model sizes, the
// last operations and the replay command: what Run returns on a failure,
// and what a caller shows when the run ended another way (a hook that
// gave up the goroutine).
func (x *Checker) Failure(err error) error {
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
	return &failure{msg: b.String(), err: err}
}

// Summary is a one-line account of the run: the seed, the steps and the
// time spent in each kind of operation.
func (x *Checker) Summary() string {
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
	return fmt.Sprintf("seed %d: %d ops in %.1fs (%s)", x.cfg.Seed, x.step, x.elapsed.Seconds(), strings.Join(parts, ", "))
}

// Run creates the files (truncating any of that name), applies the steps
// and checks them. It returns the first mismatch or unexpected error,
// described by Failure. Every file is closed when it returns, however it
// returns. A Checker runs once.
func (x *Checker) Run() error {
	start := time.Now()
	defer func() {
		x.elapsed = time.Since(start)
		for _, fl := range x.files {
			if fl.f != nil {
				fl.f.Close() // after a failure: the error is the failure's
				fl.f, fl.fd = nil, -1
			}
		}
	}()
	if x.files != nil {
		return errors.New("fsx: a Checker runs once")
	}
	for i := 0; i < x.cfg.Files; i++ {
		fl := &file{name: fmt.Sprintf("%sf%d", x.cfg.Prefix, i)}
		x.files = append(x.files, fl)
		if err := x.open(fl, os.O_RDWR|os.O_CREATE|os.O_TRUNC); err != nil {
			return x.Failure(err)
		}
	}
	for x.step = 1; ; x.step++ {
		if x.cfg.Duration > 0 {
			if time.Since(start) >= x.cfg.Duration {
				break
			}
		} else if x.step > x.cfg.Ops {
			break
		}
		if err := x.doStep(); err != nil {
			return x.Failure(err)
		}
		if x.step%fullEvery == 0 {
			t0 := time.Now()
			if err := x.checkAll("periodic check"); err != nil {
				return x.Failure(err)
			}
			x.times["(full check)"] += time.Since(t0)
		}
	}
	x.step--
	// The end: every file whole, then closed and checked through a new
	// descriptor and in the store.
	if err := x.checkAll("final check"); err != nil {
		return x.Failure(err)
	}
	for _, fl := range x.files {
		if err := x.close(fl); err != nil {
			return x.Failure(err)
		}
	}
	for _, fl := range x.files {
		if err := x.open(fl, os.O_RDONLY); err != nil {
			return x.Failure(err)
		}
		err := x.checkFile(fl, "final check after close")
		if cerr := x.close(fl); err == nil {
			err = cerr
		}
		if err != nil {
			return x.Failure(err)
		}
	}
	return nil
}

func (x *Checker) open(fl *file, flags int) error {
	f, err := os.OpenFile(filepath.Join(x.cfg.Dir, fl.name), flags, 0o644)
	if err != nil {
		return fmt.Errorf("open %s: %w", fl.name, err)
	}
	fl.f, fl.fd = f, int(f.Fd())
	if flags&os.O_TRUNC != 0 {
		fl.data = fl.data[:0]
	}
	return nil
}

func (x *Checker) close(fl *file) error {
	f := fl.f
	fl.f, fl.fd = nil, -1
	if err := f.Close(); err != nil {
		return fmt.Errorf("close %s: %w", fl.name, err)
	}
	return nil
}
