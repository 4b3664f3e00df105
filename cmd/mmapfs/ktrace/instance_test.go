package ktrace

import (
	"bufio"
	"context"
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

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// helperEnv makes the test binary a helper process (TestMain) instead of
// running tests: "hold" opens an instance, prints its name and holds it
// until stdin closes; "open" tries Open and prints the error.
const helperEnv = "KTRACE_TEST_HELPER"

func TestMain(m *testing.M) {
	switch os.Getenv(helperEnv) {
	case "hold":
		os.Exit(holdHelper())
	case "open":
		_, err := Open(Config{Syscalls: true})
		fmt.Println(err)
		os.Exit(0)
	case "mountns":
		os.Exit(mountnsHelper())
	}
	code := m.Run()
	if code == 0 && os.Geteuid() == 0 {
		// No test may leave an instance of this process behind.
		if left := ourInstances(); len(left) > 0 {
			fmt.Fprintf(os.Stderr, "trace instances left behind: %v\n", left)
			for _, d := range left {
				unix.Rmdir(filepath.Join(traceRoot(), "instances", d))
			}
			code = 1
		}
	}
	os.Exit(code)
}

func holdHelper() int {
	in, err := Open(Config{Syscalls: true})
	if err != nil {
		fmt.Println("error:", err)
		return 1
	}
	fmt.Println(in.Name())
	_, _ = bufio.NewReader(os.Stdin).ReadString('\n')
	if err := in.Close(); err != nil {
		fmt.Println("error:", err)
		return 1
	}
	return 0
}

// mountnsHelper runs in a mount namespace of its own (private mounts):
// it unmounts tracefs (and debugfs, which would automount it) and opens
// an instance, which must mount tracefs again; with KTRACE_TEST_NOSYS
// it first hides /sys/kernel under an empty tmpfs, so that tracefs
// cannot be mounted. It prints the notes or the error.
func mountnsHelper() int {
	for _, d := range []string{tracefsDir, debugfsDir, "/sys/kernel/debug"} {
		for unix.Unmount(d, unix.MNT_DETACH) == nil {
		}
	}
	if os.Getenv("KTRACE_TEST_NOSYS") != "" {
		if err := unix.Mount("tmpfs", "/sys/kernel", "tmpfs", 0, "size=64k"); err != nil {
			fmt.Println("mount tmpfs:", err)
			return 1
		}
	}
	if isTracefs(tracefsDir) || isTracefs(debugfsDir) {
		fmt.Println("tracefs still mounted after unmounting it")
		return 1
	}
	in, err := Open(Config{Syscalls: true, BufferKB: 64})
	if err != nil {
		fmt.Println("error:", err)
		return 0
	}
	fmt.Println(strings.Join(in.Notes(), "\n"))
	if err := in.Close(); err != nil {
		fmt.Println("close:", err)
		return 1
	}
	return 0
}

// traceRoot is where tracefs is in this mount namespace, found as Open
// finds it: /sys/kernel/tracing, else debugfs's automount of it under
// /sys/kernel/debug/tracing (a machine may have only that one), else
// /sys/kernel/tracing, where Open will mount it.
func traceRoot() string {
	if d, _, err := findRoot("", false); err == nil && d != "" {
		return d
	}
	return tracefsDir
}

// ourInstances lists the instances named after this process.
func ourInstances() []string {
	start, err := startTime("/proc/self/stat")
	if err != nil {
		return []string{err.Error()}
	}
	prefix := fmt.Sprintf("%s%d-%d", instancePrefix, os.Getpid(), start)
	ents, _ := os.ReadDir(filepath.Join(traceRoot(), "instances"))
	var out []string
	for _, e := range ents {
		if e.Name() == prefix || strings.HasPrefix(e.Name(), prefix+"-") {
			out = append(out, e.Name())
		}
	}
	return out
}

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root for tracefs")
	}
}

// openT opens an instance that is closed, and checked gone, when the
// test ends.
func openT(t *testing.T, cfg Config) *Instance {
	t.Helper()
	in, err := Open(cfg)
	if err != nil {
		t.Fatalf("Open(%+v): %v", cfg, err)
	}
	t.Cleanup(func() {
		if err := in.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		if _, err := os.Stat(in.dir); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("instance %s still there after Close: %v", in.dir, err)
		}
	})
	return in
}

