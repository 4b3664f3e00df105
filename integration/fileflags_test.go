package integration

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// File flags (chattr +i, chattr +a) through the mount, against the same
// calls on a plain directory of the store's filesystem (ext4 here).

const (
	flImmutable = 0x10 // FS_IMMUTABLE_FL
	flAppend    = 0x20 // FS_APPEND_FL
)

// getFlags is FS_IOC_GETFLAGS on path (lsattr): on the mount the kernel
// sends it to the daemon as FUSE_IOCTL on a handle of its own.
func getFlags(path string) (uint32, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, err
	}
	defer unix.Close(fd)
	return unix.IoctlGetUint32(fd, unix.FS_IOC_GETFLAGS)
}

// changeFlags sets and clears flags of path as chattr does (get, change,
// set) and returns the error of the set.
func changeFlags(path string, set, clear uint32) error {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	old, err := unix.IoctlGetUint32(fd, unix.FS_IOC_GETFLAGS)
	if err != nil {
		return err
	}
	return unix.IoctlSetPointerInt(fd, unix.FS_IOC_SETFLAGS, int(int32((old|set)&^clear)))
}

// clearFlagsBelow registers a cleanup that clears the immutable and
// append-only flags of everything below root, a directory of the store's
// own filesystem (never a mount: it must work with the daemon gone), so
// that t.TempDir can remove it. Register it after the directory's
// TempDir: cleanups run last registered first.
func clearFlagsBelow(t *testing.T, root string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("chattr +i and +a need CAP_LINUX_IMMUTABLE (root)")
	}
	if _, err := getFlags(root); err != nil {
		t.Skipf("FS_IOC_GETFLAGS on %s: %v", root, err)
	}
	t.Cleanup(func() {
		// Directories first, top down, so that their entries can be
		// walked and changed.
		err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.Type()&fs.ModeSymlink != 0 || !(d.IsDir() || d.Type().IsRegular()) {
				return nil
			}
			if f, gerr := getFlags(p); gerr == nil && f&(flImmutable|flAppend) != 0 {
				if serr := changeFlags(p, 0, flImmutable|flAppend); serr != nil {
					t.Errorf("clearing the flags of %s: %v", p, serr)
				}
			}
			return nil
		})
		if err != nil {
			t.Errorf("walking %s: %v", root, err)
		}
	})
}

// flagResult is what one step of a scenario gave.
type flagResult struct {
	step string
	got  string
}

// flagRecorder collects the results of a scenario's steps.
type flagRecorder struct {
	res []flagResult
}

func (r *flagRecorder) errno(step string, err error) {
	r.res = append(r.res, flagResult{step, errnoName(errnoOf(err))})
	if err != nil && errnoOf(err) == 0 {
		r.res[len(r.res)-1].got = "non-errno error: " + err.Error()
	}
}

func (r *flagRecorder) value(step, v string) {
	r.res = append(r.res, flagResult{step, v})
}

// compareFlagResults fails the test for every step whose result on the
// mount differs from the plain directory's, except that a step in known
// may also give the answer known has for it.
func compareFlagResults(t *testing.T, ref, mnt []flagResult, known map[string]string) {
	t.Helper()
	for i := range min(len(ref), len(mnt)) {
		if ref[i].step != mnt[i].step {
			// A step that failed on one side skipped the steps that
			// needed it.
			t.Errorf("step %d: %q on the mount, %q on plain ext4", i, mnt[i].step, ref[i].step)
			return
		}
		if mnt[i].got == ref[i].got {
			continue
		}
		if k, ok := known[ref[i].step]; ok {
			if mnt[i].got != k {
				t.Errorf("%s: mount %s, want %s (plain ext4) or %s (a known difference)", ref[i].step, mnt[i].got, ref[i].got, k)
			}
			continue
		}
		t.Errorf("%s: mount %s, plain ext4 %s", ref[i].step, mnt[i].got, ref[i].got)
	}
	if len(ref) != len(mnt) {
		t.Errorf("%d steps on the mount, %d on plain ext4", len(mnt), len(ref))
	}
}

