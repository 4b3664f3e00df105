package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	iofs "io/fs"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/mmapfs/mmapfs/cmd/mmapfs/ktrace"
	"github.com/mmapfs/mmapfs/cmd/mmapfs/tracereport"
	"github.com/mmapfs/mmapfs/fs"
	"github.com/mmapfs/mmapfs/fs/wire"
)

// traceFlags are the flags of mmapfs trace.
type traceFlags struct {
	duration time.Duration
	asJSON   bool
	summary  bool
	plot     string
	bufferKB int
}

func newTraceCommand() *cobra.Command {
	var f traceFlags
	cmd := &cobra.Command{
		Use:   "trace [--duration D] [--json | --summary] [--plot FILE.png] MOUNTPOINT [-- COMMAND ARGS...]",
		Short: "Show both halves of an mmapfs mount at work: the kernel's requests, their causes, and what the daemon did",
		Long: `Record, for this mount only, the kernel's own tracepoints and the daemon's
record of each request, and join them: every FUSE request the kernel sent
(op, the task that caused it, the file, offset and length, the kernel-side
latency and the daemon's service time, the blob pages the daemon faulted in,
its msyncs), the cause where the kernel tells it (a read, synchronous or
asynchronous readahead and its window, a page fault on a client mapping,
writeback of dirty pages and why, fsync, msync, close), pages entering and
leaving both page caches (the mount's and the store's), and the writers the
kernel throttled because the mount's dirty-page budget was used up.

With -- COMMAND it runs the command (with the mountpoint in $MMAPFS_MNT) and
traces for its lifetime, then exits with the command's status; otherwise it
traces until Ctrl-C or --duration. Output: a timeline, one line per request
(default); --json, one JSON object per event; --summary, per op and cause
counts, bytes and latency quantiles, readahead windows, pages per cache,
throttle pauses. --plot FILE.png also draws requests over time, the mount's
dirty bytes and the throttle pauses (needs gnuplot).

Needs root (tracefs). It uses a tracefs instance of its own, so it disturbs
no other tracer and two traces can run at once; it removes the instance on
exit, and removes instances left by a trace that was killed. It mounts
tracefs if it is not mounted, and says so. Events the kernel dropped (its
buffer filled) are counted and shown.`,
		Args: func(cmd *cobra.Command, args []string) error {
			_, _, err := traceArgs(cmd, &f, args)
			return err
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			mnt, command, err := traceArgs(cmd, &f, args)
			if err != nil {
				return err
			}
			return runTrace(cmd.OutOrStdout(), cmd.ErrOrStderr(), f, mnt, command)
		},
	}
	cmd.Flags().DurationVar(&f.duration, "duration", 0, "trace for `D` (e.g. 10s), then stop (without a command: else until Ctrl-C)")
	cmd.Flags().BoolVar(&f.asJSON, "json", false, "print one JSON object per event instead of the timeline")
	cmd.Flags().BoolVar(&f.summary, "summary", false, "print only a summary at the end: per op and cause, readahead windows, pages per cache, throttle pauses")
	cmd.Flags().StringVar(&f.plot, "plot", "", "also draw the trace into `FILE.png` (requests over time by op and cause, the mount's dirty bytes, throttle pauses; needs gnuplot)")
	cmd.Flags().IntVar(&f.bufferKB, "buffer-kb", 8192, "the kernel's trace buffer per CPU, in `KiB` (a bigger one drops fewer events)")
	return cmd
}