// trace is a Run in the background that keeps copies of the events.
type trace struct {
	in     *Instance
	cancel context.CancelFunc
	done   chan error
	mu     sync.Mutex
	events []Event
	lines  []string
}

// maxKept bounds the events a trace keeps (machine-wide syscalls on a
// busy machine).
const maxKept = 1 << 20

// startTrace turns tracing on and runs in in the background until stop.
func startTrace(t *testing.T, in *Instance) *trace {
	t.Helper()
	if err := in.Start(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	tr := &trace{in: in, cancel: cancel, done: make(chan error, 1)}
	in.rawLine = func(b []byte) {
		tr.mu.Lock()
		if len(tr.lines) < 100000 {
			tr.lines = append(tr.lines, string(b))
		}
		tr.mu.Unlock()
	}
	go func() {
		tr.done <- in.Run(ctx, func(e *Event) {
			tr.mu.Lock()
			if len(tr.events) < maxKept {
				tr.events = append(tr.events, *e)
			}
			tr.mu.Unlock()
		})
	}()
	t.Cleanup(func() { tr.stop(t) })
	return tr
}

// stop ends the Run and returns the events.
func (tr *trace) stop(t *testing.T) []Event {
	t.Helper()
	tr.cancel()
	select {
	case err, ok := <-tr.done:
		if ok && err != nil {
			t.Errorf("Run: %v", err)
		}
		if ok {
			close(tr.done)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return 10s after its context was canceled")
	}
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return tr.events
}

// waitFor waits until some event satisfies ok, for at most 5s.
func (tr *trace) waitFor(ok func(*Event) bool) bool { return tr.waitDoing(nil, ok) }

// waitDoing calls act and looks at the new events until one satisfies
// ok, for at most 5s.
func (tr *trace) waitDoing(act func(), ok func(*Event) bool) bool {
	next := 0
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if act != nil {
			act()
		}
		tr.mu.Lock()
		for ; next < len(tr.events); next++ {
			if ok(&tr.events[next]) {
				tr.mu.Unlock()
				return true
			}
		}
		tr.mu.Unlock()
	}
	return false
}

func (tr *trace) logLines(t *testing.T, n int) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	for i, l := range tr.lines {
		if i >= n {
			break
		}
		t.Log(l)
	}
}

// coldFile writes a file of size bytes in dir, syncs it and drops it from
// the page cache; it returns its path, kernel-encoded device and inode.
func coldFile(t *testing.T, dir string, size int) (string, uint32, uint64) {
	t.Helper()
	p := filepath.Join(dir, "f")
	buf := make([]byte, size)
	for i := range buf {
		buf[i] = byte(i*7 + i>>12)
	}
	if err := os.WriteFile(p, buf, 0o644); err != nil {
		t.Fatal(err)
	}
	dropCache(t, p)
	var st unix.Stat_t
	if err := unix.Stat(p, &st); err != nil {
		t.Fatal(err)
	}
	return p, KernelDev(unix.Major(st.Dev), unix.Minor(st.Dev)), st.Ino
}

func readSmall(t *testing.T, p string) {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 4096)
	for {
		n, err := f.Read(buf)
		if n == 0 || err != nil {
			break
		}
	}
}

func dropCache(t *testing.T, p string) {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := unix.Fdatasync(int(f.Fd())); err != nil {
		t.Fatal(err)
	}
	if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
		t.Fatal(err)
	}
}

// sink keeps the loads from a mapping that make its page faults.
var sink byte

