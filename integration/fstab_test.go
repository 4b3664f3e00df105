package integration

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mmapfs/mmapfs/fs/wire"

	"github.com/mmapfs/mmapfs/internal/procstat"
)

// Mounting the way Linux users mount: mount(8) with -t fuse and PROG#STORE,
// with -t fuse.NAME, and from an fstab file, each through mount.fuse3,
// which runs `PROG STORE MOUNTPOINT -o OPTIONS` and waits for it. mmapfs
// then mounts in the background; umount ends the daemon.

// fstabDaemon is a background daemon started through mount(8). It is not
// a child of the test: it is found by the pid its log names.
type fstabDaemon struct {
	store, mnt, log string
	pid             int
}

// skipWithoutMountFuse skips the test without mount(8) and mount.fuse3.
func skipWithoutMountFuse(t *testing.T) {
	t.Helper()
	skipIfLoopback(t)
	for _, p := range []string{"mount", "umount"} {
		if _, err := exec.LookPath(p); err != nil {
			t.Skipf("no %s: %v", p, err)
		}
	}
	found := false
	for _, dir := range []string{"/sbin", "/usr/sbin"} {
		if _, err := os.Stat(filepath.Join(dir, "mount.fuse3")); err == nil {
			found = true
		} else if _, err := os.Stat(filepath.Join(dir, "mount.fuse")); err == nil {
			found = true
		}
	}
	if !found {
		t.Skip("no mount.fuse3 (Debian's fuse3)")
	}
}

// newFstabDaemon prepares a store, a mountpoint and a log file, and
// registers the cleanup: a daemon still running is killed by pid and its
// mount detached.
func newFstabDaemon(t *testing.T) *fstabDaemon {
	t.Helper()
	f := &fstabDaemon{store: t.TempDir(), mnt: t.TempDir()}
	f.log = filepath.Join(t.TempDir(), "mmapfs.log")
	watchdogWatch(f.mnt)
	t.Cleanup(func() {
		if f.pid == 0 {
			f.pid = f.findPid()
		}
		if f.pid != 0 && processAlive(f.pid) {
			t.Errorf("cleanup: the background daemon (pid %d) is still running; killing it", f.pid)
			syscall.Kill(f.pid, syscall.SIGKILL)
			waitProcessGone(f.pid, killTimeout)
		}
		if err := forceUnmount(f.mnt); err != nil {
			t.Errorf("cleanup: %v", err)
		} else {
			watchdogForget(f.mnt)
		}
		if t.Failed() {
			b, _ := os.ReadFile(f.log)
			t.Logf("daemon log %s:\n%s", f.log, b)
		}
	})
	return f
}

var servingPid = regexp.MustCompile(`serving .* \(writeback policy .*, pid (\d+)\)`)

// findPid returns the pid in the daemon's ready line, or 0.
func (f *fstabDaemon) findPid() int {
	b, _ := os.ReadFile(f.log)
	if m := servingPid.FindSubmatch(b); m != nil {
		pid, _ := strconv.Atoi(string(m[1]))
		return pid
	}
	return 0
}

// processAlive reports whether pid runs (a zombie has ended).
func processAlive(pid int) bool {
	st, err := procstat.OfPid(pid)
	return err == nil && !st.Gone()
}

func waitProcessGone(pid int, timeout time.Duration) bool {
	for deadline := time.Now().Add(timeout); processAlive(pid); time.Sleep(pollInterval) {
		if time.Now().After(deadline) {
			return false
		}
	}
	return true
}

// run runs a system command (mount, umount) through the close-on-exec
// trampoline, so that no descriptor of the test leaks into the background
// daemon that mount.fuse3 starts, and returns its combined output.
func runSystem(t *testing.T, prog string, args ...string) (string, error) {
	t.Helper()
	path, err := exec.LookPath(prog)
	if err != nil {
		t.Fatal(err)
	}
	cmd := trampolineCommand(path, args...)
	var out syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return out.String(), err
	case <-time.After(cliTimeout):
		cmd.Process.Kill()
		<-done
		return out.String(), fmt.Errorf("%s %s still running after %v", prog, strings.Join(args, " "), cliTimeout)
	}
}

