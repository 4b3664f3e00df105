package main

import (
	"bytes"
	"encoding/json"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/spf13/cobra"
)

func sampleCacheReport() *cacheReport {
	no, yes := false, true
	r := &cacheReport{
		Time:     time.Date(2026, 12, 1, 13, 0, 0, 0, time.UTC),
		PageSize: 4096,
		Mounts:   []mountNote{{Mountpoint: "/mnt", Store: "/store", KeepCache: &no, AutoCache: &no}, {Mountpoint: "/auto", Store: "/store2", KeepCache: &no, AutoCache: &yes}},
		Files: []fileCache{
			{Path: "/mnt/a", Blob: "/store/a", Size: 1 << 20, Mount: pageStat{Cached: 256, Dirty: 16}, Store: pageStat{Cached: 256, Writeback: 2, Evicted: 3, RecentlyEvicted: 1}},
			{Path: "/mnt/d/b", Blob: "/store/d/b", Size: 100, Mount: pageStat{}, Store: pageStat{Cached: 1, Dirty: 1}},
		},
	}
	for _, f := range r.Files {
		r.Total.Files++
		r.Total.Size += f.Size
		r.Total.Mount.add(f.Mount)
		r.Total.Store.add(f.Store)
	}
	return r
}

func TestCacheTable(t *testing.T) {
	var b bytes.Buffer
	if err := printCache(&b, sampleCacheReport()); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	lines := strings.Split(out, "\n")
	for _, want := range [][]string{
		{"FILE", "SIZE", "CACHE", "CACHED (pages)", "DIRTY (pages)", "WRITEBACK (pages)", "EVICTED (pages)", "RECENTLY EVICTED (pages)"},
		{"/mnt/a", "1.0 MiB", "mount", "1.0 MiB (256)", "64.0 KiB (16)", "0 B (0)", "0 B (0)", "0 B (0)"},
		{"store", "1.0 MiB (256)", "0 B (0)", "8.0 KiB (2)", "12.0 KiB (3)", "4.0 KiB (1)"},
		{"/mnt/d/b", "100 B", "mount", "0 B (0)"},
		{"store", "4.0 KiB (1)", "4.0 KiB (1)"},
		{"total (2 files)", "1.0 MiB", "mount", "1.0 MiB (256)", "64.0 KiB (16)"},
		{"store", "1.0 MiB (257)", "4.0 KiB (1)", "8.0 KiB (2)", "12.0 KiB (3)", "4.0 KiB (1)"},
	} {
		found := slices.ContainsFunc(lines, func(l string) bool {
			rest := l
			for _, w := range want {
				i := strings.Index(rest, w)
				if i < 0 {
					return false
				}
				rest = rest[i+len(w):]
			}
			return true
		})
		if !found {
			t.Errorf("no line with %q in order in\n%s", want, out)
		}
	}
	if !strings.Contains(out, "/mnt is mounted without --keep-cache and --auto-cache") {
		t.Errorf("no note on the mount without --keep-cache and --auto-cache in\n%s", out)
	}
	if strings.Contains(out, "/auto is mounted") {
		t.Errorf("a note on the mount with --auto-cache, whose open keeps an unchanged file's cache, in\n%s", out)
	}
	// Columns line up: the mount and store rows of a file start their
	// figures at the same column.
	var cacheCol []int
	for _, l := range lines {
		for _, layer := range []string{"  mount  ", "  store  "} {
			if i := strings.Index(l, layer); i >= 0 {
				cacheCol = append(cacheCol, i)
			}
		}
	}
	if len(cacheCol) != 6 || slices.Min(cacheCol) != slices.Max(cacheCol) {
		t.Errorf("the CACHE column is at %v, want 6 rows at one column:\n%s", cacheCol, out)
	}
}

