package integration

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// What becomes of a request in the daemon, and of a client waiting,
// when the FUSE connection ends under it. Over /dev/fuse go-fuse's
// server loop cancels every request in flight when its read gets ENODEV
// (the connection aborted or unmounted): a handler waiting on its cancel
// channel, as an injected delay does, returns at once. Over the rings
// nothing of go-fuse's sees the end, and the transport cancels them
// itself (fs/uring: Transport.CancelInFlight).

// connectionEndTimeout bounds how long after its connection is aborted a
// daemon may take to exit, and a client to be answered: far less than
// the held requests' delays.
const connectionEndTimeout = 5 * time.Second

// heldDelay is the injected delay of the requests held in the daemon
// when the connection ends: a daemon that waits it out is one that did
// not cancel them.
const heldDelay = 60 * time.Second

// abortDaemon aborts m's connection through fusectl (the daemon is not
// told) and requires of its daemon what a connection's end must give:
// it exits within connectionEndTimeout, with status 0 (the store
// synced), leaving the dead mount, which detachDead then takes away. It
// returns how long the daemon took.
func abortDaemon(t *testing.T, m *mount) time.Duration {
	t.Helper()
	m.mu.Lock()
	d, conn := m.d, m.conn
	m.down = true // the daemon ends on purpose
	m.mu.Unlock()
	start := time.Now()
	if err := abortConnection(conn); err != nil {
		t.Fatalf("abort the connection %s of %s: %v", conn, m.mnt, err)
	}
	if !d.waitExit(connectionEndTimeout) {
		stacks := threadStacks(d.cmd.Process.Pid)
		t.Fatalf("the daemon still runs %v after its connection was aborted (a request held in it waits %v unless cancelled); its threads not asleep:\n%s\noutput:\n%s",
			connectionEndTimeout, heldDelay, stacks, m.out)
	}
	took := time.Since(start)
	if d.err != nil {
		t.Errorf("the daemon's exit after its connection was aborted: %v, want status 0\n%s", d.err, m.out)
	}
	detachDead(t, m.mnt)
	return took
}

// TestAbortEndsHeldRequests: an fsync and a stat's LOOKUP held in the
// daemon (an injected delay each) when the connection is aborted through fusectl
// end at once, each with the errno the kernel gives the requests of an
// aborted connection (ECONNABORTED), and the daemon exits cleanly within
// connectionEndTimeout, not after the delay: under both transports. (Over
// the rings the daemon waited out the delays: nothing cancelled the
// requests its ring entries were serving, and it waits for every entry
// to end.) The store then mounts again and holds what was written.
func TestAbortEndsHeldRequests(t *testing.T) {
	withURing(t)
	for _, tr := range []string{"dev", "uring"} {
		t.Run(tr, func(t *testing.T) {
			rules := []string{
				"op=fsync,path=held,delay=" + heldDelay.String(),
				"op=lookup,path=stat,delay=" + heldDelay.String(),
			}
			store := t.TempDir()
			storeWrite(t, store, "stat", []byte("stat\n"))
			m := startMountAt(t, store, t.TempDir(), "--transport", tr, "--inject", rules[0], "--inject", rules[1])
			if got := transportOf(t, m.mnt).Name; got != tr {
				t.Fatalf("transport %q, want %s", got, tr)
			}
			f, err := os.Create(filepath.Join(m.mnt, "held"))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if _, err := f.Write([]byte("held\n")); err != nil {
				t.Fatal(err)
			}
			fsynced := make(chan error, 1)
			go func() { fsynced <- f.Sync() }()
			injectLogged(t, m, rules[0], "fsync", "held", "delayed "+heldDelay.String())
			stated := make(chan error, 1)
			go func() {
				var st unix.Stat_t
				stated <- unix.Stat(filepath.Join(m.mnt, "stat"), &st)
			}()
			injectLogged(t, m, rules[1], "lookup", "stat", "delayed "+heldDelay.String())

			took := abortDaemon(t, m)
			t.Logf("%s: the daemon exited %v after the abort", tr, took.Round(time.Millisecond))
			for _, c := range []struct {
				what string
				ch   chan error
			}{{"fsync", fsynced}, {"stat", stated}} {
				select {
				case err := <-c.ch:
					if !errors.Is(err, unix.ECONNABORTED) {
						t.Errorf("%s: the %s held in the daemon when the connection was aborted: %v, want ECONNABORTED", tr, c.what, err)
					}
				case <-time.After(connectionEndTimeout):
					t.Errorf("%s: the %s held in the daemon still waits %v after the abort", tr, c.what, connectionEndTimeout)
				}
			}
			f.Close()
			m.start(t)
			checkBoth(t, m, "held", []byte("held\n"))
			m.stop(t)
		})
	}
}

