package integration

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mmapfs/mmapfs/fs"
)

// deadMountTimeout bounds how long a dead mount may answer with the
// io_uring teardown's errnos before it answers ENOTCONN.
const deadMountTimeout = 5 * time.Second

// uringTeardownErrnos are what the kernel answers a request made on a
// FUSE over io_uring connection whose daemon is dead but whose rings
// are not yet torn down (fs/fuse/dev_uring.c, fs/fuse/dev.c):
//
//   - ECANCELED: the request was handed to a ring entry whose task was
//     exiting (fuse_uring_send_in_task, the cancel branch: io_uring
//     runs the entry's task work as cancelled; kernels with the fix
//     "fuse: end fuse_req on io-uring cancel task work", as this one,
//     end the request there with -ECANCELED, older ones leave it to the
//     abort, which answers ECONNABORTED);
//   - ECONNABORTED: the request found no entry (the dying daemon's
//     IO_URING_F_CANCEL took them all, fuse_uring_cancel) and waited on
//     the queue until the connection was aborted, which ends it
//     (fuse_abort_conn -> fuse_uring_abort -> fuse_uring_abort_end_requests
//     -> fuse_dev_end_requests, which sets -ECONNABORTED).
//
// The abort comes when the last reference to /dev/fuse goes
// (fuse_dev_release). Under dev that is the daemon's own descriptor,
// closed as it exits, before it is reaped. Under uring every ring
// command the daemon had queued holds /dev/fuse too, and io_uring lets
// go of them in its asynchronous teardown of the dead daemon's rings
// (io_ring_exit_work), some milliseconds after the daemon is reaped
// (5-10 ms here). It is a window: once the connection is aborted,
// fc->connected is 0 and every request gets ENOTCONN (fuse_get_req),
// as under dev. Nothing the daemon does can close it: it is dead.
var uringTeardownErrnos = []syscall.Errno{unix.ECANCELED, unix.ECONNABORTED}

// deadMountAnswers stats path, on a mount whose daemon was just
// SIGKILLed and reaped, until it answers ENOTCONN. Under dev (uring
// false) the first stat must: the connection is aborted before the
// daemon is reaped. Under uring the first stats may get
// uringTeardownErrnos for a few milliseconds, and then ENOTCONN within
// deadMountTimeout.
func deadMountAnswers(t testing.TB, path string, uring bool) {
	t.Helper()
	start := time.Now()
	var seen []string
	for {
		var st unix.Stat_t
		done := make(chan error, 1)
		go func() { done <- unix.Stat(path, &st) }()
		var err error
		select {
		case err = <-done:
		case <-time.After(deadMountTimeout):
			t.Fatalf("stat %s on the dead mount still waits after %v (answers so far: %v)", path, deadMountTimeout, seen)
		}
		e := errnoOf(err)
		if e == unix.ENOTCONN {
			if len(seen) > 0 {
				t.Logf("the dead mount answered %s for %v, then ENOTCONN", strings.Join(seen, ", "), time.Since(start).Round(time.Microsecond))
			}
			return
		}
		teardown := false
		for _, te := range uringTeardownErrnos {
			teardown = teardown || e == te
		}
		if !uring || !teardown {
			t.Errorf("stat %s on the dead mount: %v, want ENOTCONN (answers before: %v)", path, err, seen)
			return
		}
		if n := len(seen); n == 0 || seen[n-1] != unix.ErrnoName(e) {
			seen = append(seen, unix.ErrnoName(e))
		}
		if time.Since(start) > deadMountTimeout {
			t.Errorf("the dead mount still answers %v after %v, want ENOTCONN once the kernel has torn the rings down (answers: %v)", err, deadMountTimeout, seen)
			return
		}
		time.Sleep(time.Millisecond)
	}
}

// detachDead takes the dead mount at mnt (its daemon killed, or its
// connection aborted) away as a user would, with umount -l, and
// requires that nothing is mounted there then.
func detachDead(t testing.TB, mnt string) {
	t.Helper()
	if out, err := exec.Command("umount", "-l", mnt).CombinedOutput(); err != nil {
		t.Fatalf("umount -l %s: %v: %s", mnt, err, out)
	}
	if mounted(mnt) {
		t.Fatalf("%s still mounted after umount -l", mnt)
	}
}

// servesOverURing says whether the mount's requests go over the rings
// (its own --transport or the suite's), from its stats.
func servesOverURing(t *testing.T, m *mount) bool {
	t.Helper()
	return !loopbackMode && transportOf(t, m.mnt).Name == "uring"
}

