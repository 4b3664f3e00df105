package integration

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// cacheLayer is one layer of `mmapfs cache --json`, in pages.
type cacheLayer struct {
	Cached    uint64 `json:"cached_pages"`
	Dirty     uint64 `json:"dirty_pages"`
	Writeback uint64 `json:"writeback_pages"`
}

// cacheDoc is the part of `mmapfs cache --json` the tests check.
type cacheDoc struct {
	PageSize int `json:"page_size"`
	Files    []struct {
		Path  string     `json:"path"`
		Blob  string     `json:"blob"`
		Size  int64      `json:"size"`
		Mount cacheLayer `json:"mount"`
		Store cacheLayer `json:"store"`
	} `json:"files"`
	Total struct {
		Files int        `json:"files"`
		Mount cacheLayer `json:"mount"`
		Store cacheLayer `json:"store"`
	} `json:"total"`
}

// runCache runs `mmapfs cache --json paths` and returns its report.
func runCache(t *testing.T, paths ...string) cacheDoc {
	t.Helper()
	r := runBinary(t, cliTimeout, nil, append([]string{"cache", "--json"}, paths...)...)
	if r.exitCode != 0 {
		t.Fatalf("mmapfs cache %v: exit %d\nstdout: %s\nstderr: %s", paths, r.exitCode, r.stdout, r.stderr)
	}
	var d cacheDoc
	if err := json.Unmarshal([]byte(r.stdout), &d); err != nil {
		t.Fatalf("mmapfs cache %v: %v in %q", paths, err, r.stdout)
	}
	return d
}

// TestCacheBothLayersAfterRead: a file written and read through the mount
// is in the store's page cache (the daemon's mapping of its blob) under
// every switch. It is in the mount's page cache too, but the figure
// differs by switch: with --keep-cache, and with auto-cache (the default)
// for a file unchanged since the kernel last saw it, the pages the read
// brought in stay across opens, so `mmapfs cache` (a client that opens the
// file) sees all of them; with neither the kernel drops a FUSE file's
// cache at every open, that of `mmapfs cache` included, so it sees 0.
func TestCacheBothLayersAfterRead(t *testing.T) {
	t.Parallel()
	skipIfLoopback(t)
	const size = 1 << 20
	for _, tc := range []struct {
		name  string
		flags []string
		kept  bool // the mount's pages survive the CLI's open
	}{
		{"defaults", nil, true},
		{"keep-cache", []string{"--keep-cache"}, true},
		{"no-auto-cache", []string{"--auto-cache=false"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			m := startMount(t, tc.flags...)
			mkdir := filepath.Join(m.mnt, "d")
			if err := os.Mkdir(mkdir, 0o755); err != nil {
				t.Fatal(err)
			}
			data := bytes.Repeat([]byte("mmapfs cache\n"), size/13+1)[:size]
			path := filepath.Join(mkdir, "f")
			if err := os.WriteFile(path, data, 0o644); err != nil {
				t.Fatal(err)
			}
			got, err := os.ReadFile(path)
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("reading %s back: %v (equal %v)", path, err, bytes.Equal(got, data))
			}
			d := runCache(t, m.mnt) // the mount's root: recursively
			if len(d.Files) != 1 || d.Total.Files != 1 {
				t.Fatalf("mmapfs cache %s listed %d files (total %d), want the one file d/f and no stats or control file: %+v", m.mnt, len(d.Files), d.Total.Files, d.Files)
			}
			f := d.Files[0]
			pages := uint64(size / d.PageSize)
			if f.Size != size || f.Blob != filepath.Join(m.store, "d", "f") {
				t.Errorf("file %s: size %d, blob %s; want %d, %s", f.Path, f.Size, f.Blob, size, filepath.Join(m.store, "d", "f"))
			}
			if f.Store.Cached != pages {
				t.Errorf("store cached %d pages of %s, want all %d: the daemon's mapping wrote and read every page of the blob", f.Store.Cached, f.Blob, pages)
			}
			switch {
			case tc.kept && f.Mount.Cached != pages:
				t.Errorf("%s: mount cached %d pages of %s, want all %d (the read filled them; the CLI's open keeps them)", tc.name, f.Mount.Cached, path, pages)
			case !tc.kept && f.Mount.Cached != 0:
				t.Errorf("%s: mount cached %d pages of %s, want 0 (without keep-cache and auto-cache the CLI's own open drops the file's cache)", tc.name, f.Mount.Cached, path)
			}
			if d.Total.Mount != f.Mount || d.Total.Store != f.Store {
				t.Errorf("total %+v / %+v, want the one file's %+v / %+v", d.Total.Mount, d.Total.Store, f.Mount, f.Store)
			}
		})
	}
}