// writebackCacheFlagDiffs are the answers the mount gives under
// --writeback-cache where ext4 gives others. The kernel buffers writes in
// its page cache and sends them later: a write the flag refuses returns 0
// from write(2), and the refusal comes with the next fsync (and fails a
// later fallocate, which writes the range back first, with EIO); and it
// sends utimes' "now" as explicit times, which an append-only file
// refuses.
var writebackCacheFlagDiffs = map[uint32]map[string]string{
	flImmutable: {
		"write through the descriptor from before":                "success",
		"pwrite at 100 through the descriptor from before":        "success",
		"fsync through the descriptor from before":                errnoName(unix.EPERM),
		"fallocate PUNCH_HOLE through the descriptor from before": errnoName(unix.EIO),
	},
	flAppend: {
		"utimes f (now, as touch)": errnoName(unix.EPERM),
	},
}

// fileSummary describes a file's size, content and flags for comparison.
func fileSummary(path string) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return "read: " + errnoName(errnoOf(err))
	}
	f, err := getFlags(path)
	fl := "?"
	if err == nil {
		fl = fmt.Sprintf("%#x", f&(flImmutable|flAppend))
	}
	return fmt.Sprintf("%d bytes sha256 %x flags %s", len(data), sha256.Sum256(data), fl)
}

