package integration

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// The durability contract: what a client wrote is in the blobs after a clean
// unmount and after the daemon is killed, and the store mounts again.

func TestDurabilityCleanUnmount(t *testing.T) {
	t.Parallel()
	m := startMount(t)
	files := map[string][]byte{
		"small":     pattern(10, 30),
		"page":      pattern(4096, 31),
		"big":       pattern(3<<20+7, 32),
		"d/e/deep":  pattern(9000, 33),
		"empty":     {},
		"truncated": pattern(5000, 34)[:1234],
	}
	if err := os.MkdirAll(filepath.Join(m.mnt, "d", "e"), 0o755); err != nil {
		t.Fatal(err)
	}
	for name, data := range files {
		if name == "truncated" {
			writeFile(t, filepath.Join(m.mnt, name), pattern(5000, 34))
			if err := os.Truncate(filepath.Join(m.mnt, name), 1234); err != nil {
				t.Fatal(err)
			}
			continue
		}
		writeFile(t, filepath.Join(m.mnt, name), data)
	}
	// Written through a shared mapping, then unmapped and closed without
	// msync: close flushes the mount's dirty pages.
	mapped := pattern(5*4096+10, 35)
	p := filepath.Join(m.mnt, "mapped")
	writeFile(t, p, make([]byte, len(mapped)))
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	b, err := unix.Mmap(int(f.Fd()), 0, len(mapped), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	copy(b, mapped)
	if err := unix.Munmap(b); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	files["mapped"] = mapped

	m.stop(t)
	for name, data := range files {
		checkContent(t, filepath.Join(m.store, name), data)
	}
	m.start(t)
	for name, data := range files {
		checkBoth(t, m, name, data)
	}
}

func TestDurabilityKill(t *testing.T) {
	t.Parallel()
	m := startMount(t)

	// Written with write(), no fsync, and still open when the daemon dies.
	written := pattern(2<<20+5, 40)
	fw, err := os.Create(filepath.Join(m.mnt, "written"))
	if err != nil {
		t.Fatal(err)
	}
	defer fw.Close()
	if n, err := fw.Write(written); err != nil || n != len(written) {
		t.Fatalf("write: %d, %v", n, err)
	}

	// Written through a client shared mapping and msynced.
	mapped := pattern(3*4096+77, 41)
	p := filepath.Join(m.mnt, "mapped")
	writeFile(t, p, make([]byte, len(mapped)))
	fm, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer fm.Close()
	b, err := unix.Mmap(int(fm.Fd()), 0, len(mapped), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	copy(b, mapped)
	if err := unix.Msync(b, unix.MS_SYNC); err != nil {
		t.Fatalf("msync: %v", err)
	}
	if err := unix.Munmap(b); err != nil {
		t.Fatal(err)
	}

	uring := servesOverURing(t, m)
	m.kill(t)
	checkContent(t, filepath.Join(m.store, "written"), written)
	checkContent(t, filepath.Join(m.store, "mapped"), mapped)

	// The dead mount is still there until it is unmounted.
	if !mounted(m.mnt) {
		t.Errorf("%s not in mountinfo after SIGKILL of the daemon; want the dead mount until umount", m.mnt)
	}
	// ENOTCONN; under uring only after a few milliseconds of the
	// kernel's answers while it tears the dead daemon's rings down
	// (uringTeardownErrnos says which and why).
	deadMountAnswers(t, filepath.Join(m.mnt, "written"), uring)
	fw.Close()
	fm.Close()
	detachDead(t, m.mnt)

	m.start(t)
	checkBoth(t, m, "written", written)
	checkBoth(t, m, "mapped", mapped)
	// And the remounted store works.
	writeFile(t, filepath.Join(m.mnt, "after"), []byte("after"))
	checkBoth(t, m, "after", []byte("after"))
}

// TestKillThenFusermount is TestDurabilityKill's cleanup done with
// fusermount3 -u instead of umount -l.
func TestKillThenFusermount(t *testing.T) {
	t.Parallel()
	m := startMount(t)
	data := pattern(10000, 42)
	writeFile(t, filepath.Join(m.mnt, "f"), data)
	m.kill(t)
	if out, err := exec.Command("fusermount3", "-u", m.mnt).CombinedOutput(); err != nil {
		t.Fatalf("fusermount3 -u %s: %v: %s", m.mnt, err, out)
	}
	if mounted(m.mnt) {
		t.Fatalf("%s still mounted after fusermount3 -u", m.mnt)
	}
	checkContent(t, filepath.Join(m.store, "f"), data)
	m.start(t)
	checkBoth(t, m, "f", data)
}

// TestBlobTruncatedBehindDaemon shrinks a blob in the store while the file
// is open on the mount, so that the daemon's mapping of it reaches past the
// blob's end: a copy out of it can fault (SIGBUS). The daemon must turn that
// into an error for the caller, never die of it.
func TestBlobTruncatedBehindDaemon(t *testing.T) {
	t.Parallel()
	m := startMount(t)
	p := filepath.Join(m.mnt, "f")
	writeFile(t, p, pattern(4*4096, 43))
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.ReadAt(make([]byte, 10), 0); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(filepath.Join(m.store, "f"), 0); err != nil {
		t.Fatal(err)
	}
	// Drop the mount's cached pages so that the read goes to the daemon.
	if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
		t.Fatalf("fadvise(DONTNEED): %v", err)
	}
	buf := make([]byte, 4096)
	n, rerr := f.ReadAt(buf, 8192)
	t.Logf("read of a page the blob no longer has: %d bytes, %v", n, rerr)
	_, werr := f.WriteAt([]byte("x"), 12000)
	t.Logf("write into a page the blob no longer has: %v", werr)

	// The daemon is alive and serves other files.
	if err := unix.Kill(m.pid(), 0); err != nil {
		t.Fatalf("daemon after the fault: %v", err)
	}
	writeFile(t, filepath.Join(m.mnt, "g"), []byte("alive"))
	checkBoth(t, m, "g", []byte("alive"))
}

// TestRemountKeepsNamespace checks that a clean remount shows the same
// namespace: names, hard links, symlinks, modes, owners and xattrs.
func TestRemountKeepsNamespace(t *testing.T) {
	t.Parallel()
	m := startMount(t)
	a, b := filepath.Join(m.mnt, "d", "a"), filepath.Join(m.mnt, "b")
	if err := os.Mkdir(filepath.Join(m.mnt, "d"), 0o700); err != nil {
		t.Fatal(err)
	}
	data := pattern(7000, 44)
	writeFile(t, a, data)
	if err := os.Link(a, b); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("d/a", filepath.Join(m.mnt, "s")); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(a, 1000, 1001); err != nil {
		t.Fatal(err)
	}
	if err := unix.Setxattr(a, "user.k", []byte("v"), 0); err != nil {
		t.Fatal(err)
	}
	before := lstat(t, a)

	m.remount(t)

	sa, sb := lstat(t, a), lstat(t, b)
	if sa.Ino != sb.Ino || sa.Nlink != 2 {
		t.Errorf("hard link after remount: a ino %d nlink %d, b ino %d", sa.Ino, sa.Nlink, sb.Ino)
	}
	if sa.Mode != before.Mode || sa.Uid != 1000 || sa.Gid != 1001 || sa.Size != 7000 {
		t.Errorf("after remount: mode %o owner %d:%d size %d; want mode %o owner 1000:1001 size 7000", sa.Mode, sa.Uid, sa.Gid, sa.Size, before.Mode)
	}
	if st := lstat(t, filepath.Join(m.mnt, "d")); st.Mode != unix.S_IFDIR|0o700 {
		t.Errorf("dir mode after remount: %o", st.Mode)
	}
	if got, err := os.Readlink(filepath.Join(m.mnt, "s")); err != nil || got != "d/a" {
		t.Errorf("readlink after remount: %q, %v", got, err)
	}
	buf := make([]byte, 10)
	if n, err := unix.Getxattr(a, "user.k", buf); err != nil || string(buf[:n]) != "v" {
		t.Errorf("xattr after remount: %q, %v", buf[:max(n, 0)], err)
	}
	checkBoth(t, m, "b", data)
}