func TestPageCacheEvents(t *testing.T) {
	needRoot(t)
	t.Parallel()
	p, dev, ino := coldFile(t, t.TempDir(), 1<<20)
	if d, err := PathDev(p); err != nil || d != dev {
		t.Fatalf("PathDev(%s) = %#x, %v, want %#x", p, d, err, dev)
	}
	if _, err := PathDev(p + ".missing"); err == nil {
		t.Error("PathDev of a missing file did not fail")
	}
	in := openT(t, Config{Devs: []uint32{dev}, BufferKB: 1024})
	other := openT(t, Config{Devs: []uint32{KernelDev(0, 1<<20-1)}, BufferKB: 64})
	if in.Name() == other.Name() {
		t.Fatalf("two instances of one process share the name %s", in.Name())
	}
	tr := startTrace(t, in)
	otr := startTrace(t, other)

	// Read in small pieces, as a sequential reader does: the first read
	// starts a readahead window, the later ones hit its marker.
	readSmall(t, p)
	mine := func(k Kind) func(*Event) bool {
		return func(e *Event) bool { return e.Kind == k && e.Ino == ino && e.Dev == dev }
	}
	for _, k := range []Kind{PageAdd, SyncReadahead, AsyncReadahead} {
		if !tr.waitFor(mine(k)) {
			tr.logLines(t, 50)
			t.Fatalf("no %v event of ino %d dev %#x after reading it cold", k, ino, dev)
		}
	}
	if !tr.waitFor(func(e *Event) bool {
		return e.Kind == SyncReadahead && e.Ino == ino && e.Index == 0 && e.RAPages > 0 && e.Comm != "" && e.Pid > 0 && e.Tgid == os.Getpid()
	}) {
		t.Error("the first read's SyncReadahead lacks index 0, ra_pages, the task, or our tgid")
	}

	// The other instance filters on a device no file has: it must have
	// seen nothing. Closing it leaves the first one tracing.
	if n := len(otr.stop(t)); n != 0 {
		t.Errorf("instance filtered on another device saw %d events", n)
	}
	if err := other.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(other.dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("closed instance still there: %v", err)
	}
	if _, err := os.Stat(in.dir); err != nil {
		t.Fatalf("closing one instance removed the other: %v", err)
	}

	// Faults on a mapping of the file, cold again.
	dropCache(t, p)
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m, err := unix.Mmap(int(f.Fd()), 0, 1<<20, unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	for off := 0; off < len(m); off += 64 << 10 {
		sink += m[off]
	}
	if err := unix.Munmap(m); err != nil {
		t.Fatal(err)
	}
	if !tr.waitFor(mine(Fault)) {
		tr.logLines(t, 50)
		t.Fatal("no Fault event after touching the mapped file")
	}
	events := tr.stop(t)
	for _, e := range events {
		if e.Dev != dev {
			t.Fatalf("event of another device passed the filter: %+v", e)
		}
	}
	if in.Seen() != uint64(len(events)) {
		t.Errorf("Seen() = %d, Run passed %d events", in.Seen(), len(events))
	}
	for i := 1; i < len(events); i++ {
		if events[i].CPU == events[i-1].CPU && events[i].Time < events[i-1].Time {
			t.Fatalf("events of CPU %d out of time order: %+v then %+v", events[i].CPU, events[i-1], events[i])
		}
	}
	var now unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &now); err != nil {
		t.Fatal(err)
	}
	if last := events[len(events)-1].Time; last > now.Nano() || now.Nano()-last > int64(time.Minute) {
		t.Errorf("last event at %d ns, CLOCK_MONOTONIC now %d: not the monotonic clock", last, now.Nano())
	}
}

// mountLoopback mounts a go-fuse loopback of a new directory and returns
// the backing directory, the mount point and the connection number.
func mountLoopback(t *testing.T) (string, string, uint32) {
	return mountLoopbackCaps(t, 0)
}

// mountLoopbackCaps is mountLoopback offering the kernel extra
// capabilities (fuse.CAP_WRITEBACK_CACHE).
func mountLoopbackCaps(t *testing.T, caps uint64) (string, string, uint32) {
	t.Helper()
	orig, mnt := t.TempDir(), t.TempDir()
	root, err := gofs.NewLoopbackRoot(orig)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := gofs.Mount(mnt, &noPassthroughNode{root.(*gofs.LoopbackNode)}, &gofs.Options{MountOptions: fuse.MountOptions{DirectMount: true, FsName: "ktrace-test", ExtraCapabilities: caps}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := srv.Unmount(); err != nil {
			t.Errorf("unmount %s: %v", mnt, err)
		}
	})
	var st unix.Stat_t
	if err := unix.Stat(mnt, &st); err != nil {
		t.Fatal(err)
	}
	if unix.Major(st.Dev) != 0 {
		t.Fatalf("FUSE mount %s has device %d:%d, want major 0", mnt, unix.Major(st.Dev), unix.Minor(st.Dev))
	}
	return orig, mnt, KernelDev(0, unix.Minor(st.Dev))
}

