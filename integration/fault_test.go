package integration

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestDiskFull: on a full store a write through the mount gets ENOSPC
// (extending a file, and filling a hole of a sparse one), never a dead
// daemon; once space is freed the same writes succeed; what was written
// before is intact; the daemon logs the file's name.
func TestDiskFull(t *testing.T) {
	t.Parallel()
	skipIfLoopback(t)
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a tmpfs")
	}
	// By default a full disk is found by the fault path; with
	// --preallocate, by fallocate before the copy.
	for _, flags := range [][]string{nil, {"--preallocate"}} {
		name := "default"
		if flags != nil {
			name = "preallocate"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			diskFull(t, flags)
		})
	}
}

func diskFull(t *testing.T, flags []string) {
	store := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", store).CombinedOutput(); err != nil {
		t.Fatalf("mount tmpfs: %v: %s", err, out)
	}
	// Registered before the mount's own cleanup, so it runs after it.
	t.Cleanup(func() {
		if out, err := exec.Command("umount", store).CombinedOutput(); err != nil {
			t.Errorf("umount tmpfs: %v: %s", err, out)
		}
	})
	m := startMountAt(t, store, t.TempDir(), flags...)

	keep := pattern(64<<10, 7)
	writeFile(t, filepath.Join(m.mnt, "keep"), keep)
	sparse := filepath.Join(m.mnt, "sparse")
	if err := os.WriteFile(sparse, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(sparse, 64<<20); err != nil { // a hole, no space used
		t.Fatal(err)
	}

	big := filepath.Join(m.mnt, "big")
	f, err := os.Create(big)
	if err != nil {
		t.Fatal(err)
	}
	chunk := bytes.Repeat([]byte{1}, 256<<10)
	var werr error
	var written int64
	for i := 0; i < 16 && werr == nil; i++ {
		var n int
		n, werr = f.Write(chunk)
		written += int64(n)
	}
	if errnoOf(werr) != syscall.ENOSPC {
		t.Fatalf("filling a 2 MiB store: %v, want ENOSPC", werr)
	}
	// The failed write left the file exactly as long as what the writes
	// said they wrote (a write the kernel split may be short first).
	if fi, err := f.Stat(); err != nil || fi.Size() != written {
		t.Errorf("after the failed write the file is %d bytes (%v), the writes reported %d", fi.Size(), err, written)
	}
	f.Close()

	// Filling a hole needs a page the store does not have.
	h, err := os.OpenFile(sparse, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if _, err := h.WriteAt(chunk, 32<<20); errnoOf(err) != syscall.ENOSPC {
		t.Errorf("writing into a hole of a full store: %v, want ENOSPC", err)
	}

	// The daemon is alive and what was there is intact.
	checkBoth(t, m, "keep", keep)
	readStats(t, m)

	if err := os.Remove(big); err != nil {
		t.Fatal(err)
	}
	if _, err := h.WriteAt(chunk, 32<<20); err != nil {
		t.Errorf("writing into the hole after freeing space: %v", err)
	}
	got := make([]byte, len(chunk))
	if _, err := h.ReadAt(got, 32<<20); err != nil || !bytes.Equal(got, chunk) {
		t.Errorf("reading back the hole's write: %v, equal %v", err, bytes.Equal(got, chunk))
	}
	if !logged(m, "big", "no space") {
		t.Errorf("the daemon did not log the full disk with the file's name:\n%s", m.out)
	}
}

// TestReadOnlyStore: on a read-only store, reads work and every change is
// EROFS, logged with the file's name; the daemon keeps serving.
func TestReadOnlyStore(t *testing.T) {
	t.Parallel()
	skipIfLoopback(t)
	if os.Geteuid() != 0 {
		t.Skip("needs root for a read-only bind mount")
	}
	store := t.TempDir()
	writeFile(t, filepath.Join(store, "existing"), []byte("old data"))
	for _, args := range [][]string{{"--bind", store, store}, {"-o", "remount,bind,ro", store}} {
		if out, err := exec.Command("mount", args...).CombinedOutput(); err != nil {
			t.Fatalf("mount %v: %v: %s", args, err, out)
		}
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", store).CombinedOutput(); err != nil {
			t.Errorf("umount: %v: %s", err, out)
		}
	})
	m := startMountAt(t, store, t.TempDir())
	checkContent(t, filepath.Join(m.mnt, "existing"), []byte("old data"))
	_, err := os.OpenFile(filepath.Join(m.mnt, "existing"), os.O_WRONLY, 0)
	wantErrno(t, "open for writing", err, syscall.EROFS)
	_, err = os.Create(filepath.Join(m.mnt, "new"))
	wantErrno(t, "create", err, syscall.EROFS)
	wantErrno(t, "mkdir", os.Mkdir(filepath.Join(m.mnt, "dir"), 0o755), syscall.EROFS)
	wantErrno(t, "truncate", os.Truncate(filepath.Join(m.mnt, "existing"), 0), syscall.EROFS)
	checkContent(t, filepath.Join(m.mnt, "existing"), []byte("old data"))
	readStats(t, m)
	if !logged(m, "existing", "read-only") {
		t.Errorf("no log line names the file refused by the read-only store:\n%s", m.out)
	}
}