// TestURingAbortEveryEntryBusy: with one ring entry per queue and a
// request held in the daemon on each (a lookup from a thread pinned to
// each CPU), no entry is left for the kernel to end when the connection
// is aborted: only the daemon's read of /dev/fuse (ServeDev's ENODEV)
// sees the end, and that must cancel the held requests too. The callers
// get ECONNABORTED and the daemon exits within connectionEndTimeout.
func TestURingAbortEveryEntryBusy(t *testing.T) {
	withURing(t)
	cpus := runtime.NumCPU()
	var rules []string
	for c := range cpus {
		rules = append(rules, "--inject", fmt.Sprintf("op=lookup,path=cpu%d,delay=%v", c, heldDelay))
	}
	m := startMount(t, append([]string{"--transport", "uring", "--uring-entries", "1"}, rules...)...)
	tr := transportOf(t, m.mnt)
	if tr.Name != "uring" {
		t.Fatalf("transport %q, want uring", tr.Name)
	}
	if len(tr.Queues) != cpus {
		t.Skipf("%d queues (possible CPUs) for %d online CPUs: the queues of the others have idle entries", len(tr.Queues), cpus)
	}
	looked := make(chan error, cpus)
	for c := range cpus {
		go func() {
			// The thread is given back as it was, not ended with the
			// goroutine: the daemons of this process get SIGKILL when
			// the thread that started them ends (Pdeathsig is the
			// thread's), and this one may be it.
			runtime.LockOSThread()
			var was, set unix.CPUSet
			if err := unix.SchedGetaffinity(0, &was); err != nil {
				runtime.UnlockOSThread()
				looked <- fmt.Errorf("the thread's CPUs: %w", err)
				return
			}
			set.Set(c)
			if err := unix.SchedSetaffinity(0, &set); err != nil {
				runtime.UnlockOSThread()
				looked <- fmt.Errorf("pinning to CPU %d: %w", c, err)
				return
			}
			var st unix.Stat_t
			err := unix.Stat(filepath.Join(m.mnt, fmt.Sprintf("cpu%d", c)), &st)
			if rerr := unix.SchedSetaffinity(0, &was); rerr != nil {
				// Leave the thread locked: it ends with the
				// goroutine rather than run others pinned.
				err = errors.Join(err, fmt.Errorf("unpinning from CPU %d: %w", c, rerr))
			} else {
				runtime.UnlockOSThread()
			}
			looked <- err
		}()
	}
	for c := range cpus {
		injectLogged(t, m, rules[2*c+1], "lookup", fmt.Sprintf("cpu%d", c), "delayed "+heldDelay.String())
	}
	took := abortDaemon(t, m)
	t.Logf("the daemon exited %v after the abort", took.Round(time.Millisecond))
	for range cpus {
		select {
		case err := <-looked:
			if !errors.Is(err, unix.ECONNABORTED) {
				t.Errorf("a lookup held in the daemon when the connection was aborted: %v, want ECONNABORTED", err)
			}
		case <-time.After(connectionEndTimeout):
			t.Errorf("a lookup held in the daemon still waits %v after the abort", connectionEndTimeout)
		}
	}
	if !strings.Contains(m.out.String(), "cancelling them") {
		t.Errorf("the daemon did not say it cancelled the requests it held:\n%s", m.out)
	}
}