// noPassthroughNode is a loopback node whose files are read through the
// daemon: with FUSE passthrough (go-fuse's loopback uses it as root)
// reads would go to the backing file without a FUSE_READ.
type noPassthroughNode struct{ *gofs.LoopbackNode }

func (n *noPassthroughNode) WrapChild(ctx context.Context, ops gofs.InodeEmbedder) gofs.InodeEmbedder {
	return &noPassthroughNode{ops.(*gofs.LoopbackNode)}
}

func (n *noPassthroughNode) Open(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	fh, fl, errno := n.LoopbackNode.Open(ctx, flags)
	if errno != 0 {
		return nil, 0, errno
	}
	return noPassthroughFile{fh.(*gofs.LoopbackFile)}, fl, 0
}

// noPassthroughFile is a loopback file that declines passthrough.
type noPassthroughFile struct{ *gofs.LoopbackFile }

func (noPassthroughFile) PassthroughFd() (int, bool) { return 0, false }

const (
	fuseRead    = 15 // FUSE_READ
	fuseRelease = 18 // FUSE_RELEASE
) // FUSE_READ

func TestFuseEvents(t *testing.T) {
	needRoot(t)
	t.Parallel()
	orig, mnt, conn := mountLoopback(t)
	if err := os.WriteFile(filepath.Join(orig, "f"), make([]byte, 256<<10), 0o644); err != nil {
		t.Fatal(err)
	}
	_, _, otherConn := mountLoopback(t)
	in := openT(t, Config{Conn: conn, BufferKB: 1024})
	tr := startTrace(t, in)
	// Requests on another mount must not pass the filter.
	if _, err := os.ReadDir(filepath.Join(mnt, "..")); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(mnt, "f")); err != nil || len(b) != 256<<10 {
		t.Fatalf("read through the mount: %d bytes, %v", len(b), err)
	}
	// The file's FUSE_RELEASE is the last request, and asynchronous.
	releases := map[uint64]bool{}
	if !tr.waitFor(func(e *Event) bool {
		if e.Kind == RequestSend && e.Opcode == fuseRelease {
			releases[e.Unique] = true
		}
		return e.Kind == RequestEnd && releases[e.Unique]
	}) {
		tr.logLines(t, 50)
		t.Fatal("no end of FUSE_RELEASE after reading a file through the mount")
	}
	events := tr.stop(t)
	sent := map[uint64]Event{}
	reads := 0
	for _, e := range events {
		if e.Conn != conn {
			t.Fatalf("event of connection %d passed the filter for %d (the other mount is %d): %+v", e.Conn, conn, otherConn, e)
		}
		switch e.Kind {
		case RequestSend:
			sent[e.Unique] = e
			if e.Opcode == fuseRead {
				reads++
			}
		case RequestEnd:
			s, ok := sent[e.Unique]
			if !ok {
				t.Errorf("RequestEnd of unique %d without its RequestSend", e.Unique)
				continue
			}
			if e.Time < s.Time {
				t.Errorf("request %d ended before it was sent", e.Unique)
			}
			if s.Opcode == fuseRead && (e.Error != 0 || e.Len <= 16) {
				t.Errorf("FUSE_READ %d ended with error %d, len %d", e.Unique, e.Error, e.Len)
			}
			delete(sent, e.Unique)
		default:
			t.Errorf("unexpected event %+v", e)
		}
	}
	if reads == 0 {
		tr.logLines(t, 100)
		t.Errorf("no FUSE_READ among %d events", len(events))
	}
	if len(sent) != 0 {
		t.Errorf("%d requests sent and never ended: %v", len(sent), sent)
	}
}

