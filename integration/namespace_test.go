package integration

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Namespace operations on the mount; each test also checks that the store
// holds the result as the underlying filesystem keeps it.

func TestMountInfo(t *testing.T) {
	t.Parallel()
	m := startMount(t)
	e, ok := mountInfo(m.mnt)
	if !ok {
		t.Fatalf("%s not in /proc/self/mountinfo", m.mnt)
	}
	wantType := "fuse.mmapfs"
	if loopbackMode {
		wantType = "fuse.loopback"
	}
	if e.fsType != wantType || e.source != m.store {
		t.Errorf("mountinfo of %s: fstype %q, source %q; want %q, %q", m.mnt, e.fsType, e.source, wantType, m.store)
	}
}

func TestMountCreatesStore(t *testing.T) {
	t.Parallel()
	if loopbackMode {
		t.Skip("the loopback does not create its store")
	}
	store := filepath.Join(t.TempDir(), "a", "store")
	m := startMountAt(t, store, t.TempDir())
	if fi, err := os.Stat(store); err != nil || !fi.IsDir() {
		t.Fatalf("store %s after mount: %v, want a directory", store, err)
	}
	writeFile(t, filepath.Join(m.mnt, "f"), []byte("hello"))
	checkBoth(t, m, "f", []byte("hello"))
}

func TestMountExistingStore(t *testing.T) {
	t.Parallel()
	store := t.TempDir()
	data := pattern(10000, 1)
	if err := os.MkdirAll(filepath.Join(store, "d", "e"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(store, "d", "e", "f"), data)
	m := startMountAt(t, store, t.TempDir())
	checkContent(t, filepath.Join(m.mnt, "d", "e", "f"), data)
}

func TestDebugFlag(t *testing.T) {
	t.Parallel()
	m := startMount(t, "--debug")
	writeFile(t, filepath.Join(m.mnt, "f"), []byte("x"))
	before := len(m.out.String())
	checkBoth(t, m, "f", []byte("x"))
	// The output goes through a pipe: poll.
	deadline := time.Now().Add(5 * time.Second)
	for len(m.out.String()) <= before {
		if time.Now().After(deadline) {
			t.Fatalf("--debug: no log output for an open and a read within 5s (%d bytes of output before)", before)
		}
		time.Sleep(pollInterval)
	}
}

func TestCreate(t *testing.T) {
	t.Parallel()
	m := startMount(t)
	p := filepath.Join(m.mnt, "new")
	f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_EXCL, 0o640)
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	if _, err := f.Write([]byte("content")); err != nil {
		t.Fatalf("write: %v", err)
	}
	if err := f.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	checkBoth(t, m, "new", []byte("content"))
	stm, sts := lstat(t, p), lstat(t, filepath.Join(m.store, "new"))
	if stm.Mode != sts.Mode || stm.Mode != syscall.S_IFREG|0o640 {
		t.Errorf("mode: mount %o, store %o, want %o", stm.Mode, sts.Mode, syscall.S_IFREG|0o640)
	}
	if stm.Size != 7 || sts.Size != 7 {
		t.Errorf("size: mount %d, store %d, want 7", stm.Size, sts.Size)
	}
	if stm.Uid != sts.Uid || stm.Gid != sts.Gid || int(stm.Uid) != os.Geteuid() {
		t.Errorf("owner: mount %d:%d, store %d:%d, want %d:%d", stm.Uid, stm.Gid, sts.Uid, sts.Gid, os.Geteuid(), os.Getegid())
	}
}