// flagScenario runs every refusal an immutable or append-only file and
// directory give, in dir (a plain directory or a directory on the mount),
// with flag set on the file f and the directory d through dir.
func flagScenario(t *testing.T, dir string, flag uint32) []flagResult {
	t.Helper()
	r := &flagRecorder{}
	f := filepath.Join(dir, "f")
	d := filepath.Join(dir, "d")
	content := pattern(2*4096+100, 11)
	writeFile(t, f, content)
	writeFile(t, filepath.Join(dir, "other"), []byte("other"))
	if err := os.Mkdir(d, 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(d, "x"), []byte("x"))
	// Opened before the flag: the file keeps this descriptor's access.
	old, err := os.OpenFile(f, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()

	r.errno("set the flag on f", changeFlags(f, flag, 0))
	r.errno("set the flag on d", changeFlags(d, flag, 0))
	fl, err := getFlags(f)
	r.errno("get the flags of f", err)
	r.value("flags of f", fmt.Sprintf("%#x", fl))
	fl, err = getFlags(d)
	r.errno("get the flags of d", err)
	r.value("flags of d", fmt.Sprintf("%#x", fl))

	open := func(step string, flags int) *os.File {
		fh, err := os.OpenFile(f, flags, 0)
		r.errno(step, err)
		return fh
	}
	if fh := open("open O_RDONLY", os.O_RDONLY); fh != nil {
		buf := make([]byte, 10)
		_, err := fh.ReadAt(buf, 4096)
		r.errno("read through O_RDONLY", err)
		r.value("bytes read", fmt.Sprintf("%x", buf))
		// A client mapping of the mount: the test process is not the
		// daemon.
		_, err = unix.Mmap(int(fh.Fd()), 0, 4096, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
		r.errno("mmap PROT_WRITE MAP_SHARED of an O_RDONLY descriptor", err)
		m, err := unix.Mmap(int(fh.Fd()), 0, 4096, unix.PROT_READ, unix.MAP_SHARED)
		r.errno("mmap PROT_READ MAP_SHARED of an O_RDONLY descriptor", err)
		if err == nil {
			r.value("mapped byte 0", fmt.Sprintf("%x", m[0]))
			r.errno("munmap", unix.Munmap(m))
		}
		fh.Close()
	}
	for _, o := range []struct {
		step  string
		flags int
	}{
		{"open O_WRONLY", os.O_WRONLY},
		{"open O_RDWR", os.O_RDWR},
		{"open O_WRONLY|O_TRUNC", os.O_WRONLY | os.O_TRUNC},
		{"open O_RDONLY|O_TRUNC", os.O_RDONLY | os.O_TRUNC},
		{"open O_WRONLY|O_APPEND|O_TRUNC", os.O_WRONLY | os.O_APPEND | os.O_TRUNC},
		{"open O_WRONLY|O_CREATE (existing)", os.O_WRONLY | os.O_CREATE},
	} {
		if fh := open(o.step, o.flags); fh != nil {
			fh.Close()
		}
	}
	if fh := open("open O_WRONLY|O_APPEND", os.O_WRONLY|os.O_APPEND); fh != nil {
		_, err := fh.Write([]byte("appended\n"))
		r.errno("write through O_APPEND", err)
		_, err = unix.Pwrite(int(fh.Fd()), []byte("P"), 0)
		r.errno("pwrite at 0 through O_APPEND (lands at the end)", err)
		r.errno("fsync through O_APPEND", fh.Sync())
		r.errno("ftruncate through O_APPEND", fh.Truncate(10))
		r.errno("fallocate KEEP_SIZE through O_APPEND", unix.Fallocate(int(fh.Fd()), unix.FALLOC_FL_KEEP_SIZE, 0, 64<<10))
		r.errno("fallocate PUNCH_HOLE through O_APPEND", unix.Fallocate(int(fh.Fd()), unix.FALLOC_FL_KEEP_SIZE|unix.FALLOC_FL_PUNCH_HOLE, 0, 4096))
		r.errno("close O_APPEND", fh.Close())
	}
	if fh := open("open O_RDWR|O_APPEND", os.O_RDWR|os.O_APPEND); fh != nil {
		buf := make([]byte, 16)
		_, err := fh.ReadAt(buf, 0)
		r.errno("read through O_RDWR|O_APPEND", err)
		r.value("bytes read", fmt.Sprintf("%x", buf))
		_, err = fh.Write([]byte("again\n"))
		r.errno("write through O_RDWR|O_APPEND", err)
		r.errno("close O_RDWR|O_APPEND", fh.Close())
	}
	r.value("f after the appends", fileSummary(f))

	// The descriptor from before the flag.
	_, err = old.Write([]byte("old"))
	r.errno("write through the descriptor from before", err)
	_, err = old.WriteAt([]byte("OLD"), 100)
	r.errno("pwrite at 100 through the descriptor from before", err)
	r.errno("fsync through the descriptor from before", old.Sync())
	r.errno("ftruncate through the descriptor from before", old.Truncate(10))
	r.errno("fallocate through the descriptor from before", unix.Fallocate(int(old.Fd()), unix.FALLOC_FL_KEEP_SIZE, 0, 64<<10))
	r.errno("fallocate PUNCH_HOLE through the descriptor from before", unix.Fallocate(int(old.Fd()), unix.FALLOC_FL_KEEP_SIZE|unix.FALLOC_FL_PUNCH_HOLE, 0, 4096))
	r.value("f after the descriptor from before", fileSummary(f))

	// Names.
	r.errno("truncate f", os.Truncate(f, 0))
	r.errno("rename f", os.Rename(f, filepath.Join(dir, "f2")))
	r.errno("rename onto f", os.Rename(filepath.Join(dir, "other"), f))
	r.errno("link f", os.Link(f, filepath.Join(dir, "f3")))
	r.errno("unlink f", os.Remove(f))
	r.errno("create in d", unix.Mknod(filepath.Join(d, "new"), unix.S_IFREG|0o644, 0))
	r.errno("open O_CREATE in d", func() error {
		fh, err := os.OpenFile(filepath.Join(d, "new2"), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
		if err == nil {
			fh.Close()
		}
		return err
	}())
	r.errno("mkdir in d", os.Mkdir(filepath.Join(d, "sub"), 0o755))
	r.errno("symlink in d", os.Symlink("x", filepath.Join(d, "sym")))
	r.errno("rename in d", os.Rename(filepath.Join(d, "x"), filepath.Join(d, "y")))
	r.errno("unlink in d", os.Remove(filepath.Join(d, "x")))
	r.errno("write into a file of d", os.WriteFile(filepath.Join(d, "x"), []byte("changed"), 0o644))

	// Attributes.
	r.errno("chmod f", os.Chmod(f, 0o600))
	r.errno("chown f", os.Chown(f, os.Getuid(), os.Getgid()))
	when := time.Unix(1_000_000_000, 0)
	r.errno("utimes f (explicit)", os.Chtimes(f, when, when))
	now := []unix.Timespec{{Nsec: unix.UTIME_NOW}, {Nsec: unix.UTIME_NOW}}
	r.errno("utimes f (now, as touch)", unix.UtimesNanoAt(unix.AT_FDCWD, f, now, 0))
	r.errno("setxattr f", unix.Setxattr(f, "user.flagtest", []byte("v"), 0))
	r.errno("chmod d", os.Chmod(d, 0o700))
	r.value("f at the end", fileSummary(f))

	// Clearing the flags through the same path lets everything again.
	r.errno("clear the flag on f", changeFlags(f, 0, flag))
	r.errno("clear the flag on d", changeFlags(d, 0, flag))
	r.errno("write after clearing", os.WriteFile(f, []byte("free"), 0o644))
	r.errno("unlink after clearing", os.Remove(f))
	r.errno("unlink in d after clearing", os.Remove(filepath.Join(d, "x")))
	return r.res
}

// TestFileFlagsRefusals runs the scenario on a plain directory of the
// store's filesystem and on the mount, for +i and for +a, and requires
// the same answer at every step.
func TestFileFlagsRefusals(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name string
		flag uint32
	}{{"immutable", flImmutable}, {"append", flAppend}} {
		for _, sw := range [][]string{nil, {"--direct-io"}, {"--writeback-cache"}} {
			t.Run(strings.Join(append([]string{c.name}, sw...), ""), func(t *testing.T) {
				t.Parallel()
				if loopbackMode && (sw != nil || c.flag == flAppend) {
					// It takes none of the switches, and it drops
					// O_APPEND from every open (for its writeback
					// cache), which an append-only file refuses.
					t.Skip("go-fuse's loopback: the immutable case with its defaults only")
				}
				ref := t.TempDir()
				clearFlagsBelow(t, ref)
				m := startMount(t, sw...)
				clearFlagsBelow(t, m.store)
				want := flagScenario(t, ref, c.flag)
				got := flagScenario(t, m.mnt, c.flag)
				var known map[string]string
				if slices.Contains(sw, "--writeback-cache") {
					known = writebackCacheFlagDiffs[c.flag]
				}
				compareFlagResults(t, want, got, known)
				if t.Failed() {
					t.Logf("plain ext4 results:")
					for _, r := range want {
						t.Logf("  %-60s %s", r.step, r.got)
					}
				}
			})
		}
	}
}

// TestFileFlagsChattrLsattr runs chattr, lsattr and xfs_io's chattr (the
// FS_IOC_FSSETXATTR path) on a file and a directory of a plain directory
// and of the mount, and requires the same exit status and output.
func TestFileFlagsChattrLsattr(t *testing.T) {
	t.Parallel()
	for _, tool := range []string{"chattr", "lsattr", "xfs_io"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s: %v (e2fsprogs, xfsprogs)", tool, err)
		}
	}
	ref := t.TempDir()
	clearFlagsBelow(t, ref)
	m := startMount(t)
	clearFlagsBelow(t, m.store)
	// Each a command line run in the directory; "f" is a file, "d" a
	// directory. xfs_io opens read-only (-r): an immutable file refuses
	// a writable open.
	cmds := [][]string{
		{"lsattr", "f"},
		{"lsattr", "-d", "d"},
		{"lsattr", "-d", "."},
		{"chattr", "+i", "f"},
		{"lsattr", "f"},
		{"chattr", "+a", "f"},
		{"lsattr", "f"},
		{"chattr", "-i", "f"},
		{"lsattr", "f"},
		{"chattr", "-a", "f"},
		{"chattr", "+A", "+d", "f"},
		{"lsattr", "f"},
		{"chattr", "=", "f"},
		{"lsattr", "f"},
		{"chattr", "+c", "f"}, // compression: not on ext4
		{"chattr", "+i", "+a", "d"},
		{"lsattr", "-d", "d"},
		{"chattr", "-i", "-a", "d"},
		{"chattr", "+T", "d"},
		{"lsattr", "-d", "d"},
		{"xfs_io", "-r", "-c", "chattr +i", "-c", "lsattr", "f"},
		{"xfs_io", "-r", "-c", "lsattr -v", "f"},
		{"xfs_io", "-r", "-c", "chattr -i", "-c", "chattr +a", "-c", "lsattr", "f"},
		{"xfs_io", "-r", "-c", "chattr -a", "-c", "lsattr", "f"},
		{"xfs_io", "-r", "-c", "chattr +i", "-c", "lsattr", "d"},
		{"xfs_io", "-r", "-c", "chattr -i", "d"},
	}
	run := func(dir string) []string {
		writeFile(t, filepath.Join(dir, "f"), []byte("data\n"))
		if err := os.Mkdir(filepath.Join(dir, "d"), 0o755); err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, c := range cmds {
			cmd := exec.Command(c[0], c[1:]...)
			cmd.Dir = dir
			b, err := cmd.CombinedOutput()
			status := 0
			if ee, ok := err.(*exec.ExitError); ok {
				status = ee.ExitCode()
			} else if err != nil {
				t.Fatalf("%s: %v", strings.Join(c, " "), err)
			}
			out = append(out, fmt.Sprintf("%s → %d: %s", strings.Join(c, " "), status, bytes.TrimSpace(b)))
		}
		return out
	}
	want := run(ref)
	got := run(m.mnt)
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("mount:  %s\nplain:  %s", got[i], want[i])
		}
	}
}