// traceArgs checks a trace command line and returns the mountpoint and
// the command to run ("" for none).
func traceArgs(cmd *cobra.Command, f *traceFlags, args []string) (mnt string, command []string, err error) {
	mountArgs := args
	if at := cmd.ArgsLenAtDash(); at >= 0 {
		mountArgs, command = args[:at], args[at:]
		if len(command) == 0 {
			return "", nil, &usageError{cmd: cmd, err: errors.New("nothing after --: name the command to trace (mmapfs trace MNT -- COMMAND ARGS...)")}
		}
	}
	switch {
	case len(mountArgs) == 0:
		return "", nil, &usageError{cmd: cmd, err: errors.New("name the mountpoint to trace")}
	case len(mountArgs) > 1:
		return "", nil, &usageError{cmd: cmd, err: fmt.Errorf("one mountpoint, not %d (%s); a command to run goes after --", len(mountArgs), strings.Join(mountArgs, " "))}
	case f.asJSON && f.summary:
		return "", nil, &usageError{cmd: cmd, err: errors.New("--json and --summary are two outputs: choose one")}
	case f.duration < 0:
		return "", nil, &usageError{cmd: cmd, err: fmt.Errorf("--duration %v: must not be negative", f.duration)}
	case f.bufferKB < 4 || f.bufferKB > 1<<20:
		return "", nil, &usageError{cmd: cmd, err: fmt.Errorf("--buffer-kb %d: must be between 4 and %d", f.bufferKB, 1<<20)}
	case f.plot != "" && !strings.HasSuffix(strings.ToLower(f.plot), ".png"):
		return "", nil, &usageError{cmd: cmd, err: fmt.Errorf("--plot %s: the plot is a PNG; name a FILE.png", f.plot)}
	}
	return mountArgs[0], command, nil
}

// traceMount is what a trace knows of the mount it traces.
type traceMount struct {
	dir        string // the mountpoint, absolute
	conn       uint32 // the FUSE connection: the mount's device, kernel encoding
	mountDev   uint32 // kernel encoding
	storeDev   uint32 // kernel encoding
	mountBDI   string // major:minor
	storeBDI   string // major:minor, "" when the store has no bdi of its own (tmpfs)
	store      string
	storeStDev uint64 // user-space encoding
}

// findTraceMount checks that mnt is an mmapfs mountpoint and gathers what
// a trace needs of it.
func findTraceMount(mnt string) (*traceMount, error) {
	abs, err := filepath.Abs(mnt)
	if err != nil {
		return nil, fmt.Errorf("trace: %w", err)
	}
	if r, err := filepath.EvalSymlinks(abs); err == nil {
		abs = r
	}
	at, exact, ok := mountAt(abs)
	if !ok || !exact || at.fsType != mmapfsType {
		return nil, mountError("trace", mnt, errors.New("not an mmapfs mount"))
	}
	var st unix.Stat_t
	if err := unix.Stat(abs, &st); err != nil {
		return nil, mountError("trace", mnt, err)
	}
	snap, _, err := readStats(filepath.Join(abs, fs.StatsName))
	if err != nil {
		return nil, fmt.Errorf("trace: reading the mount's figures: %w", err)
	}
	m := &traceMount{
		dir:      abs,
		conn:     ktrace.KernelDev(unix.Major(st.Dev), unix.Minor(st.Dev)),
		mountDev: ktrace.KernelDev(unix.Major(st.Dev), unix.Minor(st.Dev)),
		mountBDI: fmt.Sprintf("%d:%d", unix.Major(st.Dev), unix.Minor(st.Dev)),
		store:    snap.Store,
	}
	if snap.BDISources != nil {
		if d := snap.BDISources.Mount.Device; d != "" {
			m.mountBDI = d
		}
		m.storeBDI = snap.BDISources.Store.Device
	}
	var sst unix.Stat_t
	if err := unix.Stat(m.store, &sst); err != nil {
		return nil, fmt.Errorf("trace: the store of %s: %w", mnt, err)
	}
	m.storeStDev = sst.Dev
	m.storeDev = ktrace.KernelDev(unix.Major(sst.Dev), unix.Minor(sst.Dev))
	return m, nil
}

// storeNames maps the store's inode numbers (which the mount reports as
// its own) to paths relative to the store, walking the store: once at
// start, at the end (refresh), and again when asked for an inode it lacks
// (a file made during the trace), at most every walkEvery and never more
// than a twentieth of the time, so that a big store is not walked
// without end. A walk's cost is the CPU time of the thread that walked:
// on a busy machine (the rings' pinned threads, a traced workload on
// every core) the scheduler may hold a walk up for many times what it
// costs, and twenty times that wall-clock time left every file made
// meanwhile unnamed (the msync's WRITEs of a file just made, under
// --transport uring). An inode a walk did not find is not looked for
// again for missRetry (the store's filesystem has other files: their
// page-cache events are asked about too).
type storeNames struct {
	root string
	dev  uint64

	mu       sync.Mutex // guards the fields below
	paths    map[uint64]string
	missed   map[uint64]time.Time // inode → when a walk last missed it
	walked   time.Time            // when the last walk began
	walkCost time.Duration        // the CPU time it took (wall time if that could not be read)
}