// lockWaiter is a python3 child blocked in fcntl(F_SETLKW) for a write
// lock on a file (fcntl.lockf with LOCK_EX), waiting for a lock this
// process holds: another process's, as POSIX locks conflict only between
// processes.
type lockWaiter struct {
	cmd   *exec.Cmd
	lines chan string   // what it said after "waiting": "locked", or "error ERRNO"
	done  chan struct{} // closed once it has exited and been reaped
	err   error         // from cmd.Wait, once done is closed
}

// lockWaiterScript opens argv[1], says "waiting", takes a write lock on
// the whole file with F_SETLKW and says how that went.
const lockWaiterScript = `
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
print("waiting", flush=True)
try:
    fcntl.lockf(fd, fcntl.LOCK_EX)
except OSError as e:
    print("error", e.errno, flush=True)
    sys.exit(1)
print("locked", flush=True)
`

// holdLock takes a write lock on all of path with F_SETLK through f.
func holdLock(t *testing.T, f *os.File) {
	t.Helper()
	lk := unix.Flock_t{Type: unix.F_WRLCK}
	if err := unix.FcntlFlock(f.Fd(), unix.F_SETLK, &lk); err != nil {
		t.Fatalf("write lock on %s: %v", f.Name(), err)
	}
}

// releaseLock drops the lock holdLock took.
func releaseLock(t *testing.T, f *os.File) {
	t.Helper()
	lk := unix.Flock_t{Type: unix.F_UNLCK}
	if err := unix.FcntlFlock(f.Fd(), unix.F_SETLK, &lk); err != nil {
		t.Fatalf("unlock %s: %v", f.Name(), err)
	}
}

// startLockWaiter starts a lockWaiter on path and returns once the
// kernel shows it waiting for the lock (/proc/locks lists it as a
// blocked waiter, "->"). The test's end kills it if it still runs.
func startLockWaiter(t *testing.T, path string) *lockWaiter {
	t.Helper()
	cmd := exec.Command("python3", "-c", lockWaiterScript, path)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w := &lockWaiter{cmd: cmd, lines: make(chan string, 4), done: make(chan struct{})}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			w.lines <- sc.Text()
		}
		io.Copy(io.Discard, out)
		w.err = cmd.Wait()
		close(w.lines)
		close(w.done)
	}()
	t.Cleanup(func() {
		select {
		case <-w.done:
		default:
			cmd.Process.Kill()
			<-w.done
		}
	})
	select {
	case l := <-w.lines:
		if l != "waiting" {
			t.Fatalf("the lock waiter said %q before its F_SETLKW", l)
		}
	case <-time.After(cliTimeout):
		t.Fatalf("the lock waiter did not start in %v", cliTimeout)
	}
	pid := strconv.Itoa(cmd.Process.Pid)
	deadline := time.Now().Add(cliTimeout)
	for !blockedOnLock(t, pid) {
		if time.Now().After(deadline) {
			t.Fatalf("the lock waiter (pid %s) is not waiting for the lock %v after it said so", pid, cliTimeout)
		}
		time.Sleep(pollInterval)
	}
	return w
}

// blockedOnLock says whether /proc/locks lists pid as waiting for a
// POSIX lock.
func blockedOnLock(t *testing.T, pid string) bool {
	t.Helper()
	b, err := os.ReadFile("/proc/locks")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		// "1: -> POSIX  ADVISORY  WRITE 1234 00:2e:5 0 EOF"
		f := strings.Fields(l)
		if len(f) >= 6 && f[1] == "->" && f[2] == "POSIX" && f[5] == pid {
			return true
		}
	}
	return false
}

// stillWaiting requires that w is still blocked on its lock.
func (w *lockWaiter) stillWaiting(t *testing.T, when string) {
	t.Helper()
	select {
	case l := <-w.lines:
		t.Fatalf("the lock waiter said %q %s, want it still waiting for the lock another process holds", l, when)
	case <-w.done:
		t.Fatalf("the lock waiter exited %s (%v), want it still waiting for the lock another process holds", when, w.err)
	default:
	}
	if !blockedOnLock(t, strconv.Itoa(w.cmd.Process.Pid)) {
		t.Fatalf("the lock waiter is no longer waiting for the lock %s", when)
	}
}

