package integration

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mmapfs/mmapfs/internal/procstat"
)

// Bounds of every wait in the harness.
const (
	mountTimeout = 10 * time.Second // until the daemon says it is serving
	stopTimeout  = 10 * time.Second // from SIGTERM to exit
	killTimeout  = 5 * time.Second  // from SIGKILL to exit
	pollInterval = 5 * time.Millisecond
)

// mount is one mmapfs daemon serving store at mnt. It survives restarts:
// remount and kill followed by start run a new daemon on the same store and
// mountpoint, and the output of every daemon goes to the same buffer.
type mount struct {
	store, mnt string
	flags      []string
	cred       *syscall.Credential // the daemon runs as this user; nil: as the test

	out    *syncBuffer // stdout and stderr of every daemon run so far
	starts int         // daemons started so far
	conn   string      // FUSE connection of the last mount, as named in fusectl

	mu   sync.Mutex
	d    *daemon // the current (or last) daemon; nil before the first start
	down bool    // the last daemon was stopped or killed on purpose
}

// daemon is one run of the binary.
type daemon struct {
	cmd  *exec.Cmd
	done chan struct{} // closed once the process has exited and been reaped
	err  error         // from cmd.Wait; read only after done is closed
}

// startDaemon starts cmd, a run of the binary, and reaps it when it exits.
func startDaemon(t testing.TB, cmd *exec.Cmd) *daemon {
	t.Helper()
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", binPath, err)
	}
	d := &daemon{cmd: cmd, done: make(chan struct{})}
	go func() {
		d.err = cmd.Wait()
		close(d.done)
	}()
	return d
}

func (d *daemon) exited() bool {
	select {
	case <-d.done:
		return true
	default:
		return false
	}
}

// waitExit waits up to timeout for the daemon to exit.
func (d *daemon) waitExit(timeout time.Duration) bool {
	select {
	case <-d.done:
		return true
	case <-time.After(timeout):
		return false
	}
}

// live holds every mount not yet cleaned up, for the last-resort sweep in
// TestMain.
var live = struct {
	sync.Mutex
	m map[*mount]bool
}{m: map[*mount]bool{}}

// startMount mounts the daemon on a fresh store and mountpoint and registers
// a cleanup that stops it. flags go before the two paths.
func startMount(t testing.TB, flags ...string) *mount {
	t.Helper()
	return startMountAt(t, t.TempDir(), t.TempDir(), flags...)
}

// startMountAt is startMount with the store and mountpoint chosen by the
// caller.
func startMountAt(t testing.TB, store, mnt string, flags ...string) *mount {
	t.Helper()
	return startMountAs(t, nil, store, mnt, flags...)
}

// startMountAs is startMountAt with the daemon run as cred's user (nil:
// as the test), which must be able to run binPath and use store and mnt.
func startMountAs(t testing.TB, cred *syscall.Credential, store, mnt string, flags ...string) *mount {
	t.Helper()
	m := &mount{store: store, mnt: mnt, flags: flags, cred: cred, out: &syncBuffer{}}
	live.Lock()
	live.m[m] = true
	live.Unlock()
	watchdogWatch(mnt)
	// Registered before the start, so that a start that fails half way is
	// cleaned up too. t.TempDir registered its own cleanup earlier, so the
	// directories are removed after the unmount.
	t.Cleanup(func() { m.cleanup(t) })
	m.start(t)
	return m
}

// args returns the command line of the daemon.
func (m *mount) args() []string {
	if loopbackMode {
		// loopback [flags] MOUNTPOINT ORIGINAL
		return append(append([]string{}, m.flags...), m.mnt, m.store)
	}
	return append(append(append([]string{"mount"}, suiteTransportFlags()...), m.flags...), m.store, m.mnt)
}