const (
	walkEvery       = 50 * time.Millisecond
	servedWalkEvery = 5 * time.Millisecond
	missRetry       = 2 * time.Second
	maxMissed       = 1 << 16
)

func newStoreNames(root string, dev uint64) *storeNames {
	n := &storeNames{root: root, dev: dev, paths: map[uint64]string{}, missed: map[uint64]time.Time{}}
	n.walk()
	return n
}

// walk records every file of the store; n.mu held or not yet shared.
func (n *storeNames) walk() {
	// The thread's CPU clock counts this walk only if it stays on it.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	n.walked = time.Now()
	cpu0, cpuErr := threadCPU()
	defer func() {
		cpu1, err := threadCPU()
		if cpuErr != nil || err != nil {
			n.walkCost = time.Since(n.walked)
			return
		}
		n.walkCost = cpu1 - cpu0
	}()
	_ = filepath.WalkDir(n.root, func(p string, d iofs.DirEntry, err error) error {
		if err != nil {
			return nil // a file gone while walking: skip it
		}
		info, err := d.Info()
		if err != nil {
			return nil
		}
		st, ok := info.Sys().(*syscall.Stat_t)
		if !ok || st.Dev != n.dev {
			if d.IsDir() && p != n.root {
				return filepath.SkipDir
			}
			return nil
		}
		rel, err := filepath.Rel(n.root, p)
		if err != nil {
			return nil
		}
		if rel == "." {
			rel = "/"
		}
		if _, seen := n.paths[st.Ino]; !seen {
			n.paths[st.Ino] = rel
		}
		return nil
	})
}

// threadCPU returns the CPU time the calling thread has used.
func threadCPU() (time.Duration, error) {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts); err != nil {
		return 0, fmt.Errorf("reading CLOCK_THREAD_CPUTIME_ID: %w", err)
	}
	return time.Duration(ts.Nano()), nil
}

// refresh walks the store again now (at the end of a trace, so that the
// summary names the files made during it).
func (n *storeNames) refresh() {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.walk()
}

// name returns the path of the store's inode ino, a file the mount
// served, "" if unknown.
func (n *storeNames) name(ino uint64) string {
	return n.lookup(ino, servedWalkEvery, servedWalkEvery)
}

// storeName returns the path of inode ino of the store's device, "" if
// it is not a file of the store (or not known yet: it walks less often
// for these, most of which are other files of that filesystem).
func (n *storeNames) storeName(ino uint64) string { return n.lookup(ino, walkEvery, missRetry) }

