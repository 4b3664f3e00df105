package fs

import (
	"bytes"
	"log"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/mmapfs/mmapfs/backing"
)

// testTree is a mount's node tree over a fresh store, served through
// the same raw filesystem a mount serves (rawFS), without a mount: the
// test plays the kernel.
type testTree struct {
	store string
	m     *mountState
	raw   fuse.RawFileSystem
	logs  *bytes.Buffer
}

func newTestTree(t *testing.T, opts Options) *testTree {
	t.Helper()
	store := t.TempDir()
	st, err := backing.Open(store, opts.Store)
	if err != nil {
		t.Fatal(err)
	}
	logs := &bytes.Buffer{}
	opts.Logger = log.New(logs, "", 0)
	m, err := newMountState(st, opts)
	if err != nil {
		t.Fatal(err)
	}
	tt := &testTree{store: store, m: m, raw: m.rawFS(), logs: logs}
	t.Cleanup(func() {
		if err := m.dirs.close(); err != nil {
			t.Errorf("closing the directory cache: %v", err)
		}
		if err := st.Close(); err != nil {
			t.Errorf("closing the store: %v", err)
		}
	})
	return tt
}

// header is a request's header from root (uid 0, gid 0) for node.
func header(node uint64) fuse.InHeader {
	return fuse.InHeader{NodeId: node, Caller: fuse.Caller{Owner: fuse.Owner{Uid: 0, Gid: 0}, Pid: uint32(os.Getpid())}}
}

// lookup looks path up from the root of raw, one LOOKUP a component, and
// returns the last entry.
func lookup(t *testing.T, raw fuse.RawFileSystem, path string) fuse.EntryOut {
	t.Helper()
	var out fuse.EntryOut
	node := uint64(fuse.FUSE_ROOT_ID)
	for _, name := range strings.Split(path, "/") {
		out = fuse.EntryOut{}
		h := header(node)
		if st := raw.Lookup(nil, &h, name, &out); st != fuse.OK {
			t.Fatalf("LOOKUP %q in %q: %v", name, path, st)
		}
		node = out.NodeId
	}
	return out
}

// TestNodeIdentityAsLoopback: every kind of node has the inode number
// and generation that go-fuse's loopback gives it (what the namespace
// was until Node stood on go-fuse's Inode itself), and on a store of one
// filesystem those are the store file's st_ino and birth time. Hard links
// are one node; the attributes agree with the loopback's.
func TestNodeIdentityAsLoopback(t *testing.T) {
	t.Parallel()
	tt := newTestTree(t, DefaultOptions())
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.WriteFile(filepath.Join(tt.store, "file"), []byte("data"), 0o644))
	must(os.Mkdir(filepath.Join(tt.store, "dir"), 0o755))
	must(os.WriteFile(filepath.Join(tt.store, "dir", "inner"), nil, 0o600))
	must(os.Link(filepath.Join(tt.store, "file"), filepath.Join(tt.store, "dir", "link")))
	must(os.Symlink("../file", filepath.Join(tt.store, "dir", "sym")))
	must(unix.Mkfifo(filepath.Join(tt.store, "fifo"), 0o644))

	lbRoot, err := gofs.NewLoopbackRoot(tt.store)
	must(err)
	sec := time.Second
	lb := gofs.NewNodeFS(lbRoot, &gofs.Options{AttrTimeout: &sec, EntryTimeout: &sec})

	for _, p := range []string{"file", "dir", "dir/inner", "dir/link", "dir/sym", "fifo"} {
		ours, theirs := lookup(t, tt.raw, p), lookup(t, lb, p)
		if ours.Ino != theirs.Ino || ours.Generation != theirs.Generation {
			t.Errorf("%s: ino %d gen %d, go-fuse's loopback gives ino %d gen %d", p, ours.Ino, ours.Generation, theirs.Ino, theirs.Generation)
		}
		if ours.Attr.Ino != ours.Ino || ours.Mode != theirs.Mode || ours.Size != theirs.Size || ours.Nlink != theirs.Nlink || ours.Uid != theirs.Uid || ours.Gid != theirs.Gid {
			t.Errorf("%s: attributes %+v, the loopback's %+v", p, ours.Attr, theirs.Attr)
		}
		var x unix.Statx_t
		must(unix.Statx(unix.AT_FDCWD, filepath.Join(tt.store, p), unix.AT_SYMLINK_NOFOLLOW, unix.STATX_BASIC_STATS|unix.STATX_BTIME, &x))
		wantGen := uint64(1)
		if x.Mask&unix.STATX_BTIME != 0 {
			wantGen = uint64(x.Btime.Sec)*1e9 + uint64(x.Btime.Nsec)
		}
		if ours.Ino != x.Ino || ours.Generation != wantGen {
			t.Errorf("%s: ino %d gen %d, the store's file has ino %d, birth time %d", p, ours.Ino, ours.Generation, x.Ino, wantGen)
		}
	}
	if a, b := lookup(t, tt.raw, "file"), lookup(t, tt.raw, "dir/link"); a.NodeId != b.NodeId {
		t.Errorf("two names of one file are nodes %d and %d", a.NodeId, b.NodeId)
	}
}

