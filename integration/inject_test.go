package integration

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mmapfs/mmapfs/fs/inject"
	"github.com/mmapfs/mmapfs/fs/wire"
)

// Fault injection (--inject, mmapfs inject): each rule kind on a real
// mount, the client's view of it, the store's file after it, and the
// daemon's log line naming the rule.

// injectLogged waits for the daemon's log line of a hit of rule (given
// as --inject had it) on op of the file rel with what it did.
func injectLogged(t *testing.T, m *mount, rule, op, rel, what string) {
	t.Helper()
	want := fmt.Sprintf("%q: %s %q: %s", rule, op, rel, what)
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(m.out.String(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("the daemon did not log %s; its log:\n%s", want, m.out.String())
		}
		time.Sleep(pollInterval)
	}
}

// storeWrite makes the file rel of the store with data (before the mount
// sees it).
func storeWrite(t *testing.T, store, rel string, data []byte) {
	t.Helper()
	p := filepath.Join(store, rel)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// injectCLI runs mmapfs inject with args and returns its result.
func injectCLI(t *testing.T, args ...string) runResult {
	t.Helper()
	return runBinary(t, cliTimeout, nil, append([]string{"inject"}, args...)...)
}

// TestInjectErrno: a rule with errno= fails the op it names, on the file
// it names only, with that errno, and the store's file is unchanged.
func TestInjectErrno(t *testing.T) {
	t.Parallel()
	type errCase struct {
		op, rel string
		errno   syscall.Errno
		call    func(mnt string) error
	}
	cases := []errCase{
		{"write", "e/write", syscall.ENOSPC, func(mnt string) error {
			f, err := os.OpenFile(filepath.Join(mnt, "e/write"), os.O_WRONLY, 0)
			if err != nil {
				return fmt.Errorf("open: %w", err)
			}
			defer f.Close()
			_, err = f.WriteAt([]byte("new"), 0)
			return err
		}},
		{"fsync", "e/fsync", syscall.EIO, func(mnt string) error {
			f, err := os.OpenFile(filepath.Join(mnt, "e/fsync"), os.O_WRONLY, 0)
			if err != nil {
				return fmt.Errorf("open: %w", err)
			}
			defer f.Close()
			return f.Sync()
		}},
		{"read", "e/read", syscall.EIO, func(mnt string) error {
			_, err := os.ReadFile(filepath.Join(mnt, "e/read"))
			return err
		}},
		{"open", "e/open", syscall.EACCES, func(mnt string) error {
			f, err := os.Open(filepath.Join(mnt, "e/open"))
			if err == nil {
				f.Close()
			}
			return err
		}},
		{"create", "e/create", syscall.EDQUOT, func(mnt string) error {
			f, err := os.OpenFile(filepath.Join(mnt, "e/create"), os.O_CREATE|os.O_WRONLY, 0o644)
			if err == nil {
				f.Close()
			}
			return err
		}},
		{"unlink", "e/unlink", syscall.EBUSY, func(mnt string) error { return os.Remove(filepath.Join(mnt, "e/unlink")) }},
		{"rename", "e/rename", syscall.EROFS, func(mnt string) error {
			return os.Rename(filepath.Join(mnt, "e/rename"), filepath.Join(mnt, "e/renamed"))
		}},
		{"mkdir", "e/mkdir", syscall.ENOSPC, func(mnt string) error { return os.Mkdir(filepath.Join(mnt, "e/mkdir"), 0o755) }},
		{"setxattr", "e/xattr", syscall.E2BIG, func(mnt string) error {
			return unix.Setxattr(filepath.Join(mnt, "e/xattr"), "user.k", []byte("v"), 0)
		}},
		{"truncate", "e/trunc", syscall.EFBIG, func(mnt string) error { return os.Truncate(filepath.Join(mnt, "e/trunc"), 1) }},
		{"fallocate", "e/falloc", syscall.ENOSPC, func(mnt string) error {
			f, err := os.OpenFile(filepath.Join(mnt, "e/falloc"), os.O_WRONLY, 0)
			if err != nil {
				return fmt.Errorf("open: %w", err)
			}
			defer f.Close()
			return unix.Fallocate(int(f.Fd()), 0, 0, 1<<20)
		}},
	}
	// More ops, on nodes made in the store by prepare (nil: a file).
	more := []struct {
		errCase
		prepare func(store, p string) error
	}{
		{errCase{"lookup", "e/lookup", syscall.EACCES, func(mnt string) error {
			_, err := os.Stat(filepath.Join(mnt, "e/lookup"))
			return err
		}}, nil},
		{errCase{"readdir", "e/dir", syscall.EIO, func(mnt string) error {
			_, err := os.ReadDir(filepath.Join(mnt, "e/dir"))
			return err
		}}, func(store, p string) error { return os.Mkdir(p, 0o755) }},
		{errCase{"rmdir", "e/rmdir", syscall.ENOTEMPTY, func(mnt string) error { return os.Remove(filepath.Join(mnt, "e/rmdir")) }},
			func(store, p string) error { return os.Mkdir(p, 0o755) }},
		{errCase{"symlink", "e/symlink", syscall.ENOSPC, func(mnt string) error {
			return os.Symlink("target", filepath.Join(mnt, "e/symlink"))
		}}, func(store, p string) error { return nil }},
		{errCase{"link", "e/link", syscall.EMLINK, func(mnt string) error {
			return os.Link(filepath.Join(mnt, "e/other"), filepath.Join(mnt, "e/link"))
		}}, func(store, p string) error { return nil }},
		{errCase{"readlink", "e/readlink", syscall.EIO, func(mnt string) error {
			_, err := os.Readlink(filepath.Join(mnt, "e/readlink"))
			return err
		}}, func(store, p string) error { return os.Symlink("target", p) }},
		{errCase{"getxattr", "e/getxattr", syscall.EIO, func(mnt string) error {
			_, err := unix.Getxattr(filepath.Join(mnt, "e/getxattr"), "user.k", make([]byte, 64))
			return err
		}}, nil},
		{errCase{"setattr", "e/chmod", syscall.EPERM, func(mnt string) error { return os.Chmod(filepath.Join(mnt, "e/chmod"), 0o600) }}, nil},
	}
	store := t.TempDir()
	for _, c := range more {
		if c.prepare == nil {
			storeWrite(t, store, c.rel, []byte("old content"))
		} else if err := c.prepare(store, filepath.Join(store, c.rel)); err != nil {
			t.Fatal(err)
		}
		cases = append(cases, c.errCase)
	}
	var flags []string
	rules := map[string]string{}
	for _, c := range cases {
		switch c.op {
		case "create", "mkdir", "symlink", "link", "readdir", "rmdir", "readlink":
		default:
			if _, err := os.Lstat(filepath.Join(store, c.rel)); err != nil {
				storeWrite(t, store, c.rel, []byte("old content"))
			}
		}
		rule := fmt.Sprintf("op=%s,path=%s,errno=%s", c.op, c.rel, unix.ErrnoName(c.errno))
		rules[c.op] = rule
		flags = append(flags, "--inject", rule)
	}
	// The same ops on other files are served.
	storeWrite(t, store, "e/other", []byte("old content"))
	m := startMountAt(t, store, t.TempDir(), flags...)
	for _, c := range cases {
		t.Run(c.op, func(t *testing.T) {
			err := c.call(m.mnt)
			if !errors.Is(err, c.errno) {
				t.Fatalf("%s of %s: %v, want %v", c.op, c.rel, err, c.errno)
			}
			injectLogged(t, m, rules[c.op], c.op, c.rel, unix.ErrnoName(c.errno))
			switch c.op {
			case "create", "mkdir", "symlink", "link":
				if _, err := os.Lstat(filepath.Join(store, c.rel)); !errors.Is(err, os.ErrNotExist) {
					t.Fatalf("%s failed, yet the store has %s: %v", c.op, c.rel, err)
				}
				return
			case "readdir", "rmdir", "readlink":
				if _, err := os.Lstat(filepath.Join(store, c.rel)); err != nil {
					t.Fatalf("after a failed %s: %v", c.op, err)
				}
				return
			case "setattr":
				if st, err := os.Stat(filepath.Join(store, c.rel)); err != nil || st.Mode().Perm() != 0o644 {
					t.Fatalf("after a failed chmod the store's file is %v, %v; want 0644", st.Mode(), err)
				}
			}
			got, err := os.ReadFile(filepath.Join(store, c.rel))
			if err != nil || string(got) != "old content" {
				t.Fatalf("the store's %s after a failed %s: %q, %v; want it unchanged", c.rel, c.op, got, err)
			}
		})
	}
	t.Run("other files", func(t *testing.T) {
		p := filepath.Join(m.mnt, "e/other")
		f, err := os.OpenFile(p, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if _, err := f.WriteAt([]byte("NEW"), 0); err != nil {
			t.Fatal(err)
		}
		if err := f.Sync(); err != nil {
			t.Fatal(err)
		}
		if err := unix.Fallocate(int(f.Fd()), 0, 0, 4096); err != nil {
			t.Fatal(err)
		}
		if err := os.Mkdir(filepath.Join(m.mnt, "e/otherdir"), 0o755); err != nil {
			t.Fatal(err)
		}
	})
}

// TestInjectDelay: delay=2s holds an fsync for at least 2s; other files'
// fsyncs are not held. The delay is long and the bound for the others
// loose (1s) so that an undelayed fsync slowed by a loaded machine (175ms
// seen) is still told apart from a held one.
func TestInjectDelay(t *testing.T) {
	t.Parallel()
	const (
		rule  = "op=fsync,path=slow,delay=2s"
		delay = 2 * time.Second
	)
	m := startMount(t, "--inject", rule)
	timeFsync := func(name string) time.Duration {
		f, err := os.Create(filepath.Join(m.mnt, name))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if _, err := f.Write([]byte("x")); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		if err := f.Sync(); err != nil {
			t.Fatalf("fsync %s: %v", name, err)
		}
		return time.Since(start)
	}
	if d := timeFsync("slow"); d < delay {
		t.Fatalf("fsync under %s took %v", rule, d)
	}
	injectLogged(t, m, rule, "fsync", "slow", "delayed 2s")
	if d := timeFsync("fast"); d >= delay/2 {
		t.Fatalf("fsync of another file took %v", d)
	}
	if notHeld := fmt.Sprintf("fsync %q: delayed", "fast"); strings.Contains(m.out.String(), notHeld) {
		t.Errorf("the daemon held the fsync of another file; its log:\n%s", m.out.String())
	}
}

// TestInjectTornWrite: torn=K lets only the first K bytes of the write
// reach the file; the client sees a short count, or with torn=K:ERRNO the
// errno.
func TestInjectTornWrite(t *testing.T) {
	t.Parallel()
	const short, failed = "op=write,path=torn,torn=512", "op=write,path=tornerr,torn=100:EIO"
	m := startMount(t, "--inject", short, "--inject", failed)
	data := bytes.Repeat([]byte("abcdefgh"), 512) // 4 KiB
	for _, c := range []struct {
		name, rule string
		keep       int
		errno      syscall.Errno
	}{{"torn", short, 512, 0}, {"tornerr", failed, 100, syscall.EIO}} {
		f, err := os.Create(filepath.Join(m.mnt, c.name))
		if err != nil {
			t.Fatal(err)
		}
		n, err := unix.Pwrite(int(f.Fd()), data, 0)
		f.Close()
		if c.errno != 0 {
			if !errors.Is(err, c.errno) {
				t.Fatalf("%s: pwrite = %d, %v; want %v", c.rule, n, err, c.errno)
			}
			injectLogged(t, m, c.rule, "write", c.name, "torn after 100 bytes, then EIO")
		} else {
			if err != nil || n != c.keep {
				t.Fatalf("%s: pwrite = %d, %v; want the short count %d", c.rule, n, err, c.keep)
			}
			injectLogged(t, m, c.rule, "write", c.name, "torn after 512 bytes")
		}
		got, err := os.ReadFile(filepath.Join(m.store, c.name))
		if err != nil || !bytes.Equal(got, data[:c.keep]) {
			t.Fatalf("%s: the store's file holds %d bytes (%v), want exactly the first %d of the write", c.rule, len(got), err, c.keep)
		}
	}
	// A write shorter than K reaches the file whole, then gets the errno.
	f, err := os.Create(filepath.Join(m.mnt, "tornerr2"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if r := injectCLI(t, m.mnt, "op=write,path=tornerr2,torn=100:EIO"); r.exitCode != 0 {
		t.Fatalf("mmapfs inject: exit %d\n%s", r.exitCode, r.stderr)
	}
	if n, err := unix.Pwrite(int(f.Fd()), data[:50], 0); !errors.Is(err, syscall.EIO) {
		t.Fatalf("a 50-byte pwrite under torn=100:EIO: %d, %v; want EIO", n, err)
	}
	if got, err := os.ReadFile(filepath.Join(m.store, "tornerr2")); err != nil || !bytes.Equal(got, data[:50]) {
		t.Fatalf("the store's file holds %d bytes (%v), want the 50 written", len(got), err)
	}
}

// TestInjectShortRead: short=K returns at most K bytes of a read.
func TestInjectShortRead(t *testing.T) {
	t.Parallel()
	const rule = "op=read,path=s,short=100"
	store := t.TempDir()
	data := bytes.Repeat([]byte("0123456789"), 1000)
	storeWrite(t, store, "s", data)
	m := startMountAt(t, store, t.TempDir(), "--inject", rule)
	f, err := os.Open(filepath.Join(m.mnt, "s"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 4096)
	n, err := f.Read(buf)
	if err != nil || n != 100 || !bytes.Equal(buf[:n], data[:100]) {
		t.Fatalf("read under %s: %d bytes (%q...), %v; want the first 100", rule, n, buf[:min(n, 20)], err)
	}
	injectLogged(t, m, rule, "read", "s", "short read of at most 100 bytes")
}

// TestInjectMsyncErrno: op=msync fails the sync the daemon makes for an
// fsync: the client's fsync gets the errno, the pages stay owed, and once
// the rule is spent the next fsync syncs them.
func TestInjectMsyncErrno(t *testing.T) {
	t.Parallel()
	const rule = "op=msync,path=m,errno=EIO,times=1"
	m := startMount(t, "--inject", rule)
	f, err := os.Create(filepath.Join(m.mnt, "m"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write([]byte("written")); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); !errors.Is(err, syscall.EIO) {
		t.Fatalf("fsync under %s: %v, want EIO", rule, err)
	}
	injectLogged(t, m, rule, "msync", "m", "EIO")
	if s := bdiSnapshot(t, m); s.Figures.Get(wire.UnsyncedBytes) == 0 {
		t.Fatalf("after the failed msync nothing is unsynced; the pages must stay owed")
	}
	if err := f.Sync(); err != nil {
		t.Fatalf("the second fsync: %v", err)
	}
	if s := bdiSnapshot(t, m); s.Figures.Get(wire.UnsyncedBytes) != 0 {
		t.Fatalf("after the second fsync %d bytes are unsynced", s.Figures.Get(wire.UnsyncedBytes))
	}
}

// TestInjectFsyncgate: the PostgreSQL surprise. Under
// op=msync,errno=EIO,fsyncgate a failed fsync reports EIO once; the pages
// it could not write are lost (put back to their last synced content) and
// no longer dirty, so the next fsync succeeds, and the file holds what was
// last synced, not what was written and acknowledged by write(2).
func TestInjectFsyncgate(t *testing.T) {
	t.Parallel()
	m := startMount(t, "--powercut-sim")
	synced := bytes.Repeat([]byte("A"), 8192)
	lost := bytes.Repeat([]byte("B"), 4096)
	f, err := os.Create(filepath.Join(m.mnt, "g"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(synced); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	const rule = "op=msync,path=g,errno=EIO,fsyncgate,times=1"
	if r := injectCLI(t, m.mnt, rule); r.exitCode != 0 {
		t.Fatalf("mmapfs inject: exit %d\n%s", r.exitCode, r.stderr)
	}
	// The second page rewritten, and the file extended by a page.
	if _, err := f.WriteAt(lost, 4096); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(lost, 8192); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); !errors.Is(err, syscall.EIO) {
		t.Fatalf("fsync under %s: %v, want EIO", rule, err)
	}
	injectLogged(t, m, rule, "msync", "g", "EIO, and the pages are lost (fsyncgate)")
	if err := f.Sync(); err != nil {
		t.Fatalf("the fsync after the failed one: %v, want success (the error is reported once)", err)
	}
	// The rewritten page has its synced content back; the page past the
	// synced size reads as the disk has it, zeros (the size stays).
	want := append(append([]byte{}, synced...), make([]byte, 4096)...)
	got, err := os.ReadFile(filepath.Join(m.store, "g"))
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("the store's file after fsyncgate: %d bytes (%v), first of page 2 %q, of page 3 %q; want the synced 8 KiB then a page of zeros",
			len(got), err, got[4096:4097], got[8192:8193])
	}
	// Through the mount, opened again (which drops the kernel's cache
	// of the file): the same.
	got, err = os.ReadFile(filepath.Join(m.mnt, "g"))
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("the file read through the mount after fsyncgate: %d bytes, %v; want the synced content", len(got), err)
	}
	// And it stays so: a power cut now loses nothing more.
	if s := bdiSnapshot(t, m); s.PowerCut == nil || s.PowerCut.SavedBytes != 0 {
		t.Fatalf("power-cut journal after fsyncgate and a good fsync: %+v, want nothing saved", s.PowerCut)
	}
}

// TestInjectFsyncgateNeedsSim: fsyncgate without --powercut-sim is
// refused at mount and through mmapfs inject, naming the flag.
func TestInjectFsyncgateNeedsSim(t *testing.T) {
	t.Parallel()
	const rule = "op=msync,errno=EIO,fsyncgate"
	mnt := t.TempDir()
	r := runBinary(t, cliTimeout, []string{mnt}, "mount", "--inject", rule, t.TempDir(), mnt)
	if r.exitCode != 1 || !strings.Contains(r.stderr, fmt.Sprintf("--inject %q: fsyncgate:", rule)) || !strings.Contains(r.stderr, "--powercut-sim") {
		t.Fatalf("mount --inject %s without --powercut-sim: exit %d\n%s", rule, r.exitCode, r.stderr)
	}
	m := startMount(t)
	r = injectCLI(t, m.mnt, rule)
	if r.exitCode != 1 || !strings.Contains(r.stderr, "--powercut-sim") {
		t.Fatalf("mmapfs inject %s on a mount without the simulation: exit %d\n%s", rule, r.exitCode, r.stderr)
	}
}

// TestInjectShortNeedsNoWritebackCache: a short READ on a mount with the
// writeback cache would make the kernel keep a zero-filled page (and
// write the zeros back later), so short= is refused there, at mount and
// through mmapfs inject.
func TestInjectShortNeedsNoWritebackCache(t *testing.T) {
	t.Parallel()
	const rule = "op=read,short=100"
	mnt := t.TempDir()
	r := runBinary(t, cliTimeout, []string{mnt}, "mount", "--writeback-cache", "--inject", rule, t.TempDir(), mnt)
	if r.exitCode != 1 || !strings.Contains(r.stderr, fmt.Sprintf("--inject %q: short=100:", rule)) || !strings.Contains(r.stderr, "--writeback-cache") {
		t.Fatalf("mount --writeback-cache --inject %s: exit %d\n%s", rule, r.exitCode, r.stderr)
	}
	m := startMount(t, "--writeback-cache")
	r = injectCLI(t, m.mnt, rule)
	if r.exitCode != 1 || !strings.Contains(r.stderr, "--writeback-cache") {
		t.Fatalf("mmapfs inject %s on a --writeback-cache mount: exit %d\n%s", rule, r.exitCode, r.stderr)
	}
}

// TestInjectFault: op=fault makes the copy out of the mapping fail as the
// store's device would: the client's read gets EIO; the daemon keeps
// serving the file's neighbours, and the file itself once the rule is
// cleared.
func TestInjectFault(t *testing.T) {
	t.Parallel()
	const rule = "op=fault,path=big,errno=EIO"
	store := t.TempDir()
	storeWrite(t, store, "big", bytes.Repeat([]byte("b"), 1<<20))
	storeWrite(t, store, "small", []byte("small"))
	m := startMountAt(t, store, t.TempDir(), "--inject", rule)
	if _, err := os.ReadFile(filepath.Join(m.mnt, "big")); !errors.Is(err, syscall.EIO) {
		t.Fatalf("read of big under %s: %v, want EIO", rule, err)
	}
	injectLogged(t, m, rule, "fault", "big", "EIO")
	if got, err := os.ReadFile(filepath.Join(m.mnt, "small")); err != nil || string(got) != "small" {
		t.Fatalf("read of another file: %q, %v", got, err)
	}
	if r := injectCLI(t, m.mnt, "--clear"); r.exitCode != 0 {
		t.Fatalf("mmapfs inject --clear: exit %d\n%s", r.exitCode, r.stderr)
	}
	if got, err := os.ReadFile(filepath.Join(m.mnt, "big")); err != nil || len(got) != 1<<20 {
		t.Fatalf("read of big after clearing the rule: %d bytes, %v", len(got), err)
	}
}

// TestInjectWhen: nth=, times=, after= and prob= with seed= pick the
// calls on a real mount as they do in the rules' own tests: which of ten
// 4 KiB writes fail.
func TestInjectWhen(t *testing.T) {
	t.Parallel()
	rules := map[string]string{
		"nth":   "op=write,path=nth,nth=3,errno=EIO",
		"times": "op=write,path=times,times=2,errno=EIO",
		"after": "op=write,path=after,after=16KiB,errno=EIO",
		"prob":  "op=write,path=prob,prob=0.5,seed=7,errno=EIO",
	}
	want := map[string]string{"nth": "[3]", "times": "[1 2]", "after": "[5 6 7 8 9 10]"}
	// prob: the calls the same rule picks in the rule language itself.
	r, err := inject.Parse(rules["prob"])
	if err != nil {
		t.Fatal(err)
	}
	set := inject.NewSet(0, false)
	if _, err := set.Add(r); err != nil {
		t.Fatal(err)
	}
	var picked []int
	for i := 1; i <= 10; i++ {
		if set.Decide("write", "prob", 4096).Errno != 0 {
			picked = append(picked, i)
		}
	}
	want["prob"] = fmt.Sprint(picked)
	var flags []string
	for _, rule := range rules {
		flags = append(flags, "--inject", rule)
	}
	m := startMount(t, flags...)
	for name := range rules {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			f, err := os.Create(filepath.Join(m.mnt, name))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			var failed []int
			for i := 1; i <= 10; i++ {
				_, err := f.WriteAt(make([]byte, 4096), int64(i-1)*4096)
				switch {
				case errors.Is(err, syscall.EIO):
					failed = append(failed, i)
				case err != nil:
					t.Fatalf("write %d: %v", i, err)
				}
			}
			if got := fmt.Sprint(failed); got != want[name] {
				t.Fatalf("%s: writes %s failed, want %s", rules[name], got, want[name])
			}
		})
	}
}

// TestInjectCLI: rules added, listed and cleared while mounted through
// mmapfs inject, their hits in mmapfs stats (--json and the table), bad
// rules refused with the rule, the part that is wrong and the forms.
func TestInjectCLI(t *testing.T) {
	t.Parallel()
	m := startMount(t)
	r := injectCLI(t, m.mnt, "op=unlink,path=keep,errno=EPERM", "op=fsync,path=nothing,delay=1ms")
	if r.exitCode != 0 || !strings.Contains(r.stdout, "added #1, #2 on "+m.mnt) || !strings.Contains(r.stdout, "op=unlink,path=keep,errno=EPERM") {
		t.Fatalf("inject add: exit %d\n%s%s", r.exitCode, r.stdout, r.stderr)
	}
	if err := os.WriteFile(filepath.Join(m.mnt, "keep"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := os.Remove(filepath.Join(m.mnt, "keep")); !errors.Is(err, syscall.EPERM) {
			t.Fatalf("unlink under the rule: %v, want EPERM", err)
		}
	}
	r = injectCLI(t, m.mnt, "--list")
	if r.exitCode != 0 || !strings.Contains(r.stdout, "#1  op=unlink,path=keep,errno=EPERM  2      2     ") {
		t.Fatalf("inject --list: exit %d\n%s%s", r.exitCode, r.stdout, r.stderr)
	}
	s := bdiSnapshot(t, m)
	if len(s.Inject) != 2 || s.Inject[0].Hits != 2 || s.Inject[0].LastPath != "keep" || s.Inject[0].LastHit == nil || s.Inject[1].Hits != 0 {
		t.Fatalf("stats --json inject: %+v", s.Inject)
	}
	r = runBinary(t, cliTimeout, nil, "stats", m.mnt)
	if r.exitCode != 0 || !strings.Contains(r.stdout, "fault injection") || !strings.Contains(r.stdout, "op=fsync,path=nothing,delay=1ms") {
		t.Fatalf("stats: exit %d\n%s%s", r.exitCode, r.stdout, r.stderr)
	}
	r = injectCLI(t, "--json", m.mnt, "--list")
	var reply wire.ControlReply
	if err := json.Unmarshal([]byte(r.stdout), &reply); r.exitCode != 0 || err != nil || len(reply.Inject) != 2 {
		t.Fatalf("inject --list --json: exit %d, %v\n%s%s", r.exitCode, err, r.stdout, r.stderr)
	}
	// Bad rules: refused by the command before asking the daemon, and by
	// the daemon (through the control file) if asked.
	for _, c := range []struct{ rule, want string }{
		{"op=wrte,errno=EIO", `rule "op=wrte,errno=EIO": op "wrte": want one of read, write,`},
		{"op=read,torn=5", `rule "op=read,torn=5": torn=5: torn= is for op=write only`},
		{"op=fsync,errno=EIO,delay=1s", "two actions: errno and delay"},
	} {
		r := injectCLI(t, m.mnt, "op=read,errno=EIO", c.rule)
		if r.exitCode != 1 || !strings.Contains(r.stderr, c.want) || !strings.Contains(r.stderr, "valid: op=OP (required)") {
			t.Errorf("inject %s: exit %d\n%s", c.rule, r.exitCode, r.stderr)
		}
	}
	ctl := filepath.Join(m.mnt, ".mmapfs-control")
	if err := os.WriteFile(ctl, []byte("inject add op=bogus,errno=EIO"), 0o600); !errors.Is(err, syscall.EINVAL) {
		t.Errorf("inject add of a bad rule through the control file: %v, want EINVAL", err)
	}
	if s := bdiSnapshot(t, m); len(s.Inject) != 2 {
		t.Fatalf("refused rules changed the rules: %+v", s.Inject)
	}
	r = injectCLI(t, m.mnt, "--clear", "7")
	if r.exitCode != 1 || !strings.Contains(r.stderr, "no rule 7: the mount's rules are 1, 2") {
		t.Fatalf("inject --clear 7: exit %d\n%s", r.exitCode, r.stderr)
	}
	r = injectCLI(t, m.mnt, "--clear", "1")
	if r.exitCode != 0 || !strings.Contains(r.stdout, "cleared 1 rule") || strings.Contains(r.stdout, "op=unlink") {
		t.Fatalf("inject --clear 1: exit %d\n%s%s", r.exitCode, r.stdout, r.stderr)
	}
	if err := os.Remove(filepath.Join(m.mnt, "keep")); err != nil {
		t.Fatalf("unlink after the rule was cleared: %v", err)
	}
	r = injectCLI(t, m.mnt, "--clear")
	if r.exitCode != 0 || !strings.Contains(r.stdout, "cleared 1 rule") || !strings.Contains(r.stdout, "no fault-injection rules") {
		t.Fatalf("inject --clear: exit %d\n%s%s", r.exitCode, r.stdout, r.stderr)
	}
	if s := bdiSnapshot(t, m); len(s.Inject) != 0 {
		t.Fatalf("rules left after --clear: %+v", s.Inject)
	}
}

// TestInjectBadRulesAtMount: a bad --inject (or -o inject=) refuses the
// mount before anything is mounted: exit 1, the rule, the part that is
// wrong and the valid forms. -o inject= takes the rule's commas as they
// are.
func TestInjectBadRulesAtMount(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--inject", "op=wrte,errno=EIO"}, `--inject "op=wrte,errno=EIO": op "wrte": want one of read, write, fsync`},
		{[]string{"--inject", "op=fsync,errno=EIO,delay=1s"}, `--inject "op=fsync,errno=EIO,delay=1s": two actions: errno and delay`},
		{[]string{"--inject", "op=read,torn=512"}, `--inject "op=read,torn=512": torn=512: torn= is for op=write only`},
		{[]string{"-o", "inject=op=write,torn=5,short=3"}, `--inject "op=write,torn=5,short=3": two actions: torn and short`},
	} {
		mnt := t.TempDir()
		r := runBinary(t, cliTimeout, []string{mnt}, append(append([]string{"mount"}, c.args...), t.TempDir(), mnt)...)
		if r.exitCode != 1 || !strings.Contains(r.stderr, c.want) || !strings.Contains(r.stderr, "valid: op=OP (required)") {
			t.Errorf("mount %s: exit %d\n%s", strings.Join(c.args, " "), r.exitCode, r.stderr)
		}
	}
	// A good -o inject= is in force, next to other options.
	m := startMount(t, "-o", "inject=op=mkdir,errno=ENOSPC,times=1,keep-cache")
	if err := os.Mkdir(filepath.Join(m.mnt, "d"), 0o755); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("mkdir under -o inject=op=mkdir,errno=ENOSPC,times=1: %v", err)
	}
	if err := os.Mkdir(filepath.Join(m.mnt, "d"), 0o755); err != nil {
		t.Fatalf("the second mkdir (times=1): %v", err)
	}
	if s := bdiSnapshot(t, m); !s.Switches.KeepCache || len(s.Inject) != 1 || s.Inject[0].Rule != "op=mkdir,errno=ENOSPC,times=1" {
		t.Fatalf("-o inject=...,keep-cache: keep_cache %v, rules %+v", s.Switches.KeepCache, s.Inject)
	}
}

// TestInjectFlush: a rule on flush fails close(2): a file opened while
// the rule is in force gets FLUSH at its close even under a policy that
// otherwise opens with FOPEN_NOFLUSH.
func TestInjectFlush(t *testing.T) {
	t.Parallel()
	const rule = "op=flush,path=fl,errno=EIO"
	m := startMount(t, "--inject", rule)
	f, err := os.Create(filepath.Join(m.mnt, "fl"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); !errors.Is(err, syscall.EIO) {
		t.Fatalf("close under %s: %v, want EIO", rule, err)
	}
	injectLogged(t, m, rule, "flush", "fl", "EIO")
}

// TestInjectFsyncgateBackground: pages lost by the daemon's own sync (the
// periodic policy's pass) are reported by the next fsync, once, as Linux
// reports a failed background writeback; the file then holds its last
// synced content.
func TestInjectFsyncgateBackground(t *testing.T) {
	t.Parallel()
	m := startMount(t, "--powercut-sim", "--writeback", "periodic:50ms")
	synced := bytes.Repeat([]byte("A"), 4096)
	f, err := os.Create(filepath.Join(m.mnt, "pg"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(synced); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	const rule = "op=msync,path=pg,errno=EIO,fsyncgate,times=1"
	if r := injectCLI(t, m.mnt, rule); r.exitCode != 0 {
		t.Fatalf("mmapfs inject: exit %d\n%s", r.exitCode, r.stderr)
	}
	if _, err := f.WriteAt(bytes.Repeat([]byte("B"), 4096), 0); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the periodic pass to hit the rule", func() bool {
		s := bdiSnapshot(t, m)
		return len(s.Inject) == 1 && s.Inject[0].Hits == 1
	})
	if err := f.Sync(); !errors.Is(err, syscall.EIO) {
		t.Fatalf("the fsync after a lost background writeback: %v, want EIO", err)
	}
	if err := f.Sync(); err != nil {
		t.Fatalf("the next fsync: %v, want success", err)
	}
	if got, err := os.ReadFile(filepath.Join(m.store, "pg")); err != nil || !bytes.Equal(got, synced) {
		t.Fatalf("the store's file: %.8q..., %v; want the synced content", got, err)
	}
}

// TestInjectFaultAfter: op=fault with after= lets the first bytes of a
// file be read and fails what comes later, as a bad stretch of the
// store's device would.
func TestInjectFaultAfter(t *testing.T) {
	t.Parallel()
	const rule = "op=fault,path=big,errno=EIO,after=1MiB"
	store := t.TempDir()
	data := bytes.Repeat([]byte("0123456789abcdef"), 1<<17) // 2 MiB
	storeWrite(t, store, "big", data)
	m := startMountAt(t, store, t.TempDir(), "--inject", rule)
	f, err := os.Open(filepath.Join(m.mnt, "big"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// No readahead: a read ahead past the first MiB, decided before the
	// read's own last pages, would count its bytes first.
	if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_RANDOM); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1<<20)
	if n, err := f.ReadAt(buf, 0); err != nil || !bytes.Equal(buf[:n], data[:1<<20]) {
		t.Fatalf("read of the first MiB under %s: %d bytes, %v", rule, n, err)
	}
	if _, err := f.ReadAt(buf[:4096], 2<<20-4096); !errors.Is(err, syscall.EIO) {
		t.Fatalf("read of the last page under %s: %v, want EIO", rule, err)
	}
}

// TestInjectUnmount: rules end with the mount: its last sync is a real
// one, so that a rule failing every msync does not fail the unmount, and
// the store holds what was written.
func TestInjectUnmount(t *testing.T) {
	t.Parallel()
	m := startMount(t, "--inject", "op=msync,errno=EIO")
	if err := os.WriteFile(filepath.Join(m.mnt, "u"), []byte("kept"), 0o644); err != nil {
		t.Fatal(err)
	}
	m.stop(t) // requires exit 0
	if !strings.Contains(m.out.String(), "inject: the mount is gone; 1 rule cleared before the store's last sync") {
		t.Fatalf("the daemon did not say it cleared the rules:\n%s", m.out.String())
	}
	if got, err := os.ReadFile(filepath.Join(m.store, "u")); err != nil || string(got) != "kept" {
		t.Fatalf("the store's file: %q, %v", got, err)
	}
}

// TestInjectPathFollowsRename: a rule's path= matches a file's path now,
// not the name it was opened by: writes through a descriptor opened
// before a rename fail under a rule on the new name.
func TestInjectPathFollowsRename(t *testing.T) {
	t.Parallel()
	m := startMount(t)
	defer m.stop(t)
	if err := os.Mkdir(filepath.Join(m.mnt, "new"), 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(filepath.Join(m.mnt, "a"), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt([]byte("x"), 0); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(m.mnt, "a"), filepath.Join(m.mnt, "new", "a")); err != nil {
		t.Fatal(err)
	}
	if r := injectCLI(t, m.mnt, "op=write,path=new/*,errno=EIO"); r.exitCode != 0 {
		t.Fatalf("mmapfs inject: exit %d\n%s", r.exitCode, r.stderr)
	}
	if _, err := f.WriteAt([]byte("y"), 0); !errors.Is(err, syscall.EIO) {
		t.Errorf("a write to new/a (renamed from a while open) under op=write,path=new/*: %v, want EIO", err)
	}
}

// TestInjectStorePathFollowsRename: a store-side rule's path= (msync,
// fault) matches the file's path now, as the handle ops' rules do: a
// file renamed while open is synced and read under its new name.
func TestInjectStorePathFollowsRename(t *testing.T) {
	t.Parallel()
	store := t.TempDir()
	storeWrite(t, store, "c", bytes.Repeat([]byte("c"), 8192))
	m := startMountAt(t, store, t.TempDir())
	f, err := os.OpenFile(filepath.Join(m.mnt, "a"), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt([]byte("x"), 0); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	r, err := os.Open(filepath.Join(m.mnt, "c"))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	for _, mv := range [][2]string{{"a", "b"}, {"c", "d"}} {
		if err := os.Rename(filepath.Join(m.mnt, mv[0]), filepath.Join(m.mnt, mv[1])); err != nil {
			t.Fatal(err)
		}
	}
	const msyncRule, faultRule = "op=msync,path=b,errno=EIO", "op=fault,path=d,errno=EIO"
	if r := injectCLI(t, m.mnt, msyncRule, faultRule); r.exitCode != 0 {
		t.Fatalf("mmapfs inject: exit %d\n%s", r.exitCode, r.stderr)
	}
	if _, err := f.WriteAt([]byte("y"), 0); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); !errors.Is(err, syscall.EIO) {
		t.Errorf("fsync of b (renamed from a while open) under %s: %v, want EIO", msyncRule, err)
	}
	injectLogged(t, m, msyncRule, "msync", "b", "EIO")
	// Not read before the rename: the kernel has none of its pages.
	if _, err := r.ReadAt(make([]byte, 100), 0); !errors.Is(err, syscall.EIO) {
		t.Errorf("read of d (renamed from c while open) under %s: %v, want EIO", faultRule, err)
	}
	injectLogged(t, m, faultRule, "fault", "d", "EIO")
}

// TestInjectStoreDelayUnlocked: a delayed msync holds up the fsync that
// meets it, not the other requests on the file (under --powercut-sim a
// sync holds the blob exclusively): a read of the same file is served
// meanwhile.
func TestInjectStoreDelayUnlocked(t *testing.T) {
	t.Parallel()
	const delay = 3 * time.Second
	rule := fmt.Sprintf("op=msync,path=d,delay=%v", delay)
	store := t.TempDir()
	data := bytes.Repeat([]byte("0123456789abcdef"), 4096) // 64 KiB
	storeWrite(t, store, "d", data)
	m := startMountAt(t, store, t.TempDir(), "--powercut-sim", "--inject", rule)
	w, err := os.OpenFile(filepath.Join(m.mnt, "d"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if _, err := w.WriteAt([]byte("X"), 0); err != nil {
		t.Fatal(err)
	}
	r, err := os.Open(filepath.Join(m.mnt, "d"))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	synced := make(chan error, 1)
	start := time.Now()
	go func() { synced <- w.Sync() }()
	injectLogged(t, m, rule, "msync", "d", "delayed "+delay.String())
	buf := make([]byte, 4096)
	readStart := time.Now()
	n, err := r.ReadAt(buf, 32768) // a page the kernel has not cached
	took := time.Since(readStart)
	if err != nil || !bytes.Equal(buf[:n], data[32768:32768+4096]) {
		t.Errorf("read during the delayed msync: %d bytes, %v", n, err)
	}
	if err := <-synced; err != nil {
		t.Fatalf("the delayed fsync: %v", err)
	}
	if all := time.Since(start); all < delay {
		t.Fatalf("the fsync under %s took %v", rule, all)
	}
	if took > delay/2 {
		t.Fatalf("a read of the file during the delayed msync took %v: it waited for the delay (%v) of a sync it has nothing to do with", took, delay)
	}
}

// TestInjectStoreDelayUnmount: the mount's end clears the rules, which
// ends a store-side delay in progress (here the periodic pass's msync,
// delayed 10 minutes): the daemon syncs for real and exits at once.
func TestInjectStoreDelayUnmount(t *testing.T) {
	t.Parallel()
	const rule = "op=msync,path=u,delay=10m"
	m := startMount(t, "--writeback", "periodic:50ms", "--inject", rule)
	if err := os.WriteFile(filepath.Join(m.mnt, "u"), []byte("kept"), 0o644); err != nil {
		t.Fatal(err)
	}
	injectLogged(t, m, rule, "msync", "u", "delayed 10m0s")
	// What this tells apart is the 10m the msync is held. A clean stop
	// also syncs the store's filesystem, which waits for every other
	// process's dirty data there: on a loaded machine that alone can
	// take seconds, so the bound is the harness's stopTimeout.
	start := time.Now()
	m.stop(t) // requires exit 0 within stopTimeout
	if took := time.Since(start); took > stopTimeout {
		t.Errorf("the daemon took %v to stop with a delayed msync in progress", took)
	}
	if got, err := os.ReadFile(filepath.Join(m.store, "u")); err != nil || string(got) != "kept" {
		t.Fatalf("the store's file: %q, %v", got, err)
	}
}

// TestInjectFsyncgateDropsCache: after fsyncgate puts pages back, the
// kernel's cache of them is dropped (FUSE_NOTIFY_INVAL_INODE), so that a
// client reads what the store holds, the last synced content, even where
// the cache outlives an open (--keep-cache, and the writeback cache):
// through the descriptor whose fsync reported the loss, and through a
// new open, as soon as the fsync returns. The daemon sends the
// invalidation from a goroutine (see TestInjectFsyncgateWriteThrough);
// the fsync must not reply before it is delivered, nor an open. That is
// a race, so each mount loses a writeback rounds times.
func TestInjectFsyncgateDropsCache(t *testing.T) {
	t.Parallel()
	const rounds = 20
	// Without --auto-inval-data=false the kernel may drop the pages on
	// its own, seeing the mtime the put-back gave the file.
	for _, flags := range [][]string{{"--keep-cache"}, {"--keep-cache", "--auto-inval-data=false"}, {"--keep-cache", "--writeback-cache"}} {
		t.Run(strings.Join(flags, ","), func(t *testing.T) {
			t.Parallel()
			m := startMount(t, append([]string{"--powercut-sim"}, flags...)...)
			synced := bytes.Repeat([]byte("A"), 8192)
			f, err := os.Create(filepath.Join(m.mnt, "k"))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if _, err := f.Write(synced); err != nil {
				t.Fatal(err)
			}
			if err := f.Sync(); err != nil {
				t.Fatal(err)
			}
			rule := fmt.Sprintf("op=msync,path=k,errno=EIO,fsyncgate,times=%d", rounds) // one per round
			if r := injectCLI(t, m.mnt, rule); r.exitCode != 0 {
				t.Fatalf("mmapfs inject: exit %d\n%s", r.exitCode, r.stderr)
			}
			for i := range rounds {
				if _, err := f.WriteAt(bytes.Repeat([]byte("B"), 4096), 4096); err != nil {
					t.Fatal(err)
				}
				if err := f.Sync(); !errors.Is(err, syscall.EIO) {
					t.Fatalf("round %d: fsync under %s: %v, want EIO", i, rule, err)
				}
				got := make([]byte, len(synced))
				if n, err := f.ReadAt(got, 0); err != nil || !bytes.Equal(got, synced) {
					t.Fatalf("round %d: read through the descriptor whose fsync reported the lost writeback: %d bytes (%v), page 1 starts %q; want the synced content, as the store has it", i, n, err, page1Start(got))
				}
				got, err = os.ReadFile(filepath.Join(m.mnt, "k"))
				if err != nil || !bytes.Equal(got, synced) {
					t.Fatalf("round %d: read through a new open after the lost writeback: %d bytes (%v), page 1 starts %q; want the synced content, as the store has it", i, len(got), err, page1Start(got))
				}
				if got, err := os.ReadFile(filepath.Join(m.store, "k")); err != nil || !bytes.Equal(got, synced) {
					t.Fatalf("round %d: the store's file: %d bytes, %v; want the synced content", i, len(got), err)
				}
			}
		})
	}
}

// page1Start is the first byte of b's second 4 KiB page, if it has one.
func page1Start(b []byte) []byte { return b[min(4096, len(b)):min(4097, len(b))] }

// TestInjectFsyncgateAppendOnly: an append-only file (chattr +a) is
// never written through its mapping, so a lost writeback has nothing to
// put its pages back through: the sync fails plainly (EIO once, the
// pages still owed), and what was appended stays. Both blobs of such a
// file: one writable from before the flag, one first opened after it
// (mapped read-only).
func TestInjectFsyncgateAppendOnly(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		t.Skip("chattr +a needs root")
	}
	store := t.TempDir()
	clearFlagsBelow(t, store)
	m := startMountAt(t, store, t.TempDir(), "--powercut-sim")
	first := bytes.Repeat([]byte("A"), 100)
	more := bytes.Repeat([]byte("B"), 100)
	for _, c := range []struct {
		name   string
		before bool // the descriptor that appends was opened before the flag
	}{{"after", false}, {"before", true}} { // after first: it waits for no blob to be open
		p := filepath.Join(m.mnt, c.name)
		f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if _, err := f.Write(first); err != nil {
			t.Fatal(err)
		}
		if err := f.Sync(); err != nil {
			t.Fatal(err)
		}
		if !c.before {
			f.Close()
		}
		if err := changeFlags(p, flAppend, 0); err != nil {
			t.Skipf("chattr +a through the mount: %v", err)
		}
		if !c.before {
			// Every open is gone: the blob is opened again, append-only.
			waitFor(t, 5*time.Second, "the blob to be dropped", func() bool {
				s := bdiSnapshot(t, m)
				return s.Figures.Get(wire.OpenBlobs) == 0
			})
			if f, err = os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0); err != nil {
				t.Fatal(err)
			}
			defer f.Close()
		}
		if _, err := f.WriteAt(more, 100); c.before && err != nil {
			t.Fatal(err)
		} else if !c.before {
			if _, err := f.Write(more); err != nil {
				t.Fatal(err)
			}
		}
		rule := fmt.Sprintf("op=msync,path=%s,errno=EIO,fsyncgate,times=1", c.name)
		if r := injectCLI(t, m.mnt, rule); r.exitCode != 0 {
			t.Fatalf("mmapfs inject: exit %d\n%s", r.exitCode, r.stderr)
		}
		if err := f.Sync(); !errors.Is(err, syscall.EIO) {
			t.Fatalf("%s: fsync under %s: %v, want EIO", c.name, rule, err)
		}
		if err := f.Sync(); err != nil {
			t.Fatalf("%s: the next fsync: %v, want success (the pages were still owed)", c.name, err)
		}
		want := append(append([]byte{}, first...), more...)
		if got, err := os.ReadFile(filepath.Join(store, c.name)); err != nil || !bytes.Equal(got, want) {
			t.Fatalf("%s: the store's append-only file after the failed sync: %q, %v; want what was appended kept", c.name, got, err)
		}
	}
	if strings.Contains(m.out.String(), "putting back") || strings.Contains(m.out.String(), "zeroing") {
		t.Fatalf("the daemon tried to put pages of an append-only file back:\n%s", m.out.String())
	}
}

// TestInjectFsyncgateEachOpen: a lost writeback is reported once to each
// descriptor opened before it, as Linux's errseq does (not once in all):
// the other descriptor's fsync sees it too, a second fsync on either does
// not, nor does a descriptor opened after it was reported.
func TestInjectFsyncgateEachOpen(t *testing.T) {
	t.Parallel()
	m := startMount(t, "--powercut-sim")
	p := filepath.Join(m.mnt, "e")
	f1, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f1.Close()
	f2, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f2.Close()
	if _, err := f1.Write([]byte("synced")); err != nil {
		t.Fatal(err)
	}
	if err := f1.Sync(); err != nil {
		t.Fatal(err)
	}
	const rule = "op=msync,path=e,errno=EIO,fsyncgate,times=1"
	if r := injectCLI(t, m.mnt, rule); r.exitCode != 0 {
		t.Fatalf("mmapfs inject: exit %d\n%s", r.exitCode, r.stderr)
	}
	if _, err := f1.WriteAt([]byte("lost!!"), 0); err != nil {
		t.Fatal(err)
	}
	if err := f1.Sync(); !errors.Is(err, syscall.EIO) {
		t.Fatalf("fsync of the descriptor that wrote: %v, want EIO", err)
	}
	if err := f2.Sync(); !errors.Is(err, syscall.EIO) {
		t.Fatalf("fsync of another descriptor opened before the loss: %v, want EIO (each descriptor sees it once)", err)
	}
	for i, f := range []*os.File{f1, f2} {
		if err := f.Sync(); err != nil {
			t.Fatalf("a second fsync of descriptor %d: %v, want success", i+1, err)
		}
	}
	f3, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f3.Close()
	if err := f3.Sync(); err != nil {
		t.Fatalf("fsync of a descriptor opened after the loss was reported: %v, want success", err)
	}
}

// TestInjectStoreErrorsRateLimited: an error a store-side rule makes in
// copy_file_range (a fault) or in release (the close policy's last sync)
// is logged as the rule's hits are, rate-limited, not once per request.
func TestInjectStoreErrorsRateLimited(t *testing.T) {
	t.Parallel()
	const calls = 3 * inject.LoggedHits
	t.Run("copy_file_range", func(t *testing.T) {
		t.Parallel()
		store := t.TempDir()
		storeWrite(t, store, "src", bytes.Repeat([]byte("s"), 4096))
		m := startMountAt(t, store, t.TempDir(), "--inject", "op=fault,path=src,errno=EIO")
		src, err := os.Open(filepath.Join(m.mnt, "src"))
		if err != nil {
			t.Fatal(err)
		}
		defer src.Close()
		dst, err := os.Create(filepath.Join(m.mnt, "dst"))
		if err != nil {
			t.Fatal(err)
		}
		defer dst.Close()
		for i := 0; i < calls; i++ {
			off, doff := int64(0), int64(0)
			if _, err := unix.CopyFileRange(int(src.Fd()), &off, int(dst.Fd()), &doff, 4096, 0); !errors.Is(err, syscall.EIO) {
				t.Fatalf("copy_file_range %d from src under op=fault: %v, want EIO", i, err)
			}
		}
		if n := strings.Count(m.out.String(), `copy_file_range "src"`); n > 0 {
			t.Fatalf("the daemon logged the injected error of copy_file_range %d times in %d calls, past the rule's rate limit:\n%s", n, calls, m.out.String())
		}
	})
	t.Run("release", func(t *testing.T) {
		t.Parallel()
		m := startMount(t, "--writeback", "close", "--inject", "op=msync,path=r*,errno=EIO")
		for i := 0; i < calls; i++ {
			// A file each, so that each release is its file's last.
			f, err := os.OpenFile(filepath.Join(m.mnt, fmt.Sprintf("r%d", i)), os.O_RDWR|os.O_CREATE, 0o644)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := f.Write([]byte("r")); err != nil {
				f.Close()
				t.Fatal(err)
			}
			if err := f.Close(); !errors.Is(err, syscall.EIO) {
				t.Fatalf("close %d under the close policy and op=msync: %v, want EIO", i, err)
			}
		}
		// The releases come after the closes, asynchronously: wait for
		// the rule to have been hit by each of them too.
		var hits int64
		for deadline := time.Now().Add(10 * time.Second); hits < 2*calls; time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("the rule was hit %d times by %d closes, want %d: by each close's flush and its release", hits, calls, 2*calls)
			}
			if s := bdiSnapshot(t, m); len(s.Inject) == 1 {
				hits = s.Inject[0].Hits
			}
		}
		if n := strings.Count(m.out.String(), `release "r`); n > 0 {
			t.Fatalf("the daemon logged the injected error of release %d times in %d releases, past the rule's rate limit:\n%s", n, calls, m.out.String())
		}
	})
}

// TestInjectReadAfterServed: a read rule's after= counts the bytes reads
// served, not the bytes the kernel asked for (a page or more, even at the
// end of a 100-byte file).
func TestInjectReadAfterServed(t *testing.T) {
	t.Parallel()
	const rule = "op=read,path=small,after=4096,errno=EIO"
	store := t.TempDir()
	storeWrite(t, store, "small", bytes.Repeat([]byte("s"), 100))
	m := startMountAt(t, store, t.TempDir(), "--auto-cache=false", "--inject", rule)
	p := filepath.Join(m.mnt, "small")
	// Each open drops the kernel's cache (no --keep-cache, no
	// --auto-cache): one READ each, serving 100 bytes.
	for i := 1; i <= 41; i++ {
		if got, err := os.ReadFile(p); err != nil || len(got) != 100 {
			t.Fatalf("read %d under %s, %d bytes served before it: %d bytes, %v", i, rule, 100*(i-1), len(got), err)
		}
	}
	if _, err := os.ReadFile(p); !errors.Is(err, syscall.EIO) {
		t.Fatalf("read 42 under %s, 4100 bytes served before it: %v, want EIO", rule, err)
	}
}

// TestInjectMsyncSizeOnly: an msync rule applies to a sync that has only
// the size to make durable (a file grown by ftruncate, no page written):
// it is the daemon's sync of the file to the store too.
func TestInjectMsyncSizeOnly(t *testing.T) {
	t.Parallel()
	const rule = "op=msync,path=s,errno=EIO,times=1"
	m := startMount(t, "--inject", rule)
	f, err := os.Create(filepath.Join(m.mnt, "s"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(1 << 20); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); !errors.Is(err, syscall.EIO) {
		t.Fatalf("fsync after ftruncate grew the file, under %s: %v, want EIO", rule, err)
	}
	injectLogged(t, m, rule, "msync", "s", "EIO")
	if err := f.Sync(); err != nil {
		t.Fatalf("the next fsync: %v, want success", err)
	}
}

// TestInjectFsyncgateWriteThrough: under the write-through policy the
// sync that loses the pages runs inside the WRITE, for which the kernel
// holds the page locked until the reply; dropping the put-back pages from
// the kernel's cache from inside the request would wait for that lock
// forever (the client and the daemon's thread both stuck, unkillable).
// The write must come back, with the error, and the mount stay usable.
func TestInjectFsyncgateWriteThrough(t *testing.T) {
	t.Parallel()
	const rule = "op=msync,path=w,errno=EIO,fsyncgate,times=1"
	m := startMount(t, "--powercut-sim", "--writeback", "write-through", "--inject", rule)
	path := filepath.Join(m.mnt, "w")
	done := make(chan error, 1)
	go func() {
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
		if err != nil {
			done <- err
			return
		}
		defer f.Close()
		_, err = f.Write([]byte("a line into a page the kernel has not cached\n"))
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, syscall.EIO) {
			t.Errorf("write under write-through and %s: %v, want EIO", rule, err)
		}
	case <-time.After(20 * time.Second):
		// Free the stuck client and daemon thread, so that the test's
		// cleanup can unmount.
		if err := abortConnection(m.conn); err != nil {
			t.Logf("abort the connection: %v", err)
		}
		t.Fatalf("write under write-through and %s did not come back in 20s: the put-back's invalidation waits for the page the WRITE holds", rule)
	}
	if _, err := os.ReadFile(path); err != nil {
		t.Errorf("reading the file after the lost writeback: %v", err)
	}
}

// TestInjectFsyncgateCloseThenOpen: under the writeback cache and the
// write-through policy, the kernel's writeback of a close loses the
// pages inside its WRITE, whose pages the kernel holds until the reply,
// so the daemon drops them from the kernel's cache only after it (from a
// goroutine); the client's next open, after close(2) returned (EIO, as
// Linux reports a writeback error at close), must still not read the
// lost content (--keep-cache: nothing else drops it). The open waits for
// the invalidation. A race: rounds times per mount.
func TestInjectFsyncgateCloseThenOpen(t *testing.T) {
	t.Parallel()
	const rounds = 150
	m := startMount(t, "--powercut-sim", "--keep-cache", "--writeback-cache", "--writeback", "write-through")
	path := filepath.Join(m.mnt, "c")
	synced := bytes.Repeat([]byte("A"), 8192)
	if err := os.WriteFile(path, synced, 0o644); err != nil {
		t.Fatal(err)
	}
	rule := fmt.Sprintf("op=msync,path=c,errno=EIO,fsyncgate,times=%d", rounds) // one per round
	if r := injectCLI(t, m.mnt, rule); r.exitCode != 0 {
		t.Fatalf("mmapfs inject: exit %d\n%s", r.exitCode, r.stderr)
	}
	for i := range rounds {
		if got, err := os.ReadFile(path); err != nil || !bytes.Equal(got, synced) {
			t.Fatalf("round %d: read before the lost writeback: %d bytes, %v", i, len(got), err)
		}
		f, err := os.OpenFile(path, os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		_, werr := f.WriteAt(bytes.Repeat([]byte("B"), 4096), 4096)
		cerr := f.Close()
		if werr != nil {
			t.Fatalf("round %d: write into the writeback cache: %v", i, werr)
		}
		if !errors.Is(cerr, syscall.EIO) {
			t.Fatalf("round %d: close after a write whose writeback meets %s: %v, want EIO (the kernel's writeback at close lost the pages)", i, rule, cerr)
		}
		got, err := os.ReadFile(path)
		if err != nil || !bytes.Equal(got, synced) {
			t.Fatalf("round %d: read through a new open after the close whose writeback was lost: %d bytes (%v), page 1 starts %q; want the synced content, as the store has it", i, len(got), err, page1Start(got))
		}
	}
}
