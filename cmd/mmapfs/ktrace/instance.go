package ktrace

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// Config says what an Instance records. Each group of events is enabled
// only when the Config asks for it: the fuse events when Conn is set, the
// readahead and filemap events when Devs is, the writeback events when
// BDIs is, the syscalls when Syscalls is.
type Config struct {
	// Conn is the FUSE connection to keep (the kernel filter
	// `connection == Conn`): the mount's s_dev in the kernel's encoding,
	// KernelDev(0, minor of stat(MNT).st_dev). 0 = no fuse events.
	Conn uint32
	// Devs are the s_dev values (kernel encoding) whose readahead and
	// filemap events to keep (the mount's and the store's), filtered in
	// the kernel.
	Devs []uint32
	// BDIs are the bdi names ("0:52", "8:0") whose balance_dirty_pages,
	// writeback_start and writeback_written to keep.
	BDIs []string
	// Syscalls adds the sync system calls' enter and exit events
	// (fsync, fdatasync, msync, close, sync_file_range, syncfs, sync).
	// They are machine-wide: the caller filters by pid.
	Syscalls bool
	// BufferKB is the per-CPU buffer size; 0 means 8192.
	BufferKB int
	// Root is the tracefs mount point; "" = find it or mount it at
	// /sys/kernel/tracing.
	Root string

	// events, when set, replaces the events the fields above select
	// (for tests: an event the kernel lacks).
	events []eventSpec
}

// defaultBufferKB is the per-CPU buffer when Config.BufferKB is 0: room
// for some 100000 events per CPU between two reads.
const defaultBufferKB = 8192

// syncSyscalls are the system calls Config.Syscalls traces: those that
// make the kernel write a file's dirty pages back on the caller's behalf
// (munmap: FUSE writes a shared mapping's pages back as it goes).
var syncSyscalls = []string{"fsync", "fdatasync", "msync", "close", "sync_file_range", "syncfs", "sync", "munmap"}

// eventSpec is one tracepoint to enable, with its filter.
type eventSpec struct {
	system, name string
	filter       string // "" = none
	hint         string // how to get a kernel that has it
}

func (s eventSpec) String() string { return s.system + ":" + s.name }

// specs returns the events cfg asks for.
func (cfg *Config) specs() []eventSpec {
	if cfg.events != nil {
		return cfg.events
	}
	var out []eventSpec
	if cfg.Conn != 0 {
		f := fmt.Sprintf("connection == %d", cfg.Conn)
		hint := "a kernel whose fuse has request tracepoints (fs/fuse/fuse_trace.h, CONFIG_FUSE_FS) with the fuse module loaded: modprobe fuse"
		out = append(out,
			eventSpec{"fuse", "fuse_request_send", f, hint},
			eventSpec{"fuse", "fuse_request_end", f, hint})
	}
	if len(cfg.Devs) > 0 {
		var terms []string
		for _, d := range cfg.Devs {
			terms = append(terms, fmt.Sprintf("s_dev == %d", d))
		}
		f := strings.Join(terms, " || ")
		hint := "a kernel with tracepoints (CONFIG_TRACEPOINTS) recent enough for include/trace/events/readahead.h and filemap.h"
		out = append(out,
			eventSpec{"readahead", "page_cache_sync_ra", f, hint},
			eventSpec{"readahead", "page_cache_async_ra", f, hint},
			eventSpec{"filemap", "mm_filemap_fault", f, hint},
			eventSpec{"filemap", "mm_filemap_add_to_page_cache", f, hint},
			eventSpec{"filemap", "mm_filemap_delete_from_page_cache", f, hint})
	}
	if len(cfg.BDIs) > 0 {
		hint := "a kernel with tracepoints (CONFIG_TRACEPOINTS); include/trace/events/writeback.h"
		out = append(out,
			eventSpec{"writeback", "balance_dirty_pages", stringFilter("bdi", cfg.BDIs), hint},
			eventSpec{"writeback", "writeback_start", stringFilter("name", cfg.BDIs), hint},
			eventSpec{"writeback", "writeback_written", stringFilter("name", cfg.BDIs), hint})
	}
	if cfg.Syscalls {
		hint := "a kernel with syscall tracepoints (CONFIG_FTRACE_SYSCALLS)"
		for _, s := range syncSyscalls {
			out = append(out,
				eventSpec{"syscalls", "sys_enter_" + s, "", hint},
				eventSpec{"syscalls", "sys_exit_" + s, "", hint})
		}
	}
	return out
}