// TestNodeCreatedIsLookedUp: a directory and a file made through the
// tree (MKDIR, CREATE) are the nodes a later LOOKUP finds, with the
// loopback's numbers; every node of the tree is a Node.
func TestNodeCreatedIsLookedUp(t *testing.T) {
	t.Parallel()
	tt := newTestTree(t, DefaultOptions())
	h := header(fuse.FUSE_ROOT_ID)
	var dirOut fuse.EntryOut
	if st := tt.raw.Mkdir(nil, &fuse.MkdirIn{InHeader: h, Mode: 0o755}, "d", &dirOut); st != fuse.OK {
		t.Fatalf("MKDIR d: %v", st)
	}
	var cout fuse.CreateOut
	ch := header(dirOut.NodeId)
	if st := tt.raw.Create(nil, &fuse.CreateIn{InHeader: ch, Flags: uint32(os.O_RDWR), Mode: 0o644}, "f", &cout); st != fuse.OK {
		t.Fatalf("CREATE d/f: %v", st)
	}
	wh := header(cout.NodeId)
	if n, st := tt.raw.Write(nil, &fuse.WriteIn{InHeader: wh, Fh: cout.Fh, Size: 5}, []byte("hello")); st != fuse.OK || n != 5 {
		t.Fatalf("WRITE: %d, %v", n, st)
	}
	tt.raw.Release(nil, &fuse.ReleaseIn{InHeader: wh, Fh: cout.Fh})
	if got, err := os.ReadFile(filepath.Join(tt.store, "d", "f")); err != nil || string(got) != "hello" {
		t.Fatalf("the store's d/f: %q, %v", got, err)
	}

	lbRoot, err := gofs.NewLoopbackRoot(tt.store)
	if err != nil {
		t.Fatal(err)
	}
	lb := gofs.NewNodeFS(lbRoot, nil)
	for _, c := range []struct {
		path string
		made fuse.EntryOut
	}{{"d", dirOut}, {"d/f", cout.EntryOut}} {
		again, theirs := lookup(t, tt.raw, c.path), lookup(t, lb, c.path)
		if again.NodeId != c.made.NodeId || again.Ino != c.made.Ino || again.Generation != c.made.Generation {
			t.Errorf("%s: made as node %d ino %d gen %d, looked up as node %d ino %d gen %d", c.path, c.made.NodeId, c.made.Ino, c.made.Generation, again.NodeId, again.Ino, again.Generation)
		}
		if again.Ino != theirs.Ino || again.Generation != theirs.Generation {
			t.Errorf("%s: ino %d gen %d, the loopback's %d %d", c.path, again.Ino, again.Generation, theirs.Ino, theirs.Generation)
		}
	}
}