// lookup returns the path of ino, walking the store again when the last
// walk is older than every (and twenty times its cost) and none missed
// ino in the last retry.
func (n *storeNames) lookup(ino uint64, every, retry time.Duration) string {
	if ino == 0 {
		return ""
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if p, ok := n.paths[ino]; ok {
		return p
	}
	if at, ok := n.missed[ino]; ok && time.Since(at) < retry {
		return ""
	}
	if time.Since(n.walked) < max(every, 20*n.walkCost) {
		return ""
	}
	n.walk()
	if p, ok := n.paths[ino]; ok {
		return p
	}
	if len(n.missed) >= maxMissed {
		clear(n.missed)
	}
	n.missed[ino] = n.walked
	return ""
}

// commOf returns the command name of process pid, "" if it is gone.
func commOf(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// daemonFeed is the daemon's side of a trace: the socket it sends its
// records to.
type daemonFeed struct {
	dir   string // private directory of the socket
	ln    *net.UnixListener
	conn  *net.UnixConn
	hello wire.TraceHello

	// reading is when records began waiting on the socket (mono ns), 0
	// while it is not waiting; drained is when a read last emptied it.
	reading, drained atomic.Int64
}

// openDaemonFeed listens on a socket of its own and asks the daemon of
// mnt to send its records there.
func openDaemonFeed(mnt string) (*daemonFeed, error) {
	dir, err := os.MkdirTemp("", "mmapfs-trace-")
	if err != nil {
		return nil, fmt.Errorf("trace: a directory for the daemon's socket: %w", err)
	}
	d := &daemonFeed{dir: dir}
	sock := filepath.Join(dir, "daemon.sock")
	d.ln, err = net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		d.close()
		return nil, fmt.Errorf("trace: listening for the daemon's records: %w", err)
	}
	// The daemon may run as another user than the trace (root): the
	// socket and its directory become the daemon's, whose uid is the
	// owner of the control file, so that it may connect and no one
	// else may.
	var ctl unix.Stat_t
	if err := unix.Stat(filepath.Join(mnt, fs.ControlName), &ctl); err != nil {
		d.close()
		return nil, mountError("trace", mnt, err)
	}
	if int(ctl.Uid) != os.Geteuid() {
		for _, p := range []string{dir, sock} {
			if err := os.Lchown(p, int(ctl.Uid), int(ctl.Gid)); err != nil {
				d.close()
				return nil, fmt.Errorf("trace: giving the daemon's socket to its user (uid %d): %w", ctl.Uid, err)
			}
		}
	}
	if _, _, err := controlAs("trace", mnt, wire.ControlTrace+" "+sock); err != nil {
		d.close()
		return nil, err
	}
	_ = d.ln.SetDeadline(time.Now().Add(10 * time.Second))
	d.conn, err = d.ln.AcceptUnix()
	if err != nil {
		d.close()
		return nil, fmt.Errorf("trace: the daemon of %s did not connect to %s: %w", mnt, sock, err)
	}
	// Connected: the socket's name is not needed any more, and removed
	// now nothing is left behind even if the trace is killed.
	d.ln.SetUnlinkOnClose(false)
	if err := os.RemoveAll(dir); err != nil {
		d.close()
		return nil, fmt.Errorf("trace: removing the daemon's socket: %w", err)
	}
	return d, nil
}

// run reads the hello line (into d.hello, before it returns) and then
// the records, calling fn for each, until the socket closes.
func (d *daemonFeed) readHello() (*bufio.Reader, error) {
	r := bufio.NewReaderSize(d.conn, 64<<10)
	_ = d.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	line, err := r.ReadBytes('\n')
	if err != nil {
		return nil, fmt.Errorf("trace: reading the daemon's first line: %w", err)
	}
	_ = d.conn.SetReadDeadline(time.Time{})
	if err := json.Unmarshal(line, &d.hello); err != nil {
		return nil, fmt.Errorf("trace: the daemon's first line %q: %w", strings.TrimSpace(string(line)), err)
	}
	return r, nil
}

// records calls fn for each record read from r (the reader of the hello
// line, which may hold the first records) until the socket closes; it
// returns nil when it was closed on our side.
func (d *daemonFeed) records(r *bufio.Reader, fn func(*wire.TraceRecord)) error {
	buf := make([]byte, 64<<10)
	var rec wire.TraceRecord
	have, _ := r.Read(buf[:r.Buffered()]) // what came with the hello line
	for {
		full := have - have%wire.TraceRecordSize
		for off := 0; off < full; off += wire.TraceRecordSize {
			if err := rec.UnmarshalBinary(buf[off : off+wire.TraceRecordSize]); err != nil {
				return fmt.Errorf("trace: %w", err)
			}
			fn(&rec)
		}
		have = copy(buf, buf[full:have])
		d.reading.Store(monoNow())
		n, err := d.conn.Read(buf[have:])
		d.reading.Store(0)
		if n > 0 && have+n < len(buf) {
			// A read that did not fill the buffer emptied the socket:
			// every record the daemon had sent is in hand.
			d.drained.Store(monoNow())
		}
		have += n
		if err != nil {
			if errors.Is(err, net.ErrClosed) || errors.Is(err, io.EOF) {
				return nil
			}
			return fmt.Errorf("trace: reading the daemon's records: %w", err)
		}
	}
}

// daemonFlushLag bounds how long after a request ends its record reaches
// the socket: the daemon sends its records in batches every 10 ms.
const daemonFlushLag = int64(20 * time.Millisecond)

// caughtUp returns a CLOCK_MONOTONIC time (ns) before which the daemon's
// record of every request that ended has been handed to fn: now (less the
// daemon's batching) while records waits on an empty socket, else when a
// read last emptied it.
func (d *daemonFeed) caughtUp() int64 {
	if d.reading.Load() != 0 {
		return monoNow() - daemonFlushLag
	}
	if t := d.drained.Load(); t != 0 {
		return t - daemonFlushLag
	}
	return 0
}

// quietFor reports whether records has waited on an empty socket for q.
func (d *daemonFeed) quietFor(q time.Duration) bool {
	t := d.reading.Load()
	return t != 0 && monoNow()-t >= int64(q)
}

// close closes the socket (the daemon stops recording for this trace)
// and removes its directory.
func (d *daemonFeed) close() {
	if d.conn != nil {
		d.conn.Close()
	}
	if d.ln != nil {
		d.ln.Close()
	}
	os.RemoveAll(d.dir)
}

// exitStatus is the exit status of a traced command that failed: mmapfs
// exits with it, printing nothing more.
type exitStatus struct{ code int }

func (e *exitStatus) Error() string { return fmt.Sprintf("exit status %d", e.code) }

// monoNow is CLOCK_MONOTONIC in ns, the clock of the kernel's events and
// the daemon's records.
func monoNow() int64 {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return ts.Nano()
}

// isTerminal reports whether f is a terminal.
func isTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// runTrace traces the mount at mnt, for the life of command if there is
// one, and writes what f asks for to out; notes and progress go to errOut.
func runTrace(out, errOut io.Writer, f traceFlags, mnt string, command []string) (err error) {
	if os.Geteuid() != 0 {
		return errors.New("trace: mmapfs trace needs root: it reads the kernel's tracepoints through tracefs, which only root may use (run it with sudo)")
	}
	m, err := findTraceMount(mnt)
	if err != nil {
		return err
	}
	if f.plot != "" {
		if _, err := exec.LookPath("gnuplot"); err != nil {
			return fmt.Errorf("trace: --plot %s needs gnuplot, which is not installed (apt-get install gnuplot-nox)", f.plot)
		}
	}
	names := newStoreNames(m.store, m.storeStDev)

	cfg := ktrace.Config{Conn: m.conn, Devs: []uint32{m.mountDev}, BDIs: []string{m.mountBDI}, Syscalls: true, BufferKB: f.bufferKB}
	if m.storeDev != m.mountDev {
		cfg.Devs = append(cfg.Devs, m.storeDev)
	}
	if m.storeBDI != "" && m.storeBDI != m.mountBDI {
		cfg.BDIs = append(cfg.BDIs, m.storeBDI)
	}
	inst, err := ktrace.Open(cfg)
	if err != nil {
		return fmt.Errorf("trace: %w", err)
	}
	defer func() {
		if cerr := inst.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("trace: removing its tracefs instance: %w", cerr)
		}
	}()
	for _, n := range inst.Notes() {
		fmt.Fprintf(errOut, "mmapfs trace: %s\n", n)
	}

	// Signals from here on end the trace, not the process, so that the
	// instance and the socket are removed.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)

	// Tracing is on before the daemon records and before the command
	// starts, so that no request of the command is seen on one side only.
	if err := inst.Start(); err != nil {
		return fmt.Errorf("trace: %w", err)
	}
	feed, err := openDaemonFeed(m.dir)
	if err != nil {
		return err
	}
	defer feed.close()
	recs, err := feed.readHello()
	if err != nil {
		return err
	}

	start := monoNow()
	col, err := newTraceCollector(out, f, m, names, feed.hello.Pid, start)
	if err != nil {
		return err
	}

	var wg sync.WaitGroup
	kctx, stopKernel := context.WithCancel(context.Background())
	defer stopKernel()
	var kerr, derr error
	kfailed := make(chan struct{}) // closed when the kernel's side failed
	wg.Add(1)
	go func() {
		defer wg.Done()
		kerr = inst.Run(kctx, col.Kernel)
		if kerr != nil {
			close(kfailed)
		}
	}()
	dDone := make(chan struct{})
	go func() {
		defer close(dDone)
		derr = feed.records(recs, col.Daemon)
	}()

	sampleStop := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		sampleDirty(m.mountBDI, col, inst, feed, sampleStop)
	}()
	if ef, ok := errOut.(*os.File); ok && isTerminal(ef) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			showProgress(ef, inst, col, sampleStop)
		}()
	}

	status, waitErr := waitTraced(errOut, m.dir, f.duration, command, sigs, kfailed)
	// The kernel answers some requests of a command after it exited (the
	// RELEASE of its last files is sent in the background): give them a
	// moment to end, and the daemon's records to come.
	for deadline := time.Now().Add(time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if _, _, pending := col.col.Counts(); pending == 0 {
			break
		}
	}

	// Stop: the kernel's side first (it drains what its buffer holds),
	// then the daemon's records of the last requests, then the output.
	stopKernel()
	close(sampleStop)
	wg.Wait()
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline) && !feed.quietFor(200*time.Millisecond); {
		time.Sleep(50 * time.Millisecond)
	}
	feed.close()
	<-dDone
	if ferr := col.Finish(inst.Lost()); ferr != nil && err == nil {
		err = ferr
	}
	switch {
	case err != nil:
	case kerr != nil:
		err = fmt.Errorf("trace: reading the kernel's events: %w", kerr)
	case derr != nil:
		err = derr
	case waitErr != nil:
		err = waitErr
	case status != 0:
		err = &exitStatus{code: status}
	}
	return err
}