// TestFileFlagsImmutableBehind makes a file immutable directly in the
// store (behind the mount) while the daemon has it mapped with pages
// written and not synced: every later write through the mount either
// lands or fails with EPERM or EIO, nothing written before is lost, and
// the daemon still exits 0 with the store synced.
func TestFileFlagsImmutableBehind(t *testing.T) {
	if loopbackMode {
		t.Skip("the daemon's mappings are mmapfs's")
	}
	t.Parallel()
	m := startMount(t)
	clearFlagsBelow(t, m.store)
	path := filepath.Join(m.mnt, "f")
	want := pattern(8*4096, 21)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(want, 0); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	// Pages 0-3 written again and not synced: dirty in the daemon's
	// mapping when the flag comes.
	for p := int64(0); p < 4; p++ {
		copy(want[p*4096+10:], "unsynced")
		if _, err := f.WriteAt([]byte("unsynced"), p*4096+10); err != nil {
			t.Fatal(err)
		}
	}
	if err := changeFlags(filepath.Join(m.store, "f"), flImmutable, 0); err != nil {
		t.Fatalf("chattr +i in the store: %v", err)
	}
	landed, refused := 0, 0
	for p := int64(0); p < 8; p++ {
		_, err := f.WriteAt([]byte("after"), p*4096+100)
		switch errnoOf(err) {
		case 0:
			copy(want[p*4096+100:], "after")
			landed++
		case unix.EPERM, unix.EIO:
			refused++
		default:
			t.Errorf("write into page %d after chattr +i behind the mount: %v, want success, EPERM or EIO", p, err)
		}
	}
	_, err = f.WriteAt([]byte("tail"), int64(len(want)))
	if e := errnoOf(err); e != unix.EPERM && e != unix.EIO {
		t.Errorf("append after chattr +i behind the mount: %v, want EPERM or EIO", err)
	}
	t.Logf("%d writes landed, %d refused", landed, refused)
	if err := f.Sync(); err != nil {
		t.Errorf("fsync after chattr +i behind the mount: %v", err)
	}
	if err := f.Close(); err != nil {
		t.Errorf("close: %v", err)
	}
	m.stop(t) // exit 0 required, and the store synced
	checkContent(t, filepath.Join(m.store, "f"), want)
	if strings.Contains(m.out.String(), "panic") {
		t.Errorf("the daemon logged a panic:\n%s", m.out)
	}
}

