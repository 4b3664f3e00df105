package integration

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// stats is the part of the stats file these tests read.
type stats struct {
	Policy                string  `json:"policy"`
	UnsyncedBytes         int64   `json:"unsynced_bytes"`
	OldestUnsyncedSeconds float64 `json:"oldest_unsynced_seconds"`
	MsyncCalls            int64   `json:"msync_calls"`
	MsyncBytes            int64   `json:"msync_bytes"`
	AsyncWritebackCalls   int64   `json:"async_writeback_calls"`
	IgnoredFsyncs         int64   `json:"ignored_fsyncs"`
	Mappings              int64   `json:"mappings"`
	MappedBytes           int64   `json:"mapped_bytes"`
	ResidentBytes         int64   `json:"resident_bytes"`
	Switches              struct {
		KeepCache      bool   `json:"keep_cache"`
		AutoInvalData  bool   `json:"auto_inval_data"`
		DirectIO       bool   `json:"direct_io"`
		WritebackCache bool   `json:"writeback_cache"`
		Madvise        string `json:"madvise"`
		Populate       bool   `json:"populate"`
	} `json:"switches"`
	Ops map[string]struct {
		Count int64 `json:"count"`
	} `json:"ops"`
}

const statsFile = ".mmapfs-stats"

func readStats(t testing.TB, m *mount) stats {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(m.mnt, statsFile))
	if err != nil {
		t.Fatalf("read stats: %v", err)
	}
	var s stats
	if err := json.Unmarshal(raw, &s); err != nil {
		t.Fatalf("decode stats: %v\n%s", err, raw)
	}
	return s
}

