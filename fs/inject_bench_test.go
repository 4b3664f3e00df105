package fs

import (
	"errors"
	"io"
	"log"
	"os"
	"path/filepath"
	"testing"

	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/mmapfs/mmapfs/backing"
	"github.com/mmapfs/mmapfs/fs/inject"
)

// injectReadSetup makes a mount state whose store has the fault-injection
// hook of Mount (hooked) or none, with rules, and opens a 1 MiB file; it
// returns the tree and a READ of its first 4 KiB.
func injectReadSetup(tb testing.TB, hooked bool, rules ...string) (fuse.RawFileSystem, *fuse.ReadIn) {
	tb.Helper()
	opts := DefaultOptions()
	opts.Logger = log.New(io.Discard, "", 0)
	opts.Inject = rules
	set, err := newInjectSet(opts, 1)
	if err != nil {
		tb.Fatal(err)
	}
	if hooked {
		opts.Store.Inject = storeInject(set, opts.Logger.Printf)
	}
	m, raw, in := treeReadSetup(tb, opts)
	m.inj = set
	return raw, in
}

// treeReadSetup makes a mount state on a new store with opts (no kernel,
// no mount) and opens a 1 MiB file of it through the node tree; it
// returns the state, the tree and a READ of the file's first 4 KiB.
func treeReadSetup(tb testing.TB, opts Options) (*mountState, fuse.RawFileSystem, *fuse.ReadIn) {
	tb.Helper()
	store := tb.TempDir()
	st, err := backing.Open(store, opts.Store)
	if err != nil {
		tb.Fatal(err)
	}
	m, err := newMountState(st, opts)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		m.trace.close()
		if err := errors.Join(m.dirs.close(), st.Close()); err != nil {
			tb.Error(err)
		}
	})
	raw := m.rawFS()
	if err := os.WriteFile(filepath.Join(store, "f"), make([]byte, 1<<20), 0o644); err != nil {
		tb.Fatal(err)
	}
	var e fuse.EntryOut
	h := header(fuse.FUSE_ROOT_ID)
	if s := raw.Lookup(nil, &h, "f", &e); s != fuse.OK {
		tb.Fatal(s)
	}
	var oout fuse.OpenOut
	if s := raw.Open(nil, &fuse.OpenIn{InHeader: header(e.NodeId), Flags: uint32(os.O_RDONLY)}, &oout); s != fuse.OK {
		tb.Fatal(s)
	}
	return m, raw, &fuse.ReadIn{InHeader: header(e.NodeId), Fh: oout.Fh, Size: 4096}
}

// BenchmarkInjectRead: a 4 KiB READ through the tree without the hook
// (as before fault injection), with the hook and no rule (every mount
// now: one atomic load in the handle and one in the store's hook), and
// with a rule on another op (the read then takes the set's lock and
// matches it).
//
//	go test -run '^$' -bench BenchmarkInjectRead -count 6 ./fs/
func BenchmarkInjectRead(b *testing.B) {
	for _, c := range []struct {
		name   string
		hooked bool
		rules  []string
	}{
		{"no-hook", false, nil},
		{"hook-no-rule", true, nil},
		{"rule-on-fsync", true, []string{"op=fsync,errno=EIO"}},
	} {
		b.Run(c.name, func(b *testing.B) {
			raw, in := injectReadSetup(b, c.hooked, c.rules...)
			buf := make([]byte, 4096)
			cancel := make(chan struct{})
			i := 0
			for b.Loop() {
				in.Offset = uint64(i%256) * 4096
				if _, s := raw.Read(cancel, in, buf); s != fuse.OK {
					b.Fatal(s)
				}
				i++
			}
		})
	}
}

// TestInjectReadNoAlloc: with the hook and no rule, a READ allocates no
// more than without the hook.
func TestInjectReadNoAlloc(t *testing.T) {
	allocs := func(hooked bool) float64 {
		raw, in := injectReadSetup(t, hooked)
		buf := make([]byte, 4096)
		cancel := make(chan struct{})
		return testing.AllocsPerRun(200, func() {
			if _, s := raw.Read(cancel, in, buf); s != fuse.OK {
				t.Fatal(s)
			}
		})
	}
	if without, with := allocs(false), allocs(true); with > without {
		t.Fatalf("a READ allocates %v times with the injection hook and no rule, %v without", with, without)
	}
}

// TestInjectSetNoRules: the set a mount starts with, with no --inject,
// is not active, so that the hooks return at their first load.
func TestInjectSetNoRules(t *testing.T) {
	set, err := newInjectSet(DefaultOptions(), 1)
	if err != nil || set.Active() {
		t.Fatalf("newInjectSet without rules: active %v, %v", set.Active(), err)
	}
	if _, err := newInjectSet(Options{Inject: []string{"op=msync,errno=EIO,fsyncgate"}}, 1); !errors.As(err, new(*inject.RuleError)) {
		t.Fatalf("fsyncgate without the simulation was taken")
	}
	var re *inject.RuleError
	if _, err := newInjectSet(Options{Inject: []string{"op=nope,errno=EIO"}}, 1); !errors.As(err, &re) {
		t.Fatalf("a bad rule: %v, want a *inject.RuleError", err)
	}
}
