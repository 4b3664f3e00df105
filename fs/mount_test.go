package fs

import (
	"bytes"
	"errors"
	"io"
	"log"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// A mount table as the kernel writes it: optional fields of varying
// number, escapes in mountpoints and sources, and two mounts stacked on
// one path.
const testMountTable = `22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw
35 22 0:31 / /proc rw,nosuid,nodev,noexec,relatime shared:13 - proc proc rw
60 22 0:52 / /tmp/a\040b rw,nosuid,nodev,relatime shared:30 master:2 - fuse.mmapfs /tmp/st\040ore\134x rw,user_id=0,group_id=0
61 60 0:53 / /tmp/a\040b rw,nosuid,nodev,relatime - fuse.mmapfs /tmp/other rw,user_id=0,group_id=0
62 22 0:54 / /tmp/c rw,relatime - fuse.mmapfs /tmp/st\040ore\134x rw
short line
63 22 0:55 / /tmp/no-separator rw,relatime shared:5
`

// TestParseMounts: every well-formed line becomes a mount, in order, with
// its mountpoint and source unescaped and its device; lines without the
// fields are skipped.
func TestParseMounts(t *testing.T) {
	t.Parallel()
	got, err := parseMounts(strings.NewReader(testMountTable))
	if err != nil {
		t.Fatal(err)
	}
	want := []mountInfo{
		{mountpoint: "/", source: "/dev/vda1", fstype: "ext4", dev: "8:1"},
		{mountpoint: "/proc", source: "proc", fstype: "proc", dev: "0:31"},
		{mountpoint: "/tmp/a b", source: `/tmp/st ore\x`, fstype: "fuse.mmapfs", dev: "0:52"},
		{mountpoint: "/tmp/a b", source: "/tmp/other", fstype: "fuse.mmapfs", dev: "0:53"},
		{mountpoint: "/tmp/c", source: `/tmp/st ore\x`, fstype: "fuse.mmapfs", dev: "0:54"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("parseMounts:\n got %+v\nwant %+v", got, want)
	}

	// The last mount on a path is the one in effect.
	if mi, ok := topMount(got, "/tmp/a b"); !ok || mi.source != "/tmp/other" || mi.dev != "0:53" {
		t.Errorf("topMount(/tmp/a b) = %+v, %v; want the mount of /tmp/other on 0:53", mi, ok)
	}
	if mi, ok := topMount(got, "/tmp/a"); ok {
		t.Errorf("topMount(/tmp/a) = %+v: no mount is there (only at /tmp/a b)", mi)
	}
	if mi, ok := topMount(got, `/tmp/a\040b`); ok {
		t.Errorf("topMount of the escaped form = %+v: mountpoints are compared unescaped", mi)
	}

	// Every mmapfs mount of a store, whichever is on top.
	if m := mountsOf(got, func(src string) bool { return src == `/tmp/st ore\x` }); !reflect.DeepEqual(m, []string{"/tmp/a b", "/tmp/c"}) {
		t.Errorf("mountsOf = %q, want [/tmp/a b /tmp/c]", m)
	}
	if m := mountsOf(got, func(src string) bool { return src == "/dev/vda1" }); m != nil {
		t.Errorf("mountsOf an ext4 source = %q, want none (not fuse.mmapfs)", m)
	}
}

// TestParseMountsReadError: a table that cannot be read is an error, not
// a short table.
func TestParseMountsReadError(t *testing.T) {
	t.Parallel()
	r := io.MultiReader(strings.NewReader(testMountTable), errReader{})
	if _, err := parseMounts(r); !errors.Is(err, errTestRead) {
		t.Errorf("parseMounts of a failing reader: %v, want %v", err, errTestRead)
	}
}

var errTestRead = errors.New("test read error")

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errTestRead }

// TestFindMountLive: the daemon's own table has / and /proc, and no
// mount at a fresh temporary directory.
func TestFindMountLive(t *testing.T) {
	t.Parallel()
	if mi, ok, err := findMount("/proc"); err != nil || !ok || mi.fstype != "proc" {
		t.Errorf("findMount(/proc) = %+v, %v, %v; want the proc mount", mi, ok, err)
	}
	dir := t.TempDir()
	if mi, ok, err := findMount(dir); err != nil || ok {
		t.Errorf("findMount(%s) = %+v, %v, %v; want no mount", dir, mi, ok, err)
	}
}

// TestUnescapeMount undoes the kernel's octal escapes of space, tab,
// newline and backslash, and leaves everything else alone, including a
// backslash that starts no escape.
func TestUnescapeMount(t *testing.T) {
	t.Parallel()
	for _, c := range []struct{ in, want string }{
		{"/plain/path", "/plain/path"},
		{`/a\040b`, "/a b"},
		{`/a\011b\012c`, "/a\tb\nc"},
		{`/back\134slash`, `/back\slash`},
		{`\040lead`, " lead"},
		{`trail\040`, "trail "},
		{`/x\04`, `/x\04`},   // too short to be an escape
		{`/x\9zz`, `/x\9zz`}, // not octal
		{`/x\`, `/x\`},
		{`\134040`, `\040`}, // an escaped backslash, then digits
		{"", ""},
	} {
		if got := unescapeMount(c.in); got != c.want {
			t.Errorf("unescapeMount(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

// TestWithin: strictly below, by path components, not by string prefix.
func TestWithin(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		p, dir string
		want   bool
	}{
		{"/a/b", "/a", true},
		{"/a/b/c", "/a", true},
		{"/a", "/a", false},
		{"/a", "/a/b", false},
		{"/ab", "/a", false},
		{"/a/../b", "/a", false},
		{"/a/..b", "/a", true}, // a name that starts with two dots
		{"/", "/", false},
		{"/x", "/", true},
	} {
		if got := within(c.p, c.dir); got != c.want {
			t.Errorf("within(%q, %q) = %v, want %v", c.p, c.dir, got, c.want)
		}
	}
}

// TestCheckDisjoint names both directories and says which holds which.
func TestCheckDisjoint(t *testing.T) {
	t.Parallel()
	for _, c := range []struct{ store, mnt, want string }{
		{"/s", "/m", ""},
		{"/s", "/s", "store /s and mountpoint /s are the same directory"},
		{"/m/s", "/m", "store /m/s is inside mountpoint /m"},
		{"/s", "/s/m", "mountpoint /s/m is inside store /s"},
		{"/sx", "/s", ""},
	} {
		err := checkDisjoint(c.store, c.mnt)
		switch {
		case c.want == "" && err != nil:
			t.Errorf("checkDisjoint(%s, %s): %v, want nil", c.store, c.mnt, err)
		case c.want != "" && (err == nil || err.Error() != c.want):
			t.Errorf("checkDisjoint(%s, %s): %v, want %q", c.store, c.mnt, err, c.want)
		}
	}
}

// TestPrepareStore: a missing store is created; one that is the
// mountpoint, inside it, or holds it is refused before anything is made,
// even when a symlink hides where it is; a file is not a store; the path
// returned is absolute and free of symlinks.
func TestPrepareStore(t *testing.T) {
	t.Parallel()
	base := t.TempDir()
	mnt := filepath.Join(base, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}

	store := filepath.Join(base, "new", "store")
	got, err := prepareStore(store, mnt)
	if err != nil || got != store {
		t.Fatalf("prepareStore(%s) = %q, %v; want it created", store, got, err)
	}
	if fi, err := os.Stat(store); err != nil || !fi.IsDir() {
		t.Fatalf("store %s not created: %v", store, err)
	}

	// Relative paths come back absolute.
	rel, err := filepath.Rel(mustGetwd(t), store)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := prepareStore(rel, mnt); err != nil || got != store {
		t.Errorf("prepareStore(%s) = %q, %v; want %s", rel, got, err, store)
	}

	inside := filepath.Join(mnt, "store")
	if _, err := prepareStore(inside, mnt); err == nil || !strings.Contains(err.Error(), "is inside mountpoint") {
		t.Errorf("prepareStore inside the mountpoint: %v", err)
	}
	if _, err := os.Lstat(inside); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a refused store inside the mountpoint was created: %v", err)
	}
	if _, err := prepareStore(mnt, mnt); err == nil || !strings.Contains(err.Error(), "the same directory") {
		t.Errorf("prepareStore of the mountpoint itself: %v", err)
	}
	if _, err := prepareStore(base, mnt); err == nil || !strings.Contains(err.Error(), "is inside store") {
		t.Errorf("prepareStore of the mountpoint's parent: %v", err)
	}

	// A symlink that leads into the mountpoint is refused once resolved.
	link := filepath.Join(base, "link")
	if err := os.Symlink(mnt, link); err != nil {
		t.Fatal(err)
	}
	if _, err := prepareStore(link, mnt); err == nil || !strings.Contains(err.Error(), "the same directory") {
		t.Errorf("prepareStore of a symlink to the mountpoint: %v", err)
	}
	// A symlink to a good store resolves to it.
	good := filepath.Join(base, "good")
	if err := os.Symlink(store, good); err != nil {
		t.Fatal(err)
	}
	if got, err := prepareStore(good, mnt); err != nil || got != store {
		t.Errorf("prepareStore(%s) = %q, %v; want %s", good, got, err, store)
	}

	file := filepath.Join(base, "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := prepareStore(file, mnt); err == nil || !strings.Contains(err.Error(), file) {
		t.Errorf("prepareStore of a regular file: %v, want an error naming it", err)
	}
}

func mustGetwd(t *testing.T) string {
	t.Helper()
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	return wd
}

// TestCheckMountpoint: a missing path, a file and a mount point are
// refused with a message naming the path; a symlink to a directory
// resolves to it.
func TestCheckMountpoint(t *testing.T) {
	t.Parallel()
	var logs bytes.Buffer
	logger := log.New(&logs, "", 0)
	base := t.TempDir()
	dir := filepath.Join(base, "dir")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if got, err := checkMountpoint(dir, logger); err != nil || got != dir {
		t.Errorf("checkMountpoint(%s) = %q, %v", dir, got, err)
	}
	link := filepath.Join(base, "link")
	if err := os.Symlink(dir, link); err != nil {
		t.Fatal(err)
	}
	if got, err := checkMountpoint(link, logger); err != nil || got != dir {
		t.Errorf("checkMountpoint(%s) = %q, %v; want %s", link, got, err, dir)
	}
	missing := filepath.Join(base, "missing")
	if _, err := checkMountpoint(missing, logger); err == nil || err.Error() != "mountpoint "+missing+" does not exist" {
		t.Errorf("checkMountpoint of a missing directory: %v", err)
	}
	file := filepath.Join(base, "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := checkMountpoint(file, logger); err == nil || err.Error() != "mountpoint "+file+" is not a directory" {
		t.Errorf("checkMountpoint of a file: %v", err)
	}
	if _, err := checkMountpoint("/proc", logger); err == nil || !strings.Contains(err.Error(), "mountpoint /proc is already a mount point (proc of proc)") {
		t.Errorf("checkMountpoint(/proc): %v", err)
	}
	if logs.Len() != 0 {
		t.Errorf("checkMountpoint logged %q", logs.String())
	}
}

// TestMountHolding: a path is held by the deepest mount above it (here
// /proc for /proc/self/fd), a mountpoint by its own mount, and every path
// by some mount ("/").
func TestMountHolding(t *testing.T) {
	for _, c := range []struct{ path, mnt, fstype string }{
		{"/proc/self/fd", "/proc", "proc"},
		{"/proc", "/proc", "proc"},
		{"/", "/", ""},
	} {
		e, ok, err := MountHolding(c.path)
		if err != nil || !ok {
			t.Fatalf("MountHolding(%q): %+v, %v, %v", c.path, e, ok, err)
		}
		if e.Mountpoint != c.mnt || (c.fstype != "" && e.FSType != c.fstype) {
			t.Errorf("MountHolding(%q) = %+v, want the %s mount at %s", c.path, e, c.fstype, c.mnt)
		}
	}
	// /procfoo is not below /proc.
	if e, _, _ := MountHolding("/procfoo"); e.Mountpoint == "/proc" {
		t.Errorf("MountHolding(/procfoo) = %+v: a name that only starts like a mountpoint is not below it", e)
	}
}
