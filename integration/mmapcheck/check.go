// Package mmapcheck checks the guarantees Linux gives a program that maps
// files, on any directory: a FUSE mount, tmpfs, ext4, NFS. It is what
// `mmapfs check DIR` runs, and what the integration tests of client
// mappings (integration/mmap_test.go) run on mmapfs's mounts: one set of
// cases, not two.
//
// Every guarantee is checked in a fresh subdirectory of the directory
// (Check removes it when done, Abort on a signal) and gets a verdict: pass,
// fail (what was expected, what was seen, and how to reproduce it: the
// seed and the step), or not applicable (why: the filesystem refuses
// O_DIRECT, fallocate, a shared mapping ...; that is itself a finding and
// is reported, not hidden).
//
// The checks map files in the calling process. They must never run in the
// process that serves the directory (a process that serves a FUSE mount
// and page-faults on it can deadlock). Every access to a mapping goes
// through the functions of mem.go, which turn a SIGBUS or SIGSEGV into a
// result (integration/mapfault) instead of a crash; the checks expect
// SIGBUS past the end of a file.
package mmapcheck

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Verdict is the outcome of one guarantee.
type Verdict string

// The verdicts.
const (
	Pass          Verdict = "pass"
	Fail          Verdict = "fail"
	NotApplicable Verdict = "n/a"
)

// Result is the verdict on one guarantee. Its JSON form is part of
// `mmapfs check --json`'s documented output.
type Result struct {
	Name        string  `json:"name"`
	Description string  `json:"description"`
	Verdict     Verdict `json:"verdict"`
	// Expected and Seen describe a failure: what Linux promises, and
	// what the filesystem did instead.
	Expected string `json:"expected,omitempty"`
	Seen     string `json:"seen,omitempty"`
	// Reproduce is the command line and the step that show the failure
	// again.
	Reproduce string `json:"reproduce,omitempty"`
	// Details is the long account of a failure, when there is one (the
	// model run's last operations).
	Details string `json:"details,omitempty"`
	// Why says why a guarantee is not applicable (a finding), or, for
	// one that passed, what part of it the filesystem gave no way to
	// check.
	Why      string        `json:"why,omitempty"`
	Duration time.Duration `json:"-"`
}

// Config is one run of the checks.
type Config struct {
	// Dir is the directory to check; the files are made in a fresh
	// subdirectory of it.
	Dir string
	// Only, if not empty, names the guarantees to run.
	Only []string
	// Seed picks the data written and the model run's operations.
	Seed uint64
	// Ops is the number of operations of the model run.
	Ops int
	// Peer returns a command that runs Peer with args in another
	// process (a re-exec of the caller's binary in a role of its own).
	// Nil: the other-process guarantee is not applicable.
	Peer func(args []string) *exec.Cmd
	// Remount, if set, unmounts Dir's filesystem and mounts it again
	// (every file of the checks closed and unmapped): the remount
	// guarantee runs only with it.
	Remount func() error
	// Verify, if set, is called with a file's name relative to Dir and
	// the content it must have, each time a check verifies a file (after
	// the check's own read(2) through a fresh descriptor): the
	// integration tests check mmapfs's store there too.
	Verify func(rel string, want []byte) error
	// Replay is the command line a failure's reproduction starts with;
	// "--only NAME --seed S" is appended. "": "mmapfs check DIR".
	Replay string
	// WritebackCache says Dir buffers writes in the kernel (FUSE's
	// writeback cache), for the model run.
	WritebackCache bool
}

// Guarantee is one checked promise.
type Guarantee struct {
	Name        string
	Description string
	// shared: a refused MAP_SHARED mapping fails this guarantee (it is
	// what it promises); for the others it makes it not applicable.
	shared bool
	run    func(e *env) error
}

// Guarantees returns the guarantees in the order they run.
func Guarantees() []Guarantee { return append([]Guarantee(nil), guarantees...) }

// Names returns the names of the guarantees in the order they run.
func Names() []string {
	var n []string
	for _, g := range guarantees {
		n = append(n, g.Name)
	}
	return n
}

// Check is one run of the checks on a directory, in its own subdirectory.
type Check struct {
	cfg Config
	sub string // the subdirectory, absolute
	rel string // sub relative to cfg.Dir

	mu      sync.Mutex // guards removed
	removed bool
}

// New checks that cfg.Dir is a directory the caller can write and makes
// the check's subdirectory in it.
func New(cfg Config) (*Check, error) {
	dir, err := filepath.Abs(cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", cfg.Dir, err)
	}
	cfg.Dir = dir
	st, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("cannot check %s: %w", dir, err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("cannot check %s: not a directory", dir)
	}
	if err := unix.Access(dir, unix.W_OK|unix.X_OK); err != nil {
		return nil, fmt.Errorf("cannot check %s: the directory is not writable by this user: %w", dir, err)
	}
	for _, n := range cfg.Only {
		if find(n) == nil {
			return nil, fmt.Errorf("no guarantee %q (the guarantees: %s)", n, strings.Join(Names(), ", "))
		}
	}
	if cfg.Ops <= 0 {
		cfg.Ops = 1000
	}
	sub, err := os.MkdirTemp(dir, "mmapfs-check-")
	if err != nil {
		return nil, fmt.Errorf("cannot check %s: making the check's directory: %w", dir, err)
	}
	return &Check{cfg: cfg, sub: sub, rel: filepath.Base(sub)}, nil
}