// TestURingKillMidRequest: SIGKILL of a daemon serving over the rings,
// with a request held in the daemon (an injected fsync delay) and
// others streaming in from both CPUs, ends the held request at once
// with ECONNABORTED (the kernel ends the requests its dying entries
// held: fuse_uring_entry_teardown -> fuse_uring_stop_fuse_req_end), the
// dead mount answers ENOTCONN once the rings are torn down (after
// uringTeardownErrnos for some milliseconds), it detaches, and the store
// mounts again over the rings with what was written before the kill.
// TestDurabilityKill checks the same under the suite's transport; this
// one runs over the rings in every run.
func TestURingKillMidRequest(t *testing.T) {
	withURing(t)
	const delay = 30 * time.Second
	rule := "op=fsync,path=held,delay=" + delay.String()
	m := startMount(t, "--transport", "uring", "--inject", rule)
	if tr := transportOf(t, m.mnt); tr.Name != "uring" {
		t.Fatalf("transport %q, want uring", tr.Name)
	}
	kept := pattern(1<<20+3, 50)
	writeFile(t, filepath.Join(m.mnt, "kept"), kept)

	f, err := os.Create(filepath.Join(m.mnt, "held"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write([]byte("held")); err != nil {
		t.Fatal(err)
	}
	held := make(chan error, 1)
	go func() { held <- f.Sync() }()
	injectLogged(t, m, rule, "fsync", "held", "delayed "+delay.String())

	// Writers on both CPUs until the mount dies under them: each answer
	// after the kill must be one the kernel gives a dead connection.
	var wg sync.WaitGroup
	var mu sync.Mutex
	var answers []error
	stop := make(chan struct{})
	for w := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var set unix.CPUSet
			set.Set(w % 2)
			unix.SchedSetaffinity(0, &set) // best effort: the goroutine's thread may change
			p := filepath.Join(m.mnt, "w"+string(rune('a'+w)))
			for {
				select {
				case <-stop:
					return
				default:
				}
				if err := os.WriteFile(p, []byte("x"), 0o644); err != nil {
					mu.Lock()
					answers = append(answers, err)
					mu.Unlock()
					return
				}
			}
		}()
	}
	time.Sleep(50 * time.Millisecond)
	start := time.Now()
	m.kill(t)
	select {
	case err := <-held:
		if !errors.Is(err, unix.ECONNABORTED) {
			t.Errorf("the fsync held in the daemon when it died: %v, want ECONNABORTED", err)
		}
		t.Logf("the held fsync ended %v after the kill", time.Since(start).Round(time.Millisecond))
	case <-time.After(deadMountTimeout):
		t.Errorf("the fsync held in the daemon still waits %v after the kill (its delay is %v)", deadMountTimeout, delay)
	}
	deadMountAnswers(t, filepath.Join(m.mnt, "kept"), true)
	close(stop)
	wg.Wait()
	for _, err := range answers {
		e := errnoOf(err)
		if e != unix.ENOTCONN && e != unix.ECONNABORTED && e != unix.ECANCELED {
			t.Errorf("a write streaming when the daemon died: %v, want ENOTCONN, ECONNABORTED or ECANCELED", err)
		}
	}
	checkContent(t, filepath.Join(m.store, "kept"), kept)
	f.Close()
	detachDead(t, m.mnt)

	m.start(t)
	if tr := transportOf(t, m.mnt); tr.Name != "uring" || len(tr.Queues) == 0 {
		t.Errorf("after the kill and a new mount: transport %+v, want uring", tr)
	}
	checkBoth(t, m, "kept", kept)
	writeFile(t, filepath.Join(m.mnt, "after"), []byte("after"))
	checkBoth(t, m, "after", []byte("after"))
	m.stop(t)
}

// runCommand runs cmd (a daemonCommand) for at most timeout and returns
// its exit status (-1: it did not exit in time and was killed) and its
// stderr.
func runCommand(t *testing.T, cmd *exec.Cmd, timeout time.Duration) (int, string) {
	t.Helper()
	var stdout, stderr syncBuffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	d := startDaemon(t, cmd)
	if !d.waitExit(timeout) {
		cmd.Process.Kill()
		d.waitExit(killTimeout)
		return -1, stderr.String()
	}
	var ee *exec.ExitError
	if errors.As(d.err, &ee) {
		return ee.ExitCode(), stderr.String()
	}
	if d.err != nil {
		t.Fatal(d.err)
	}
	return 0, stderr.String()
}

// TestURingRegisterFailure: a daemon that negotiated io_uring at INIT
// and then has its ring entries refused by the kernel (payload buffers
// smaller than the connection's largest request, through
// fs.TestURingPayloadEnv: FUSE_IO_URING_CMD_REGISTER fails with EINVAL)
// aborts the connection, detaches the mount and exits with an error
// that names the registration and its errno: nothing is left hanging
// (the kernel holds every request back until the rings are registered),
// the mountpoint is a plain directory again, and the store mounts again.
func TestURingRegisterFailure(t *testing.T) {
	withURing(t)
	_, stderr := failedRegistration(t, fs.TestURingPayloadEnv+"=4096")
	for _, want := range []string{"--transport uring", "FUSE_IO_URING_CMD_REGISTER", unix.EINVAL.Error()} {
		if !strings.Contains(stderr, want) {
			t.Errorf("the error does not say %q:\n%s", want, stderr)
		}
	}
}

