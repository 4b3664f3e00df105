package uring

import (
	"errors"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/mmapfs/mmapfs/internal/enableuring"
)

// withURing makes the test a user of enable_uring (on while it runs,
// put back by the last user of any process: internal/enableuring), or
// skips it where it cannot be.
func withURing(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: enable_uring and mount(2)")
	}
	u, err := enableuring.For(EnableParam).Acquire()
	if errors.Is(err, enableuring.ErrNoURing) {
		t.Skipf("no FUSE over io_uring here: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := u.Release(); err != nil {
			t.Error(err)
		}
	})
}

func TestPossibleCPUs(t *testing.T) {
	n, err := PossibleCPUs()
	if err != nil {
		t.Fatal(err)
	}
	if n < 1 {
		t.Fatalf("PossibleCPUs = %d", n)
	}
}

func TestConnectionDir(t *testing.T) {
	for dev, want := range map[string]string{"0:59": "/sys/fs/fuse/connections/59", "1:2": "/sys/fs/fuse/connections/1048578"} {
		got, err := ConnectionDir(dev)
		if err != nil || got != want {
			t.Errorf("ConnectionDir(%q) = %q, %v; want %q", dev, got, err, want)
		}
	}
	if _, err := ConnectionDir("59"); err == nil {
		t.Error("ConnectionDir(\"59\") did not fail")
	}
}

// testMount is a go-fuse loopback of a temporary directory served over
// the io_uring transport.
type testMount struct {
	dir, mnt string
	server   *fuse.Server
	tr       *Transport
}

// mountLoopback mounts a loopback of a new directory with /dev/fuse
// opened here (as fs.mountFuseFd does) and serves it over io_uring.
// payload 0 is the size the INIT reply calls for. Start's error is
// returned, with the mount made.
func mountLoopback(t *testing.T, entries, payload int) (*testMount, error) {
	t.Helper()
	return mountLoopbackWith(t, entries, payload, nil)
}

// mountLoopbackWith is mountLoopback with the rings' Handler wrapped by
// wrap (nil: go-fuse's protocol server itself).
func mountLoopbackWith(t *testing.T, entries, payload int, wrap func(Handler) Handler) (*testMount, error) {
	t.Helper()
	m := &testMount{dir: t.TempDir(), mnt: t.TempDir()}
	root, err := gofs.NewLoopbackRoot(m.dir)
	if err != nil {
		t.Fatal(err)
	}
	raw := gofs.NewNodeFS(root, &gofs.Options{})
	fd, err := unix.Open("/dev/fuse", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	data := fmt.Sprintf("fd=%d,rootmode=40000,user_id=0,group_id=0,max_read=131072", fd)
	if err := unix.Mount(m.dir, m.mnt, "fuse.uringtest", unix.MS_NOSUID|unix.MS_NODEV, data); err != nil {
		unix.Close(fd)
		t.Fatalf("mount: %v", err)
	}
	t.Cleanup(func() {
		if isMounted(m.mnt) {
			unix.Unmount(m.mnt, unix.MNT_DETACH)
		}
	})
	// No passthrough: the loopback's reads and writes are to come to
	// the daemon, over the rings.
	mo := fuse.MountOptions{Name: "uringtest", ExtraCapabilities: fuse.CAP_OVER_IO_URING, DisabledCapabilities: fuse.CAP_PASSTHROUGH, Logger: log.New(os.Stderr, "go-fuse: ", 0)}
	m.server, err = fuse.NewServer(raw, "/dev/fd/"+strconv.Itoa(fd), &mo)
	if err != nil {
		t.Fatalf("NewServer: %v", err)
	}
	go m.server.Serve()
	ps := fuse.NewProtocolServer(raw, &mo)
	reply, err := Prime(ps, m.server.KernelSettings())
	if err != nil {
		t.Fatal(err)
	}
	if !reply.IOUring() {
		t.Fatalf("INIT did not negotiate FUSE_OVER_IO_URING: flags %#x", reply.Flags)
	}
	dev := mountDev(t, m.mnt)
	conn, err := ConnectionDir(dev)
	if err != nil {
		t.Fatal(err)
	}
	queues, err := PossibleCPUs()
	if err != nil {
		t.Fatal(err)
	}
	if payload == 0 {
		payload = reply.PayloadSize()
	}
	var h Handler = ps
	if wrap != nil {
		h = wrap(ps)
	}
	m.tr, err = Start(Config{Dev: fd, Queues: queues, Entries: entries, Payload: payload, Handler: h, Connection: conn, Logger: log.New(os.Stderr, "uring: ", 0)})
	return m, err
}

func (m *testMount) unmount(t *testing.T) {
	t.Helper()
	var err error
	for try := 0; try < 10; try++ {
		if err = unix.Unmount(m.mnt, 0); !errors.Is(err, syscall.EBUSY) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("unmount: %v", err)
	}
	done := make(chan error)
	go func() {
		m.server.Wait()
		done <- m.tr.Wait()
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("transport: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the transport's entries did not end 10s after the unmount")
	}
}

func mountDev(t *testing.T, mnt string) string {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	dev := ""
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) > 4 && f[4] == mnt {
			dev = f[2]
		}
	}
	if dev == "" {
		t.Fatalf("%s is not in the mount table", mnt)
	}
	return dev
}