func TestCreateExclusive(t *testing.T) {
	t.Parallel()
	m := startMount(t)
	p := filepath.Join(m.mnt, "f")
	writeFile(t, p, []byte("old"))
	_, err := os.OpenFile(p, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
	wantErrno(t, "O_CREAT|O_EXCL on an existing file", err, syscall.EEXIST)
	checkBoth(t, m, "f", []byte("old"))
}

func TestNameTooLong(t *testing.T) {
	t.Parallel()
	m := startMount(t)
	name := strings.Repeat("n", 256)
	_, err := os.OpenFile(filepath.Join(m.mnt, name), os.O_CREATE|os.O_WRONLY, 0o644)
	wantErrno(t, "create with a 256-byte name", err, syscall.ENAMETOOLONG)
	wantErrno(t, "mkdir with a 256-byte name", os.Mkdir(filepath.Join(m.mnt, name), 0o755), syscall.ENAMETOOLONG)
	// 255 bytes is the limit of the underlying filesystem and works.
	name = strings.Repeat("n", 255)
	writeFile(t, filepath.Join(m.mnt, name), []byte("x"))
	checkBoth(t, m, name, []byte("x"))
}

func TestMkdirRmdir(t *testing.T) {
	t.Parallel()
	m := startMount(t)
	d := filepath.Join(m.mnt, "dir")
	if err := os.Mkdir(d, 0o750); err != nil {
		t.Fatalf("mkdir: %v", err)
	}
	st := lstat(t, filepath.Join(m.store, "dir"))
	if st.Mode != syscall.S_IFDIR|0o750 {
		t.Errorf("store dir mode %o, want %o", st.Mode, syscall.S_IFDIR|0o750)
	}
	wantErrno(t, "mkdir of an existing dir", os.Mkdir(d, 0o750), syscall.EEXIST)
	writeFile(t, filepath.Join(d, "f"), []byte("x"))
	wantErrno(t, "rmdir of a non-empty dir", syscall.Rmdir(d), syscall.ENOTEMPTY)
	if err := os.Remove(filepath.Join(d, "f")); err != nil {
		t.Fatalf("unlink: %v", err)
	}
	if err := syscall.Rmdir(d); err != nil {
		t.Fatalf("rmdir of an empty dir: %v", err)
	}
	wantErrno(t, "lstat on the mount after rmdir", syscall.Lstat(d, &st), syscall.ENOENT)
	wantErrno(t, "lstat in the store after rmdir", syscall.Lstat(filepath.Join(m.store, "dir"), &st), syscall.ENOENT)
}

func TestUnlink(t *testing.T) {
	t.Parallel()
	m := startMount(t)
	p := filepath.Join(m.mnt, "f")
	writeFile(t, p, pattern(5000, 2))
	if err := syscall.Unlink(p); err != nil {
		t.Fatalf("unlink: %v", err)
	}
	var st syscall.Stat_t
	wantErrno(t, "lstat on the mount after unlink", syscall.Lstat(p, &st), syscall.ENOENT)
	wantErrno(t, "lstat in the store after unlink", syscall.Lstat(filepath.Join(m.store, "f"), &st), syscall.ENOENT)
	wantErrno(t, "unlink again", syscall.Unlink(p), syscall.ENOENT)
}

func TestUnlinkOpenFile(t *testing.T) {
	t.Parallel()
	m := startMount(t)
	p := filepath.Join(m.mnt, "f")
	data := pattern(10000, 3)
	writeFile(t, p, data)
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := os.Remove(p); err != nil {
		t.Fatalf("unlink: %v", err)
	}
	got := make([]byte, len(data))
	if n, err := f.ReadAt(got, 0); err != nil || n != len(data) || !bytes.Equal(got, data) {
		t.Errorf("read of an unlinked open file: n=%d err=%v, %s", n, err, diffBytes(got[:n], data))
	}
	if _, err := f.WriteAt([]byte("after"), 20000); err != nil {
		t.Errorf("write to an unlinked open file: %v", err)
	}
	if fi, err := f.Stat(); err != nil || fi.Size() != 20005 {
		t.Errorf("fstat of an unlinked open file: %v, size %d, want 20005", err, fi.Size())
	}
}

func TestRename(t *testing.T) {
	t.Parallel()
	m := startMount(t)
	a, b, c := filepath.Join(m.mnt, "a"), filepath.Join(m.mnt, "b"), filepath.Join(m.mnt, "c")
	writeFile(t, a, []byte("AAAA"))
	writeFile(t, c, []byte("CCCC"))
	if err := os.Rename(a, b); err != nil {
		t.Fatalf("rename a b: %v", err)
	}
	var st syscall.Stat_t
	wantErrno(t, "lstat a on the mount after rename", syscall.Lstat(a, &st), syscall.ENOENT)
	wantErrno(t, "lstat a in the store after rename", syscall.Lstat(filepath.Join(m.store, "a"), &st), syscall.ENOENT)
	checkBoth(t, m, "b", []byte("AAAA"))
	// Over an existing file.
	if err := os.Rename(b, c); err != nil {
		t.Fatalf("rename b c (c exists): %v", err)
	}
	checkBoth(t, m, "c", []byte("AAAA"))
	// Into a directory.
	if err := os.Mkdir(filepath.Join(m.mnt, "d"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(c, filepath.Join(m.mnt, "d", "c")); err != nil {
		t.Fatalf("rename c d/c: %v", err)
	}
	checkBoth(t, m, "d/c", []byte("AAAA"))
	// A directory.
	if err := os.Rename(filepath.Join(m.mnt, "d"), filepath.Join(m.mnt, "e")); err != nil {
		t.Fatalf("rename d e: %v", err)
	}
	checkBoth(t, m, "e/c", []byte("AAAA"))
}

func TestRenameNoReplace(t *testing.T) {
	t.Parallel()
	m := startMount(t)
	a, b := filepath.Join(m.mnt, "a"), filepath.Join(m.mnt, "b")
	writeFile(t, a, []byte("AAAA"))
	writeFile(t, b, []byte("BB"))
	err := unix.Renameat2(unix.AT_FDCWD, a, unix.AT_FDCWD, b, unix.RENAME_NOREPLACE)
	wantErrno(t, "renameat2(RENAME_NOREPLACE) onto an existing name", err, syscall.EEXIST)
	checkBoth(t, m, "a", []byte("AAAA"))
	checkBoth(t, m, "b", []byte("BB"))
	c := filepath.Join(m.mnt, "c")
	if err := unix.Renameat2(unix.AT_FDCWD, a, unix.AT_FDCWD, c, unix.RENAME_NOREPLACE); err != nil {
		t.Fatalf("renameat2(RENAME_NOREPLACE) onto a new name: %v", err)
	}
	checkBoth(t, m, "c", []byte("AAAA"))
}

func TestRenameExchange(t *testing.T) {
	t.Parallel()
	m := startMount(t)
	a, b := filepath.Join(m.mnt, "a"), filepath.Join(m.mnt, "b")
	da, db := pattern(5000, 4), pattern(7000, 5)
	writeFile(t, a, da)
	writeFile(t, b, db)
	// Open files keep their own content across the exchange.
	fa, err := os.Open(a)
	if err != nil {
		t.Fatal(err)
	}
	defer fa.Close()
	if err := unix.Renameat2(unix.AT_FDCWD, a, unix.AT_FDCWD, b, unix.RENAME_EXCHANGE); err != nil {
		t.Fatalf("renameat2(RENAME_EXCHANGE): %v", err)
	}
	checkBoth(t, m, "a", db)
	checkBoth(t, m, "b", da)
	got := make([]byte, len(da)+1)
	n, _ := fa.ReadAt(got, 0)
	if !bytes.Equal(got[:n], da) {
		t.Errorf("file opened as a before the exchange: %s", diffBytes(got[:n], da))
	}
	err = unix.Renameat2(unix.AT_FDCWD, a, unix.AT_FDCWD, filepath.Join(m.mnt, "missing"), unix.RENAME_EXCHANGE)
	wantErrno(t, "renameat2(RENAME_EXCHANGE) with a missing target", err, syscall.ENOENT)
}

func TestRenameAcrossMounts(t *testing.T) {
	t.Parallel()
	m1, m2 := startMount(t), startMount(t)
	a := filepath.Join(m1.mnt, "a")
	writeFile(t, a, []byte("x"))
	wantErrno(t, "rename to another mount", os.Rename(a, filepath.Join(m2.mnt, "a")), syscall.EXDEV)
	wantErrno(t, "link to another mount", os.Link(a, filepath.Join(m2.mnt, "a")), syscall.EXDEV)
	checkBoth(t, m1, "a", []byte("x"))
	var st syscall.Stat_t
	wantErrno(t, "lstat in the second store", syscall.Lstat(filepath.Join(m2.store, "a"), &st), syscall.ENOENT)
}

func TestHardLink(t *testing.T) {
	t.Parallel()
	m := startMount(t)
	a, b := filepath.Join(m.mnt, "a"), filepath.Join(m.mnt, "b")
	writeFile(t, a, pattern(6000, 6))
	if err := os.Link(a, b); err != nil {
		t.Fatalf("link: %v", err)
	}
	sa, sb := lstat(t, a), lstat(t, b)
	if sa.Ino != sb.Ino || sa.Nlink != 2 || sb.Nlink != 2 {
		t.Errorf("on the mount: a ino %d nlink %d, b ino %d nlink %d; want the same inode with nlink 2", sa.Ino, sa.Nlink, sb.Ino, sb.Nlink)
	}
	ssa, ssb := lstat(t, filepath.Join(m.store, "a")), lstat(t, filepath.Join(m.store, "b"))
	if ssa.Ino != ssb.Ino || ssa.Nlink != 2 {
		t.Errorf("in the store: a ino %d nlink %d, b ino %d nlink %d; want the same inode with nlink 2", ssa.Ino, ssa.Nlink, ssb.Ino, ssb.Nlink)
	}

	// Writes through one name show through the other, whether or not both
	// are open at the time.
	fb, err := os.OpenFile(b, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer fb.Close()
	fa, err := os.OpenFile(a, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer fa.Close()
	if _, err := fa.WriteAt([]byte("through a"), 100); err != nil {
		t.Fatal(err)
	}
	if _, err := fa.WriteAt([]byte("grown by a"), 8000); err != nil {
		t.Fatal(err)
	}
	want := pattern(6000, 6)
	copy(want[100:], "through a")
	want = append(want, make([]byte, 8000-6000)...)
	want = append(want, "grown by a"...)
	got := make([]byte, len(want)+10)
	n, _ := fb.ReadAt(got, 0)
	if !bytes.Equal(got[:n], want) {
		t.Errorf("read through b of what was written through a: %s", diffBytes(got[:n], want))
	}
	if _, err := fb.WriteAt([]byte("through b"), 200); err != nil {
		t.Fatal(err)
	}
	copy(want[200:], "through b")
	n, _ = fa.ReadAt(got, 0)
	if !bytes.Equal(got[:n], want) {
		t.Errorf("read through a of what was written through b: %s", diffBytes(got[:n], want))
	}
	checkBoth(t, m, "a", want)
	checkBoth(t, m, "b", want)

	if err := os.Remove(a); err != nil {
		t.Fatal(err)
	}
	if st := lstat(t, b); st.Nlink != 1 {
		t.Errorf("nlink of b after unlink of a: %d, want 1", st.Nlink)
	}
	checkBoth(t, m, "b", want)
}

func TestSymlink(t *testing.T) {
	t.Parallel()
	m := startMount(t)
	writeFile(t, filepath.Join(m.mnt, "target"), []byte("pointed at"))
	l := filepath.Join(m.mnt, "link")
	if err := os.Symlink("target", l); err != nil {
		t.Fatalf("symlink: %v", err)
	}
	for _, p := range []string{l, filepath.Join(m.store, "link")} {
		got, err := os.Readlink(p)
		if err != nil || got != "target" {
			t.Errorf("readlink %s: %q, %v; want %q", p, got, err, "target")
		}
		if st := lstat(t, p); st.Mode&syscall.S_IFMT != syscall.S_IFLNK {
			t.Errorf("lstat %s: mode %o, want a symlink", p, st.Mode)
		}
	}
	checkContent(t, l, []byte("pointed at"))
	dangling := filepath.Join(m.mnt, "dangling")
	if err := os.Symlink("/nonexistent/x", dangling); err != nil {
		t.Fatalf("symlink: %v", err)
	}
	if got, err := os.Readlink(dangling); err != nil || got != "/nonexistent/x" {
		t.Errorf("readlink of a dangling link: %q, %v", got, err)
	}
	_, err := os.Stat(dangling)
	wantErrno(t, "stat through a dangling link", err, syscall.ENOENT)
}

func TestChmod(t *testing.T) {
	t.Parallel()
	m := startMount(t)
	p := filepath.Join(m.mnt, "f")
	writeFile(t, p, []byte("x"))
	for _, mode := range []uint32{0o600, 0o4755, 0o000, 0o640} {
		if err := syscall.Chmod(p, mode); err != nil {
			t.Fatalf("chmod %o: %v", mode, err)
		}
		stm, sts := lstat(t, p), lstat(t, filepath.Join(m.store, "f"))
		if stm.Mode != syscall.S_IFREG|mode || sts.Mode != syscall.S_IFREG|mode {
			t.Errorf("after chmod %o: mount mode %o, store mode %o", mode, stm.Mode, sts.Mode)
		}
	}
}

func TestChown(t *testing.T) {
	t.Parallel()
	m := startMount(t)
	p := filepath.Join(m.mnt, "f")
	writeFile(t, p, []byte("x"))
	if err := os.Chown(p, 1234, 5678); err != nil {
		t.Fatalf("chown: %v", err)
	}
	stm, sts := lstat(t, p), lstat(t, filepath.Join(m.store, "f"))
	if stm.Uid != 1234 || stm.Gid != 5678 || sts.Uid != 1234 || sts.Gid != 5678 {
		t.Errorf("after chown 1234:5678: mount %d:%d, store %d:%d", stm.Uid, stm.Gid, sts.Uid, sts.Gid)
	}
	l := filepath.Join(m.mnt, "l")
	if err := os.Symlink("f", l); err != nil {
		t.Fatal(err)
	}
	if err := os.Lchown(l, 42, 43); err != nil {
		t.Fatalf("lchown: %v", err)
	}
	stm, sts = lstat(t, l), lstat(t, filepath.Join(m.store, "l"))
	if stm.Uid != 42 || stm.Gid != 43 || sts.Uid != 42 || sts.Gid != 43 {
		t.Errorf("after lchown 42:43: mount %d:%d, store %d:%d", stm.Uid, stm.Gid, sts.Uid, sts.Gid)
	}
}

func TestUtimens(t *testing.T) {
	t.Parallel()
	m := startMount(t)
	p := filepath.Join(m.mnt, "f")
	writeFile(t, p, []byte("x"))
	atime := unix.Timespec{Sec: 1000000000, Nsec: 123456789}
	mtime := unix.Timespec{Sec: 1200000000, Nsec: 500000000}
	if err := unix.UtimesNano(p, []unix.Timespec{atime, mtime}); err != nil {
		t.Fatalf("utimensat: %v", err)
	}
	for _, q := range []string{p, filepath.Join(m.store, "f")} {
		var st unix.Stat_t
		if err := unix.Lstat(q, &st); err != nil {
			t.Fatal(err)
		}
		if st.Atim != atime || st.Mtim != mtime {
			t.Errorf("%s: atime %v mtime %v, want %v %v", q, st.Atim, st.Mtim, atime, mtime)
		}
	}
	// UTIME_OMIT leaves atime alone.
	mtime2 := unix.Timespec{Sec: 1300000000}
	if err := unix.UtimesNano(p, []unix.Timespec{{Nsec: unix.UTIME_OMIT}, mtime2}); err != nil {
		t.Fatalf("utimensat with UTIME_OMIT: %v", err)
	}
	var st unix.Stat_t
	if err := unix.Lstat(filepath.Join(m.store, "f"), &st); err != nil {
		t.Fatal(err)
	}
	if st.Atim != atime || st.Mtim != mtime2 {
		t.Errorf("store after UTIME_OMIT: atime %v mtime %v, want %v %v", st.Atim, st.Mtim, atime, mtime2)
	}
}

func TestXattr(t *testing.T) {
	t.Parallel()
	m := startMount(t)
	p := filepath.Join(m.mnt, "f")
	sp := filepath.Join(m.store, "f")
	writeFile(t, p, []byte("x"))
	attrs := map[string][]byte{
		"user.one": []byte("value one"),
		"user.two": pattern(1000, 7),
	}
	for k, v := range attrs {
		if err := unix.Setxattr(p, k, v, 0); err != nil {
			t.Fatalf("setxattr %s: %v", k, err)
		}
	}
	wantErrno(t, "setxattr XATTR_CREATE on an existing name", unix.Setxattr(p, "user.one", []byte("x"), unix.XATTR_CREATE), syscall.EEXIST)
	for k, v := range attrs {
		for _, q := range []string{p, sp} {
			buf := make([]byte, 4096)
			n, err := unix.Getxattr(q, k, buf)
			if err != nil || !bytes.Equal(buf[:n], v) {
				t.Errorf("getxattr %s %s: %v, %s", q, k, err, diffBytes(buf[:max(n, 0)], v))
			}
		}
	}
	// The size probe.
	if n, err := unix.Getxattr(p, "user.two", nil); err != nil || n != 1000 {
		t.Errorf("getxattr size probe: %d, %v; want 1000", n, err)
	}
	_, err := unix.Getxattr(p, "user.two", make([]byte, 10))
	wantErrno(t, "getxattr into a short buffer", err, syscall.ERANGE)

	list := func(q string) []string {
		buf := make([]byte, 4096)
		n, err := unix.Listxattr(q, buf)
		if err != nil {
			t.Fatalf("listxattr %s: %v", q, err)
		}
		var names []string
		for _, s := range strings.Split(string(buf[:n]), "\x00") {
			if strings.HasPrefix(s, "user.") {
				names = append(names, s)
			}
		}
		sort.Strings(names)
		return names
	}
	if got, want := list(p), []string{"user.one", "user.two"}; !slices.Equal(got, want) {
		t.Errorf("listxattr on the mount: %q, want %q", got, want)
	}
	if err := unix.Removexattr(p, "user.one"); err != nil {
		t.Fatalf("removexattr: %v", err)
	}
	for _, q := range []string{p, sp} {
		_, err := unix.Getxattr(q, "user.one", make([]byte, 100))
		wantErrno(t, "getxattr after removexattr on "+q, err, syscall.ENODATA)
		if got, want := list(q), []string{"user.two"}; !slices.Equal(got, want) {
			t.Errorf("listxattr %s after removexattr: %q, want %q", q, got, want)
		}
	}
	wantErrno(t, "removexattr of a missing name", unix.Removexattr(p, "user.one"), syscall.ENODATA)
}

func TestStatfs(t *testing.T) {
	t.Parallel()
	m := startMount(t)
	var sm, ss unix.Statfs_t
	if err := unix.Statfs(m.mnt, &sm); err != nil {
		t.Fatalf("statfs on the mount: %v", err)
	}
	if err := unix.Statfs(m.store, &ss); err != nil {
		t.Fatalf("statfs of the store: %v", err)
	}
	if sm.Type != unix.FUSE_SUPER_MAGIC {
		t.Errorf("f_type %#x, want FUSE_SUPER_MAGIC %#x", sm.Type, unix.FUSE_SUPER_MAGIC)
	}
	if uint64(sm.Blocks)*uint64(sm.Frsize) != uint64(ss.Blocks)*uint64(ss.Frsize) {
		t.Errorf("total size: mount %d blocks of %d, store %d blocks of %d", sm.Blocks, sm.Frsize, ss.Blocks, ss.Frsize)
	}
	if sm.Files != ss.Files || sm.Namelen != ss.Namelen {
		t.Errorf("files %d, namelen %d; store %d, %d", sm.Files, sm.Namelen, ss.Files, ss.Namelen)
	}
	if sm.Bfree > sm.Blocks || sm.Bavail > sm.Bfree || sm.Bavail == 0 {
		t.Errorf("blocks %d, free %d, available %d: inconsistent", sm.Blocks, sm.Bfree, sm.Bavail)
	}
}

func TestReaddir(t *testing.T) {
	t.Parallel()
	m := startMount(t)
	for i := 0; i < 150; i++ {
		name := filepath.Join(m.mnt, "file-"+strings.Repeat("x", i%40)+string(rune('a'+i%26))+strconv.Itoa(i))
		writeFile(t, name, nil)
	}
	for _, d := range []string{"dir1", "dir2"} {
		if err := os.Mkdir(filepath.Join(m.mnt, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("dir1", filepath.Join(m.mnt, "sym")); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(filepath.Join(m.mnt, "fifo"), 0o644); err != nil {
		t.Fatalf("mkfifo: %v", err)
	}
	type entry struct {
		name string
		typ  os.FileMode
	}
	read := func(dir string) []entry {
		des, err := os.ReadDir(dir)
		if err != nil {
			t.Fatalf("readdir %s: %v", dir, err)
		}
		var es []entry
		for _, de := range des {
			es = append(es, entry{de.Name(), de.Type()})
		}
		return es
	}
	got, want := read(m.mnt), read(m.store)
	if len(want) != 154 {
		t.Errorf("store holds %d entries, want 154", len(want))
	}
	if !slices.Equal(got, want) {
		t.Errorf("readdir on the mount differs from the store:\ngot  %v\nwant %v", got, want)
	}
	// Empty directory.
	if got := read(filepath.Join(m.mnt, "dir2")); len(got) != 0 {
		t.Errorf("readdir of an empty dir: %v", got)
	}
}
