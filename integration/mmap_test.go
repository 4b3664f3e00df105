package integration

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/mmapfs/mmapfs/integration/mmapcheck"
)

// Client memory mappings of files on the mount, made by the test process
// (the daemon is another process, so faults on the mount cannot deadlock).

// mmapFile maps length bytes of f and unmaps them at the end of the test
// unless the test did (with munmap).
func mmapFile(t testing.TB, f *os.File, length, prot, flags int) []byte {
	t.Helper()
	b, err := unix.Mmap(int(f.Fd()), 0, length, prot, flags)
	if err != nil {
		t.Fatalf("mmap %s, %d bytes: %v", f.Name(), length, err)
	}
	live := &liveMapping{}
	liveMappings.Lock()
	liveMappings.m[&b[0]] = live
	liveMappings.Unlock()
	t.Cleanup(func() {
		liveMappings.Lock()
		defer liveMappings.Unlock()
		if live.unmapped {
			return
		}
		live.unmapped = true
		delete(liveMappings.m, &b[0])
		if err := unix.Munmap(b); err != nil {
			t.Errorf("munmap: %v", err)
		}
	})
	return b
}

// liveMapping is one mapping made by mmapFile. Its state is per mapping,
// not per address: once a test unmaps, another test running in parallel
// may be given the same address, and the first test's cleanup must not
// unmap that one.
type liveMapping struct {
	unmapped bool // guarded by liveMappings
}

// liveMappings holds the mappings made by mmapFile and not yet unmapped,
// by their first byte.
var liveMappings = struct {
	sync.Mutex
	m map[*byte]*liveMapping
}{m: map[*byte]*liveMapping{}}

// munmap unmaps a mapping made by mmapFile.
func munmap(t testing.TB, b []byte) {
	t.Helper()
	liveMappings.Lock()
	defer liveMappings.Unlock()
	live := liveMappings.m[&b[0]]
	if live == nil {
		t.Fatalf("munmap of a mapping mmapFile did not make, or unmapped already")
	}
	live.unmapped = true
	delete(liveMappings.m, &b[0])
	if err := unix.Munmap(b); err != nil {
		t.Fatalf("munmap: %v", err)
	}
}

// switchSets are the combinations of the kernel's FUSE caching switches
// that every client mmap case must hold under: all of them, as the kernel
// allows each (shared mmap with --direct-io through
// CAP_DIRECT_IO_ALLOW_MMAP).
var switchSets = [][]string{
	nil,
	{"--keep-cache"},
	{"--direct-io"},
	{"--writeback-cache"},
	{"--keep-cache", "--writeback-cache"},
	{"--direct-io", "--writeback-cache"},
	{"--keep-cache", "--direct-io"},
	{"--keep-cache", "--direct-io", "--writeback-cache"},
	// The kernel keeping cached pages when mtime changes: every change
	// through the mount must still reach every reader.
	{"--keep-cache", "--auto-inval-data=false"},
	{"--keep-cache", "--writeback-cache", "--auto-inval-data=false"},
}

// forEachSwitchSet runs fn in a subtest per switch set, each on its own
// mount, in parallel.
func forEachSwitchSet(t *testing.T, fn func(t *testing.T, m *mount)) {
	t.Parallel()
	for _, sw := range switchSets {
		name := "defaults"
		if sw != nil {
			name = strings.Join(sw, "")
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			if sw != nil && loopbackMode {
				t.Skip("mmapfs switches")
			}
			fn(t, startMount(t, sw...))
		})
	}
}

func openRW(t testing.TB, path string) *os.File {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatalf("open %s: %v", path, err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// The client mapping cases are guarantees of mmapcheck, the package
// `mmapfs check` runs on any directory: each test runs its guarantee on a
// mount of every switch set, and checks every file the guarantee verifies
// in the store too.

func TestMmapSharedMsync(t *testing.T) {
	forEachSwitchSet(t, func(t *testing.T, m *mount) { mmapGuarantee(t, m, "shared-msync") })
}

func TestMmapPrivate(t *testing.T) {
	forEachSwitchSet(t, func(t *testing.T, m *mount) { mmapGuarantee(t, m, "private") })
}

func TestMmapPastEOF(t *testing.T) {
	forEachSwitchSet(t, func(t *testing.T, m *mount) { mmapGuarantee(t, m, "past-eof") })
}

// TestMmapGrowWithFtruncate grows a file with ftruncate and writes the new
// part through a shared mapping, as a logger that appends through a mapping
// does (mapped before the grow, and after).
func TestMmapGrowWithFtruncate(t *testing.T) {
	forEachSwitchSet(t, func(t *testing.T, m *mount) { mmapGuarantee(t, m, "grow-ftruncate") })
}

func TestMmapTwoMappings(t *testing.T) {
	forEachSwitchSet(t, func(t *testing.T, m *mount) { mmapGuarantee(t, m, "shared-two-mappings") })
}

// mmapGuarantee runs mmapcheck's guarantee name on m, in this process (the
// daemon is another), and fails the test unless it passes. Every file the
// guarantee verifies through the mount is checked as a blob in the store
// too.
func mmapGuarantee(t *testing.T, m *mount, name string) {
	t.Helper()
	c, err := mmapcheck.New(mmapcheck.Config{
		Dir:  m.mnt,
		Only: []string{name},
		Seed: 1,
		Verify: func(rel string, want []byte) error {
			got, err := os.ReadFile(filepath.Join(m.store, rel))
			if err != nil {
				return fmt.Errorf("the blob: %w", err)
			}
			if !bytes.Equal(got, want) {
				return fmt.Errorf("the blob %s: %s", rel, diffBytes(got, want))
			}
			return nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := c.Close(); err != nil {
			t.Error(err)
		}
	}()
	for _, r := range c.Run(nil) {
		if r.Verdict != mmapcheck.Pass {
			t.Errorf("%s: %s: expected %s; seen %s; why %q; reproduce: %s", r.Name, r.Verdict, r.Expected, r.Seen, r.Why, r.Reproduce)
		}
	}
}