// stringFilter is `field == "a" || field == "b"`.
func stringFilter(field string, vals []string) string {
	var terms []string
	for _, v := range vals {
		terms = append(terms, fmt.Sprintf("%s == %q", field, v))
	}
	return strings.Join(terms, " || ")
}

// instanceSeq numbers the instances of this process: the first is named
// mmapfs-trace-PID-START, the Nth gets "-N" after it.
var instanceSeq atomic.Uint32

// Instance is a tracefs instance of its own (instances/NAME under the
// tracefs root), with the events of a Config enabled and filtered, and
// its trace pipe open.
type Instance struct {
	// Read only after Open.
	root, name, dir string
	events          []eventSpec
	notes           []string
	pipe            int // trace_pipe, O_NONBLOCK; -1 once closed

	// rawLine, when set (by tests, before Run), sees each line of the
	// pipe before it is parsed.
	rawLine func([]byte)

	seen atomic.Uint64
	// caughtUp is a CLOCK_MONOTONIC time (ns) before which every event
	// recorded has been handed to Run's fn: taken before a read of the
	// pipe that found it empty (CaughtUp).
	caughtUp atomic.Int64
	cpus     []cpuLost // per CPU, indexed by CPU number
	// lostOther counts lost events of a CPU beyond cpus (one that came
	// online after Open).
	lostOther atomic.Uint64

	// mu guards the fields below. Run holds it only to set and clear
	// running; Close does not close the pipe while running is set.
	mu      sync.Mutex
	running bool // Run is reading the pipe
	closed  bool // Close has closed the pipe (it may not yet have removed the dir)
	removed bool // the instance directory is gone
	started bool // tracing_on is 1
}

// cpuLost is what one CPU lost: the "[LOST N EVENTS]" lines the pipe
// showed and the per_cpu/cpuN/stats counters (overrun, commit overrun,
// dropped events). The lines report the same overwritten events the
// overrun counter counts, so a CPU lost the larger of the two.
type cpuLost struct {
	lines, stats atomic.Uint64
}

// Open makes the instance: it removes stale instances (RemoveStale),
// creates instances/mmapfs-trace-PID-START with trace_clock mono, the
// buffer size, record-tgid, and each event's filter and enable, and
// opens its trace pipe; tracing is off until Start or Run. On any error
// nothing is left behind.
func Open(cfg Config) (*Instance, error) {
	if unix.Geteuid() != 0 {
		return nil, errorf(ErrNotRoot, nil, "run it as root, e.g. with sudo",
			"mmapfs trace needs root: tracefs (%s) and its instances are root's", tracefsDir)
	}
	specs := cfg.specs()
	if len(specs) == 0 {
		return nil, errors.New("mmapfs trace: nothing to trace: the Config names no FUSE connection, device, bdi or syscalls")
	}
	root, note, err := findRoot(cfg.Root, true)
	if err != nil {
		return nil, err
	}
	var notes []string
	if note != "" {
		notes = append(notes, note)
	}
	stale, err := RemoveStale(root)
	notes = append(notes, stale...)
	if err != nil {
		notes = append(notes, err.Error())
	}
	for _, s := range specs {
		p := filepath.Join(root, "events", s.system, s.name)
		if _, err := os.Stat(p); err != nil {
			return nil, errorf(ErrNoEvent, err, s.hint, "the kernel has no tracepoint %s", s)
		}
	}
	start, err := startTime("/proc/self/stat")
	if err != nil {
		return nil, fmt.Errorf("mmapfs trace: name the trace instance: %w", err)
	}
	name := fmt.Sprintf("%s%d-%d", instancePrefix, os.Getpid(), start)
	if n := instanceSeq.Add(1); n > 1 {
		name += "-" + strconv.FormatUint(uint64(n), 10)
	}
	in := &Instance{root: root, name: name, dir: filepath.Join(root, "instances", name),
		events: specs, notes: notes, pipe: -1}
	if err := unix.Mkdir(in.dir, 0o700); err != nil {
		return nil, &Error{Msg: "mmapfs trace: create the trace instance", Err: &fs.PathError{Op: "mkdir", Path: in.dir, Err: err}}
	}
	if err := in.setUp(cfg); err != nil {
		in.closed = true // nothing to close but the dir (setUp closes what it opened)
		if rerr := in.removeLocked(); rerr != nil {
			return nil, errors.Join(err, rerr)
		}
		return nil, err
	}
	return in, nil
}