// waitTraced waits for the end of the trace: the command's exit (its
// status returned), --duration, a signal, or the failure of the kernel's
// side (kfailed closed). A signal while a command
// runs is the command's too (the terminal sends it to both): the trace
// waits for the command to end.
func waitTraced(errOut io.Writer, mnt string, d time.Duration, command []string, sigs <-chan os.Signal, kfailed <-chan struct{}) (int, error) {
	var timeout <-chan time.Time
	if d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		timeout = t.C
	}
	if len(command) == 0 {
		select {
		case <-sigs:
		case <-timeout:
		case <-kfailed:
		}
		return 0, nil
	}
	c := exec.Command(command[0], command[1:]...)
	c.Stdin, c.Stdout, c.Stderr = os.Stdin, os.Stderr, os.Stderr
	c.Env = append(os.Environ(), "MMAPFS_MNT="+mnt)
	if err := c.Start(); err != nil {
		return 0, fmt.Errorf("trace: running %s: %w", command[0], err)
	}
	done := make(chan error, 1)
	go func() { done <- c.Wait() }()
	for {
		select {
		case err := <-done:
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
					return 128 + int(ws.Signal()), nil
				}
				return ee.ExitCode(), nil
			}
			if err != nil {
				return 0, fmt.Errorf("trace: %s: %w", command[0], err)
			}
			return 0, nil
		case <-timeout:
			fmt.Fprintf(errOut, "mmapfs trace: --duration is over: ending %s (pid %d)\n", command[0], c.Process.Pid)
			_ = c.Process.Signal(syscall.SIGTERM)
			timeout = nil
		case <-kfailed:
			// Nothing more can be traced: the error is said at the end.
			fmt.Fprintf(errOut, "mmapfs trace: the kernel's events can no longer be read: ending %s (pid %d)\n", command[0], c.Process.Pid)
			_ = c.Process.Signal(syscall.SIGTERM)
			kfailed = nil
		case s := <-sigs:
			// Passed on in case it came from kill(1), not the terminal.
			_ = c.Process.Signal(s)
		}
	}
}

