package integration

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Modes and owners of new files, as ext4 gives them: every case runs the
// same client operations on a plain directory of the store's filesystem
// and on the mount, and requires the same answers (errno, mode, owner,
// group).
//
// The client is this test binary run again as a separate process (in
// roleModesClient), so that it can run as another user, with a umask and
// capabilities of its own, without touching the test process's: the
// umask is the whole process's, and the credentials of a process are
// what the kernel checks.

// skipLoopbackWrong skips a test that go-fuse's loopback fails for the
// reason why: there it checks nothing about the test.
func skipLoopbackWrong(t *testing.T, why string) {
	t.Helper()
	if loopbackMode {
		t.Skip("go-fuse's loopback differs from ext4 here: " + why)
	}
}

// clientOp is one operation of the client: op, a path and its arguments.
type clientOp []string

// opResult is what an operation gave: its errno and the mode, owner and
// group of the file it made or changed.
type opResult struct {
	errno         syscall.Errno
	mode          uint32 // file type and permission bits
	uid, gid      uint32
	nlink, target string // tmplink: nlink after the link and the name's content
}

func (r opResult) String() string {
	if r.errno != 0 {
		return errnoName(r.errno)
	}
	s := fmt.Sprintf("mode %07o uid %d gid %d", r.mode, r.uid, r.gid)
	if r.nlink != "" {
		s += fmt.Sprintf(" nlink %s content %q", r.nlink, r.target)
	}
	return s
}

// modesClient runs the operations in args (the first one "umask=OCTAL")
// and prints a line per operation: the errno, then mode, uid and gid of
// what the operation made (lstat of the path; fstat for the ones with no
// name).
func modesClient(args []string) int {
	if len(args) == 0 || !strings.HasPrefix(args[0], "umask=") {
		fmt.Fprintln(os.Stderr, "modes client: first argument must be umask=OCTAL")
		return 2
	}
	um, err := strconv.ParseUint(strings.TrimPrefix(args[0], "umask="), 8, 32)
	if err != nil {
		fmt.Fprintln(os.Stderr, "modes client:", err)
		return 2
	}
	unix.Umask(int(um))
	for _, a := range args[1:] {
		fields := strings.Split(a, "\x1f")
		st, extra, err := runClientOp(fields)
		if err != nil {
			var e syscall.Errno
			if !asErrno(err, &e) {
				fmt.Fprintf(os.Stderr, "modes client: %q: %v\n", fields, err)
				return 2
			}
			fmt.Printf("%d\n", int(e))
			continue
		}
		fmt.Printf("0 %o %d %d %s\n", st.Mode, st.Uid, st.Gid, extra)
	}
	return 0
}

func asErrno(err error, e *syscall.Errno) bool {
	*e = errnoOf(err)
	return *e != 0
}

func octal(s string) uint32 {
	v, err := strconv.ParseUint(s, 8, 32)
	if err != nil {
		panic(err)
	}
	return uint32(v)
}

func decimal(s string) int {
	v, err := strconv.Atoi(s)
	if err != nil {
		panic(err)
	}
	return v
}

// runClientOp runs one operation and stats what it made or changed.
func runClientOp(f []string) (st unix.Stat_t, extra string, err error) {
	op, p := f[0], f[1]
	switch op {
	case "create": // create PATH MODE
		var fd int
		if fd, err = unix.Open(p, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_CLOEXEC, octal(f[2])); err == nil {
			err = unix.Close(fd)
		}
	case "mkdir": // mkdir PATH MODE
		err = unix.Mkdir(p, octal(f[2]))
	case "mknod": // mknod PATH MODE(with type) MAJOR MINOR
		err = unix.Mknod(p, octal(f[2]), int(unix.Mkdev(uint32(decimal(f[3])), uint32(decimal(f[4])))))
	case "symlink": // symlink PATH TARGET
		err = unix.Symlink(f[2], p)
	case "chown", "fchown": // chown PATH UID GID
		uid, gid := decimal(f[2]), decimal(f[3])
		if op == "chown" {
			err = unix.Chown(p, uid, gid)
			break
		}
		var fd int
		if fd, err = unix.Open(p, unix.O_RDONLY|unix.O_CLOEXEC, 0); err != nil {
			break
		}
		err = unix.Fchown(fd, uid, gid)
		if cerr := unix.Close(fd); err == nil {
			err = cerr
		}
	case "append": // append PATH
		var fd int
		if fd, err = unix.Open(p, unix.O_WRONLY|unix.O_APPEND|unix.O_CLOEXEC, 0); err != nil {
			break
		}
		_, err = unix.Write(fd, []byte("x"))
		if cerr := unix.Close(fd); err == nil {
			err = cerr
		}
	case "truncate": // truncate PATH
		err = unix.Truncate(p, 1)
	case "whiteout": // whiteout PATH NEWNAME: rename, leaving a whiteout at PATH
		err = unix.Renameat2(unix.AT_FDCWD, p, unix.AT_FDCWD, filepath.Join(filepath.Dir(p), f[2]), unix.RENAME_WHITEOUT)
	case "tmpfile", "tmplink": // tmpfile DIR MODE; tmplink DIR MODE NAME
		return clientTmpfile(f)
	default:
		return st, "", fmt.Errorf("unknown operation %q", op)
	}
	if err != nil {
		return st, "", err
	}
	return st, "", unix.Lstat(p, &st)
}