// setUp configures the new instance and opens its pipe.
func (in *Instance) setUp(cfg Config) error {
	kb := cfg.BufferKB
	if kb <= 0 {
		kb = defaultBufferKB
	}
	// A new instance starts with tracing on; nothing is recorded until
	// Start.
	for _, f := range []struct{ file, val string }{
		{"tracing_on", "0"},
		{"trace_clock", "mono"},
		{"buffer_size_kb", strconv.Itoa(kb)},
		{"options/record-tgid", "1"},
	} {
		if err := in.write(f.file, f.val); err != nil {
			return err
		}
	}
	for _, s := range in.events {
		if s.filter != "" {
			p := in.eventFile(s, "filter")
			if err := writeFile(p, s.filter); err != nil {
				msg, _ := os.ReadFile(p) // the kernel's "^ parse_error: ..."
				kmsg := strings.Join(strings.Fields(string(msg)), " ")
				return errorf(ErrFilter, err, "kernel said: "+kmsg,
					"mmapfs trace: the kernel refused the filter `%s` for %s", s.filter, s)
			}
		}
		if err := writeFile(in.eventFile(s, "enable"), "1"); err != nil {
			return &Error{Msg: fmt.Sprintf("mmapfs trace: enable %s", s), Err: err}
		}
	}
	cpus, err := os.ReadDir(filepath.Join(in.dir, "per_cpu"))
	if err != nil {
		return &Error{Msg: "mmapfs trace: list the instance's CPUs", Err: err}
	}
	in.cpus = make([]cpuLost, len(cpus))
	p := filepath.Join(in.dir, "trace_pipe")
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return &Error{Msg: "mmapfs trace: open the trace pipe", Err: &fs.PathError{Op: "open", Path: p, Err: err}}
	}
	in.pipe = fd
	return nil
}

func (in *Instance) eventFile(s eventSpec, file string) string {
	return filepath.Join(in.dir, "events", s.system, s.name, file)
}

// write writes val to the instance's file.
func (in *Instance) write(file, val string) error {
	if err := writeFile(filepath.Join(in.dir, file), val); err != nil {
		return &Error{Msg: "mmapfs trace: set " + file + " to " + val, Err: err}
	}
	return nil
}

// writeFile writes s to a tracefs file in one write, as the kernel
// parses it.
func writeFile(path, s string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		return err
	}
	_, err = f.WriteString(s)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// Name is the instance's directory name under instances/.
func (in *Instance) Name() string { return in.name }

// Notes are what Open did that the user should know: mounting tracefs,
// removing stale instances (or failing to).
func (in *Instance) Notes() []string { return slices.Clone(in.notes) }

// caughtUpMargin is how much earlier than an empty read CaughtUp says
// the pipe was caught up: an event a CPU was writing as the read found
// the pipe empty carries a time a little before it.
const caughtUpMargin = int64(5 * time.Millisecond)

// CaughtUp returns a CLOCK_MONOTONIC time (ns) before which every event
// the kernel recorded has been handed to Run's fn, 0 before Run has
// found the pipe empty once. A reader that falls behind (a burst of
// events) holds it back. Safe from any goroutine.
func (in *Instance) CaughtUp() int64 { return in.caughtUp.Load() }

// Seen is the number of events parsed so far. Safe from any goroutine.
func (in *Instance) Seen() uint64 { return in.seen.Load() }

// Lost is the number of events the kernel dropped so far, the sum over
// CPUs of the larger of its "[LOST N EVENTS]" lines and its stats
// counters (overrun, commit overrun, dropped events), as last read: Run
// reads them every second and when it returns, Close before it removes
// the instance. Safe from any goroutine.
func (in *Instance) Lost() uint64 {
	n := in.lostOther.Load()
	for i := range in.cpus {
		n += max(in.cpus[i].lines.Load(), in.cpus[i].stats.Load())
	}
	return n
}

