package mmapcheck

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// peerEnv makes this test binary play Peer (the other process).
const peerEnv = "MMAPCHECK_TEST_PEER"

func TestMain(m *testing.M) {
	if os.Getenv(peerEnv) != "" {
		os.Exit(Peer(os.Args[1:], os.Stdout))
	}
	os.Exit(m.Run())
}

// selfPeer runs this test binary as the other process.
func selfPeer(args []string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), peerEnv+"=1")
	return cmd
}

// empty fails the test unless dir holds nothing.
func empty(t *testing.T, dir string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 0 {
		t.Errorf("%s holds %d entries after the check (%s ...)", dir, len(ents), ents[0].Name())
	}
}

// TestAllOnTempDir runs every guarantee on the test's directory (the
// store's filesystem, ext4 here): all pass but remount, not applicable
// without a remount, and nothing is left behind.
func TestAllOnTempDir(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	c, err := New(Config{Dir: dir, Seed: 1, Ops: 300, Peer: selfPeer})
	if err != nil {
		t.Fatal(err)
	}
	rs := c.Run(nil)
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if len(rs) != len(Names()) {
		t.Errorf("%d results, want %d", len(rs), len(Names()))
	}
	for _, r := range rs {
		want := Pass
		if r.Name == "remount" {
			want = NotApplicable
		}
		if r.Verdict != want {
			t.Errorf("%s: %s (expected %q, seen %q, why %q), want %s", r.Name, r.Verdict, r.Expected, r.Seen, r.Why, want)
		}
	}
	empty(t, dir)
}

// TestFailureReport: a file that does not hold what it should (here: the
// Verify hook says so) fails the guarantee with what was expected and
// seen, and the command and step that reproduce it.
func TestFailureReport(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	var seen []string
	c, err := New(Config{Dir: dir, Seed: 42, Only: []string{"shared-msync"}, Replay: "mmapfs check /x",
		Verify: func(rel string, want []byte) error {
			seen = append(seen, rel)
			return errors.New("the copy elsewhere is short")
		}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	rs := c.Run(nil)
	if len(rs) != 1 {
		t.Fatalf("%d results, want 1", len(rs))
	}
	r := rs[0]
	if r.Verdict != Fail || !strings.Contains(r.Seen, "the copy elsewhere is short") || !strings.Contains(r.Expected, "f holds its") {
		t.Errorf("result %+v: want a failure naming the file and the hook's error", r)
	}
	if !strings.HasPrefix(r.Reproduce, "mmapfs check /x --only shared-msync --seed 42 (fails at step ") {
		t.Errorf("reproduce %q: want the command, the guarantee, the seed and the step", r.Reproduce)
	}
	if len(seen) != 1 || seen[0] != filepath.Join(filepath.Base(c.Dir()), "shared-msync", "f") {
		t.Errorf("Verify saw %v, want the file's name relative to the directory", seen)
	}
}

// TestRemountHook: the remount guarantee runs the hook with every file
// closed, and a hook that fails fails it.
func TestRemountHook(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	calls := 0
	var hookErr error
	c, err := New(Config{Dir: dir, Only: []string{"remount"}, Remount: func() error {
		calls++
		// Nothing of the check is open: the files can be renamed away
		// and back, as an unmount would need.
		return hookErr
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if rs := c.Run(nil); rs[0].Verdict != Pass || calls != 1 {
		t.Errorf("remount: %+v after %d calls; want a pass after 1", rs[0], calls)
	}
	hookErr = errors.New("umount: target is busy")
	if rs := c.Run(nil); rs[0].Verdict != Fail || !strings.Contains(rs[0].Seen, "target is busy") {
		t.Errorf("remount with a failing hook: %+v; want a failure with its error", rs[0])
	}
}

// TestNewErrors: a directory that cannot be checked is refused, naming it
// and why.
func TestNewErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		cfg  Config
		want string
	}{
		{Config{Dir: filepath.Join(dir, "missing")}, "missing: no such file or directory"},
		{Config{Dir: file}, file + ": not a directory"},
		{Config{Dir: dir, Only: []string{"nope"}}, `no guarantee "nope"`},
	} {
		if _, err := New(c.cfg); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("New(%+v): %v, want an error with %q", c.cfg, err, c.want)
		}
	}
	if ents, err := os.ReadDir(dir); err != nil || len(ents) != 1 {
		t.Errorf("%s after the refusals: %d entries (%v), want only the file", dir, len(ents), err)
	}
}

// TestAbort removes the check's files while they are open and mapped,
// as SIGINT does.
func TestAbort(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	c, err := New(Config{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(filepath.Join(c.Dir(), "open"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := c.Abort(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(c.Dir()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s after Abort: %v, want it gone", c.Dir(), err)
	}
}

// TestPeer plays the other process in this one: it sees what is in the
// file, stores what it is told, and reports a difference as a finding
// (exit 1), a bad item as an error (exit 2).
func TestPeer(t *testing.T) {
	t.Parallel()
	p := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(p, []byte("0123456789abcdef"), 0o644); err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	if code := Peer([]string{p, peerItem{read: true, off: 2, data: []byte("234")}.arg(), peerItem{off: 10, data: []byte("XY")}.arg()}, &out); code != 0 {
		t.Fatalf("peer: %d, %s", code, out.String())
	}
	if b, _ := os.ReadFile(p); string(b) != "0123456789XYcdef" {
		t.Errorf("file after the peer's store: %q", b)
	}
	out.Reset()
	if code := Peer([]string{p, peerItem{read: true, off: 0, data: []byte("99")}.arg()}, &out); code != 1 || !strings.Contains(out.String(), "read(2) at 0..2") {
		t.Errorf("peer on a difference: %d, %q; want 1 and the offsets", code, out.String())
	}
	if code := Peer([]string{p, "x:1:00"}, &out); code != 2 {
		t.Errorf("peer on a bad item: %d, want 2", code)
	}
}

// TestFSType names the filesystem of a directory.
func TestFSType(t *testing.T) {
	t.Parallel()
	if got := FSType("/proc"); got != "proc" {
		t.Errorf("FSType(/proc) = %q, want proc", got)
	}
	if got := FSType(t.TempDir()); got == "" || strings.HasPrefix(got, "magic") {
		t.Errorf("FSType of the test's directory = %q, want a name from mountinfo", got)
	}
}
