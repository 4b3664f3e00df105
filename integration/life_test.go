package integration

import (
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The daemon's life: its start-up, its signals, and the store lock.

// TestSecondSignalAfterUnmount sends two SIGTERMs (or SIGINTs) at once, as
// `kill -TERM P; kill -TERM P`, GNU timeout or a double Ctrl-C do. The first
// unmounts cleanly; the second must not turn the clean exit into an error
// ("detaching ...: invalid argument", exit 1, the store never said synced).
func TestSecondSignalAfterUnmount(t *testing.T) {
	t.Parallel()
	skipIfLoopback(t)
	m := startMount(t)
	const rounds = 6 // the old bug lost a coin toss each time
	for i := 0; i < rounds; i++ {
		name := fmt.Sprintf("f%d", i)
		writeFile(t, filepath.Join(m.mnt, name), []byte(name))
		sig := syscall.SIGTERM
		if i%2 == 1 {
			sig = syscall.SIGINT
		}
		m.mu.Lock()
		d := m.d
		m.down = true
		m.mu.Unlock()
		// As in stop: no fork may hold a copy of a descriptor of ours
		// on the mount while it unmounts.
		syscall.ForkLock.RLock()
		err1 := d.cmd.Process.Signal(sig)
		err2 := d.cmd.Process.Signal(sig)
		if err1 != nil || err2 != nil {
			syscall.ForkLock.RUnlock()
			t.Fatalf("signals: %v, %v", err1, err2)
		}
		m.waitGone(t, d, "two "+sig.String()+" signals")
		syscall.ForkLock.RUnlock()
		if n := strings.Count(m.out.String(), "store synced"); n != i+1 {
			t.Fatalf("round %d: the daemon said \"store synced\" %d times in %d clean exits\n%s", i, n, i+1, m.out)
		}
		if got, err := os.ReadFile(filepath.Join(m.store, name)); err != nil || string(got) != name {
			t.Fatalf("blob %s after the exit: %q, %v", name, got, err)
		}
		if i < rounds-1 {
			m.start(t)
		}
	}
}

// TestNoPollHack checks that the daemon does not open a file of its own
// mount at start-up (go-fuse's poll hack): a SIGKILL while that open is in
// flight leaves the daemon in D state (see fs/fdmount.go). Its --debug log
// shows every request the kernel sent.
func TestNoPollHack(t *testing.T) {
	t.Parallel()
	skipIfLoopback(t)
	m := startMount(t, "--debug")
	m.stop(t)
	if strings.Contains(m.out.String(), ".go-fuse-epoll-hack") {
		t.Errorf("the daemon looked up a file on its own mount at start-up (go-fuse's poll hack):\n%s", m.out)
	}
}

// TestKillDuringStart kills the daemon with SIGKILL at many points of its
// start-up, from before the mount to after the ready line, and requires
// that it always dies (is reaped) within a few seconds without its FUSE
// connection being aborted, and that the store then mounts again.
func TestKillDuringStart(t *testing.T) {
	t.Parallel()
	skipIfLoopback(t)
	store, mnt := t.TempDir(), t.TempDir()
	writeFile(t, filepath.Join(store, "f"), []byte("kept"))
	watchdogWatch(mnt)
	var d *daemon
	t.Cleanup(func() {
		if d != nil && !d.exited() {
			d.cmd.Process.Kill()
			d.waitExit(killTimeout)
		}
		if err := forceUnmount(mnt); err != nil {
			t.Error(err)
		} else {
			watchdogForget(mnt)
		}
	})
	const dieTimeout = 3 * time.Second
	rnd := rand.New(rand.NewSource(time.Now().UnixNano()))
	startUp := 50 * time.Millisecond // measured on the first run
	deadline := time.Now().Add(40 * time.Second)
	for i := 0; i < 40 && (i < 10 || time.Now().Before(deadline)); i++ {
		var out syncBuffer
		cmd := daemonCommand("mount", store, mnt)
		cmd.Stdout, cmd.Stderr = &out, &out
		start := time.Now()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		d = &daemon{cmd: cmd, done: make(chan struct{})}
		go func(d *daemon) {
			d.err = cmd.Wait()
			close(d.done)
		}(d)
		if i == 0 {
			// The first run shows how long a start takes here.
			for !strings.Contains(out.String(), servingLine(mnt)) && !d.exited() && time.Since(start) < mountTimeout {
				time.Sleep(time.Millisecond)
			}
			if !strings.Contains(out.String(), servingLine(mnt)) {
				t.Fatalf("the daemon did not get ready:\n%s", out.String())
			}
			startUp = time.Since(start)
		} else {
			// From the exec to a little after the ready line.
			time.Sleep(time.Duration(rnd.Int63n(int64(startUp) * 5 / 4)))
		}
		conn := ""
		if e, ok := mountInfo(mnt); ok {
			conn = e.fuseConn()
		}
		cmd.Process.Kill()
		if !d.waitExit(dieTimeout) {
			pid := cmd.Process.Pid
			stacks := threadStacks(pid)
			aerr := abortConnection(conn)
			d.waitExit(killTimeout)
			t.Fatalf("run %d: daemon (pid %d) still running %v after a SIGKILL %v after its start (aborting connection %q: %v); its threads:\n%s\noutput:\n%s",
				i, pid, dieTimeout, time.Since(start), conn, aerr, stacks, out.String())
		}
		if err := forceUnmount(mnt); err != nil {
			t.Fatalf("run %d: %v", i, err)
		}
	}
	m := startMountAt(t, store, mnt)
	checkBoth(t, m, "f", []byte("kept"))
	m.stop(t)
}

// TestMountWaitsForEndingDaemon: "umount MNT && mmapfs mount STORE MNT"
// while the old daemon is still ending (held here by SIGSTOP from before
// the unmount) waits for it to let go of the store, and mounts then,
// instead of refusing the store as served: umount returns before a FUSE
// daemon has synced and exited. CI's TestCheckRemount/mmapfs met this.
func TestMountWaitsForEndingDaemon(t *testing.T) {
	t.Parallel()
	skipIfLoopback(t)
	m := startMount(t)
	want := []byte("written before the remount")
	writeFile(t, filepath.Join(m.mnt, "f"), want)
	m.mu.Lock()
	old := m.d
	m.down = true
	m.mu.Unlock()
	pid := old.cmd.Process.Pid
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	var contOnce sync.Once
	cont := func() { contOnce.Do(func() { syscall.Kill(pid, syscall.SIGCONT) }) }
	t.Cleanup(cont)
	if err := syscall.Unmount(m.mnt, 0); err != nil {
		t.Fatalf("umount %s with its daemon stopped: %v", m.mnt, err)
	}
	const held = 700 * time.Millisecond
	timer := time.AfterFunc(held, cont)
	defer timer.Stop()
	start := time.Now()
	m.start(t)
	if d := time.Since(start); d < held-100*time.Millisecond {
		t.Errorf("the new daemon mounted after %v, before the old one (stopped for %v) let go of the store", d, held)
	}
	if !old.waitExit(stopTimeout) || old.err != nil {
		t.Errorf("the old daemon, after its unmount: exited %v, err %v; want exit status 0", old.exited(), old.err)
	}
	for _, line := range []string{"holds it with no mount of it (a daemon ending after its unmount, or starting); waiting up to", "let go after"} {
		if !strings.Contains(m.out.String(), line) {
			t.Errorf("the new daemon did not log %q:\n%s", line, m.out)
		}
	}
	checkBoth(t, m, "f", want)
}

// TestStoreLock checks that a store already served by a daemon is refused
// to a second one, naming the store and the first daemon's pid, that the
// first keeps working, and that a store whose daemon was killed mounts
// again (the kernel dropped the lock). --unsafe-shared-store overrides.
func TestStoreLock(t *testing.T) {
	t.Parallel()
	skipIfLoopback(t)
	m := startMount(t)
	writeFile(t, filepath.Join(m.mnt, "f"), []byte("first"))
	mnt2 := t.TempDir()
	r := runBinary(t, cliTimeout, []string{mnt2}, "mount", m.store, mnt2)
	if r.exitCode != 1 {
		t.Fatalf("second mount of %s: exit %d, want 1\nstderr: %s", m.store, r.exitCode, r.stderr)
	}
	for _, want := range []string{m.store, "already served by another mmapfs daemon", "pid " + strconv.Itoa(m.pid()), m.mnt, "--unsafe-shared-store"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("second mount's error %q does not say %q", r.stderr, want)
		}
	}
	checkBoth(t, m, "f", []byte("first"))
	writeFile(t, filepath.Join(m.mnt, "g"), []byte("still serving"))
	checkBoth(t, m, "g", []byte("still serving"))

	// The override, for a real use: a second, read-only view.
	shared := startMountAt(t, m.store, mnt2, "--unsafe-shared-store", "--read-only")
	if got, err := os.ReadFile(filepath.Join(shared.mnt, "g")); err != nil || string(got) != "still serving" {
		t.Errorf("through the shared mount: %q, %v", got, err)
	}
	if !strings.Contains(shared.out.String(), "WARNING: --unsafe-shared-store") {
		t.Errorf("the shared mount did not warn:\n%s", shared.out)
	}
	shared.stop(t)

	m.kill(t)
	if err := forceUnmount(m.mnt); err != nil {
		t.Fatal(err)
	}
	// The kernel dropped the killed daemon's lock. A daemon with the
	// override takes it shared: an ordinary one is still refused.
	shared = startMountAt(t, m.store, mnt2, "--unsafe-shared-store")
	r = runBinary(t, cliTimeout, []string{m.mnt}, "mount", m.store, m.mnt)
	if r.exitCode != 1 || !strings.Contains(r.stderr, "pid "+strconv.Itoa(shared.pid())) {
		t.Errorf("mount of a store a shared daemon serves: exit %d, stderr %q; want 1, naming pid %d", r.exitCode, r.stderr, shared.pid())
	}
	shared.stop(t)
	again := startMountAt(t, m.store, m.mnt)
	checkBoth(t, again, "f", []byte("first"))
	again.stop(t)
}