// Start turns tracing on (tracing_on = 1), if it is not yet. Run calls
// it; a caller calls it first to record from an earlier moment.
func (in *Instance) Start() error {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.closed {
		return &Error{Kind: ErrClosed, Msg: "mmapfs trace: start tracing " + in.name}
	}
	if in.started {
		return nil
	}
	if err := in.write("tracing_on", "1"); err != nil {
		return err
	}
	in.started = true
	return nil
}

// stop turns tracing off.
func (in *Instance) stop() error {
	in.mu.Lock()
	defer in.mu.Unlock()
	if err := in.write("tracing_on", "0"); err != nil {
		return err
	}
	in.started = false
	return nil
}

// pollInterval is how often Run wakes on an idle pipe to read the
// per-CPU stats.
const pollInterval = time.Second

// drainSettle is how long Run waits after turning tracing off and
// emptying the pipe before it empties it again, for events other CPUs
// were writing as tracing went off.
const drainSettle = 10 * time.Millisecond

// Run starts tracing (Start) and calls fn for each event as it arrives,
// in the trace pipe's order (time order, merged across CPUs). fn must
// not keep the *Event past its return: it is reused. When ctx is done Run
// turns tracing off, reads what is still buffered, and returns nil. It
// returns an error, with tracing left on, when the pipe cannot be read
// or a line of it cannot be parsed. One Run at a time.
func (in *Instance) Run(ctx context.Context, fn func(*Event)) error {
	in.mu.Lock()
	switch {
	case in.closed:
		in.mu.Unlock()
		return &Error{Kind: ErrClosed, Msg: "mmapfs trace: read " + in.name}
	case in.running:
		in.mu.Unlock()
		return errors.New("mmapfs trace: Run called while another Run of " + in.name + " runs")
	}
	in.running = true
	in.mu.Unlock()
	defer func() {
		in.mu.Lock()
		in.running = false
		in.mu.Unlock()
	}()
	if err := in.Start(); err != nil {
		return err
	}

	wake, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		return fmt.Errorf("mmapfs trace: eventfd: %w", err)
	}
	defer unix.Close(wake)
	woken := make(chan struct{})
	stopWake := context.AfterFunc(ctx, func() {
		defer close(woken)
		var one [8]byte
		binary.NativeEndian.PutUint64(one[:], 1)
		// It cannot fail: the counter is far from overflow and the
		// fd is open until this function has returned.
		_, _ = unix.Write(wake, one[:])
	})
	defer func() {
		if !stopWake() {
			<-woken // the AfterFunc ran or is running: let it finish with wake
		}
	}()

	r := reader{in: in, p: newParser(), fn: fn, buf: make([]byte, 64<<10)}
	lastStats := time.Now()
	for {
		empty, err := r.read()
		if err != nil {
			return err
		}
		if time.Since(lastStats) >= pollInterval {
			if err := in.readStats(); err != nil {
				return err
			}
			lastStats = time.Now()
		}
		if ctx.Err() != nil {
			break
		}
		if !empty {
			continue
		}
		fds := []unix.PollFd{{Fd: int32(in.pipe), Events: unix.POLLIN}, {Fd: int32(wake), Events: unix.POLLIN}}
		if _, err := unix.Poll(fds, int(pollInterval/time.Millisecond)); err != nil && err != unix.EINTR {
			return fmt.Errorf("mmapfs trace: poll %s: %w", filepath.Join(in.dir, "trace_pipe"), err)
		}
	}
	// Off, then empty the pipe, wait for writers that passed the check
	// before it went off, and empty it again.
	if err := in.stop(); err != nil {
		return err
	}
	for pass := 0; pass < 2; pass++ {
		if pass > 0 {
			time.Sleep(drainSettle)
		}
		for {
			empty, err := r.read()
			if err != nil {
				return err
			}
			if empty {
				break
			}
		}
	}
	return in.readStats()
}

// reader is Run's state: the parser, the reused Event, and the bytes
// read but not yet parsed.
type reader struct {
	in  *Instance
	p   *parser
	fn  func(*Event)
	ev  Event
	buf []byte
	n   int // buf[:n] holds the start of a line not yet complete
}