// start runs a new daemon and waits until the mountpoint is mounted.
func (m *mount) start(t testing.TB) {
	t.Helper()
	if mounted(m.mnt) {
		t.Fatalf("start: %s is already mounted", m.mnt)
	}
	args := m.args()
	fmt.Fprintf(m.out, "=== %s %s\n", binPath, strings.Join(args, " "))
	cmd := daemonCommand(args...)
	if m.cred != nil {
		// The trampoline is this test binary, which another user may
		// not run: start the daemon directly, as that user.
		cmd = exec.Command(binPath, args...)
		cmd.Env = append(os.Environ(), "GORACE=atexit_sleep_ms=100")
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Credential: m.cred}
		cmd.WaitDelay = 2 * time.Second
	}
	cmd.Stdout = m.out
	cmd.Stderr = m.out
	d := startDaemon(t, cmd)
	m.mu.Lock()
	m.d = d
	m.down = false
	m.mu.Unlock()

	m.starts++
	deadline := time.Now().Add(mountTimeout)
	for !m.ready() {
		if d.exited() {
			t.Fatalf("daemon exited before %s was mounted: %v\n%s", m.mnt, d.err, m.out)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not mounted %v after starting the daemon\n%s", m.mnt, mountTimeout, m.out)
		}
		time.Sleep(pollInterval)
	}
	if e, ok := mountInfo(m.mnt); ok {
		m.mu.Lock()
		m.conn = e.fuseConn()
		m.mu.Unlock()
	}
}

// ready reports whether the daemon is ready: it has said so. mmapfs logs
// "serving STORE at MOUNTPOINT (" once the mount is fully usable (its
// start-up on the mount is done); the loopback says "Mounted!". A mount that
// merely shows in mountinfo may not have answered INIT yet. The mountpoint
// must be mounted too (a daemon that said so and was then unmounted is not
// ready).
func (m *mount) ready() bool {
	if loopbackMode {
		if strings.Count(m.out.String(), "Mounted!") < m.starts {
			return false
		}
	} else if strings.Count(m.out.String(), servingLine(m.mnt)) < m.starts {
		return false
	}
	return mounted(m.mnt)
}

// servingLine is what the daemon's ready line holds for mountpoint mnt.
func servingLine(mnt string) string { return " at " + mnt + " (writeback policy " }

// pid returns the process id of the running daemon.
func (m *mount) pid() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.d.cmd.Process.Pid
}

// stop sends SIGTERM and requires that the daemon exits 0 within
// stopTimeout and that the mountpoint is unmounted.
func (m *mount) stop(t testing.TB) {
	t.Helper()
	m.mu.Lock()
	d := m.d
	m.mu.Unlock()
	if d == nil {
		t.Fatalf("stop: no daemon was started")
	}
	if d.exited() {
		t.Fatalf("stop: the daemon is not running (exit: %v)\n%s", d.err, m.out)
	}
	m.mu.Lock()
	m.down = true
	m.mu.Unlock()
	// A child this process forks (another test starting a daemon) holds a
	// copy of every descriptor of ours, files on this mount included,
	// until it execs: an unmount then fails with EBUSY and the daemon
	// keeps serving. Let no fork happen from the SIGTERM to the exit (a
	// fork in progress holds ForkLock until its child has exec'd). Not
	// for the loopback, which is stopped with fusermount3: a fork.
	if !loopbackMode {
		syscall.ForkLock.RLock()
		defer syscall.ForkLock.RUnlock()
	}
	if err := m.terminate(d); err != nil {
		t.Fatalf("stop: %v", err)
	}
	m.waitGone(t, d, "SIGTERM")
}

// waitGone requires that the daemon d exits 0 within stopTimeout after
// what (SIGTERM, a power cut) and that the mountpoint is unmounted.
func (m *mount) waitGone(t testing.TB, d *daemon, what string) {
	t.Helper()
	if !d.waitExit(stopTimeout) {
		t.Fatalf("daemon still running %v after %s\n%s", stopTimeout, what, m.out)
	}
	if d.err != nil {
		t.Fatalf("daemon exit after %s: %v, want exit status 0\n%s", what, d.err, m.out)
	}
	if mounted(m.mnt) {
		t.Fatalf("%s still mounted after the daemon exited 0 (after %s)\n%s", m.mnt, what, m.out)
	}
}