// TestNewMountStateFlags: the open flags follow the options, and the
// root device is the store's.
func TestNewMountStateFlags(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		keep, direct bool
		want         uint32
	}{
		{false, false, 0},
		{true, false, fuse.FOPEN_KEEP_CACHE},
		{false, true, fuse.FOPEN_DIRECT_IO},
		{true, true, fuse.FOPEN_KEEP_CACHE | fuse.FOPEN_DIRECT_IO},
	} {
		opts := DefaultOptions()
		opts.KeepCache, opts.DirectIO = c.keep, c.direct
		tt := newTestTree(t, opts)
		if tt.m.openFlags != c.want {
			t.Errorf("keep-cache %v direct-io %v: open flags %#x, want %#x", c.keep, c.direct, tt.m.openFlags, c.want)
		}
		var st unix.Stat_t
		if err := unix.Stat(tt.store, &st); err != nil {
			t.Fatal(err)
		}
		if tt.m.rootDev != st.Dev {
			t.Errorf("rootDev %d, the store's st_dev %d", tt.m.rootDev, st.Dev)
		}
	}
}

// TestOpenFlagsFor: FOPEN_NOFLUSH for every open but a writable one
// under the close policy, on top of the mount's own flags.
func TestOpenFlagsFor(t *testing.T) {
	t.Parallel()
	base := uint32(fuse.FOPEN_KEEP_CACHE)
	for _, kind := range []backing.PolicyKind{backing.PolicyFsync, backing.PolicyWriteThrough, backing.PolicyClose, backing.PolicyPeriodic, backing.PolicyAsync, backing.PolicyNone} {
		m := &mountState{openFlags: base}
		m.opts.Store.Policy.Kind = kind
		for _, acc := range []int{os.O_RDONLY, os.O_WRONLY, os.O_RDWR} {
			for _, extra := range []int{0, os.O_APPEND | os.O_TRUNC | syscall.O_CLOEXEC} {
				want := base | fuse.FOPEN_NOFLUSH
				if kind == backing.PolicyClose && acc != os.O_RDONLY {
					want = base
				}
				if got := m.openFlagsFor(uint32(acc | extra)); got != want {
					t.Errorf("policy %v, open flags %#o: %#x, want %#x", kind, acc|extra, got, want)
				}
			}
		}
	}
}

// TestStatFromStatx: what statx gives, converted, is what stat gives, for
// each kind of file.
func TestStatFromStatx(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	paths := map[string]func(string) error{
		"file": func(p string) error { return os.WriteFile(p, make([]byte, 5000), 0o640) },
		"dir":  func(p string) error { return os.Mkdir(p, 0o711) },
		"sym":  func(p string) error { return os.Symlink("target", p) },
		"fifo": func(p string) error { return unix.Mkfifo(p, 0o600) },
	}
	if os.Geteuid() == 0 {
		paths["chr"] = func(p string) error { return unix.Mknod(p, unix.S_IFCHR|0o600, int(unix.Mkdev(1, 3))) }
	}
	for name, mk := range paths {
		p := filepath.Join(dir, name)
		if err := mk(p); err != nil {
			t.Fatal(err)
		}
		var x unix.Statx_t
		if err := unix.Statx(unix.AT_FDCWD, p, unix.AT_SYMLINK_NOFOLLOW, unix.STATX_BASIC_STATS|unix.STATX_BTIME, &x); err != nil {
			t.Fatal(err)
		}
		var want syscall.Stat_t
		if err := syscall.Lstat(p, &want); err != nil {
			t.Fatal(err)
		}
		got := statFromStatx(&x)
		// Padding fields aside, every field a FUSE attribute takes.
		want.X__pad0, want.X__unused = got.X__pad0, got.X__unused
		if got != want {
			t.Errorf("%s: statFromStatx\n got %+v\nwant %+v", name, got, want)
		}
		var ga, wa fuse.Attr
		ga.FromStat(&got)
		wa.FromStat(&want)
		if ga != wa {
			t.Errorf("%s: attributes %+v, from stat %+v", name, ga, wa)
		}
	}
}