// nobodyMountDirs prepares a mount by a daemon run as nobody (through
// fusermount3, as a user without root mounts): it makes the binary's
// directory open to nobody and returns a store and a mountpoint that
// nobody owns. It skips the test where no such mount can be had: the
// test is not root (it could not run the daemon as nobody), or /dev/fuse
// is not open to other users (fusermount3 opens it as the user: on a
// machine where only root may, no user can mount).
func nobodyMountDirs(t *testing.T) (store, mnt string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to run the daemon as nobody")
	}
	fi, err := os.Stat("/dev/fuse")
	if err != nil {
		t.Skipf("no non-root mount is possible: %v", err)
	}
	if fi.Mode().Perm()&0o006 != 0o006 {
		t.Skipf("/dev/fuse is not open to other users here (%v): no non-root mount is possible", fi.Mode())
	}
	if err := os.Chmod(filepath.Dir(binPath), 0o755); err != nil {
		t.Fatal(err)
	}
	store, mnt = openDir(t, "store"), openDir(t, "mnt")
	for _, d := range []string{store, mnt} {
		if err := os.Chown(d, nobody, nobody); err != nil {
			t.Fatal(err)
		}
	}
	return store, mnt
}

// TestUnopenableBlob: a daemon that may not open a blob (here: run as
// nobody, the blob root's and mode 0600) gives the caller EACCES, logs the
// file, and keeps serving the others. It also runs the daemon the way a
// user without root does: through fusermount3, with no residency bound.
func TestUnopenableBlob(t *testing.T) {
	t.Parallel()
	skipIfLoopback(t)
	store, mnt := nobodyMountDirs(t)
	writeFile(t, filepath.Join(store, "locked"), []byte("root's"))
	if err := os.Chmod(filepath.Join(store, "locked"), 0o600); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(store, "open"), []byte("anyone's"))
	if err := os.Chown(filepath.Join(store, "open"), nobody, nobody); err != nil {
		t.Fatal(err)
	}
	m := startMountAs(t, &syscall.Credential{Uid: nobody, Gid: nobody}, store, mnt)
	run := func(args ...string) (string, error) {
		cmd := exec.Command(args[0], args[1:]...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	if out, err := run("cat", filepath.Join(mnt, "locked")); err == nil || !strings.Contains(out, "Permission denied") {
		t.Errorf("reading a blob the daemon may not open: %v, %q; want EACCES", err, out)
	}
	if out, err := run("cat", filepath.Join(mnt, "open")); err != nil || out != "anyone's" {
		t.Errorf("reading a blob the daemon may open: %v, %q", err, out)
	}
	if out, err := run("sh", "-c", "echo new > "+filepath.Join(mnt, "new")); err != nil {
		t.Errorf("creating a file: %v, %q", err, out)
	}
	checkContent(t, filepath.Join(store, "new"), []byte("new\n"))
	if !logged(m, `"locked"`) {
		t.Errorf("no log line names the blob that could not be opened:\n%s", m.out)
	}
}

// TestImmutableBlob: a blob the store will not let even root open for
// writing (chattr +i) reads fine, refuses writes with the store's errno,
// is logged by name, and the daemon keeps serving.
func TestImmutableBlob(t *testing.T) {
	t.Parallel()
	skipIfLoopback(t)
	if _, err := exec.LookPath("chattr"); err != nil || os.Geteuid() != 0 {
		t.Skip("needs root and chattr")
	}
	store := t.TempDir()
	blob := filepath.Join(store, "frozen")
	writeFile(t, blob, []byte("frozen"))
	if out, err := exec.Command("chattr", "+i", blob).CombinedOutput(); err != nil {
		t.Skipf("chattr +i on the test filesystem: %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("chattr", "-i", blob).CombinedOutput(); err != nil {
			t.Errorf("chattr -i: %v: %s", err, out)
		}
	})
	m := startMountAt(t, store, t.TempDir())
	p := filepath.Join(m.mnt, "frozen")
	checkContent(t, p, []byte("frozen"))
	_, err := os.OpenFile(p, os.O_WRONLY, 0)
	wantErrno(t, "open an immutable blob for writing", err, syscall.EPERM)
	wantErrno(t, "truncate an immutable blob", os.Truncate(p, 0), syscall.EPERM)
	checkContent(t, p, []byte("frozen"))
	writeFile(t, filepath.Join(m.mnt, "other"), []byte("other"))
	if !logged(m, `"frozen"`) {
		t.Errorf("no log line names the blob that could not be opened:\n%s", m.out)
	}
}

// TestBlobReplacedWhileMapped: another process renames a new file over a
// blob that is open (and so mapped) on the mount. As on a local
// filesystem, the open descriptor keeps reading and writing the file it
// opened; a new open gets the new file; nothing faults.
func TestBlobReplacedWhileMapped(t *testing.T) {
	t.Parallel()
	m := startMount(t, "--entry-timeout", "0", "--attr-timeout", "0")
	p := filepath.Join(m.mnt, "f")
	old := pattern(3*4096+10, 1)
	writeFile(t, p, old)
	f := openRW(t, p)
	got := make([]byte, len(old))
	if _, err := f.ReadAt(got, 0); err != nil { // mapped now
		t.Fatal(err)
	}
	repl := filepath.Join(m.store, "replacement")
	writeFile(t, repl, []byte("the new file"))
	if err := os.Rename(repl, filepath.Join(m.store, "f")); err != nil {
		t.Fatal(err)
	}
	if n, err := f.ReadAt(got, 0); err != nil || n != len(old) || !bytes.Equal(got, old) {
		t.Errorf("the open descriptor after the replace: %d bytes, %v, same as before: %v", n, err, bytes.Equal(got, old))
	}
	if _, err := f.WriteAt([]byte("still mine"), 0); err != nil {
		t.Errorf("writing through the open descriptor after the replace: %v", err)
	}
	checkContent(t, p, []byte("the new file"))
	checkContent(t, filepath.Join(m.store, "f"), []byte("the new file"))
	readStats(t, m)
}
