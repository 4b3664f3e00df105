package integration

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// Mount errors that depend on who runs mmapfs and what the machine has:
// no permission to mount, a store that cannot be read, no /dev/fuse.

// nobody is the uid and gid the unprivileged cases run as.
const nobody = 65534

// runAsNobody runs the binary with args as uid/gid nobody and returns its exit
// code and stderr. The binary's directory is opened up so that nobody can
// run it. guard names mountpoints that must not be left mounted.
func runAsNobody(t *testing.T, guard []string, args ...string) (int, string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to run a command as nobody")
	}
	if err := os.Chmod(filepath.Dir(binPath), 0o755); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), cliTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, binPath, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	err := cmd.Run()
	for _, g := range guard {
		if mounted(g) {
			t.Errorf("%s was left mounted", g)
			if err := forceUnmount(g); err != nil {
				t.Error(err)
			}
		}
	}
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("run as nobody: %v", err)
	}
	return code, stderr.String()
}

// openDir makes a directory that nobody can enter and read, inside a
// fresh temporary directory that nobody can reach.
func openDir(t *testing.T, name string) string {
	t.Helper()
	parent := t.TempDir()
	// t.TempDir's directories are 0700: open the test's one and this.
	for _, d := range []string{filepath.Dir(parent), parent} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	d := filepath.Join(parent, name)
	if err := os.Mkdir(d, 0o755); err != nil {
		t.Fatal(err)
	}
	return d
}

// TestMountNoPermission: an ordinary user cannot mount on a mountpoint it
// does not own (fusermount3 refuses), and is told so with the mountpoint
// named.
func TestMountNoPermission(t *testing.T) {
	t.Parallel()
	skipIfLoopback(t)
	store, mnt := openDir(t, "store"), openDir(t, "mnt")
	if err := os.Chmod(store, 0o777); err != nil {
		t.Fatal(err)
	}
	code, stderr := runAsNobody(t, []string{mnt}, "mount", store, mnt)
	if code == 0 || !strings.Contains(stderr, "mount "+store+" at "+mnt) || !strings.Contains(stderr, "fusermount3") {
		t.Errorf("mount as nobody on a root-owned mountpoint: exit %d, stderr %q; want the mount refused, naming %s and fusermount3's reason", code, stderr, mnt)
	}
}

// TestMountStoreUnreadable: a store the user cannot read is refused before
// anything is mounted, naming the store.
func TestMountStoreUnreadable(t *testing.T) {
	t.Parallel()
	skipIfLoopback(t)
	store, mnt := openDir(t, "store"), openDir(t, "mnt")
	if err := os.Chmod(store, 0o700); err != nil { // root's only
		t.Fatal(err)
	}
	if err := os.Chown(mnt, nobody, nobody); err != nil {
		t.Fatal(err)
	}
	code, stderr := runAsNobody(t, []string{mnt}, "mount", store, mnt)
	if code == 0 || !strings.Contains(stderr, store) || !strings.Contains(stderr, "permission denied") {
		t.Errorf("mount of an unreadable store: exit %d, stderr %q; want a permission error naming %s", code, stderr, store)
	}
}

// TestMountNoDevFuse: without /dev/fuse (here hidden under an empty /dev in
// a private mount namespace) mmapfs says what is missing.
func TestMountNoDevFuse(t *testing.T) {
	t.Parallel()
	skipIfLoopback(t)
	if _, err := exec.LookPath("unshare"); err != nil {
		t.Skip("needs unshare(1)")
	}
	store, mnt := t.TempDir(), t.TempDir()
	// The empty /dev is mounted in a private mount namespace and goes
	// away with it.
	ctx, cancel := context.WithTimeout(context.Background(), cliTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "unshare", "--mount", "--propagation", "private", "sh", "-c",
		`mount -t tmpfs none /dev && exec "$0" mount "$1" "$2"`, binPath, store, mnt)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	err := cmd.Run()
	if mounted(mnt) {
		t.Errorf("%s was left mounted", mnt)
		if err := forceUnmount(mnt); err != nil {
			t.Error(err)
		}
	}
	if err == nil || !strings.Contains(stderr.String(), "/dev/fuse") {
		t.Errorf("mount without /dev/fuse: %v, stderr %q; want an error naming /dev/fuse", err, stderr.String())
	}
}