// TestOwnerArgs: -1 for what a SETATTR leaves alone, as chown takes it.
func TestOwnerArgs(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		valid    uint32
		uid, gid int
		ok       bool
	}{
		{0, -1, -1, false},
		{fuse.FATTR_MODE | fuse.FATTR_SIZE, -1, -1, false},
		{fuse.FATTR_UID, 1000, -1, true},
		{fuse.FATTR_GID, -1, 2000, true},
		{fuse.FATTR_UID | fuse.FATTR_GID, 1000, 2000, true},
	} {
		in := &fuse.SetAttrIn{SetAttrInCommon: fuse.SetAttrInCommon{Valid: c.valid, Owner: fuse.Owner{Uid: 1000, Gid: 2000}}}
		uid, gid, ok := ownerArgs(in)
		if uid != c.uid || gid != c.gid || ok != c.ok {
			t.Errorf("valid %#x: ownerArgs = %d, %d, %v; want %d, %d, %v", c.valid, uid, gid, ok, c.uid, c.gid, c.ok)
		}
	}
	// uid 0 is a uid, not "unset".
	in := &fuse.SetAttrIn{SetAttrInCommon: fuse.SetAttrInCommon{Valid: fuse.FATTR_UID}}
	if uid, gid, ok := ownerArgs(in); uid != 0 || gid != -1 || !ok {
		t.Errorf("chown to uid 0: ownerArgs = %d, %d, %v", uid, gid, ok)
	}
}

// TestTimesArgs: UTIME_OMIT for a time left alone, the explicit time to
// the nanosecond, and UTIME_NOW for "now" (never the daemon's clock: an
// append-only file takes UTIME_NOW where an explicit time is EPERM).
func TestTimesArgs(t *testing.T) {
	t.Parallel()
	omit := unix.Timespec{Nsec: unix.UTIME_OMIT}
	now := unix.Timespec{Nsec: unix.UTIME_NOW}
	at := unix.Timespec{Sec: 1_000_000_000, Nsec: 123_456_789}
	mt := unix.Timespec{Sec: 2_000_000_000, Nsec: 987_654_321}
	for _, c := range []struct {
		valid  uint32
		atime  unix.Timespec
		mtime  unix.Timespec
		wantOK bool
	}{
		{0, omit, omit, false},
		{fuse.FATTR_SIZE | fuse.FATTR_MODE | fuse.FATTR_CTIME, omit, omit, false},
		{fuse.FATTR_ATIME, at, omit, true},
		{fuse.FATTR_MTIME, omit, mt, true},
		{fuse.FATTR_ATIME | fuse.FATTR_MTIME, at, mt, true},
		{fuse.FATTR_ATIME | fuse.FATTR_ATIME_NOW | fuse.FATTR_MTIME | fuse.FATTR_MTIME_NOW, now, now, true},
		{fuse.FATTR_ATIME | fuse.FATTR_ATIME_NOW | fuse.FATTR_MTIME, now, mt, true},
		{fuse.FATTR_ATIME | fuse.FATTR_MTIME | fuse.FATTR_MTIME_NOW, at, now, true},
	} {
		in := &fuse.SetAttrIn{SetAttrInCommon: fuse.SetAttrInCommon{
			Valid: c.valid,
			Atime: uint64(at.Sec), Atimensec: uint32(at.Nsec),
			Mtime: uint64(mt.Sec), Mtimensec: uint32(mt.Nsec),
		}}
		ts, ok := timesArgs(in)
		if ok != c.wantOK || len(ts) != 2 || ts[0] != c.atime || ts[1] != c.mtime {
			t.Errorf("valid %#x: timesArgs = %v, %v; want [%v %v], %v", c.valid, ts, ok, c.atime, c.mtime, c.wantOK)
		}
	}
}

// droppedLoopback names the methods of go-fuse's LoopbackNode that Node
// does not implement, each with the reason written in doc.go. None today.
var droppedLoopback = map[string]bool{}