// TestWritebackEvents writes through a FUSE mount with the writeback
// cache from another process (dd): the pages it dirties count against the
// mount's bdi, whose strict limit (FUSE's max_ratio 1%) throttles dd and
// has the flusher write them back.
func TestWritebackEvents(t *testing.T) {
	needRoot(t)
	t.Parallel()
	_, mnt, conn := mountLoopbackCaps(t, fuse.CAP_WRITEBACK_CACHE)
	bdi := DevName(conn)
	if dev, err := PathDev(mnt); err != nil || dev != conn || bdi != fmt.Sprintf("0:%d", conn) {
		t.Fatalf("PathDev(%s) = %d, %v; DevName %q; connection %d", mnt, dev, err, bdi, conn)
	}
	in := openT(t, Config{BDIs: []string{bdi, "no-such-bdi"}, BufferKB: 1024})
	tr := startTrace(t, in)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	dd := exec.CommandContext(ctx, "dd", "if=/dev/zero", "of="+filepath.Join(mnt, "big"), "bs=1M", "count=256", "conv=fsync")
	if out, err := dd.CombinedOutput(); err != nil {
		t.Fatalf("dd: %v: %s", err, out)
	}
	pid := dd.Process.Pid
	for _, k := range []Kind{Throttle, WritebackStart, WritebackEnd} {
		if !tr.waitFor(func(e *Event) bool { return e.Kind == k }) {
			tr.logLines(t, 30)
			t.Fatalf("no %v event of bdi %s after dd wrote 256 MiB through the writeback cache", k, bdi)
		}
	}
	events := tr.stop(t)
	var throttled, paused, written int
	last := map[int]Event{}
	for _, e := range events {
		if e.BDI != bdi {
			t.Fatalf("event of bdi %q passed the filter for %q: %+v", e.BDI, bdi, e)
		}
		switch e.Kind {
		case Throttle:
			if e.Pid != pid {
				continue
			}
			throttled++
			if e.Pause > int64(200*time.Millisecond) || e.Pause < -int64(time.Second) {
				t.Errorf("pause %v beyond the kernel's 200ms MAX_PAUSE: not converted from ms? %+v", time.Duration(e.Pause), e)
			}
			// dd slept Pause before it came back to dirty more: the
			// next throttle of it is at least that much later.
			if prev, ok := last[e.Pid]; ok && prev.Pause > 0 {
				paused++
				if gap := e.Time - prev.Time; gap < prev.Pause*9/10 {
					t.Errorf("throttled again %v after a pause of %v: Pause overstated", time.Duration(gap), time.Duration(prev.Pause))
				}
			}
			last[e.Pid] = e
			if e.Limit == 0 || e.Dirty == 0 {
				t.Errorf("throttle without limit or dirty pages: %+v", e)
			}
		case WritebackEnd:
			written += int(e.Pages)
		case WritebackStart:
			if e.Reason == "" {
				t.Errorf("writeback without a reason: %+v", e)
			}
		}
	}
	if throttled == 0 {
		t.Errorf("dd (pid %d) never throttled", pid)
	}
	if written == 0 {
		t.Errorf("writeback wrote no pages")
	}
	t.Logf("throttled %d (%d after a pause), written %d pages", throttled, paused, written)
}