// result waits, at most connectionEndTimeout, for what w says once its
// wait ends, and for its exit.
func (w *lockWaiter) result(t *testing.T) (string, error) {
	t.Helper()
	select {
	case l, ok := <-w.lines:
		if !ok {
			return "", fmt.Errorf("the lock waiter exited without a word: %v", w.err)
		}
		select {
		case <-w.done:
		case <-time.After(connectionEndTimeout):
			return l, fmt.Errorf("the lock waiter said %q and still runs %v later", l, connectionEndTimeout)
		}
		return l, w.err
	case <-time.After(connectionEndTimeout):
		return "", fmt.Errorf("the lock waiter still waits %v after the lock was released", connectionEndTimeout)
	}
}

// TestLockWaitAtConnectionEnd: a client blocked in fcntl(F_SETLKW)
// on a file of the mount, for a lock another process holds, when the
// connection ends. mmapfs leaves locks to the kernel (go-fuse's
// EnableLocks off: the kernel keeps POSIX locks of the mount itself), so
// the wait is the kernel's, on the mount's inode, and no request of it
// is in the daemon: under both transports
//
//   - the connection aborted through fusectl: the daemon exits within
//     connectionEndTimeout with status 0; the waiter goes on waiting, as
//     a lock wait does, and once the holder unlocks it gets the lock
//     (the kernel's lock table outlives the connection);
//   - SIGTERM: the daemon cannot unmount (the waiter's and the holder's
//     files are open) and keeps serving, saying so; the waiter goes on
//     waiting and gets the lock once the holder unlocks; the daemon then
//     stops as the harness asks (a second SIGTERM: a lazy detach, the
//     exit once the last file is closed).
func TestLockWaitAtConnectionEnd(t *testing.T) {
	withURing(t)
	if _, err := exec.LookPath("python3"); err != nil {
		t.Skip("needs python3 for the lock waiter")
	}
	for _, tr := range []string{"dev", "uring"} {
		for _, end := range []string{"abort", "sigterm"} {
			t.Run(tr+"/"+end, func(t *testing.T) {
				m := startMount(t, "--transport", tr)
				if got := transportOf(t, m.mnt).Name; got != tr {
					t.Fatalf("transport %q, want %s", got, tr)
				}
				path := filepath.Join(m.mnt, "locked")
				holder, err := os.Create(path)
				if err != nil {
					t.Fatal(err)
				}
				defer holder.Close()
				holdLock(t, holder)
				w := startLockWaiter(t, path)

				switch end {
				case "abort":
					took := abortDaemon(t, m)
					t.Logf("%s: the daemon exited %v after the abort", tr, took.Round(time.Millisecond))
					w.stillWaiting(t, "once the daemon had exited")
				case "sigterm":
					m.mu.Lock()
					d := m.d
					m.mu.Unlock()
					if err := m.terminate(d); err != nil {
						t.Fatal(err)
					}
					busy := "files are still open on it"
					deadline := time.Now().Add(stopTimeout)
					for !strings.Contains(m.out.String(), busy) {
						if d.exited() {
							t.Fatalf("the daemon exited on SIGTERM with files open on its mount: %v\n%s", d.err, m.out)
						}
						if time.Now().After(deadline) {
							t.Fatalf("the daemon did not say, %v after SIGTERM, that files are open on its mount\n%s", stopTimeout, m.out)
						}
						time.Sleep(pollInterval)
					}
					w.stillWaiting(t, "after the daemon's SIGTERM")
					if d.exited() {
						t.Fatalf("the daemon exited after SIGTERM with files open: %v", d.err)
					}
				}
				releaseLock(t, holder)
				l, err := w.result(t)
				if l != "locked" || err != nil {
					t.Errorf("%s/%s: the lock waiter, once the holder unlocked: %q, %v; want it to get the lock", tr, end, l, err)
				}
				holder.Close()
				if end == "sigterm" {
					m.stop(t)
				}
			})
		}
	}
}