func TestCacheJSONKeys(t *testing.T) {
	var b bytes.Buffer
	if err := writeCacheJSON(&b, sampleCacheReport()); err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := json.Unmarshal(b.Bytes(), &doc); err != nil {
		t.Fatal(err)
	}
	keys := func(v any) []string {
		m, _ := v.(map[string]any)
		var ks []string
		for k := range m {
			ks = append(ks, k)
		}
		slices.Sort(ks)
		return ks
	}
	layer := []string{"cached_pages", "dirty_pages", "evicted_pages", "recently_evicted_pages", "writeback_pages"}
	for _, c := range []struct {
		name string
		v    any
		want []string
	}{
		{"document", doc, []string{"files", "mounts", "page_size", "time", "total"}},
		{"file", doc["files"].([]any)[0], []string{"blob", "mount", "path", "size", "store"}},
		{"file mount", doc["files"].([]any)[0].(map[string]any)["mount"], layer},
		{"file store", doc["files"].([]any)[0].(map[string]any)["store"], layer},
		{"total", doc["total"], []string{"files", "mount", "size", "store"}},
		{"total store", doc["total"].(map[string]any)["store"], layer},
		{"mount", doc["mounts"].([]any)[0], []string{"auto_cache", "keep_cache", "mountpoint", "store"}},
	} {
		if got := keys(c.v); !slices.Equal(got, c.want) {
			t.Errorf("%s keys %v, want %v", c.name, got, c.want)
		}
	}
	if got := doc["total"].(map[string]any)["store"].(map[string]any)["cached_pages"]; got != float64(257) {
		t.Errorf("total store cached_pages %v, want 257", got)
	}
	if !bytes.HasSuffix(b.Bytes(), []byte("}\n")) || bytes.Count(b.Bytes(), []byte("\n")) != 1 {
		t.Errorf("the document is not one line: %q", b.String())
	}
}

func TestCacheWatchLine(t *testing.T) {
	line := cacheWatchLine(sampleCacheReport())
	if len(line) != len(cacheWatchHeader) {
		t.Errorf("line is %d wide, header %d:\n%s\n%s", len(line), len(cacheWatchHeader), cacheWatchHeader, line)
	}
	f := strings.Fields(line)
	want := []string{"13:00:00", "2", "1.0", "0.1", "0.0", "0", "1.0", "0.0", "0.0", "3"}
	if !slices.Equal(f, want) {
		t.Errorf("watch line fields %q, want %q", f, want)
	}
}

func TestCacheArgs(t *testing.T) {
	for _, c := range []struct {
		args  []string
		paths []string
		every time.Duration
		err   string
	}{
		{args: []string{"a"}, paths: []string{"a"}},
		{args: []string{"a", "b"}, paths: []string{"a", "b"}},
		{args: []string{"--watch", "a"}, paths: []string{"a"}, every: time.Second},
		{args: []string{"--watch", "2s", "a", "b"}, paths: []string{"a", "b"}, every: 2 * time.Second},
		{args: []string{"a", "-w", "3s"}, paths: []string{"a"}, every: 3 * time.Second},
		{args: []string{"--watch=500ms", "a"}, paths: []string{"a"}, every: 500 * time.Millisecond},
		{args: []string{}, err: "requires at least 1 PATH"},
		{args: []string{"--watch=0s", "a"}, err: "out of range"},
	} {
		var paths []string
		var every time.Duration
		cmd := newCacheCommand()
		cmd.RunE = func(cmd *cobra.Command, args []string) error {
			w, _ := cmd.Flags().GetDuration("watch")
			var err error
			paths, every, err = cacheArgs(cmd, w, args)
			return err
		}
		cmd.SetArgs(c.args)
		cmd.SetOut(&bytes.Buffer{})
		cmd.SetErr(&bytes.Buffer{})
		err := cmd.Execute()
		switch {
		case c.err != "":
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%q: error %v, want one with %q", c.args, err, c.err)
			}
		case err != nil:
			t.Errorf("%q: %v", c.args, err)
		case !slices.Equal(paths, c.paths) || every != c.every:
			t.Errorf("%q: paths %q every %v, want %q %v", c.args, paths, every, c.paths, c.every)
		}
	}
}

func TestCacheErrorMessages(t *testing.T) {
	for _, c := range []struct {
		err  error
		want []string
	}{
		{cachestatError("/mnt/f", "the mount's", syscall.ENOSYS), []string{"no cachestat(2), which Linux 6.5 added", "the mount's page cache of /mnt/f"}},
		{cachestatError("/store/f", "the store's", syscall.EPERM), []string{"refused to show the store's page cache of /store/f", "owner"}},
		{cachePathError("/mnt/f", "/mnt", syscall.EACCES), []string{"no permission to open /mnt/f for reading"}},
		{cachePathError("/mnt/f", "/mnt", syscall.ENOTCONN), []string{"/mnt is a dead mount", "fusermount3 -u /mnt"}},
	} {
		for _, w := range c.want {
			if !strings.Contains(c.err.Error(), w) {
				t.Errorf("%q lacks %q", c.err, w)
			}
		}
	}
}