// clientTmpfile makes an O_TMPFILE file in DIR with MODE and fstats it;
// for tmplink, writes to it, gives it the name NAME through
// /proc/self/fd and reports its link count and the content read by the
// new name.
func clientTmpfile(f []string) (st unix.Stat_t, extra string, err error) {
	fd, err := unix.Open(f[1], unix.O_TMPFILE|unix.O_RDWR|unix.O_CLOEXEC, octal(f[2]))
	if err != nil {
		return st, "", err
	}
	defer unix.Close(fd)
	if f[0] == "tmplink" {
		if _, err := unix.Write(fd, []byte("linked")); err != nil {
			return st, "", err
		}
		name := filepath.Join(f[1], f[3])
		if err := unix.Linkat(unix.AT_FDCWD, "/proc/self/fd/"+strconv.Itoa(fd), unix.AT_FDCWD, name, unix.AT_SYMLINK_FOLLOW); err != nil {
			return st, "", err
		}
		b, err := os.ReadFile(name)
		if err != nil {
			return st, "", err
		}
		if err := unix.Fstat(fd, &st); err != nil {
			return st, "", err
		}
		return st, fmt.Sprintf("%d %s", st.Nlink, b), nil
	}
	return st, "", unix.Fstat(fd, &st)
}

// modesClientBinary returns this test binary at a path any user can
// reach (go test's own directory is root's only): a hard link where the
// binary may be run by anyone, else a copy.
func modesClientBinary(t *testing.T) string {
	t.Helper()
	dst := filepath.Join(openDir(t, "client"), "client")
	if fi, err := os.Stat(testBinary); err == nil && fi.Mode().Perm()&0o001 != 0 && os.Link(testBinary, dst) == nil {
		return dst
	}
	in, err := os.Open(testBinary)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
	return dst
}

// modesClientTimeout bounds one run of the client.
const modesClientTimeout = 30 * time.Second

// clientAs describes who the client runs as.
type clientAs struct {
	uid, gid uint32
	caps     []uintptr // ambient capabilities kept (for a uid other than 0)
	umask    int
}

// runModesClient runs ops with the client binary bin as who, each with
// its paths below dir, and returns their results.
func runModesClient(t *testing.T, bin string, who clientAs, dir string, ops []clientOp) []opResult {
	t.Helper()
	args := []string{fmt.Sprintf("umask=%o", who.umask)}
	for _, op := range ops {
		f := append([]string{op[0], filepath.Join(dir, op[1])}, op[2:]...)
		args = append(args, strings.Join(f, "\x1f"))
	}
	cmd := roleCommand(bin, roleModesClient, args...)
	if who.uid != 0 || who.gid != 0 {
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: who.uid, Gid: who.gid}
		cmd.SysProcAttr.AmbientCaps = who.caps
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = time.Second
	if err := cmd.Start(); err != nil {
		t.Fatalf("start the client: %v", err)
	}
	timer := time.AfterFunc(modesClientTimeout, func() { cmd.Process.Kill() })
	err := cmd.Wait()
	timer.Stop()
	if err != nil {
		t.Fatalf("client %v in %s: %v\n%s", ops, dir, err, stderr.String())
	}
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	if len(lines) != len(ops) {
		t.Fatalf("client %v: %d result lines, want %d:\n%s%s", ops, len(lines), len(ops), stdout.String(), stderr.String())
	}
	res := make([]opResult, len(ops))
	for i, l := range lines {
		fields := strings.Fields(l)
		if e := decimal(fields[0]); e != 0 {
			res[i].errno = syscall.Errno(e)
			continue
		}
		res[i].mode = octal(fields[1])
		res[i].uid, res[i].gid = uint32(decimal(fields[2])), uint32(decimal(fields[3]))
		if len(fields) > 5 {
			res[i].nlink, res[i].target = fields[4], fields[5]
		}
	}
	return res
}