// TestFileFlagsClientMapping pins what the mount cannot refuse: a client's
// shared writable mapping. The FUSE client is never asked at mmap and
// does not learn the flags, so a mapping ext4 would refuse (MAP_SHARED of
// a writable descriptor of an append-only file: EACCES) or fault (a write
// into an immutable file mapped before the flag: SIGBUS) is made, and its
// writes stay in the client's page cache; the daemon refuses them when
// they are written back (msync reports it), and the store keeps its
// bytes.
func TestFileFlagsClientMapping(t *testing.T) {
	if loopbackMode {
		t.Skip("mmapfs's refusals")
	}
	t.Parallel()
	m := startMount(t)
	clearFlagsBelow(t, m.store)
	for _, c := range []struct {
		name string
		flag uint32
		open int // for the mapping, after the flag for +a, before for +i
	}{{"immutable", flImmutable, os.O_RDWR}, {"append", flAppend, os.O_RDWR | os.O_APPEND}} {
		path := filepath.Join(m.mnt, c.name)
		want := pattern(3*4096, 31)
		writeFile(t, path, want)
		var f *os.File
		var err error
		if c.flag == flImmutable {
			f = openRW(t, path)
		} else {
			// A read-only descriptor from before the flag keeps the
			// daemon's blob, opened writable then, alive: the
			// mapping's descriptor, opened after the flag, must
			// still only append through it.
			keep, err := os.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { keep.Close() })
		}
		if err := changeFlags(path, c.flag, 0); err != nil {
			t.Fatalf("%s: chattr through the mount: %v", c.name, err)
		}
		if f == nil {
			if f, err = os.OpenFile(path, c.open, 0); err != nil {
				t.Fatalf("%s: open %#x: %v", c.name, c.open, err)
			}
			t.Cleanup(func() { f.Close() })
		}
		mem := mmapFile(t, f, 4096, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
		mem[0] ^= 0xff
		err = unix.Msync(mem, unix.MS_SYNC)
		if e := errnoOf(err); e != unix.EPERM && e != unix.EIO {
			t.Errorf("%s: msync of a written mapping: %v, want EPERM (or EIO)", c.name, err)
		}
		munmap(t, mem)
		checkContent(t, filepath.Join(m.store, c.name), want)
	}
}