// Dir is the subdirectory the check works in.
func (c *Check) Dir() string { return c.sub }

func find(name string) *Guarantee {
	for i := range guarantees {
		if guarantees[i].Name == name {
			return &guarantees[i]
		}
	}
	return nil
}

// Run runs the guarantees (cfg.Only, or all) one after the other and
// returns their results, calling each(r) as each ends (nil: no call).
func (c *Check) Run(each func(Result)) []Result {
	var rs []Result
	for _, g := range guarantees {
		if len(c.cfg.Only) > 0 && !slices.Contains(c.cfg.Only, g.Name) {
			continue
		}
		r := c.runOne(g)
		rs = append(rs, r)
		if each != nil {
			each(r)
		}
	}
	return rs
}

// runOne runs g in a directory of its own under the check's.
func (c *Check) runOne(g Guarantee) Result {
	start := time.Now()
	r := Result{Name: g.Name, Description: g.Description}
	e := &env{cfg: &c.cfg, c: c, g: &g, seed: seedFor(c.cfg.Seed, g.Name)}
	e.dir = filepath.Join(c.sub, g.Name)
	err := os.Mkdir(e.dir, 0o755)
	if err == nil {
		err = e.runGuarded(g.run)
		e.closeAll()
		if rerr := os.RemoveAll(e.dir); rerr != nil && err == nil {
			err = fmt.Errorf("removing the guarantee's files: %w", rerr)
		}
	} else {
		err = fmt.Errorf("making the guarantee's directory: %w", err)
	}
	r.Duration = time.Since(start)
	var na *notApplicable
	var rf *refusedError
	var f *failure
	switch {
	case err == nil:
		r.Verdict = Pass
		r.Why = strings.Join(e.notes, "; ")
	case errors.As(err, &rf) && !g.shared:
		r.Verdict = NotApplicable
		r.Why = fmt.Sprintf("needs a shared mapping, which the filesystem refuses: %v", rf)
	case errors.As(err, &na):
		r.Verdict = NotApplicable
		r.Why = na.why
	default:
		r.Verdict = Fail
		if errors.As(err, &f) {
			r.Expected, r.Seen, r.Details = f.expected, f.seen, f.details
		} else if errors.As(err, &rf) {
			r.Expected = "mmap(PROT_READ|PROT_WRITE, MAP_SHARED) of a file opened O_RDWR succeeds"
			r.Seen = rf.Error()
		} else {
			r.Expected = "no error"
			r.Seen = err.Error()
		}
		r.Reproduce = c.reproduce(g.Name, e)
	}
	return r
}

// reproduce is the command line and step that show g's failure again.
func (c *Check) reproduce(name string, e *env) string {
	cmd := c.cfg.Replay
	if cmd == "" {
		cmd = "mmapfs check " + c.cfg.Dir
	}
	cmd += fmt.Sprintf(" --only %s --seed %d", name, c.cfg.Seed)
	if name == "model" {
		cmd += fmt.Sprintf(" --ops %d", c.cfg.Ops)
	}
	if e.stepNo > 0 {
		cmd += fmt.Sprintf(" (fails at step %d: %s)", e.stepNo, e.stepName)
	}
	return cmd
}

// Close removes the check's subdirectory and everything in it.
func (c *Check) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.removed {
		return nil
	}
	c.removed = true
	if err := os.RemoveAll(c.sub); err != nil {
		return fmt.Errorf("removing %s: %w", c.sub, err)
	}
	return nil
}

// Abort removes the check's subdirectory while a guarantee may still be
// running (on SIGINT or SIGTERM, before the process exits): it tries again
// while the running guarantee makes files in it, for up to a second. The
// guarantee's later files fail to be made, the directory being gone.
func (c *Check) Abort() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.removed = true
	var err error
	for range 20 {
		if err = os.RemoveAll(c.sub); err == nil {
			if _, serr := os.Lstat(c.sub); errors.Is(serr, os.ErrNotExist) {
				return nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("removing %s: %w", c.sub, err)
}

// seedFor derives the seed of one guarantee from the run's.
func seedFor(seed uint64, name string) uint64 {
	h := seed ^ 0xcbf29ce484222325
	for i := 0; i < len(name); i++ {
		h ^= uint64(name[i])
		h *= 0x100000001b3
	}
	if h == 0 {
		h = 1
	}
	return h
}

// failure is a guarantee that does not hold.
type failure struct{ expected, seen, details string }

func (f *failure) Error() string { return "expected " + f.expected + "; seen " + f.seen }

// notApplicable is a guarantee the filesystem gives no way to check.
type notApplicable struct{ why string }

func (n *notApplicable) Error() string { return "not applicable: " + n.why }

// refusedError is a MAP_SHARED mapping the filesystem refused.
type refusedError struct {
	what string
	err  error
}

func (r *refusedError) Error() string { return r.what + ": " + r.err.Error() }
func (r *refusedError) Unwrap() error { return r.err }

// errnoText renders an error with its errno's name: "ENODEV (no such device)".
func errnoText(err error) string {
	var en unix.Errno
	if errors.As(err, &en) {
		if n := unix.ErrnoName(en); n != "" {
			return fmt.Sprintf("%v (%s)", err, n)
		}
	}
	if err == nil {
		return "success"
	}
	return err.Error()
}