// mounted checks that mount(8) returned with the mount ready: mounted,
// the ready line in the log, and the daemon running in the background.
func (f *fstabDaemon) mounted(t *testing.T, how string, out string, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v\n%s", how, err, out)
	}
	e, ok := mountInfo(f.mnt)
	if !ok {
		t.Fatalf("%s returned 0 and %s is not mounted\n%s", how, f.mnt, out)
	}
	if e.fsType != "fuse.mmapfs" || e.source != f.store {
		t.Errorf("%s: mounted as %s of %s, want fuse.mmapfs of %s", how, e.fsType, e.source, f.store)
	}
	if f.pid = f.findPid(); f.pid == 0 {
		b, _ := os.ReadFile(f.log)
		t.Fatalf("%s returned before the daemon said it was serving; log:\n%s", how, b)
	}
	if !processAlive(f.pid) {
		t.Fatalf("%s: the daemon (pid %d) is not running", how, f.pid)
	}
}

// use writes a file through the mount and reads it back.
func (f *fstabDaemon) use(t *testing.T, name, data string) {
	t.Helper()
	writeFile(t, filepath.Join(f.mnt, name), []byte(data))
	if got := readFile(t, filepath.Join(f.mnt, name)); string(got) != data {
		t.Fatalf("read back %q, want %q", got, data)
	}
}

// umount runs umount(8) and requires that the daemon ends cleanly: it
// says the store was synced, exits, and the blob holds the data.
func (f *fstabDaemon) umount(t *testing.T, name, data string) {
	t.Helper()
	var out string
	var err error
	// A fork in progress elsewhere in the test binary may hold a copy of
	// a descriptor this test had open on the mount for an instant (see
	// mount.stop): retry an EBUSY. (ForkLock cannot be held here: the
	// umount is a fork too.)
	for try := 0; try < 5; try++ {
		if out, err = runSystem(t, "umount", f.mnt); err == nil {
			break
		}
		time.Sleep(time.Duration(try+1) * 20 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("umount %s: %v\n%s", f.mnt, err, out)
	}
	if !waitProcessGone(f.pid, stopTimeout) {
		t.Fatalf("the daemon (pid %d) still runs %v after umount", f.pid, stopTimeout)
	}
	b, _ := os.ReadFile(f.log)
	if want := "unmounted " + f.mnt + "; store synced"; !strings.Contains(string(b), want) {
		t.Errorf("after umount, the daemon's log does not say %q:\n%s", want, b)
	}
	if mounted(f.mnt) {
		t.Errorf("%s still mounted after umount", f.mnt)
	}
	checkContent(t, filepath.Join(f.store, name), []byte(data))
}

// TestFstabProgSource mounts with the PROG#STORE source form of -t fuse, the
// one that needs no install (PROG a full path).
func TestFstabProgSource(t *testing.T) {
	t.Parallel()
	skipWithoutMountFuse(t)
	f := newFstabDaemon(t)
	out, err := runSystem(t, "mount", "-t", "fuse", binPath+"#"+f.store, f.mnt,
		"-o", "writeback=periodic:1s,keep-cache,max-write=1048576,nosuid,nodev,_netdev,nofail,x-systemd.automount,log="+f.log)
	f.mounted(t, "mount -t fuse PROG#STORE", out, err)
	if b, _ := os.ReadFile(f.log); !strings.Contains(string(b), "writeback policy periodic:1s") {
		t.Errorf("-o writeback=periodic:1s not applied; log:\n%s", b)
	}
	if o := mountFlags(f.mnt); !strings.Contains(o, "nosuid") || !strings.Contains(o, "nodev") {
		t.Errorf("-o nosuid,nodev: the mount's options are %q", o)
	}
	f.use(t, "f", "through fstab")
	f.umount(t, "f", "through fstab")
}

// mountFlags returns the per-mount options of mnt in mountinfo (rw,nosuid,...).
func mountFlags(mnt string) string {
	b, _ := os.ReadFile("/proc/self/mountinfo")
	flags := ""
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 5 && unescapeMountField(f[4]) == mnt {
			flags = f[5]
		}
	}
	return flags
}