// sampleDirty samples the mount's dirty and writeback bytes every 100 ms
// into col, and tells it how far both streams have come, until stop
// closes.
func sampleDirty(bdi string, col *traceCollector, inst *ktrace.Instance, feed *daemonFeed, stop <-chan struct{}) {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		if dirty, wb, err := fs.ReadBDIDirty(bdi); err == nil {
			col.Sample(monoNow(), uint64(dirty), uint64(wb))
		}
		// What is held is emitted in time, but a part is given up for
		// missing only once both streams are past it.
		if k, d := inst.CaughtUp(), feed.caughtUp(); k > 0 && d > 0 {
			col.col.Tick(min(k, d))
		}
		select {
		case <-stop:
			return
		case <-t.C:
		}
	}
}

// showProgress rewrites one status line on the terminal every second.
func showProgress(tty *os.File, inst *ktrace.Instance, col *traceCollector, stop <-chan struct{}) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-stop:
			fmt.Fprint(tty, "\r\033[K")
			return
		case <-t.C:
			fmt.Fprintf(tty, "\r\033[K%s", col.Progress(inst.Seen(), inst.Lost()))
		}
	}
}

// traceCollector drives the join (tracereport.Collector) and the outputs
// --json, --summary and --plot ask for.
type traceCollector struct {
	out   io.Writer
	f     traceFlags
	names *storeNames
	col   *tracereport.Collector
	tl    *tracereport.Timeline // default output; nil otherwise
	js    *tracereport.JSON     // --json; nil otherwise
	plot  *tracereport.Plot     // --plot; nil otherwise
}