// terminate asks the daemon to unmount and exit: SIGTERM. The loopback
// installs its signal handler only after it has mounted, so a SIGTERM right
// after the mount kills it; it is stopped by unmounting instead.
func (m *mount) terminate(d *daemon) error {
	if loopbackMode {
		// Retry as go-fuse's Unmount does: a process forked meanwhile
		// holds the mount's open files until it execs.
		var err error
		var out []byte
		for delay, try := time.Duration(0), 0; try < 5; try++ {
			if out, err = exec.Command("fusermount3", "-u", m.mnt).CombinedOutput(); err == nil {
				return nil
			}
			delay = 2*delay + 5*time.Millisecond
			time.Sleep(delay)
		}
		return fmt.Errorf("fusermount3 -u %s: %v: %s", m.mnt, err, out)
	}
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		return fmt.Errorf("SIGTERM: %w", err)
	}
	return nil
}

// remount stops the daemon cleanly and starts a new one on the same store
// and mountpoint.
func (m *mount) remount(t testing.TB) {
	t.Helper()
	m.stop(t)
	m.start(t)
}

// kill sends SIGKILL and waits for the daemon to die. The dead mount stays
// mounted: the caller unmounts it (or the cleanup does).
func (m *mount) kill(t testing.TB) {
	t.Helper()
	m.mu.Lock()
	d := m.d
	m.down = true
	m.mu.Unlock()
	if err := m.killDaemon(d); err != nil {
		t.Fatal(err)
	}
}

// killDaemon sends SIGKILL and waits for the daemon to die. A daemon that
// holds a file open on its own mount cannot die: its exit closes that file,
// which sends the daemon a FLUSH that nobody reads, in an uninterruptible
// wait. Then killDaemon aborts the FUSE connection (through fusectl) so that
// it can, and returns an error that shows where it was stuck.
func (m *mount) killDaemon(d *daemon) error {
	d.cmd.Process.Kill()
	if d.waitExit(killTimeout) {
		return nil
	}
	pid := d.cmd.Process.Pid
	stacks := threadStacks(pid)
	m.mu.Lock()
	conn := m.conn
	m.mu.Unlock()
	aerr := abortConnection(conn)
	if d.waitExit(killTimeout) {
		return fmt.Errorf("daemon (pid %d) still running %v after SIGKILL, stuck in the kernel; it died once its FUSE connection %s was aborted. Its threads were:\n%s",
			pid, killTimeout, conn, stacks)
	}
	return fmt.Errorf("daemon (pid %d) still running after SIGKILL and after aborting its FUSE connection %s (%v). Its threads:\n%s",
		pid, conn, aerr, stacks)
}

// threadStacks returns the state and kernel stack of every thread of pid
// that is not sleeping interruptibly, or that is but waits in FUSE: a
// client waiting for the answer to a request with no signal pending
// sleeps interruptibly (request_wait_answer), and it is the thread a
// hung mount leaves.
func threadStacks(pid int) string {
	var b strings.Builder
	tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	for _, task := range tasks {
		dir := fmt.Sprintf("/proc/%d/task/%s", pid, task.Name())
		st, err := procstat.Read(dir + "/stat")
		if err != nil {
			fmt.Fprintf(&b, "thread %s: %v\n", task.Name(), err)
			continue
		}
		stack, _ := os.ReadFile(dir + "/stack")
		// (Not a thread that waits for the kernel's next request: the
		// daemon's readers of /dev/fuse.)
		if st.State == 'S' && (!bytes.Contains(stack, []byte("fuse_")) || bytes.Contains(stack, []byte("fuse_dev_do_read"))) {
			continue
		}
		fmt.Fprintf(&b, "thread %s, state %c:\n%s", task.Name(), st.State, stack)
	}
	return b.String()
}