// TestFstabTypeName mounts with -t fuse.NAME: mount.fuse3 runs NAME, found
// on the fixed PATH mount(8) gives helpers
// (/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin). The test
// installs the binary there under a name of its own, so that it never
// shadows an installed mmapfs, and removes it afterwards; NAME is only how
// mount.fuse3 finds the program (the mount still shows as fuse.mmapfs).
func TestFstabTypeName(t *testing.T) {
	t.Parallel()
	skipWithoutMountFuse(t)
	name := fmt.Sprintf("mmapfs-itest-%d", os.Getpid())
	link := filepath.Join("/usr/local/sbin", name)
	if _, err := os.Lstat(link); err == nil {
		t.Skipf("%s exists already", link)
	}
	if err := os.Symlink(binPath, link); err != nil {
		t.Skipf("cannot install the binary where mount(8) looks: %v", err)
	}
	t.Cleanup(func() {
		if err := os.Remove(link); err != nil {
			t.Error(err)
		}
	})
	f := newFstabDaemon(t)
	out, err := runSystem(t, "mount", "-t", "fuse."+name, f.store, f.mnt, "-o", "populate,madvise=sequential,log="+f.log)
	f.mounted(t, "mount -t fuse."+name, out, err)
	f.use(t, "g", "by type name")
	f.umount(t, "g", "by type name")
}

// TestFstabFile mounts a line of an fstab file with mount --fstab FILE MNT.
func TestFstabFile(t *testing.T) {
	t.Parallel()
	skipWithoutMountFuse(t)
	f := newFstabDaemon(t)
	fstab := filepath.Join(t.TempDir(), "fstab")
	line := fmt.Sprintf("%s#%s %s fuse noauto,_netdev,nofail,x-systemd.automount,writeback=close,attr-timeout=2s,allow_other,log=%s 0 0\n", binPath, f.store, f.mnt, f.log)
	writeFile(t, fstab, []byte("# a test fstab\n"+line))
	out, err := runSystem(t, "mount", "--fstab", fstab, f.mnt)
	f.mounted(t, "mount --fstab", out, err)
	if b, _ := os.ReadFile(f.log); !strings.Contains(string(b), "writeback policy close") {
		t.Errorf("the fstab options were not applied; log:\n%s", b)
	}
	// As root, mount.fuse3 passes dev,suid (fstab's defaults) unless the
	// line says nodev,nosuid; they are honoured as by any root mount.
	if o := mountFlags(f.mnt); strings.Contains(o, "nosuid") || strings.Contains(o, "nodev") {
		t.Errorf("fstab defaults (dev,suid): the mount's options are %q", o)
	}
	f.use(t, "h", "from an fstab file")
	f.umount(t, "h", "from an fstab file")
}

// TestFstabErrors checks that a mount(8) the daemon refuses fails with the
// daemon's reason and leaves nothing mounted or running: an unknown option
// (refused before the daemon starts) and a store another daemon serves
// (refused by the background daemon, and reported through its parent).
func TestFstabErrors(t *testing.T) {
	t.Parallel()
	skipWithoutMountFuse(t)
	f := newFstabDaemon(t)
	out, err := runSystem(t, "mount", "-t", "fuse", binPath+"#"+f.store, f.mnt, "-o", "bogus-option,log="+f.log)
	if err == nil || !strings.Contains(out, `unknown mount option "bogus-option"`) {
		t.Errorf("mount with -o bogus-option: %v, output %q; want a failure naming the option", err, out)
	}
	if mounted(f.mnt) {
		t.Errorf("%s mounted after a refused mount", f.mnt)
	}

	m := startMountAt(t, f.store, t.TempDir())
	out, err = runSystem(t, "mount", "-t", "fuse", binPath+"#"+f.store, f.mnt, "-o", "log="+f.log)
	if err == nil || !strings.Contains(out, "already served by another mmapfs daemon") || !strings.Contains(out, "pid "+strconv.Itoa(m.pid())) {
		t.Errorf("mount of a store already served: %v, output %q; want the daemon's refusal", err, out)
	}
	if mounted(f.mnt) {
		t.Errorf("%s mounted after a refused mount", f.mnt)
	}
	m.stop(t)
}