// TestCacheMappedWrite: a client's stores through a MAP_SHARED mapping of
// a file on the mount make the mount's pages dirty; the kernel's writeback
// (here forced by sync_file_range) sends them as WRITEs to the daemon,
// whose copy into its own mapping makes the blob's pages dirty in the
// store's page cache; under the fsync policy they stay dirty until the
// client's fsync, at which the daemon msyncs: the two copies of each page
// a FUSE mount holds. msync(MS_SYNC) is such an fsync: it writes the
// mount's pages back and sends an FSYNC, so after it neither layer has a
// dirty page. Whether the mount's pages stay cached after the WRITEs
// depends on --auto-inval-data (see kept). With --keep-cache the
// CLI sees this as it is. Without keep-cache and auto-cache, its own open
// of the file makes the kernel drop the mount's cache, which first writes
// the dirty pages back: the measurement itself moves the dirty pages to
// the blob before the client's msync. (Auto-cache, the default, keeps
// the cache at the CLI's open only if the lookup before it saw the file as
// the WRITEs left it: which of the two a run sees depends on timing, so
// it is not a case here.)
func TestCacheMappedWrite(t *testing.T) {
	t.Parallel()
	skipIfLoopback(t)
	const size = 64 << 10
	for _, tc := range []struct {
		name  string
		flags []string
		// kept: the mount's pages stay cached after the WRITEs. With
		// auto-inval-data (the default) the kernel drops them when a
		// lookup sees the mtime the WRITEs changed, keep-cache or not.
		kept bool
	}{
		{"keep-cache", []string{"--keep-cache"}, false},
		{"keep-cache,no-auto-inval-data", []string{"--keep-cache", "--auto-inval-data=false"}, true},
		{"no-auto-cache", []string{"--auto-cache=false"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			m := startMount(t, append([]string{"--writeback", "fsync"}, tc.flags...)...)
			path := filepath.Join(m.mnt, "f")
			f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if _, err := f.Write(make([]byte, size)); err != nil {
				t.Fatal(err)
			}
			if err := f.Sync(); err != nil {
				t.Fatal(err)
			}
			pages := uint64(size / os.Getpagesize())
			if d := runCache(t, path); d.Files[0].Mount.Dirty != 0 || d.Files[0].Store.Dirty != 0 {
				t.Fatalf("after write and fsync: dirty pages mount %d, store %d; want 0 and 0", d.Files[0].Mount.Dirty, d.Files[0].Store.Dirty)
			}
			b, err := unix.Mmap(int(f.Fd()), 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
			if err != nil {
				t.Fatal(err)
			}
			defer unix.Munmap(b)
			// The kernel's own writeback (the flusher, a sync(2) of
			// another process on this machine) may clean a page between
			// a step and its look: a figure that should be dirty is tried
			// again, up to mappedWriteTries times, each with fresh
			// stores.
			var written cacheLayerPair
			for attempt := 1; ; attempt++ {
				msg, w := mappedWriteSteps(t, f, b, path, pages, byte('0'+attempt), slices.Contains(tc.flags, "--keep-cache"))
				if msg == "" {
					written = w
					break
				}
				if attempt == mappedWriteTries {
					t.Fatalf("%s (attempt %d)", msg, attempt)
				}
				t.Logf("attempt %d: %s; again", attempt, msg)
			}
			if !slices.Contains(tc.flags, "--keep-cache") {
				if err := f.Sync(); err != nil {
					t.Fatal(err)
				}
				if after := runCache(t, path).Files[0]; after.Store.Dirty != 0 {
					t.Errorf("no keep-cache or auto-cache, after fsync: store dirty %d pages, want 0 (the daemon msyncs at fsync)", after.Store.Dirty)
				}
				return
			}
			switch {
			case tc.kept && written.Mount.Cached != pages:
				t.Errorf("%s, after writeback: mount cached %d pages, want %d (written back, still cached: nothing invalidates them)", tc.name, written.Mount.Cached, pages)
			case !tc.kept && written.Mount.Cached != 0:
				t.Errorf("%s, after writeback: mount cached %d pages, want 0 (the WRITEs changed the mtime; auto-inval-data drops the cache when the CLI's lookup sees it)", tc.name, written.Mount.Cached)
			}
			// More stores, then msync(MS_SYNC): it writes the pages back
			// and, as the fsync of the mapped range that it is, sends an
			// FSYNC, at which the daemon msyncs the blob. As above, the
			// kernel's own writeback may clean a page before the look:
			// up to mappedWriteTries tries, each with fresh stores.
			for attempt := 1; ; attempt++ {
				for i := 0; i < size; i += os.Getpagesize() {
					b[i] = byte('a' + attempt)
				}
				d := runCache(t, path).Files[0]
				if d.Mount.Dirty == pages {
					break
				}
				msg := fmt.Sprintf("stores in the mapping again: mount dirty %d pages, want %d", d.Mount.Dirty, pages)
				if attempt == mappedWriteTries {
					t.Fatalf("%s (attempt %d)", msg, attempt)
				}
				t.Logf("attempt %d: %s; again", attempt, msg)
			}
			if err := unix.Msync(b, unix.MS_SYNC); err != nil {
				t.Fatal(err)
			}
			if after := runCache(t, path).Files[0]; after.Store.Dirty != 0 || after.Mount.Dirty != 0 {
				t.Errorf("after msync(MS_SYNC): dirty pages mount %d, store %d; want 0 and 0 (msync writes back and fsyncs; the daemon msyncs at fsync)", after.Mount.Dirty, after.Store.Dirty)
			}
		})
	}
}

// mappedWriteTries is how many times TestCacheMappedWrite makes fresh
// stores for a figure that should be dirty and is not: a sync(2) of any
// process cleans every dirty page of the machine, and the suite's own
// stress-ng stressors call it every round while they run beside this
// test (CI saw three tries in a row cleaned so).
const mappedWriteTries = 10

// cacheLayerPair is both layers of one file in `mmapfs cache --json`.
type cacheLayerPair struct{ Mount, Store cacheLayer }

// mappedWriteSteps stores v in every page of b, the client's MAP_SHARED
// mapping of f (the file at path, of pages pages, on a mount under the
// fsync policy), and checks both layers before and after the kernel's
// writeback of the pages: an empty message and the layers after the
// writeback if they are as they should be. keep says whether the mount
// has --keep-cache; without it the CLI's own open writes the dirty pages
// back and drops them, so the blob has them dirty before any writeback
// the client asks for.
func mappedWriteSteps(t *testing.T, f *os.File, b []byte, path string, pages uint64, v byte, keep bool) (string, cacheLayerPair) {
	t.Helper()
	for i := 0; i < len(b); i += os.Getpagesize() {
		b[i] = v
	}
	before := runCache(t, path).Files[0]
	if !keep {
		if before.Mount.Dirty != 0 || before.Store.Dirty != pages {
			return fmt.Sprintf("no keep-cache or auto-cache, stores in the mapping, before msync: dirty pages mount %d, store %d; want 0 and %d (the CLI's open flushed the mount's cache into the blob)", before.Mount.Dirty, before.Store.Dirty, pages), cacheLayerPair{}
		}
		return "", cacheLayerPair{before.Mount, before.Store}
	}
	if before.Mount.Dirty != pages || before.Store.Dirty != 0 {
		return fmt.Sprintf("stores in the mapping, before msync: dirty pages mount %d, store %d; want %d and 0", before.Mount.Dirty, before.Store.Dirty, pages), cacheLayerPair{}
	}
	// The kernel's writeback of the mapping's pages, without an fsync:
	// sync_file_range sends the dirty pages as WRITEs and no FSYNC.
	if err := unix.SyncFileRange(int(f.Fd()), 0, 0, unix.SYNC_FILE_RANGE_WAIT_BEFORE|unix.SYNC_FILE_RANGE_WRITE|unix.SYNC_FILE_RANGE_WAIT_AFTER); err != nil {
		t.Fatal(err)
	}
	w := runCache(t, path).Files[0]
	if w.Mount.Dirty != 0 || w.Mount.Writeback != 0 || w.Store.Dirty != pages {
		return fmt.Sprintf("after writeback (sync_file_range): mount dirty %d, writeback %d, store dirty %d; want 0, 0 and %d (the WRITEs dirtied the blob's pages, the fsync policy keeps them until fsync)", w.Mount.Dirty, w.Mount.Writeback, w.Store.Dirty, pages), cacheLayerPair{}
	}
	// The client's fsync: the daemon msyncs the blob.
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	if s := runCache(t, path).Files[0]; s.Store.Dirty != 0 || s.Mount.Dirty != 0 {
		t.Fatalf("after fsync: dirty pages mount %d, store %d; want 0 and 0 (the daemon msyncs at fsync)", s.Mount.Dirty, s.Store.Dirty)
	}
	return "", cacheLayerPair{w.Mount, w.Store}
}

// TestCacheErrors: a path not on an mmapfs mount, a symlink out of the
// store, another user's look at a mount without --allow-other, and a file
// on a dead mount, are refused with a message naming the path and what to
// do.
func TestCacheErrors(t *testing.T) {
	t.Parallel()
	skipIfLoopback(t)
	plain := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(plain, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	r := runBinary(t, cliTimeout, nil, "cache", plain)
	if r.exitCode == 0 || !strings.Contains(r.stderr, plain+" is not on an mmapfs mount") {
		t.Errorf("mmapfs cache %s (not on a mount): exit %d, stderr %q; want an error saying it is not on an mmapfs mount", plain, r.exitCode, r.stderr)
	}

	m := startMount(t)
	path := filepath.Join(m.mnt, "f")
	if err := os.WriteFile(path, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	// A symlink planted in the store, to a file outside it: named, it is
	// refused as not on the mount; beneath a directory named, it is not
	// followed.
	if err := os.Symlink(plain, filepath.Join(m.store, "evil")); err != nil {
		t.Fatal(err)
	}
	evil := filepath.Join(m.mnt, "evil")
	r = runBinary(t, cliTimeout, nil, "cache", evil)
	if r.exitCode == 0 || !strings.Contains(r.stderr, evil+" (a symlink to "+plain+") is not on an mmapfs mount") {
		t.Errorf("mmapfs cache %s (a symlink out of the store): exit %d, stderr %q; want it refused as a symlink to %s, not on the mount", evil, r.exitCode, r.stderr, plain)
	}
	if d := runCache(t, m.mnt); d.Total.Files != 1 || d.Files[0].Path != path {
		t.Errorf("mmapfs cache %s: %d files %+v, want only %s (the symlink not followed)", m.mnt, d.Total.Files, d.Files, path)
	}
	if os.Geteuid() == 0 {
		// Another user, on a mount without --allow-other.
		code, stderr := runAsNobody(t, nil, "cache", path)
		if code == 0 || !strings.Contains(stderr, "no permission to open "+path+" for reading") || !strings.Contains(stderr, "--allow-other") {
			t.Errorf("mmapfs cache %s as nobody: exit %d, stderr %q; want a permission error naming the file and --allow-other", path, code, stderr)
		}
	}
	m.kill(t)
	r = runBinary(t, cliTimeout, nil, "cache", path)
	if r.exitCode == 0 || !strings.Contains(r.stderr, "dead mount") || !strings.Contains(r.stderr, "fusermount3 -u "+m.mnt) {
		t.Errorf("mmapfs cache %s (dead mount): exit %d, stderr %q; want it to say the mount is dead and `fusermount3 -u %s`", path, r.exitCode, r.stderr, m.mnt)
	}
}