func TestStaleAndLiveInstances(t *testing.T) {
	needRoot(t)
	// Not parallel: the Opens of other tests would remove the stale
	// instances this one plants before its own Open can name them.
	inst := filepath.Join(traceRoot(), "instances")

	// A live trace in another process (its Open removes stale
	// instances too, so it starts first).
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	child := exec.Command(exe)
	child.Env = append(os.Environ(), helperEnv+"=hold")
	stdin, err := child.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := child.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	childDone := false
	t.Cleanup(func() {
		if !childDone {
			child.Process.Kill()
			child.Wait()
		}
	})
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || strings.HasPrefix(line, "error") {
		t.Fatalf("helper: %q, %v", line, err)
	}
	childInst := strings.TrimSpace(line)
	t.Cleanup(func() { unix.Rmdir(filepath.Join(inst, childInst)) })

	// Then a dead process's instance, and one of this pid with another start
	// time (the pid was reused).
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	deadPid := cmd.Process.Pid
	dead := fmt.Sprintf("%s%d-123", instancePrefix, deadPid)
	start, err := startTime("/proc/self/stat")
	if err != nil {
		t.Fatal(err)
	}
	reused := fmt.Sprintf("%s%d-%d", instancePrefix, os.Getpid(), start+1)
	notOurs := "ktrace-test-not-ours"
	for _, d := range []string{dead, reused, notOurs} {
		if err := os.Mkdir(filepath.Join(inst, d), 0o700); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { unix.Rmdir(filepath.Join(inst, d)) })
	}

	in := openT(t, Config{Syscalls: true, BufferKB: 1024})
	notes := strings.Join(in.Notes(), "\n")
	for _, d := range []string{dead, reused} {
		if !strings.Contains(notes, d) {
			t.Errorf("Notes do not name the stale instance %s: %q", d, notes)
		}
		if _, err := os.Stat(filepath.Join(inst, d)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("stale instance %s not removed: %v", d, err)
		}
	}
	if !strings.Contains(notes, fmt.Sprintf("pid %d", deadPid)) {
		t.Errorf("Notes do not name the dead pid %d: %q", deadPid, notes)
	}
	for _, d := range []string{childInst, notOurs} {
		if _, err := os.Stat(filepath.Join(inst, d)); err != nil {
			t.Errorf("Open removed %s, which is not stale: %v", d, err)
		}
		if strings.Contains(notes, d) {
			t.Errorf("Notes name %s, which is not stale: %q", d, notes)
		}
	}

	// This trace sees its events while the other lives. The syscalls
	// are machine-wide and the machine busy: fsync until one is seen.
	tr := startTrace(t, in)
	f, err := os.Create(filepath.Join(t.TempDir(), "fsynced"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if !tr.waitDoing(func() {
		if err := f.Sync(); err != nil {
			t.Fatal(err)
		}
	}, func(e *Event) bool {
		return e.Kind == SyscallExit && e.Syscall == "fsync" && e.Tgid == os.Getpid() && e.Ret == 0
	}) {
		tr.logLines(t, 20)
		t.Error("no sys_exit_fsync of this process")
	}
	tr.stop(t)

	// Killed, the child leaves its instance; the next Open removes it.
	if err := child.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	child.Wait()
	childDone = true
	stdin.Close()
	if _, err := os.Stat(filepath.Join(inst, childInst)); err != nil {
		t.Fatalf("the killed trace's instance is already gone: %v", err)
	}
	in2 := openT(t, Config{Syscalls: true, BufferKB: 64})
	if notes := strings.Join(in2.Notes(), "\n"); !strings.Contains(notes, childInst) || !strings.Contains(notes, "killed") {
		t.Errorf("Notes do not name the killed trace's instance %s: %q", childInst, notes)
	}
	if _, err := os.Stat(filepath.Join(inst, childInst)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the killed trace's instance was not removed: %v", err)
	}
	if _, err := os.Stat(in.dir); err != nil {
		t.Errorf("the second Open removed the first live instance: %v", err)
	}
}

func TestCloseIdempotent(t *testing.T) {
	needRoot(t)
	t.Parallel()
	in, err := Open(Config{Syscalls: true, BufferKB: 64})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		if err := in.Close(); err != nil {
			t.Fatalf("Close #%d: %v", i+1, err)
		}
	}
	if _, err := os.Stat(in.dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("instance left after Close: %v", err)
	}
	if err := in.Run(context.Background(), func(*Event) {}); !errors.Is(err, ErrClosed) {
		t.Errorf("Run after Close: %v, want ErrClosed", err)
	}
	if err := in.Start(); !errors.Is(err, ErrClosed) {
		t.Errorf("Start after Close: %v, want ErrClosed", err)
	}

	// After a Run that returned.
	in = openT(t, Config{Syscalls: true, BufferKB: 64})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := in.Run(ctx, func(*Event) {}); err != nil {
		t.Fatal(err)
	}
	if err := in.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestCloseDuringRun(t *testing.T) {
	needRoot(t)
	t.Parallel()
	in := openT(t, Config{Syscalls: true, BufferKB: 64})
	tr := startTrace(t, in)
	time.Sleep(20 * time.Millisecond)
	for !func() bool { in.mu.Lock(); defer in.mu.Unlock(); return in.running }() {
		time.Sleep(time.Millisecond)
	}
	if err := in.Close(); err == nil || !strings.Contains(err.Error(), "while Run runs") {
		t.Errorf("Close during Run: %v, want a refusal", err)
	}
	tr.stop(t)
}

func TestMissingEvent(t *testing.T) {
	needRoot(t)
	// Not parallel: it counts this process's instances.
	before := ourInstances()
	cfg := Config{events: []eventSpec{
		{"syscalls", "sys_enter_fsync", "", "x"},
		{"fuse", "fuse_no_such_event", "", "load the fuse module"},
	}}
	in, err := Open(cfg)
	if err == nil {
		in.Close()
		t.Fatal("Open with an event the kernel lacks succeeded")
	}
	if !errors.Is(err, ErrNoEvent) || !strings.Contains(err.Error(), "the kernel has no tracepoint fuse:fuse_no_such_event") || !strings.Contains(err.Error(), "load the fuse module") {
		t.Errorf("error %q does not name the missing event and the remedy", err)
	}
	if after := ourInstances(); len(after) != len(before) {
		t.Errorf("instances before the failed Open %v, after %v", before, after)
	}
}

func TestFilterRefused(t *testing.T) {
	needRoot(t)
	// Not parallel: it counts this process's instances.
	before := ourInstances()
	cfg := Config{events: []eventSpec{
		{"syscalls", "sys_enter_fsync", "", ""},
		{"fuse", "fuse_request_send", "no_such_field == 3", ""},
	}}
	in, err := Open(cfg)
	if err == nil {
		in.Close()
		t.Fatal("Open with a bad filter succeeded")
	}
	msg := err.Error()
	if !errors.Is(err, ErrFilter) || !strings.Contains(msg, "no_such_field == 3") || !strings.Contains(msg, "fuse:fuse_request_send") || !strings.Contains(msg, "Field not found") {
		t.Errorf("error %q does not name the event, the filter and the kernel's reason", msg)
	}
	if after := ourInstances(); len(after) != len(before) {
		t.Errorf("instances before the failed Open %v, after %v", before, after)
	}
}

// TestDrainAfterStop: events recorded before Run's context was done are
// all delivered; Run turns tracing off first.
func TestDrainAfterStop(t *testing.T) {
	needRoot(t)
	t.Parallel()
	in := openT(t, Config{Syscalls: true, BufferKB: 4096})
	if err := in.Start(); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(filepath.Join(t.TempDir(), "f"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	const n = 500
	for i := 0; i < n; i++ {
		if err := unix.Fdatasync(int(f.Fd())); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	// Other tests of this process fdatasync too: count the calls on f
	// and the returns of the threads that made them.
	fd := uint64(f.Fd())
	enters, exits := 0, 0
	pending := map[int]bool{}
	if err := in.Run(ctx, func(e *Event) {
		if e.Tgid != os.Getpid() || e.Syscall != "fdatasync" {
			return
		}
		switch {
		case e.Kind == SyscallEnter && e.Arg == fd:
			enters++
			pending[e.Pid] = true
		case e.Kind == SyscallExit && pending[e.Pid]:
			exits++
			delete(pending, e.Pid)
		}
	}); err != nil {
		t.Fatal(err)
	}
	if enters != n || exits != n {
		t.Errorf("Run with its context done delivered %d enters and %d exits of %d fdatasyncs (lost %d)", enters, exits, n, in.Lost())
	}
	b, err := os.ReadFile(filepath.Join(in.dir, "tracing_on"))
	if err != nil || strings.TrimSpace(string(b)) != "0" {
		t.Errorf("tracing_on after Run: %q, %v", b, err)
	}
	// Nothing more is recorded once Run has returned.
	if err := unix.Fdatasync(int(f.Fd())); err != nil {
		t.Fatal(err)
	}
	late := 0
	if err := in.Run(ctx, func(e *Event) {
		if e.Tgid == os.Getpid() && e.Syscall == "fdatasync" && e.Arg == fd {
			late++
		}
	}); err != nil {
		t.Fatal(err)
	}
	if late != 0 {
		t.Errorf("a fdatasync after Run returned was recorded (%d events)", late)
	}
}

func TestLostEvents(t *testing.T) {
	needRoot(t)
	t.Parallel()
	in := openT(t, Config{Syscalls: true, BufferKB: 4})
	if err := in.Start(); err != nil {
		t.Fatal(err)
	}
	// A burst with nobody reading: the 4 KiB per-CPU buffer overflows.
	for i := 0; i < 20000; i++ {
		fd, err := unix.Dup(0)
		if err != nil {
			t.Fatal(err)
		}
		unix.Close(fd)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := in.Run(ctx, func(*Event) {}); err != nil {
		t.Fatal(err)
	}
	if in.Lost() < 1000 {
		t.Errorf("Lost() = %d after 20000 close calls into a 4 KiB buffer (Seen %d)", in.Lost(), in.Seen())
	}
	if in.Seen() == 0 {
		t.Error("no events seen")
	}
	t.Logf("seen %d lost %d", in.Seen(), in.Lost())
}

// runMountns runs mountnsHelper in a new mount namespace.
func runMountns(t *testing.T, env ...string) string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe)
	cmd.Env = append(append(os.Environ(), helperEnv+"=mountns"), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS} // Go makes / rprivate
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("helper in a mount namespace: %v: %s", err, out)
	}
	return string(out)
}

func TestMountsTracefs(t *testing.T) {
	needRoot(t)
	t.Parallel()
	// The helper's namespace is a copy of this one with private
	// mounts: what it unmounts and mounts leaves this one as it was.
	had := isTracefs(tracefsDir)
	if out := runMountns(t); !strings.Contains(out, "mounted tracefs at /sys/kernel/tracing") {
		t.Errorf("Open without tracefs mounted said %q, want a note that it mounted it", out)
	}
	if now := isTracefs(tracefsDir); now != had {
		t.Errorf("tracefs at %s in this namespace: %v before the helper's namespace ran, %v after", tracefsDir, had, now)
	}
}

func TestNoTracefs(t *testing.T) {
	needRoot(t)
	t.Parallel()
	out := runMountns(t, "KTRACE_TEST_NOSYS=1")
	if !strings.Contains(out, "error: tracefs is not mounted at /sys/kernel/tracing or /sys/kernel/debug/tracing and cannot be mounted") ||
		!strings.Contains(out, "mount -t tracefs nodev /sys/kernel/tracing") {
		t.Errorf("Open where tracefs cannot be mounted said %q", out)
	}
}

func TestRoot(t *testing.T) {
	needRoot(t)
	t.Parallel()
	_, err := Open(Config{Syscalls: true, Root: t.TempDir()})
	if !errors.Is(err, ErrNoTracefs) || !strings.Contains(err.Error(), "is not a tracefs mount") {
		t.Errorf("Open with Root not tracefs: %v", err)
	}
	if !isTracefs(debugfsDir) || !isTracefs(tracefsDir) {
		t.Skipf("tracefs is not mounted both at %s and at %s here", tracefsDir, debugfsDir)
	}
	in := openT(t, Config{Syscalls: true, BufferKB: 64, Root: debugfsDir})
	if _, err := os.Stat(filepath.Join(tracefsDir, "instances", in.Name())); err != nil {
		t.Errorf("instance opened under %s is not under %s: %v", debugfsDir, tracefsDir, err)
	}
}

func TestNotRoot(t *testing.T) {
	needRoot(t)
	t.Parallel()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for _, d := range []string{filepath.Dir(dir), dir} { // nobody must reach the binary
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile(exe)
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "ktrace.test")
	if err := os.WriteFile(bin, b, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), helperEnv+"=open")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("helper as nobody: %v: %s", err, out)
	}
	if !strings.Contains(string(out), "mmapfs trace needs root: tracefs") {
		t.Errorf("Open as nobody said %q", out)
	}
}