// waitStats polls the stats until cond holds or timeout passes.
func waitStats(t testing.TB, m *mount, timeout time.Duration, what string, cond func(stats) bool) stats {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		s := readStats(t, m)
		if cond(s) {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v; last stats: %+v", what, timeout, s)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// createRW creates (or truncates) path for reading and writing; closed at
// the end of the test unless the test closes it first.
func createRW(t testing.TB, path string) *os.File {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		t.Fatalf("create %s: %v", path, err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// writePages writes 100 bytes at the start of n distinct pages of f.
func writePages(t testing.TB, f *os.File, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		if _, err := f.WriteAt(bytes.Repeat([]byte{byte('a' + i%26)}, 100), int64(i)*8192); err != nil {
			t.Fatalf("write page %d: %v", i, err)
		}
	}
}

func TestStatsFileKeys(t *testing.T) {
	t.Parallel()
	m := startMount(t)
	raw, err := os.ReadFile(filepath.Join(m.mnt, statsFile))
	if err != nil {
		t.Fatal(err)
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(raw, &top); err != nil {
		t.Fatalf("stats are not a JSON object: %v\n%s", err, raw)
	}
	for _, k := range []string{"policy", "unsynced_bytes", "oldest_unsynced_seconds", "msync_calls", "msync_bytes", "mappings", "mapped_bytes", "resident_bytes", "ops"} {
		if _, ok := top[k]; !ok {
			t.Errorf("stats lack key %q", k)
		}
	}
	if s := readStats(t, m); s.Policy != "fsync" {
		t.Errorf("default policy = %q, want fsync", s.Policy)
	}
	// The reads of the stats file itself are FUSE ops: some op is counted.
	if s := readStats(t, m); s.Ops["lookup"].Count == 0 && s.Ops["open"].Count == 0 {
		t.Errorf("no lookup or open counted after reading the stats file: %+v", s.Ops)
	}
}

func TestStatsFileProtected(t *testing.T) {
	t.Parallel()
	m := startMount(t)
	p := filepath.Join(m.mnt, statsFile)
	names, err := os.ReadDir(m.mnt)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range names {
		if e.Name() == statsFile {
			t.Errorf("readdir lists %s", statsFile)
		}
	}
	if _, err := os.OpenFile(p, os.O_WRONLY, 0); err == nil {
		t.Errorf("open %s for writing succeeded", statsFile)
	}
	wantErrno(t, "unlink stats", os.Remove(p), syscall.EPERM)
	wantErrno(t, "rename stats", os.Rename(p, filepath.Join(m.mnt, "x")), syscall.EPERM)
	writeFile(t, filepath.Join(m.mnt, "y"), []byte("y"))
	wantErrno(t, "rename onto stats", os.Rename(filepath.Join(m.mnt, "y"), p), syscall.EPERM)
	wantErrno(t, "truncate stats", os.Truncate(p, 0), syscall.EPERM)
	wantErrno(t, "chmod stats", os.Chmod(p, 0o666), syscall.EPERM)
	if st := lstat(t, p); st.Mode&0o222 != 0 || st.Mode&syscall.S_IFMT != syscall.S_IFREG {
		t.Errorf("stats file mode %o, want a read-only regular file", st.Mode)
	}
	readStats(t, m) // still there and readable
}

// TestPolicyFsync: unsynced bytes grow with writes and drop to 0 at fsync,
// which msyncs exactly the pages written.
func TestPolicyFsync(t *testing.T) {
	t.Parallel()
	m := startMount(t, "--writeback", "fsync")
	f := createRW(t, filepath.Join(m.mnt, "f"))
	defer f.Close()
	before := readStats(t, m)
	writePages(t, f, 10)
	s := readStats(t, m)
	page := int64(os.Getpagesize())
	if s.UnsyncedBytes != 10*page {
		t.Errorf("after 10 one-page writes: unsynced %d, want %d", s.UnsyncedBytes, 10*page)
	}
	if s.MsyncCalls != before.MsyncCalls {
		t.Errorf("writes msynced under fsync policy: calls %d -> %d", before.MsyncCalls, s.MsyncCalls)
	}
	if s.OldestUnsyncedSeconds <= 0 {
		t.Errorf("oldest unsynced = %v with unsynced data", s.OldestUnsyncedSeconds)
	}
	writePages(t, f, 10) // the same pages again: still 10 pages at risk
	if s := readStats(t, m); s.UnsyncedBytes != 10*page {
		t.Errorf("rewriting the same pages: unsynced %d, want %d", s.UnsyncedBytes, 10*page)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	after := readStats(t, m)
	if after.UnsyncedBytes != 0 || after.OldestUnsyncedSeconds != 0 {
		t.Errorf("after fsync: unsynced %d, oldest %v; want 0", after.UnsyncedBytes, after.OldestUnsyncedSeconds)
	}
	if got := after.MsyncBytes - before.MsyncBytes; got != 10*page {
		t.Errorf("fsync msynced %d bytes, want exactly the 10 dirty pages (%d)", got, 10*page)
	}
}

// TestPolicyWriteThrough: nothing is ever unsynced after a write returns.
func TestPolicyWriteThrough(t *testing.T) {
	t.Parallel()
	m := startMount(t, "--writeback", "write-through")
	f := createRW(t, filepath.Join(m.mnt, "f"))
	defer f.Close()
	page := int64(os.Getpagesize())
	for i := 0; i < 5; i++ {
		before := readStats(t, m)
		if _, err := f.WriteAt([]byte("write-through"), int64(i)*page*3); err != nil {
			t.Fatal(err)
		}
		s := readStats(t, m)
		if s.UnsyncedBytes != 0 {
			t.Fatalf("write %d: unsynced %d after the write returned, want 0", i, s.UnsyncedBytes)
		}
		if s.MsyncBytes-before.MsyncBytes < page {
			t.Errorf("write %d: msync bytes grew by %d, want at least one page", i, s.MsyncBytes-before.MsyncBytes)
		}
	}
}

// TestPolicyClose: unsynced until close, 0 after it.
func TestPolicyClose(t *testing.T) {
	t.Parallel()
	m := startMount(t, "--writeback", "close")
	f := createRW(t, filepath.Join(m.mnt, "f"))
	writePages(t, f, 4)
	if s := readStats(t, m); s.UnsyncedBytes == 0 {
		t.Errorf("unsynced 0 before close under the close policy")
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if s := readStats(t, m); s.UnsyncedBytes != 0 {
		t.Errorf("after close: unsynced %d, want 0", s.UnsyncedBytes)
	}
}

// TestPolicyPeriodic: unsynced data drops to 0 within a bounded time, for
// files still open and for files closed.
func TestPolicyPeriodic(t *testing.T) {
	t.Parallel()
	m := startMount(t, "--writeback", "periodic:200ms")
	if s := readStats(t, m); s.Policy != "periodic:200ms" {
		t.Errorf("policy = %q", s.Policy)
	}
	open := createRW(t, filepath.Join(m.mnt, "open"))
	defer open.Close()
	closed := createRW(t, filepath.Join(m.mnt, "closed"))
	writePages(t, closed, 3)
	if err := closed.Close(); err != nil {
		t.Fatal(err)
	}
	writePages(t, open, 3)
	start := time.Now()
	waitStats(t, m, 3*time.Second, "unsynced bytes drop to 0 under periodic:200ms", func(s stats) bool {
		return s.UnsyncedBytes == 0 && s.MsyncCalls > 0
	})
	t.Logf("synced %v after the last write", time.Since(start))
}

// TestPolicyNone: the daemon never msyncs on its own, but fsync still does.
func TestPolicyNone(t *testing.T) {
	t.Parallel()
	m := startMount(t, "--writeback", "none")
	f := createRW(t, filepath.Join(m.mnt, "f"))
	defer f.Close()
	writePages(t, f, 4)
	time.Sleep(300 * time.Millisecond)
	s := readStats(t, m)
	if s.MsyncCalls != 0 || s.UnsyncedBytes == 0 {
		t.Errorf("none: msync calls %d, unsynced %d; want 0 calls and data unsynced", s.MsyncCalls, s.UnsyncedBytes)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	if s := readStats(t, m); s.MsyncCalls == 0 || s.UnsyncedBytes != 0 {
		t.Errorf("none, after fsync: msync calls %d, unsynced %d; want fsync honoured", s.MsyncCalls, s.UnsyncedBytes)
	}
}

// TestPolicyAsync: every write starts writeback without waiting; the pages
// stay at risk until fsync.
func TestPolicyAsync(t *testing.T) {
	t.Parallel()
	m := startMount(t, "--writeback", "async")
	f := createRW(t, filepath.Join(m.mnt, "f"))
	defer f.Close()
	writePages(t, f, 4)
	s := readStats(t, m)
	if s.AsyncWritebackCalls < 4 {
		t.Errorf("async: %d writebacks started for 4 writes", s.AsyncWritebackCalls)
	}
	if s.UnsyncedBytes == 0 {
		t.Errorf("async: nothing counted at risk after writes nobody waited for")
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	if s := readStats(t, m); s.UnsyncedBytes != 0 {
		t.Errorf("async, after fsync: unsynced %d", s.UnsyncedBytes)
	}
}

// TestUnsafeIgnoreFsync: fsync returns 0 and syncs nothing; the mount warns.
func TestUnsafeIgnoreFsync(t *testing.T) {
	t.Parallel()
	m := startMount(t, "--unsafe-ignore-fsync")
	f := createRW(t, filepath.Join(m.mnt, "f"))
	defer f.Close()
	writePages(t, f, 2)
	if err := f.Sync(); err != nil {
		t.Fatalf("fsync: %v", err)
	}
	s := readStats(t, m)
	if s.IgnoredFsyncs != 1 || s.MsyncCalls != 0 || s.UnsyncedBytes == 0 {
		t.Errorf("ignored fsyncs %d, msync calls %d, unsynced %d; want 1, 0, >0", s.IgnoredFsyncs, s.MsyncCalls, s.UnsyncedBytes)
	}
	if !logged(m, "WARNING") {
		t.Errorf("no warning at mount:\n%s", m.out)
	}
}

func TestBadPolicy(t *testing.T) {
	t.Parallel()
	skipIfLoopback(t)
	mnt := t.TempDir()
	for _, p := range []string{"bogus", "periodic:", "periodic:-1s", "periodic:abc"} {
		r := runBinary(t, 10*time.Second, []string{mnt}, "mount", "--writeback", p, t.TempDir(), mnt)
		if r.exitCode == 0 || !strings.Contains(r.stderr, "write-through") && !strings.Contains(r.stderr, "period") {
			t.Errorf("--writeback %s: exit %d, stderr %q; want an error listing the policies", p, r.exitCode, r.stderr)
		}
	}
}

// TestWritebackCacheCoalesces: with --writeback-cache, many small writes
// reach the daemon as fewer, larger WRITE requests.
func TestWritebackCacheCoalesces(t *testing.T) {
	t.Parallel()
	const n = 2000
	count := func(flags ...string) int64 {
		m := startMount(t, flags...)
		f := createRW(t, filepath.Join(m.mnt, "f"))
		for i := 0; i < n; i++ {
			if _, err := f.Write([]byte("0123456789abcdef")); err != nil {
				t.Fatal(err)
			}
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
		checkContent(t, filepath.Join(m.store, "f"), bytes.Repeat([]byte("0123456789abcdef"), n))
		return readStats(t, m).Ops["write"].Count
	}
	plain := count()
	cached := count("--writeback-cache")
	t.Logf("%d writes of 16 bytes: %d WRITE requests without the writeback cache, %d with it", n, plain, cached)
	if plain < n {
		t.Errorf("without --writeback-cache: %d WRITE requests for %d writes", plain, n)
	}
	if cached*10 > plain {
		t.Errorf("with --writeback-cache: %d WRITE requests, want far fewer than %d", cached, plain)
	}
}

func TestSwitchesReported(t *testing.T) {
	t.Parallel()
	m := startMount(t, "--keep-cache", "--writeback-cache", "--madvise", "random", "--populate")
	s := readStats(t, m)
	sw := s.Switches
	if !sw.KeepCache || !sw.AutoInvalData || !sw.WritebackCache || sw.DirectIO || sw.Madvise != "random" || !sw.Populate {
		t.Errorf("switches = %+v", sw)
	}
}

// TestAutoInvalData: with --keep-cache, a change made in the store behind
// the mount (new bytes, new mtime, same inode) reaches a reader on the
// mount after its next stat by default: the kernel drops the file's cached
// pages when the mtime it gets differs. With --auto-inval-data=false it
// keeps them, and the reader gets the bytes cached before the change.
func TestAutoInvalData(t *testing.T) {
	t.Parallel()
	for _, auto := range []bool{true, false} {
		t.Run(fmt.Sprint("auto=", auto), func(t *testing.T) {
			t.Parallel()
			m := startMount(t, "--keep-cache", "--attr-timeout", "0", fmt.Sprintf("--auto-inval-data=%v", auto))
			if got := readStats(t, m).Switches.AutoInvalData; got != auto {
				t.Errorf("stats say auto_inval_data %v, want %v", got, auto)
			}
			p := filepath.Join(m.mnt, "f")
			before, after := bytes.Repeat([]byte("a"), 8192), bytes.Repeat([]byte("b"), 8192)
			writeFile(t, p, before)
			if got := readFile(t, p); !bytes.Equal(got, before) {
				t.Fatalf("first read through the mount: %q...", got[:8])
			}
			// Behind the mount: same inode, new bytes, a later mtime.
			f, err := os.OpenFile(filepath.Join(m.store, "f"), os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := f.WriteAt(after, 0); err != nil {
				t.Fatal(err)
			}
			if err := f.Close(); err != nil {
				t.Fatal(err)
			}
			later := time.Now().Add(time.Hour)
			if err := os.Chtimes(filepath.Join(m.store, "f"), later, later); err != nil {
				t.Fatal(err)
			}
			st, err := os.Stat(p) // attr timeout 0: a GETATTR
			if err != nil {
				t.Fatal(err)
			}
			if !st.ModTime().Equal(later) {
				t.Errorf("mtime through the mount %v, want %v", st.ModTime(), later)
			}
			want := before // the pages cached before the change
			if auto {
				want = after
			}
			if got := readFile(t, p); !bytes.Equal(got, want) {
				t.Errorf("read after the change behind the mount: %q..., want %q...", got[:8], want[:8])
			}
		})
	}
}

// TestPopulate: with --populate a blob is resident as soon as it is open.
func TestPopulate(t *testing.T) {
	t.Parallel()
	m := startMount(t, "--populate")
	const size = 4 << 20
	writeFile(t, filepath.Join(m.store, "big"), pattern(size, 1))
	// Drop the blob's pages (written back first: fadvise drops no dirty
	// page) and require them gone, then open it through the mount.
	dropCache(t, filepath.Join(m.store, "big"))
	f, err := os.Open(filepath.Join(m.mnt, "big"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	s := readStats(t, m)
	if s.Mappings != 1 || s.ResidentBytes < size {
		t.Errorf("after opening a %d-byte file with --populate: mappings %d, resident %d", size, s.Mappings, s.ResidentBytes)
	}
	if got := cachedBytes(t, filepath.Join(m.store, "big")); got < size {
		t.Errorf("after opening a %d-byte file with --populate: %d bytes of it in the page cache", size, got)
	}
}

func TestReadOnly(t *testing.T) {
	t.Parallel()
	m := startMount(t, "--read-only")
	if _, err := os.Create(filepath.Join(m.mnt, "f")); errnoOf(err) != syscall.EROFS {
		t.Errorf("create on a read-only mount: %v, want EROFS", err)
	}
	raw, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if f := strings.Fields(line); len(f) > 3 && f[1] == m.mnt && !strings.Contains(","+f[3]+",", ",ro,") {
			t.Errorf("mount options %q lack ro", f[3])
		}
	}
}

func TestAllowOtherSetsDefaultPermissions(t *testing.T) {
	t.Parallel()
	m := startMount(t, "--allow-other")
	raw, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(raw), "\n") {
		f := strings.Fields(line)
		if len(f) > 3 && f[1] == m.mnt {
			if !strings.Contains(f[3], "allow_other") || !strings.Contains(f[3], "default_permissions") {
				t.Errorf("mount options %q: want allow_other and default_permissions", f[3])
			}
			return
		}
	}
	t.Errorf("%s not in /proc/self/mounts", m.mnt)
}

func TestStatsCommand(t *testing.T) {
	t.Parallel()
	m := startMount(t)
	writeFile(t, filepath.Join(m.mnt, "f"), []byte("hello"))
	r := runBinary(t, 10*time.Second, nil, "stats", m.mnt)
	if r.exitCode != 0 || !strings.Contains(r.stdout, "policy") || !strings.Contains(r.stdout, "fsync") || !strings.Contains(r.stdout, "write") {
		t.Errorf("stats: exit %d\n%s\n%s", r.exitCode, r.stdout, r.stderr)
	}
	r = runBinary(t, 10*time.Second, nil, "stats", "--json", m.mnt)
	var s stats
	if err := json.Unmarshal([]byte(r.stdout), &s); err != nil || s.Ops["write"].Count == 0 {
		t.Errorf("stats --json: %v, %+v\n%s", err, s, r.stdout)
	}
	// --watch runs until interrupted: stop it (SIGTERM) once it has
	// printed the header and two lines, or after 5 s. No Fatal until it
	// has exited.
	var stdout, stderr syncBuffer
	cmd := daemonCommand("stats", "--watch=200ms", m.mnt)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	d := startDaemon(t, cmd)
	deadline := time.Now().Add(5 * time.Second)
	for strings.Count(stdout.String(), "\n") < 3 && !d.exited() && time.Now().Before(deadline) {
		time.Sleep(pollInterval)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	if !d.waitExit(stopTimeout) {
		cmd.Process.Kill()
		d.waitExit(killTimeout)
	}
	if out := stdout.String(); strings.Count(out, "\n") < 3 || !strings.Contains(out, "unsynced") {
		t.Errorf("stats --watch printed %d lines in 5s:\n%s\n%s", strings.Count(out, "\n"), out, stderr.String())
	}
	r = runBinary(t, 10*time.Second, nil, "stats", t.TempDir())
	if r.exitCode == 0 || !strings.Contains(r.stderr, "mmapfs mount") {
		t.Errorf("stats of a plain directory: exit %d, stderr %q", r.exitCode, r.stderr)
	}
}

func TestMetricsEndpoint(t *testing.T) {
	t.Parallel()
	// Port 0: the daemon binds a free port itself and says which, so
	// that no other process can take it between a choice and the bind.
	m := startMount(t, "--metrics", "0")
	// Bound to loopback when no host is named: the daemon says where it
	// listens once it does, before it serves.
	said := regexp.MustCompile(`serving Prometheus metrics at (http://([^/\s]+)/metrics)`)
	var match []string
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(pollInterval) {
		if match = said.FindStringSubmatch(m.out.String()); match != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the daemon did not say where it serves metrics:\n%s", m.out)
		}
	}
	url := match[1]
	if host, port, err := net.SplitHostPort(match[2]); err != nil || host != "127.0.0.1" || port == "0" {
		t.Errorf("metrics served at %s: want 127.0.0.1 and the port bound", match[2])
	}
	writeFile(t, filepath.Join(m.mnt, "f"), []byte("hello"))
	var body string
	deadline := time.Now().Add(5 * time.Second)
	for {
		resp, err := http.Get(url)
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			body = string(b)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("metrics endpoint: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, want := range []string{"mmapfs_unsynced_bytes", "mmapfs_msync_calls_total", `mmapfs_fuse_requests_total{op="write"}`, "mmapfs_resident_bytes"} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

// TestBDISwitches: the mount's backing-device limits are set as asked and
// reported in the stats; out-of-range values are refused.
func TestBDISwitches(t *testing.T) {
	t.Parallel()
	skipIfLoopback(t)
	if os.Geteuid() != 0 {
		t.Skip("setting a bdi needs root")
	}
	m := startMount(t, "--bdi-max-ratio", "40", "--bdi-strict-limit", "0", "--readahead-kb", "512")
	raw, err := os.ReadFile(filepath.Join(m.mnt, statsFile))
	if err != nil {
		t.Fatal(err)
	}
	var s struct {
		BDI *struct {
			Device      string `json:"device"`
			MaxRatio    int    `json:"max_ratio"`
			StrictLimit int    `json:"strict_limit"`
			ReadaheadKB int    `json:"read_ahead_kb"`
		} `json:"bdi"`
	}
	if err := json.Unmarshal(raw, &s); err != nil || s.BDI == nil {
		t.Fatalf("stats without bdi: %v\n%s", err, raw)
	}
	if b := s.BDI; b.MaxRatio != 40 || b.StrictLimit != 0 || b.ReadaheadKB != 512 {
		t.Errorf("bdi %+v, want max_ratio 40, strict_limit 0, read_ahead_kb 512", *b)
	}
	sysfs, err := os.ReadFile(filepath.Join("/sys/class/bdi", s.BDI.Device, "max_ratio"))
	if err != nil || strings.TrimSpace(string(sysfs)) != "40" {
		t.Errorf("/sys/class/bdi/%s/max_ratio = %q, %v", s.BDI.Device, sysfs, err)
	}
	mnt := t.TempDir()
	for _, args := range [][]string{{"--bdi-max-ratio", "101"}, {"--bdi-strict-limit", "2"}} {
		r := runBinary(t, 10*time.Second, []string{mnt}, append(append([]string{"mount"}, args...), t.TempDir(), mnt)...)
		if r.exitCode == 0 || !strings.Contains(r.stderr, "bdi") {
			t.Errorf("mount %v: exit %d, stderr %q", args, r.exitCode, r.stderr)
		}
	}
}

// TestAtRiskListed: the stats list, per file, the ranges written and not
// yet synced, oldest first, and drop them once synced.
func TestAtRiskListed(t *testing.T) {
	t.Parallel()
	m := startMount(t)
	page := int64(os.Getpagesize())
	f := createRW(t, filepath.Join(m.mnt, "dir-f"))
	writePages(t, f, 3) // pages 0, 2, 4
	type risk struct {
		AtRisk []struct {
			Name   string `json:"name"`
			Open   bool   `json:"open"`
			Bytes  int64  `json:"bytes"`
			Ranges []struct {
				Off int64 `json:"off"`
				Len int64 `json:"len"`
			} `json:"ranges"`
		} `json:"at_risk"`
	}
	read := func() risk {
		raw, err := os.ReadFile(filepath.Join(m.mnt, statsFile))
		if err != nil {
			t.Fatal(err)
		}
		var r risk
		if err := json.Unmarshal(raw, &r); err != nil {
			t.Fatal(err)
		}
		return r
	}
	r := read()
	if len(r.AtRisk) != 1 || r.AtRisk[0].Name != "dir-f" || !r.AtRisk[0].Open || r.AtRisk[0].Bytes != 3*page || len(r.AtRisk[0].Ranges) != 3 || r.AtRisk[0].Ranges[1].Off != 2*page {
		t.Errorf("at risk after writing 3 pages: %+v", r.AtRisk)
	}
	out := runBinary(t, 10*time.Second, nil, "stats", m.mnt)
	if !strings.Contains(out.stdout, "at risk") || !strings.Contains(out.stdout, "dir-f") {
		t.Errorf("mmapfs stats does not show what is at risk:\n%s", out.stdout)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	if r := read(); len(r.AtRisk) != 0 {
		t.Errorf("at risk after fsync: %+v", r.AtRisk)
	}
}

// TestAtRiskRemoved: a file closed with unsynced writes is no longer
// counted once it is removed (by unlink or by a rename over it), nor is one
// removed while still open, after it is closed; a file that keeps another
// name still is.
func TestAtRiskRemoved(t *testing.T) {
	t.Parallel()
	m := startMount(t)
	page := int64(os.Getpagesize())
	p := func(name string) string { return filepath.Join(m.mnt, name) }
	write := func(name string, pages int) {
		t.Helper()
		f := createRW(t, p(name))
		writePages(t, f, pages) // pages 0, 2, 4, ...
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
	}
	unsynced := func(want int64, after string) {
		t.Helper()
		if s := readStats(t, m); s.UnsyncedBytes != want {
			t.Errorf("after %s: unsynced %d, want %d", after, s.UnsyncedBytes, want)
		}
	}
	// RELEASE is sent after close(2) returns: wait for the blobs to go,
	// so that each file is counted as closed, not as open.
	released := func() {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for readStats(t, m).Mappings != 0 {
			if time.Now().After(deadline) {
				t.Fatal("blobs still mapped 10 s after their files were closed")
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	write("unlinked", 1)
	write("replaced", 2)
	write("linked", 3)
	write("other", 4)
	if err := os.Link(p("linked"), p("linked2")); err != nil {
		t.Fatal(err)
	}
	released()
	unsynced(10*page, "writing 10 pages into 4 files")
	if err := os.Remove(p("unlinked")); err != nil {
		t.Fatal(err)
	}
	unsynced(9*page, "unlinking a file")
	if err := os.Rename(p("other"), p("replaced")); err != nil {
		t.Fatal(err)
	}
	unsynced(7*page, "renaming over a file")
	if err := os.Remove(p("linked")); err != nil {
		t.Fatal(err)
	}
	unsynced(7*page, "unlinking one of two names")

	f := createRW(t, p("open"))
	writePages(t, f, 1)
	if err := os.Remove(p("open")); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	released()
	unsynced(7*page, "closing a file removed while open")
}