// TestNodeCoversLoopback: every operation go-fuse's LoopbackNode
// implements (its own methods, not those of the Inode it embeds) is
// implemented by Node itself, in this package, or named in
// droppedLoopback. A method a later go-fuse adds to its loopback fails
// here until someone decides whether the mount has it; Node embeds
// Inode, not the loopback, so nothing is inherited in the meantime.
func TestNodeCoversLoopback(t *testing.T) {
	t.Parallel()
	lb, inode, node := reflect.TypeFor[*gofs.LoopbackNode](), reflect.TypeFor[*gofs.Inode](), reflect.TypeFor[*Node]()
	_, self, _, _ := runtime.Caller(0)
	for i := range lb.NumMethod() {
		name := lb.Method(i).Name
		if _, ok := inode.MethodByName(name); ok {
			continue // Inode's, which Node embeds too
		}
		m, ok := node.MethodByName(name)
		if !ok {
			if !droppedLoopback[name] {
				t.Errorf("go-fuse's LoopbackNode implements %s and Node does not: implement it, or name it in droppedLoopback with the reason in doc.go", name)
			}
			continue
		}
		if droppedLoopback[name] {
			t.Errorf("droppedLoopback names %s, which Node implements", name)
		}
		if file, _ := runtime.FuncForPC(m.Func.Pointer()).FileLine(m.Func.Pointer()); filepath.Dir(file) != filepath.Dir(self) {
			t.Errorf("Node.%s comes from %s, not from this package", name, file)
		}
	}
}

// TestTreeNoEscape: a symlink planted in the store is a symlink node,
// and nothing is looked up, listed or made through it: resolution
// beneath the store refuses it (ELOOP, logged), so the directory it
// points to outside the store is never reached.
func TestTreeNoEscape(t *testing.T) {
	t.Parallel()
	tt := newTestTree(t, DefaultOptions())
	outside := t.TempDir()
	if err := os.WriteFile(filepath.Join(outside, "secret"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(tt.store, "d")); err != nil {
		t.Fatal(err)
	}
	d := lookup(t, tt.raw, "d")
	if d.Mode&syscall.S_IFMT != syscall.S_IFLNK {
		t.Fatalf("d has mode %#o, want a symlink", d.Mode)
	}
	h := header(d.NodeId)
	var out fuse.EntryOut
	if st := tt.raw.Lookup(nil, &h, "secret", &out); st != fuse.Status(syscall.ELOOP) {
		t.Errorf("LOOKUP secret through the symlink: %v, want ELOOP", st)
	}
	if st := tt.raw.Mkdir(nil, &fuse.MkdirIn{InHeader: h, Mode: 0o755}, "new", &out); st != fuse.Status(syscall.ELOOP) {
		t.Errorf("MKDIR through the symlink: %v, want ELOOP", st)
	}
	if st := tt.raw.Unlink(nil, &h, "secret"); st != fuse.Status(syscall.ELOOP) {
		t.Errorf("UNLINK through the symlink: %v, want ELOOP", st)
	}
	if ents, err := os.ReadDir(outside); err != nil || len(ents) != 1 {
		t.Errorf("outside the store: %v, %v; want secret alone", ents, err)
	}
	if !strings.Contains(tt.logs.String(), "refused to follow a symlink inside the store") {
		t.Errorf("no log line says a symlink was refused: %q", tt.logs.String())
	}
}

// TestTreeVirtualFiles: the stats and control files at the root cannot
// be removed or renamed over.
func TestTreeVirtualFiles(t *testing.T) {
	t.Parallel()
	tt := newTestTree(t, DefaultOptions())
	if err := os.WriteFile(filepath.Join(tt.store, "f"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	h := header(fuse.FUSE_ROOT_ID)
	for _, name := range []string{StatsName, ControlName} {
		if st := tt.raw.Unlink(nil, &h, name); st != fuse.EPERM {
			t.Errorf("UNLINK %s: %v, want EPERM", name, st)
		}
		in := &fuse.RenameIn{InHeader: h, Newdir: fuse.FUSE_ROOT_ID}
		if st := tt.raw.Rename(nil, in, "f", name); st != fuse.EPERM {
			t.Errorf("RENAME f onto %s: %v, want EPERM", name, st)
		}
		if st := tt.raw.Rename(nil, in, name, "g"); st != fuse.EPERM {
			t.Errorf("RENAME %s: %v, want EPERM", name, st)
		}
	}
	if _, err := os.Stat(filepath.Join(tt.store, "f")); err != nil {
		t.Errorf("f after the refused renames: %v", err)
	}
}