// abortConnection aborts the FUSE connection conn (a directory name of
// fusectl), mounting fusectl on a temporary directory for the purpose.
func abortConnection(conn string) error {
	if conn == "" {
		return errors.New("FUSE connection unknown")
	}
	dir, err := os.MkdirTemp("", "mmapfs-fusectl-")
	if err != nil {
		return err
	}
	defer os.Remove(dir)
	if err := unix.Mount("fusectl", dir, "fusectl", 0, ""); err != nil {
		return fmt.Errorf("mount fusectl: %w", err)
	}
	defer unix.Unmount(dir, 0)
	return os.WriteFile(dir+"/"+conn+"/abort", []byte("1"), 0)
}

// cleanup runs at the end of the test whatever happened. A daemon that does
// not stop cleanly fails the test (unless it was killed on purpose); either
// way nothing is left running or mounted.
func (m *mount) cleanup(t testing.TB) {
	defer func() {
		live.Lock()
		delete(live.m, m)
		live.Unlock()
	}()
	m.mu.Lock()
	d, down := m.d, m.down
	m.mu.Unlock()
	if d != nil && !d.exited() {
		if err := m.terminate(d); err != nil {
			t.Errorf("cleanup: %v", err)
		}
		switch {
		case !d.waitExit(stopTimeout):
			t.Errorf("cleanup: daemon still running %v after SIGTERM; killing it", stopTimeout)
			if err := m.killDaemon(d); err != nil {
				t.Errorf("cleanup: %v", err)
			}
		case d.err != nil:
			t.Errorf("cleanup: daemon exit after SIGTERM: %v, want exit status 0", d.err)
		case mounted(m.mnt):
			t.Errorf("cleanup: %s still mounted after the daemon exited 0", m.mnt)
		}
	} else if d != nil && !down && !t.Failed() {
		t.Errorf("cleanup: the daemon had exited on its own: %v", d.err)
	}
	if err := forceUnmount(m.mnt); err != nil {
		t.Errorf("cleanup: %v", err)
	} else {
		watchdogForget(m.mnt)
	}
	if t.Failed() {
		t.Logf("daemon output:\n%s", m.out)
	}
}

// sweepDaemons kills and unmounts whatever the cleanups missed. It returns
// how many mounts it found.
func sweepDaemons() int {
	live.Lock()
	defer live.Unlock()
	n := 0
	for m := range live.m {
		n++
		if d := m.d; d != nil && !d.exited() {
			if err := m.killDaemon(d); err != nil {
				fmt.Println(err)
			}
		}
		if err := forceUnmount(m.mnt); err != nil {
			fmt.Println(err)
		}
	}
	return n
}

// forceUnmount detaches whatever is mounted at mnt (repeatedly, in case
// mounts are stacked).
func forceUnmount(mnt string) error {
	for i := 0; i < 5 && mounted(mnt); i++ {
		if err := unix.Unmount(mnt, unix.MNT_DETACH); err != nil {
			if out, err2 := exec.Command("fusermount3", "-u", "-z", mnt).CombinedOutput(); err2 != nil {
				return fmt.Errorf("unmount %s: %v; fusermount3 -u -z: %v: %s", mnt, err, err2, out)
			}
		}
	}
	if mounted(mnt) {
		return fmt.Errorf("%s is still mounted", mnt)
	}
	return nil
}

// mountEntry is a line of /proc/self/mountinfo.
type mountEntry struct {
	mountPoint, fsType, source string
	dev                        string // major:minor
}