// TestMountLine checks what mountinfo shows of a mount, as go-fuse's own
// direct mount showed it: mmapfs mounts /dev/fuse itself (fs/fdmount.go)
// and must not change what users and tools see. (--read-only is "ro" in
// the superblock's options, not in the mount's: as before.)
func TestMountLine(t *testing.T) {
	t.Parallel()
	skipIfLoopback(t)
	for _, c := range []struct {
		flags             []string
		mountOpts, superO string
	}{
		{nil, "rw,nosuid,nodev,relatime", "rw,user_id=0,group_id=0,max_read=1048576"},
		{[]string{"--max-write", "0"}, "rw,nosuid,nodev,relatime", "rw,user_id=0,group_id=0,max_read=131072"},
		{[]string{"--read-only", "--max-write", "1048576", "--allow-other"}, "rw,nosuid,nodev,relatime", "ro,user_id=0,group_id=0,default_permissions,allow_other,max_read=1048576"},
	} {
		m := startMount(t, c.flags...)
		var line []string
		b, err := os.ReadFile("/proc/self/mountinfo")
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range strings.Split(string(b), "\n") {
			if f := strings.Fields(l); len(f) > 5 && unescapeMountField(f[4]) == m.mnt {
				line = f
			}
		}
		if len(line) < 10 {
			t.Fatalf("%s not in mountinfo", m.mnt)
		}
		n := len(line)
		if got := []string{line[5], line[n-3], line[n-2], line[n-1]}; got[0] != c.mountOpts || got[1] != "fuse.mmapfs" || got[2] != m.store || got[3] != c.superO {
			t.Errorf("mount %v: mountinfo shows %q, want [%s fuse.mmapfs %s %s]", c.flags, got, c.mountOpts, m.store, c.superO)
		}
		m.stop(t)
	}
}