func isMounted(mnt string) bool {
	b, _ := os.ReadFile("/proc/self/mountinfo")
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) > 4 && f[4] == mnt {
			return true
		}
	}
	return false
}

func TestServeOverRings(t *testing.T) {
	withURing(t)
	m, err := mountLoopback(t, 2, 0)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	p := filepath.Join(m.mnt, "f")
	want := strings.Repeat("io_uring ", 20000) // 180 KB: more than one WRITE
	if err := os.WriteFile(p, []byte(want), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != want {
		t.Fatalf("read back %d bytes, not the %d written", len(got), len(want))
	}
	if err := os.Mkdir(filepath.Join(m.mnt, "d"), 0o755); err != nil {
		t.Fatal(err)
	}
	names, err := os.ReadDir(m.mnt)
	if err != nil {
		t.Fatal(err)
	}
	if len(names) != 2 {
		t.Fatalf("readdir: %v, want d and f", names)
	}
	if err := os.Remove(p); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("stat after unlink: %v", err)
	}
	if _, err := os.Stat(filepath.Join(m.dir, "d")); err != nil {
		t.Fatalf("the mkdir did not reach the directory below: %v", err)
	}
	var total uint64
	for _, q := range m.tr.Stats() {
		if q.Entries != 2 {
			t.Errorf("queue %d: %d entries registered, want 2", q.Queue, q.Entries)
		}
		total += q.Requests
	}
	t.Logf("queues: %+v", m.tr.Stats())
	if total < 10 {
		t.Errorf("%d requests served over the rings, want at least 10: %+v", total, m.tr.Stats())
	}
	m.unmount(t)
}

func TestEnabledOff(t *testing.T) {
	if _, err := os.Stat(EnableParam); err != nil {
		t.Skipf("no %s: %v", EnableParam, err)
	}
	// Only while it is off and nobody of any process turns it on.
	ran, err := enableuring.For(EnableParam).IfOff(func() {
		if err := Enabled(); err == nil || !strings.Contains(err.Error(), EnableParam) || !strings.Contains(err.Error(), EnableHint) {
			t.Errorf("Enabled with %s N: %v; want an error naming it and %q", EnableParam, err, EnableHint)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if !ran {
		t.Logf("%s is on or in use: only the on half runs", EnableParam)
	}
	withURing(t)
	if err := Enabled(); err != nil {
		t.Fatalf("Enabled with %s on: %v", EnableParam, err)
	}
}

// TestRegisterFailureAborts: entries the kernel refuses (a payload
// buffer smaller than the connection's largest request) make Start
// abort the connection: the mount answers ENOTCONN at once instead of
// holding every request back, and go-fuse's /dev/fuse loop ends.
func TestRegisterFailureAborts(t *testing.T) {
	withURing(t)
	m, err := mountLoopback(t, 1, minPayload)
	if err == nil {
		t.Fatal("Start with an 8 KiB payload buffer for a 128 KiB max_write succeeded")
	}
	if !strings.Contains(err.Error(), "FUSE_IO_URING_CMD_REGISTER") || !errors.Is(err, syscall.EINVAL) {
		t.Errorf("Start: %v; want the REGISTER's EINVAL", err)
	}
	stat := make(chan error, 1)
	go func() {
		_, err := os.Stat(filepath.Join(m.mnt, "x"))
		stat <- err
	}()
	select {
	case err := <-stat:
		if !errors.Is(err, syscall.ENOTCONN) {
			t.Errorf("stat on the aborted mount: %v, want ENOTCONN", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("stat on the mount still waits 5s after the failed registration: the mount hangs")
	}
	served := make(chan struct{})
	go func() { m.server.Wait(); close(served) }()
	select {
	case <-served:
	case <-time.After(5 * time.Second):
		t.Fatal("go-fuse's /dev/fuse loop did not end after the abort")
	}
	if err := unix.Unmount(m.mnt, unix.MNT_DETACH); err != nil {
		t.Fatalf("detaching the aborted mount: %v", err)
	}
}