// fuseConn returns the name of the mount's FUSE connection in fusectl: the
// kernel's dev_t of the superblock, in decimal.
func (e mountEntry) fuseConn() string {
	major, minor, ok := strings.Cut(e.dev, ":")
	if !ok {
		return ""
	}
	mjr, err1 := strconv.ParseUint(major, 10, 32)
	mnr, err2 := strconv.ParseUint(minor, 10, 32)
	if err1 != nil || err2 != nil {
		return ""
	}
	return strconv.FormatUint(mjr<<20|mnr, 10)
}

// mountInfo returns the topmost mount at mnt.
func mountInfo(mnt string) (mountEntry, bool) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		panic(err)
	}
	var found mountEntry
	ok := false
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		// 36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
		fields := strings.Fields(sc.Text())
		sep := -1
		for i, f := range fields {
			if f == "-" {
				sep = i
				break
			}
		}
		if len(fields) < 5 || sep < 0 || len(fields) < sep+3 {
			continue
		}
		if unescapeMountField(fields[4]) == mnt {
			found = mountEntry{
				dev:        fields[2],
				mountPoint: mnt,
				fsType:     fields[sep+1],
				source:     unescapeMountField(fields[sep+2]),
			}
			ok = true
		}
	}
	return found, ok
}

func mounted(mnt string) bool {
	_, ok := mountInfo(mnt)
	return ok
}

// unescapeMountField undoes the octal escapes (\040 for a space) of
// /proc/self/mountinfo.
func unescapeMountField(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// syncBuffer is a bytes.Buffer safe for concurrent use.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// runResult is the outcome of a command run to completion by runBinary.
type runResult struct {
	exitCode       int // -1 if it did not exit in time
	stdout, stderr string
	elapsed        time.Duration
}

// runBinary runs the binary with args and waits up to timeout. A run that
// does not exit in time is stopped (SIGTERM, then SIGKILL). Whatever the
// run mounted on any of guard (mountpoints that were not mounted before the
// run) is unmounted.
func runBinary(t testing.TB, timeout time.Duration, guard []string, args ...string) runResult {
	t.Helper()
	return runBinaryUntil(t, timeout, guard, 0, args...)
}

// runBinaryUntil is runBinary, but with lines > 0 it also stops the run,
// the same way, once its stdout holds that many whole lines.
func runBinaryUntil(t testing.TB, timeout time.Duration, guard []string, lines int, args ...string) runResult {
	t.Helper()
	wasMounted := map[string]bool{}
	for _, g := range guard {
		wasMounted[g] = mounted(g)
		if !wasMounted[g] {
			watchdogWatch(g)
		}
	}
	var stdout, stderr syncBuffer
	cmd := daemonCommand(args...)
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	start := time.Now()
	d := startDaemon(t, cmd)
	res := runResult{exitCode: -1}
	if lines <= 0 {
		d.waitExit(timeout)
	} else {
		for deadline := start.Add(timeout); !d.exited() && strings.Count(stdout.String(), "\n") < lines && time.Now().Before(deadline); {
			time.Sleep(10 * time.Millisecond)
		}
	}
	res.elapsed = time.Since(start)
	if d.exited() {
		res.exitCode = 0
		var ee *exec.ExitError
		if errors.As(d.err, &ee) {
			res.exitCode = ee.ExitCode()
		} else if d.err != nil {
			t.Errorf("%s %s: %v", binPath, strings.Join(args, " "), d.err)
		}
	} else {
		cmd.Process.Signal(syscall.SIGTERM)
		if !d.waitExit(stopTimeout) {
			cmd.Process.Kill()
			d.waitExit(killTimeout)
		}
	}
	for _, g := range guard {
		if wasMounted[g] {
			continue
		}
		if mounted(g) {
			t.Errorf("%s %s left %s mounted", binPath, strings.Join(args, " "), g)
		}
		if err := forceUnmount(g); err != nil {
			t.Error(err)
		} else {
			watchdogForget(g)
		}
	}
	res.stdout, res.stderr = stdout.String(), stderr.String()
	return res
}