// compareClient runs ops on the store's filesystem (native) and on the
// mount (mnt) and fails the test for every answer that differs.
func compareClient(t *testing.T, bin string, who clientAs, native, mnt string, ops []clientOp) {
	t.Helper()
	want := runModesClient(t, bin, who, native, ops)
	got := runModesClient(t, bin, who, mnt, ops)
	for i, op := range ops {
		if got[i] != want[i] {
			t.Errorf("uid %d gid %d umask %03o: %s: mount gives %v, the store's filesystem %v",
				who.uid, who.gid, who.umask, strings.Join(op, " "), got[i], want[i])
		}
	}
}

// TestModesIgnoreDaemonUmask: the daemon started with umask 022, as from
// a shell, and a client with umask 0 gets the modes it asked for. Not
// parallel: the daemon inherits the umask of this process when it is
// started, and the umask is the whole process's; it is 022 only around
// the start.
func TestModesIgnoreDaemonUmask(t *testing.T) {
	skipLoopbackWrong(t, "it applies its own umask to the modes too")
	old := unix.Umask(0o022)
	restored := false
	restore := func() {
		if !restored {
			unix.Umask(old)
			restored = true
		}
	}
	defer restore()
	m := startMount(t)
	restore()
	bin := modesClientBinary(t)
	native := t.TempDir()
	ops := []clientOp{
		{"create", "file", "666"},
		{"create", "setuid", "4777"},
		{"mkdir", "dir", "777"},
		{"mkdir", "sticky", "1777"},
		{"mknod", "fifo", strconv.FormatUint(unix.S_IFIFO|0o666, 8), "0", "0"},
		{"mknod", "sock", strconv.FormatUint(unix.S_IFSOCK|0o666, 8), "0", "0"},
		{"tmpfile", ".", "666"},
	}
	compareClient(t, bin, clientAs{umask: 0}, native, m.mnt, ops)
	// And the client's own umask still counts.
	for i := range ops {
		if ops[i][0] != "tmpfile" {
			ops[i][1] += "-022"
		}
	}
	compareClient(t, bin, clientAs{umask: 0o022}, native, m.mnt, ops)
}

// otherGroup is a group neither root nor nobody is in.
const otherGroup = 4242

