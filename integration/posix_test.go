package integration

import (
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"

	"github.com/hanwen/go-fuse/v2/posixtest"
)

// TestPosix runs go-fuse's posixtest suite, which its own loopback
// filesystem passes, each test on a fresh mount, under the default
// switches, --writeback-cache and --direct-io.
//
// One test is left out: FcntlFlockLocksFile expects two descriptors of one
// process to conflict over a POSIX lock. That is open-file-description
// semantics, not POSIX: it fails on ext4 and on go-fuse's loopback as
// mounted by default, and passes only on go-fuse's test mounts that forward
// locks to per-descriptor OFD locks. mmapfs leaves locks to the kernel,
// which keeps them with POSIX semantics; TestPosixLocksMatchExt4 checks the
// mount gives the same answers as ext4.
//
// FdLeak compares the descriptors of this process before and after, so it
// must not overlap with anything else: it runs sequentially while the other
// subtests (and every parallel top-level test) wait; TestPosix itself is
// sequential for the same reason.
func TestPosix(t *testing.T) {
	names := make([]string, 0, len(posixtest.All))
	for name := range posixtest.All {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, sw := range [][]string{nil, {"--writeback-cache"}, {"--direct-io"}} {
		prefix := "defaults"
		if sw != nil {
			prefix = sw[0]
		}
		for _, name := range names {
			fn := posixtest.All[name]
			if name == "FcntlFlockLocksFile" {
				continue
			}
			t.Run(prefix+"/"+name, func(t *testing.T) {
				if sw != nil && loopbackMode {
					t.Skip("mmapfs switches")
				}
				if name != "FdLeak" {
					t.Parallel()
				}
				m := startMount(t, sw...)
				fn(t, m.mnt)
			})
		}
	}
}

// lockScenario takes a write lock on dir/test through one descriptor, asks
// from a child process whether a read lock would conflict, then takes a
// read lock through a second descriptor of the same process; it returns
// what each gave (EAGAIN for a conflict).
func lockScenario(t *testing.T, dir string) (sameProcess, otherProcess error) {
	t.Helper()
	name := filepath.Join(dir, "test")
	f1, err := os.Create(name)
	if err != nil {
		t.Fatal(err)
	}
	defer f1.Close()
	wlk := syscall.Flock_t{Type: syscall.F_WRLCK}
	if err := syscall.FcntlFlock(f1.Fd(), syscall.F_SETLK, &wlk); err != nil {
		t.Fatalf("write lock on %s: %v", name, err)
	}
	// Another process: F_GETLK from a child tells whether it would conflict.
	// (Asked first: the same-process read lock below converts the write
	// lock, as POSIX says.)
	out, err := exec.Command("python3", "-c", `
import fcntl, struct, sys
fd = open(sys.argv[1], "r+")
lk = struct.pack("hhqqi", fcntl.F_RDLCK, 0, 0, 0, 0)
res = fcntl.fcntl(fd, fcntl.F_GETLK, lk)
print(struct.unpack("hhqqi", res)[0] == fcntl.F_WRLCK)
`, name).CombinedOutput()
	if err != nil {
		t.Fatalf("child F_GETLK: %v\n%s", err, out)
	}
	if strings.TrimSpace(string(out)) == "True" {
		otherProcess = syscall.EAGAIN
	}
	f2, err := os.OpenFile(name, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f2.Close()
	rlk := syscall.Flock_t{Type: syscall.F_RDLCK}
	sameProcess = syscall.FcntlFlock(f2.Fd(), syscall.F_SETLK, &rlk)
	return sameProcess, otherProcess
}

// TestPosixLocksMatchExt4: POSIX locks on the mount behave as on the
// store's own filesystem: no conflict within a process, a conflict with
// another process.
func TestPosixLocksMatchExt4(t *testing.T) {
	t.Parallel()
	skipIfLoopback(t)
	if _, err := exec.LookPath("python3"); err != nil {
		t.Skip("needs python3 for the child process")
	}
	m := startMount(t)
	nativeSame, nativeOther := lockScenario(t, t.TempDir())
	mountSame, mountOther := lockScenario(t, m.mnt)
	if nativeSame != mountSame || nativeOther != mountOther {
		t.Errorf("locks: native (same process %v, other process %v), mount (%v, %v)", nativeSame, nativeOther, mountSame, mountOther)
	}
	if mountOther == nil {
		t.Errorf("another process saw no conflict with a write lock held on the mount")
	}
}