// TestBackgroundFlags: the flags of the mount(8) form (mmapfs STORE MNT
// without -f, which serves in the background) reach the daemon, not only
// its -o options: --writeback periodic:1s, a switch, and a repeatable
// flag given twice.
func TestBackgroundFlags(t *testing.T) {
	t.Parallel()
	f := newFstabDaemon(t)
	out, err := runSystem(t, binPath, "--writeback", "periodic:1s", "--keep-cache", "--inject", "op=mkdir,errno=EROFS", "--inject=op=rmdir,errno=EROFS", "-o", "log="+f.log, f.store, f.mnt)
	f.mounted(t, "mmapfs --writeback periodic:1s --keep-cache --inject ... STORE MNT", out, err)
	if b, _ := os.ReadFile(f.log); !strings.Contains(string(b), "writeback policy periodic:1s") {
		t.Errorf("--writeback periodic:1s not applied; log:\n%s", b)
	}
	if s := readStats(t, &mount{mnt: f.mnt}); !s.Switches.KeepCache {
		t.Errorf("--keep-cache not applied: switches %+v", s.Switches)
	}
	if err := os.Mkdir(filepath.Join(f.mnt, "d"), 0o755); !errors.Is(err, syscall.EROFS) {
		t.Errorf("mkdir under --inject op=mkdir,errno=EROFS: %v, want EROFS", err)
	}
	f.use(t, "f", "in the background")
	f.umount(t, "f", "in the background")
}

// TestProfileMount mounts with -o profile=exclusive (the fstab form) and
// one of its flags given on its own: the stats name the profile and show
// the switches in force, the flag given winning over the profile's value,
// and so does the table of 'mmapfs stats'.
func TestProfileMount(t *testing.T) {
	t.Parallel()
	f := newFstabDaemon(t)
	out, err := runSystem(t, binPath, "-o", "profile=exclusive,attr_timeout=2s,log="+f.log, f.store, f.mnt)
	f.mounted(t, "mmapfs -o profile=exclusive,attr_timeout=2s STORE MNT", out, err)
	raw, err := os.ReadFile(filepath.Join(f.mnt, statsFile))
	if err != nil {
		t.Fatal(err)
	}
	var s wire.Snapshot
	if err := json.Unmarshal(raw, &s); err != nil {
		t.Fatalf("decode stats: %v\n%s", err, raw)
	}
	if sw := s.Switches; sw.Profile != "exclusive" || !sw.KeepCache || sw.AutoInvalData || sw.AttrTimeoutSecs != 2 || sw.EntryTimeoutSecs != 3600 {
		t.Errorf("-o profile=exclusive,attr_timeout=2s: switches %+v; want profile exclusive, keep_cache, no auto_inval_data, attr 2s, entry 1h", sw)
	}
	r := runBinary(t, cliTimeout, nil, "stats", f.mnt)
	if r.exitCode != 0 || !regexp.MustCompile(`(?m)^profile +exclusive$`).MatchString(r.stdout) {
		t.Errorf("mmapfs stats: exit %d, no line \"profile exclusive\":\n%s%s", r.exitCode, r.stdout, r.stderr)
	}
	f.use(t, "f", "with the exclusive profile")
	f.umount(t, "f", "with the exclusive profile")
}