// TestModesSetgidDirectory: nodes a user other than root creates (through
// --allow-other) in a setgid directory get the directory's group, a new
// directory its setgid bit, and a setuid file made by its owner stays
// setuid (it was created as root and then chowned, which lost all three);
// a device node or a rename's whiteout needs CAP_MKNOD and is then the
// user's, as on ext4.
func TestModesSetgidDirectory(t *testing.T) {
	t.Parallel()
	skipLoopbackWrong(t, "it creates as root and then chowns to the caller, as mmapfs did")
	if os.Geteuid() != 0 {
		t.Skip("needs root to act as another user")
	}
	bin := modesClientBinary(t)
	native := openDir(t, "native")
	store, mnt := openDir(t, "store"), openDir(t, "mnt")
	startMountAt(t, store, mnt, "--allow-other")
	for _, top := range []string{native, mnt} {
		for _, d := range []struct {
			name string
			mode os.FileMode
			gid  int
		}{{"sgid", 0o777 | os.ModeSetgid, otherGroup}, {"plain", 0o777, 0}} {
			p := filepath.Join(top, d.name)
			if err := os.Mkdir(p, 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.Chown(p, 0, d.gid); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(p, d.mode); err != nil {
				t.Fatal(err)
			}
		}
	}
	chr := strconv.FormatUint(unix.S_IFCHR|0o644, 8)
	var ops []clientOp
	for _, d := range []string{"sgid", "plain"} {
		ops = append(ops,
			clientOp{"create", d + "/file", "666"},
			clientOp{"create", d + "/setuid", "4755"},
			clientOp{"create", d + "/setgid-x", "2775"},
			clientOp{"create", d + "/setgid", "2664"},
			clientOp{"mkdir", d + "/dir", "755"},
			clientOp{"create", d + "/dir/file", "644"},
			clientOp{"mkdir", d + "/dir/sub", "700"},
			clientOp{"mknod", d + "/fifo", strconv.FormatUint(unix.S_IFIFO|0o640, 8), "0", "0"},
			clientOp{"mknod", d + "/chr", chr, "1", "3"},
			clientOp{"symlink", d + "/link", "file"},
			clientOp{"tmpfile", d, "640"},
			clientOp{"tmplink", d, "640", "named"},
		)
	}
	compareClient(t, bin, clientAs{uid: nobody, gid: nobody, umask: 0}, native, mnt, ops)
	compareClient(t, bin, clientAs{uid: nobody, gid: nobody, umask: 0, caps: []uintptr{unix.CAP_MKNOD}}, native, mnt, []clientOp{
		{"mknod", "sgid/chr-capable", chr, "1", "3"},
		{"mknod", "plain/chr-capable", chr, "1", "3"},
		{"create", "sgid/renamed", "644"},
		{"whiteout", "sgid/renamed", "renamed-to"},
	})
	// Root with another group than 0 creates as that group.
	compareClient(t, bin, clientAs{uid: 0, gid: otherGroup + 1, umask: 0o022}, native, mnt, []clientOp{
		{"create", "plain/root-file", "644"},
		{"mkdir", "plain/root-dir", "755"},
	})
}

// TestModesChownKillPriv: a chown or fchown of a file, by root or by its
// owner, clears the setuid bit, and the setgid bit only where ext4 does:
// when the file is group-executable, or when the caller is neither in the
// file's group nor holds CAP_FSETID. A write or truncate by a user without
// CAP_FSETID keeps the setgid bit of a file without group-execute when
// the user is in its group.
func TestModesChownKillPriv(t *testing.T) {
	t.Parallel()
	skipLoopbackWrong(t, "without CAP_HANDLE_KILLPRIV_V2 the kernel drops a setgid bit only with group-execute, where ext4 also drops it for a caller outside the file's group")
	if os.Geteuid() != 0 {
		t.Skip("needs root to act as another user")
	}
	root := clientAs{}
	nob := clientAs{uid: nobody, gid: nobody}
	cases := []struct {
		mode     uint32
		uid, gid int
		who      clientAs
		op       []string // op and its arguments after the path
	}{
		{0o2700, 0, 0, root, []string{"chown", "0", "0"}},
		{0o2700, 0, 0, root, []string{"fchown", "0", "0"}},
		{0o2700, 0, otherGroup, root, []string{"chown", "0", "0"}},
		{0o2710, 0, 0, root, []string{"chown", "0", "0"}},
		{0o2710, 0, 0, root, []string{"fchown", "0", "0"}},
		{0o4755, 0, 0, root, []string{"chown", "0", "0"}},
		{0o6755, 0, 0, root, []string{"fchown", "0", "0"}},
		{0o6700, 0, 0, root, []string{"chown", "0", "-1"}},
		{0o2700, nobody, nobody, nob, []string{"chown", strconv.Itoa(nobody), strconv.Itoa(nobody)}},
		{0o2700, nobody, nobody, nob, []string{"fchown", "-1", strconv.Itoa(nobody)}},
		{0o2700, nobody, 0, nob, []string{"chown", "-1", strconv.Itoa(nobody)}},
		{0o2710, nobody, nobody, nob, []string{"chown", strconv.Itoa(nobody), strconv.Itoa(nobody)}},
		{0o4700, nobody, nobody, nob, []string{"fchown", strconv.Itoa(nobody), "-1"}},
		{0o2766, 0, nobody, nob, []string{"append"}},
		{0o2766, 0, nobody, nob, []string{"truncate"}},
		{0o6766, 0, nobody, nob, []string{"truncate"}},
		{0o2776, 0, nobody, nob, []string{"append"}},
		{0o2766, 0, otherGroup, nob, []string{"append"}},
	}
	bin := modesClientBinary(t)
	native := openDir(t, "native")
	store, mnt := openDir(t, "store"), openDir(t, "mnt")
	startMountAt(t, store, mnt, "--allow-other")
	for _, dir := range []string{native, mnt} {
		for i, c := range cases {
			p := filepath.Join(dir, fmt.Sprintf("f%d", i))
			if err := os.WriteFile(p, []byte("data"), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Chown(p, c.uid, c.gid); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(p, os.FileMode(c.mode&0o777)|modeBits(c.mode)); err != nil {
				t.Fatal(err)
			}
		}
	}
	for i, c := range cases {
		op := clientOp(append([]string{c.op[0], fmt.Sprintf("f%d", i)}, c.op[1:]...))
		want := runModesClient(t, bin, c.who, native, []clientOp{op})[0]
		got := runModesClient(t, bin, c.who, mnt, []clientOp{op})[0]
		if got != want {
			t.Errorf("file %04o %d:%d, %s as uid %d: mount gives %v, the store's filesystem %v",
				c.mode, c.uid, c.gid, strings.Join(c.op, " "), c.who.uid, got, want)
		}
	}
}

// recent reports whether ts is within a minute of now: the truncates
// after the futimens set the mtime to the time of the call, which two
// runs of a scenario (on the store's filesystem, then on the mount) do
// not share to the second.
func recent(ts unix.Timespec) bool {
	return time.Since(time.Unix(ts.Sec, ts.Nsec)).Abs() < time.Minute
}

// TestModesTmpfileLink: an O_TMPFILE file gets a name with linkat through
// /proc/self/fd (or AT_EMPTY_PATH), with what was written before, and is
// then the named file (its xattrs, further writes, a second link); one
// made O_TMPFILE|O_EXCL cannot be linked. Before it has a name, its
// attributes and xattrs change through its descriptor and it reopens
// through /proc/self/fd. As on ext4, and the content is
// in the store after the daemon stops.
func TestModesTmpfileLink(t *testing.T) {
	t.Parallel()
	skipLoopbackWrong(t, "it answers LINK of an unnamed file EXDEV")
	native := t.TempDir()
	m := startMount(t)
	want := tmpfileLinkScenario(t, native)
	got := tmpfileLinkScenario(t, m.mnt)
	if len(got) != len(want) {
		t.Fatalf("mount:\n%s\nthe store's filesystem:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("mount: %s\n    the store's filesystem: %s", got[i], want[i])
		}
	}
	m.stop(t)
	checkContent(t, filepath.Join(m.store, "named"), []byte("before+after"))
	checkContent(t, filepath.Join(m.store, "second"), []byte("before+after"))
	checkContent(t, filepath.Join(m.store, "empty-path"), []byte("by AT_EMPTY_PATH"))
	checkContent(t, filepath.Join(m.store, "was-unnamed"), []byte("unnamed"))
}

// tmpfileLinkScenario runs the O_TMPFILE steps in dir and describes what
// each gave.
func tmpfileLinkScenario(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	note := func(what string, err error, v ...any) {
		s := what + ": " + errnoName(errnoOf(err))
		if err != nil && errnoOf(err) == 0 {
			s += " " + err.Error()
		}
		if err == nil && len(v) > 0 {
			s += " " + fmt.Sprint(v...)
		}
		out = append(out, s)
	}
	procLink := func(fd int, name string) error {
		return unix.Linkat(unix.AT_FDCWD, "/proc/self/fd/"+strconv.Itoa(fd), unix.AT_FDCWD, filepath.Join(dir, name), unix.AT_SYMLINK_FOLLOW)
	}
	fd, err := unix.Open(dir, unix.O_TMPFILE|unix.O_RDWR|unix.O_CLOEXEC, 0o640)
	if err != nil {
		t.Fatalf("O_TMPFILE in %s: %v", dir, err)
	}
	defer unix.Close(fd)
	_, err = unix.Write(fd, []byte("before"))
	note("write before the link", err)
	note("link through /proc/self/fd", procLink(fd, "named"))
	data, err := os.ReadFile(filepath.Join(dir, "named"))
	note("read the new name", err, string(data))
	var st unix.Stat_t
	err = unix.Fstat(fd, &st)
	note("fstat", err, "nlink ", st.Nlink, " mode ", strconv.FormatUint(uint64(st.Mode), 8))
	_, err = unix.Write(fd, []byte("+after"))
	note("write after the link", err)
	data, err = os.ReadFile(filepath.Join(dir, "named"))
	note("read the new name again", err, string(data))
	note("fsetxattr", unix.Fsetxattr(fd, "user.mmapfs", []byte("v"), 0))
	buf := make([]byte, 16)
	sz, err := unix.Getxattr(filepath.Join(dir, "named"), "user.mmapfs", buf)
	note("getxattr by the new name", err, string(buf[:max(sz, 0)]))
	note("second link", procLink(fd, "second"))
	var st2 unix.Stat_t
	err = unix.Stat(filepath.Join(dir, "second"), &st2)
	note("stat the second name", err, "nlink ", st2.Nlink, " same inode ", st2.Ino == st.Ino)
	note("link onto an existing name", procLink(fd, "named"))

	// Before it has a name, the file is used through its descriptor
	// (and reopened through /proc/self/fd) as any other.
	un, err := unix.Open(dir, unix.O_TMPFILE|unix.O_RDWR|unix.O_CLOEXEC, 0o644)
	if err != nil {
		t.Fatalf("O_TMPFILE in %s: %v", dir, err)
	}
	defer unix.Close(un)
	_, err = unix.Write(un, []byte("unnamed"))
	note("write", err)
	note("fchmod", unix.Fchmod(un, 0o600))
	note("fchown", unix.Fchown(un, 0, 5))
	note("futimens", unix.UtimesNanoAt(un, "", []unix.Timespec{unix.NsecToTimespec(42e9), unix.NsecToTimespec(42e9)}, unix.AT_EMPTY_PATH))
	note("fsetxattr", unix.Fsetxattr(un, "user.mmapfs", []byte("u"), 0))
	sz, err = unix.Fgetxattr(un, "user.mmapfs", buf)
	note("fgetxattr", err, string(buf[:max(sz, 0)]))
	sz, err = unix.Flistxattr(un, buf)
	note("flistxattr", err, strings.ReplaceAll(string(buf[:max(sz, 0)]), "\x00", " "))
	note("fremovexattr", unix.Fremovexattr(un, "user.mmapfs"))
	note("truncate through /proc/self/fd", unix.Truncate("/proc/self/fd/"+strconv.Itoa(un), 9))
	data, err = os.ReadFile("/proc/self/fd/" + strconv.Itoa(un))
	note("reopen through /proc/self/fd and read", err, string(data))
	note("ftruncate", unix.Ftruncate(un, 7))
	var ust unix.Stat_t
	err = unix.Fstat(un, &ust)
	note("fstat", err, "mode ", strconv.FormatUint(uint64(ust.Mode), 8), " uid ", ust.Uid, " gid ", ust.Gid, " size ", ust.Size, " nlink ", ust.Nlink, " mtime now, not the futimens' ", recent(ust.Mtim))
	var ux unix.Statx_t
	err = unix.Statx(un, "", unix.AT_EMPTY_PATH, unix.STATX_BASIC_STATS, &ux)
	note("statx", err, "mode ", strconv.FormatUint(uint64(ux.Mode), 8), " size ", ux.Size)
	note("link it", procLink(un, "was-unnamed"))
	var lst unix.Stat_t
	err = unix.Stat(filepath.Join(dir, "was-unnamed"), &lst)
	note("stat the name", err, "mode ", strconv.FormatUint(uint64(lst.Mode), 8), " gid ", lst.Gid, " size ", lst.Size, " mtime now, not the futimens' ", recent(lst.Mtim))

	excl, err := unix.Open(dir, unix.O_TMPFILE|unix.O_RDWR|unix.O_EXCL|unix.O_CLOEXEC, 0o600)
	if err != nil {
		t.Fatalf("O_TMPFILE|O_EXCL in %s: %v", dir, err)
	}
	defer unix.Close(excl)
	note("link an O_EXCL one", procLink(excl, "excl"))
	_, err = os.Lstat(filepath.Join(dir, "excl"))
	note("its name", err)

	empty, err := unix.Open(dir, unix.O_TMPFILE|unix.O_WRONLY|unix.O_CLOEXEC, 0o600)
	if err != nil {
		t.Fatalf("O_TMPFILE in %s: %v", dir, err)
	}
	defer unix.Close(empty)
	_, err = unix.Write(empty, []byte("by AT_EMPTY_PATH"))
	note("write", err)
	note("link with AT_EMPTY_PATH", unix.Linkat(empty, "", unix.AT_FDCWD, filepath.Join(dir, "empty-path"), unix.AT_EMPTY_PATH))
	data, err = os.ReadFile(filepath.Join(dir, "empty-path"))
	note("read it", err, string(data))
	return out
}