// read does one read of the pipe and handles its complete lines; empty
// says the pipe had nothing.
func (r *reader) read() (empty bool, err error) {
	if r.n == len(r.buf) {
		return false, fmt.Errorf("mmapfs trace: a trace line longer than %d bytes: %.200q", len(r.buf), r.buf)
	}
	var before unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &before) // it cannot fail for this clock
	n, err := unix.Read(r.in.pipe, r.buf[r.n:])
	switch {
	case err == unix.EINTR:
		return false, nil
	case err == unix.EAGAIN || (err == nil && n == 0):
		// Empty: everything recorded before the read was delivered
		// (but for an event another CPU was writing just then, which
		// a few milliseconds of margin covers).
		r.in.caughtUp.Store(before.Nano() - caughtUpMargin)
		return true, nil
	case err != nil:
		return false, fmt.Errorf("mmapfs trace: read %s: %w", filepath.Join(r.in.dir, "trace_pipe"), err)
	}
	data := r.buf[:r.n+n]
	for {
		i := bytes.IndexByte(data, '\n')
		if i < 0 {
			break
		}
		if err := r.line(data[:i]); err != nil {
			return false, err
		}
		data = data[i+1:]
	}
	r.n = copy(r.buf, data)
	return false, nil
}

// line handles one line.
func (r *reader) line(b []byte) error {
	if len(b) == 0 {
		return nil
	}
	if r.in.rawLine != nil {
		r.in.rawLine(b)
	}
	t, err := r.p.parseLine(b, &r.ev)
	if err != nil {
		return fmt.Errorf("mmapfs trace: %w", err)
	}
	switch t {
	case lineLost:
		if r.p.lostCPU >= 0 && r.p.lostCPU < len(r.in.cpus) {
			r.in.cpus[r.p.lostCPU].lines.Add(r.p.lost)
		} else {
			r.in.lostOther.Add(r.p.lost)
		}
	case lineEvent:
		r.in.seen.Add(1)
		r.fn(&r.ev)
	}
	return nil
}

// readStats reads each CPU's per_cpu/cpuN/stats into cpus.
func (in *Instance) readStats() error {
	for i := range in.cpus {
		p := filepath.Join(in.dir, "per_cpu", "cpu"+strconv.Itoa(i), "stats")
		b, err := os.ReadFile(p)
		if errors.Is(err, fs.ErrNotExist) {
			continue // a CPU number with no directory (a hole in the possible CPUs)
		}
		if err != nil {
			return fmt.Errorf("mmapfs trace: read lost-event counts: %w", err)
		}
		var n uint64
		for _, line := range strings.Split(string(b), "\n") {
			k, v, ok := strings.Cut(line, ":")
			if !ok {
				continue
			}
			switch k {
			case "overrun", "commit overrun", "dropped events":
				c, err := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
				if err != nil {
					return fmt.Errorf("mmapfs trace: %s: %q: %w", p, line, err)
				}
				n += c
			}
		}
		in.cpus[i].stats.Store(n)
	}
	return nil
}

// Close turns tracing off, disables the events, closes the pipe and
// removes the instance. It is idempotent, and works whether Run ran or
// not; it fails while a Run runs (cancel Run's context and wait for it
// first).
func (in *Instance) Close() error {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.removed {
		return nil
	}
	if in.running {
		return errors.New("mmapfs trace: Close of " + in.name + " while Run runs: cancel Run's context first")
	}
	var errs []error
	if !in.closed {
		if err := in.write("tracing_on", "0"); err != nil {
			errs = append(errs, err)
		}
		in.started = false
		for _, s := range in.events {
			if err := writeFile(in.eventFile(s, "enable"), "0"); err != nil {
				errs = append(errs, fmt.Errorf("mmapfs trace: disable %s: %w", s, err))
			}
		}
		if err := in.readStats(); err != nil {
			errs = append(errs, err)
		}
		if in.pipe >= 0 {
			// The instance cannot be removed (EBUSY) while its pipe
			// is open.
			if err := unix.Close(in.pipe); err != nil {
				errs = append(errs, fmt.Errorf("mmapfs trace: close %s/trace_pipe: %w", in.dir, err))
			}
			in.pipe = -1
		}
		in.closed = true
	}
	if err := in.removeLocked(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// removeLocked removes the instance directory (the kernel frees its
// buffers and events with it). in.mu is held, or in is not yet shared.
func (in *Instance) removeLocked() error {
	if err := unix.Rmdir(in.dir); err != nil && err != unix.ENOENT {
		return &Error{Msg: "mmapfs trace: remove the trace instance", Err: &fs.PathError{Op: "rmdir", Path: in.dir, Err: err}}
	}
	in.removed = true
	return nil
}