// TestFileFlagsAppendCache appends to an append-only file in small pieces,
// each followed by fsync, under each caching switch (the writeback cache
// sends a partly written page again with what follows), and requires the
// file ext4 gives.
func TestFileFlagsAppendCache(t *testing.T) {
	if loopbackMode {
		t.Skip("mmapfs switches")
	}
	t.Parallel()
	appendAll := func(t *testing.T, dir string) []byte {
		path := filepath.Join(dir, "log")
		writeFile(t, path, []byte("head\n"))
		if err := changeFlags(path, flAppend, 0); err != nil {
			t.Fatalf("chattr +a: %v", err)
		}
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			t.Fatalf("open O_APPEND: %v", err)
		}
		defer f.Close()
		for i := range 40 {
			line := bytes.Repeat([]byte{byte('a' + i%26)}, 100+i*37)
			if _, err := f.Write(append(line, '\n')); err != nil {
				t.Fatalf("append %d: %v", i, err)
			}
			if i%3 == 0 {
				if err := f.Sync(); err != nil {
					t.Fatalf("fsync after append %d: %v", i, err)
				}
			}
		}
		if err := f.Close(); err != nil {
			t.Fatalf("close: %v", err)
		}
		return readFile(t, path)
	}
	ref := t.TempDir()
	clearFlagsBelow(t, ref)
	want := appendAll(t, ref)
	for _, sw := range [][]string{nil, {"--writeback-cache"}, {"--direct-io"}, {"--keep-cache", "--writeback-cache"}} {
		t.Run(strings.Join(append([]string{"defaults"}, sw...), ""), func(t *testing.T) {
			t.Parallel()
			m := startMount(t, sw...)
			clearFlagsBelow(t, m.store)
			got := appendAll(t, m.mnt)
			if !bytes.Equal(got, want) {
				t.Errorf("through the mount: %s", diffBytes(got, want))
			}
			m.stop(t)
			checkContent(t, filepath.Join(m.store, "log"), want)
		})
	}
}

// TestFileFlagsPowerCut appends to append-only files through the mount,
// fsyncs some of it, and cuts the power (--powercut-sim): each file must
// be back at what was synced, its flag still set, although an
// append-only file refuses the truncate and the writes that put it back.
func TestFileFlagsPowerCut(t *testing.T) {
	if loopbackMode {
		t.Skip("mmapfs's power-cut simulation")
	}
	t.Parallel()
	m := startMount(t, "--powercut-sim")
	clearFlagsBelow(t, m.store)
	synced := map[string][]byte{}
	for _, name := range []string{"open", "closed"} {
		path := filepath.Join(m.mnt, name)
		head := pattern(5000, 41)
		writeFile(t, path, head)
		if err := changeFlags(path, flAppend, 0); err != nil {
			t.Fatalf("chattr +a through the mount: %v", err)
		}
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			t.Fatalf("open O_APPEND: %v", err)
		}
		t.Cleanup(func() { f.Close() })
		more := pattern(3000, 42)
		if _, err := f.Write(more); err != nil {
			t.Fatalf("append: %v", err)
		}
		if err := f.Sync(); err != nil {
			t.Fatalf("fsync: %v", err)
		}
		synced[name] = append(append([]byte{}, head...), more...)
		if _, err := f.Write(pattern(9000, 43)); err != nil {
			t.Fatalf("append, not synced: %v", err)
		}
		if name == "closed" {
			if err := f.Close(); err != nil {
				t.Fatalf("close: %v", err)
			}
		}
	}
	r := m.powerCut(t)
	if r.Report == nil || len(r.Report.Files) != 2 {
		t.Errorf("power cut report: %+v, want both files", r.Report)
	}
	for name, want := range synced {
		path := filepath.Join(m.store, name)
		checkContent(t, path, want)
		if f, err := getFlags(path); err != nil || f&flAppend == 0 {
			t.Errorf("%s after the cut: flags %#x (%v), want append-only still", name, f, err)
		}
	}
}