func newTraceCollector(out io.Writer, f traceFlags, m *traceMount, names *storeNames, daemonPid int, start int64) (*traceCollector, error) {
	tc := &traceCollector{out: out, f: f, names: names}
	var sinks tracereport.Tee
	switch {
	case f.asJSON:
		tc.js = tracereport.NewJSON(out)
		sinks = append(sinks, tc.js)
	case !f.summary:
		tc.tl = tracereport.NewTimeline(out, 0)
		sinks = append(sinks, tc.tl)
	}
	if f.plot != "" {
		tc.plot = tracereport.NewPlot()
		sinks = append(sinks, tc.plot)
	}
	var sink tracereport.Sink = tracereport.Discard{}
	if len(sinks) > 0 {
		sink = sinks
	}
	tc.col = tracereport.NewCollector(tracereport.Mount{
		Conn:       m.conn,
		MountDev:   m.mountDev,
		StoreDev:   m.storeDev,
		BDI:        m.mountBDI,
		StoreBDI:   m.storeBDI,
		DaemonPid:  daemonPid,
		TracePid:   os.Getpid(),
		Names:      names.name,
		StoreNames: names.storeName,
		Comm:       commOf,
		Tgid:       tgidOf,
		RAPages:    readAheadPages(m.mountBDI),
		Start:      start,
	}, tracereport.Options{Sink: sink})
	return tc, nil
}

// tgidOf returns the process of thread tid, tid itself if it is gone.
func tgidOf(tid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", tid))
	if err != nil {
		return tid
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "Tgid:"); ok {
			var n int
			if _, err := fmt.Sscan(strings.TrimSpace(v), &n); err == nil {
				return n
			}
		}
	}
	return tid
}

// readAheadPages is the bdi's maximum readahead in pages, 0 if unknown.
func readAheadPages(bdi string) uint32 {
	b, err := os.ReadFile(filepath.Join("/sys/class/bdi", bdi, "read_ahead_kb"))
	if err != nil {
		return 0
	}
	var kb uint32
	if _, err := fmt.Sscan(strings.TrimSpace(string(b)), &kb); err != nil {
		return 0
	}
	return kb * 1024 / uint32(os.Getpagesize())
}

// Kernel takes one of the kernel's events.
func (tc *traceCollector) Kernel(e *ktrace.Event) { tc.col.Kernel(e) }

// Daemon takes one of the daemon's records.
func (tc *traceCollector) Daemon(r *wire.TraceRecord) { tc.col.Daemon(r) }

// Sample takes a sample of the mount's dirty and writeback bytes.
func (tc *traceCollector) Sample(t int64, dirty, writeback uint64) {
	tc.col.Sample(t, dirty, writeback)
}

// Progress is the progress line for a terminal.
func (tc *traceCollector) Progress(seen, lost uint64) string {
	return tracereport.Progress(tc.col, lost)
}

// Finish emits what is pending and writes the summary (with --summary; a
// line of what was lost after the timeline) and the plot.
func (tc *traceCollector) Finish(kernelLost uint64) error {
	tc.names.refresh()
	tc.col.Flush()
	sum := tc.col.Summary()
	sum.KernelLost = kernelLost
	var err error
	switch {
	case tc.f.summary:
		err = sum.WriteText(tc.out)
	case tc.js != nil:
		err = tc.js.Err()
		if err == nil {
			err = json.NewEncoder(tc.out).Encode(map[string]any{"type": "summary", "summary": &sum})
		}
	case tc.tl != nil:
		err = tc.tl.Err()
		if err == nil {
			_, err = fmt.Fprintf(tc.out, "# %d requests, %d kernel events (%d lost by the kernel), %d daemon records (%d lost by the daemon), %d requests missing a part\n",
				sum.Requests, sum.Events, sum.KernelLost, sum.Records, sum.DaemonLost, sum.MissingSend+sum.MissingEnd+sum.MissingDaemon)
		}
	}
	if err != nil {
		return fmt.Errorf("trace: writing the output: %w", err)
	}
	if tc.plot != nil {
		if err := tc.plot.WritePNG(tc.f.plot); err != nil {
			return fmt.Errorf("trace: --plot: %w", err)
		}
	}
	return nil
}