// failedRegistration runs a uring daemon on a store holding f, with env
// added to its environment to make the kernel refuse its ring entries,
// and requires of it what every such failure must leave: the daemon
// exits non-zero within cliTimeout, nothing is mounted on its
// mountpoint, which is a plain directory again, and the store mounts
// there again afterwards and serves f. It returns the mountpoint and
// the daemon's output, for the caller's checks of what it says.
func failedRegistration(t *testing.T, env ...string) (mnt, stderr string) {
	t.Helper()
	store, mnt := t.TempDir(), t.TempDir()
	storeWrite(t, store, "f", []byte("before\n"))
	watchdogWatch(mnt)
	cmd := daemonCommand("mount", "--transport", "uring", store, mnt)
	cmd.Env = append(cmd.Env, env...)
	start := time.Now()
	code, stderr := runCommand(t, cmd, cliTimeout)
	if mounted(mnt) {
		t.Errorf("%s still mounted after the failed registration", mnt)
		if err := forceUnmount(mnt); err != nil {
			t.Error(err)
		}
	}
	watchdogForget(mnt)
	switch code {
	case -1:
		t.Fatalf("the daemon whose registration failed (%q) still ran %v later:\n%s", env, cliTimeout, stderr)
	case 0:
		t.Fatalf("the daemon whose registration failed (%q) exited 0:\n%s", env, stderr)
	}
	t.Logf("exit %d after %v: %s", code, time.Since(start).Round(time.Millisecond), strings.TrimSpace(stderr))
	var st unix.Stat_t
	if err := unix.Stat(mnt, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFDIR {
		t.Errorf("stat %s after the failed registration: mode %o, %v; want the plain directory", mnt, st.Mode, err)
	}
	m := startMountAt(t, store, mnt, "--transport", "uring")
	checkBoth(t, m, "f", []byte("before\n"))
	m.stop(t)
	return mnt, stderr
}

// restartOverDead starts a new daemon of m at once on the mountpoint its
// killed daemon left (m.start refuses a mounted mountpoint: here the
// daemon itself must find the dead mount and detach it), and waits until
// it serves. It returns the daemon's exit error if it exits instead.
func restartOverDead(t *testing.T, m *mount) error {
	t.Helper()
	cmd := daemonCommand(m.args()...)
	cmd.Stdout, cmd.Stderr = m.out, m.out
	d := startDaemon(t, cmd)
	m.mu.Lock()
	m.d, m.down = d, false
	m.mu.Unlock()
	m.starts++
	deadline := time.Now().Add(mountTimeout)
	for !m.ready() {
		if d.exited() {
			m.mu.Lock()
			m.down = true
			m.mu.Unlock()
			return fmt.Errorf("the daemon exited: %v", d.err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not served %v after starting the daemon\n%s", m.mnt, mountTimeout, m.out)
		}
		time.Sleep(pollInterval)
	}
	return nil
}

// TestRestartOverDeadMount: a daemon started at once on the mountpoint
// of a killed daemon finds the dead mount, detaches it and serves the
// store, over either transport. Under uring that includes the
// milliseconds in which the dead mount still answers ECANCELED or
// ECONNABORTED instead of ENOTCONN (uringTeardownErrnos), which the
// restart races: so it kills and restarts several times. (The detach
// used to be followed by an error anyway: the stat after it was checked
// through a shadowed err.)
func TestRestartOverDeadMount(t *testing.T) {
	withURing(t)
	for _, tr := range []string{"dev", "uring"} {
		t.Run(tr, func(t *testing.T) {
			m := startMount(t, "--transport", tr)
			data := []byte("kept\n")
			writeFile(t, filepath.Join(m.mnt, "f"), data)
			const restarts = 8
			for i := range restarts {
				m.kill(t)
				if err := restartOverDead(t, m); err != nil {
					t.Fatalf("restart %d over the dead mount: %v\n%s", i, err, m.out)
				}
				checkBoth(t, m, "f", data)
			}
			if n := strings.Count(m.out.String(), "holds a dead mmapfs mount"); n != restarts {
				t.Errorf("the daemon said %d times that it detached a dead mount, want %d:\n%s", n, restarts, m.out)
			}
			if got := transportOf(t, m.mnt).Name; got != tr {
				t.Errorf("transport %q after the restarts, want %s", got, tr)
			}
			m.stop(t)
		})
	}
}
