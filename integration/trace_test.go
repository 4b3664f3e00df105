package integration

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mmapfs/mmapfs/cmd/mmapfs/tracereport"
)

// The cases of the README's "Seeing the kernel at work": each runs a
// client under mmapfs trace --json on a real mount, under the defaults,
// --writeback-cache and --keep-cache, and checks the requests, their
// causes and the page counts the trace shows.

// traceSwitchSets are the switch sets every case runs under.
var traceSwitchSets = []struct {
	name  string
	flags []string
}{
	{"defaults", nil},
	{"writeback-cache", []string{"--writeback-cache"}},
	{"keep-cache", []string{"--keep-cache"}},
}

// traced is what one run of mmapfs trace --json printed.
type traced struct {
	requests []tracereport.JSONRequest
	events   []map[string]any
	summary  tracereport.Summary
	res      runResult
}

// client returns the requests of the traced client (by the comm of the
// test binary), leaving out the others (a flusher's appear as theirs:
// TaskComm is the flusher, Comm the client for background ones).
func (tr *traced) byOp(op string) []tracereport.JSONRequest {
	var out []tracereport.JSONRequest
	for _, r := range tr.requests {
		if r.Op == op {
			out = append(out, r)
		}
	}
	return out
}

// events of type typ.
func (tr *traced) eventsOf(typ string) []map[string]any {
	var out []map[string]any
	for _, e := range tr.events {
		if e["type"] == typ {
			out = append(out, e)
		}
	}
	return out
}

// layerFile returns the pages of file that entered and left the layer's
// cache, as the summary counts them.
func (tr *traced) layerFile(layer, file string) (added, deleted uint64, ok bool) {
	for _, l := range tr.summary.Layers {
		if l.Layer != layer {
			continue
		}
		for _, f := range l.Files {
			if f.File == file {
				return f.Added, f.Deleted, true
			}
		}
	}
	return 0, 0, false
}

// causes counts requests by cause.
func causes(rs []tracereport.JSONRequest) map[string]int {
	c := map[string]int{}
	for _, r := range rs {
		c[r.Cause]++
	}
	return c
}

// runTraced runs `mmapfs trace MNT --json [extra...] -- CLIENT ARGS` with
// the trace client (roleTraceClient) as the command and parses its output.
func runTraced(t *testing.T, m *mount, extra []string, client ...string) *traced {
	t.Helper()
	args := append([]string{"trace", m.mnt, "--json"}, extra...)
	args = append(args, "--", "env", roleEnv+"="+roleTraceClient, testBinary)
	args = append(args, client...)
	res := runBinary(t, 2*time.Minute, nil, args...)
	if res.exitCode != 0 {
		t.Fatalf("mmapfs %s: exit %d\nstderr:\n%s", strings.Join(args, " "), res.exitCode, res.stderr)
	}
	tr := &traced{res: res}
	sc := bufio.NewScanner(strings.NewReader(res.stdout))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Bytes()
		var head struct {
			Type    string          `json:"type"`
			Summary json.RawMessage `json:"summary"`
		}
		if err := json.Unmarshal(line, &head); err != nil {
			t.Fatalf("trace output line %q: %v", line, err)
		}
		switch head.Type {
		case "request":
			var r tracereport.JSONRequest
			if err := json.Unmarshal(line, &r); err != nil {
				t.Fatalf("request line %q: %v", line, err)
			}
			tr.requests = append(tr.requests, r)
		case "summary":
			if err := json.Unmarshal(head.Summary, &tr.summary); err != nil {
				t.Fatalf("summary line %q: %v", line, err)
			}
		default:
			var e map[string]any
			if err := json.Unmarshal(line, &e); err != nil {
				t.Fatalf("event line %q: %v", line, err)
			}
			tr.events = append(tr.events, e)
		}
	}
	if tr.summary.Requests == 0 {
		t.Fatalf("trace printed no summary line, or one of no requests; stdout %d bytes, stderr:\n%s", len(res.stdout), res.stderr)
	}
	// The cases count what the trace saw: READs and their bytes, the
	// causes the kernel's events give them, pages in and out of the
	// caches, pauses. A trace that lost kernel events (the per-CPU trace
	// buffer overrun, on a loaded machine) or daemon records (its ring
	// full while the trace was not scheduled) says so in its summary,
	// and its counts then fall short without anything being wrong. The
	// syscall events are machine-wide but the collector keeps only the
	// traced client's (by tgid); the other events are the mount's.
	// So the cases check every count, and one that falls short after
	// such a loss makes the case inconclusive (errorf), not a failure.
	if tr.lost() {
		t.Logf("the trace lost %d kernel events and %d daemon records, and %d of its requests lack a part: a count that falls short is inconclusive (summary: %d requests, %d events)", tr.summary.KernelLost, tr.summary.DaemonLost, tr.summary.Incomplete, tr.summary.Requests, tr.summary.Events)
	}
	return tr
}

// lost reports whether the trace says it lost kernel events or daemon
// records, or that a few of its requests lack a part (on a loaded
// machine the daemon's record of a request can come later than the
// trace waits for it; the trace then shows the request incomplete, and
// says so). Most requests incomplete is not a loaded machine but a
// broken trace: that fails.
func (tr *traced) lost() bool {
	s := tr.summary
	return s.KernelLost != 0 || s.DaemonLost != 0 || (s.Incomplete != 0 && s.Incomplete*10 < s.Requests)
}

// errorf reports a count of the trace that is not what it should be: a
// failure, or, when the trace lost events or records, an inconclusive
// case (skipped).
func (tr *traced) errorf(t *testing.T, format string, args ...any) {
	t.Helper()
	traceShort(t, tr.lost(), format, args...)
}

// traceShort is errorf for the traces of a case: lost says whether any
// of them lost events or records.
func traceShort(t *testing.T, lost bool, format string, args ...any) {
	t.Helper()
	if lost {
		t.Skipf("inconclusive: "+format+"; the trace lost kernel events or daemon records or left requests incomplete, so its counts may be short", args...)
	}
	t.Errorf(format, args...)
}

// coldStoreFile makes a file of size random bytes in store, synced and
// out of the store's page cache, and returns its content.
func coldStoreFile(t *testing.T, store, name string, size int) []byte {
	t.Helper()
	data := make([]byte, size)
	if _, err := rand.Read(data); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(store, name)
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	dropStoreCache(t, path)
	return data
}

// TestTraceColdRead is case 1: a cold sequential read of a 64 MiB file.
// The kernel reads it through readahead, a synchronous window first, then
// asynchronous windows that grow; each window becomes READs of up to the
// mount's max_read; the mount's page cache fills with the file's pages,
// and the store's with the blob's, which the daemon faults in as it
// copies. The same under every switch set: the first read of a file goes
// to the daemon whatever the cache switches.
func TestTraceColdRead(t *testing.T) {
	t.Parallel()
	const size = 64 << 20
	for _, sw := range traceSwitchSets {
		t.Run(sw.name, func(t *testing.T) {
			t.Parallel()
			store := t.TempDir()
			coldStoreFile(t, store, "big", size)
			m := startMountAt(t, store, t.TempDir(), sw.flags...)
			defer m.stop(t)
			tr := runTraced(t, m, nil, "read", filepath.Join(m.mnt, "big"))
			if !strings.Contains(tr.res.stderr, fmt.Sprintf("bytes %d ", size)) {
				t.Fatalf("the client did not read %d bytes: %s", size, tr.res.stderr)
			}
			reads := tr.byOp("READ")
			var bytes uint64
			maxLen := uint32(0)
			var firstWindow, maxWindow uint32
			faulted := uint32(0)
			for i, r := range reads {
				if r.File != "big" {
					tr.errorf(t, "READ %d names file %q, want big", r.Unique, r.File)
				}
				bytes += uint64(r.Result)
				maxLen = max(maxLen, r.Length)
				faulted += r.FaultPages
				if r.Window != nil {
					if i == 0 || firstWindow == 0 {
						firstWindow = r.Window.Pages
					}
					maxWindow = max(maxWindow, r.Window.Pages)
				}
				if r.Latency == nil || r.Service == nil {
					tr.errorf(t, "READ %d lacks its kernel latency or daemon service time (missing %v)", r.Unique, r.Missing)
				}
			}
			if bytes != size {
				tr.errorf(t, "READs answered %d bytes, want the file's %d", bytes, size)
			}
			c := causes(reads)
			if c["readahead-sync"] == 0 || c["readahead-async"] == 0 {
				tr.errorf(t, "READ causes %v: want both readahead-sync (the first window) and readahead-async (the rest)", c)
			}
			if c["readahead-sync"]+c["readahead-async"] < len(reads)*9/10 {
				tr.errorf(t, "READ causes %v: want nearly all from readahead", c)
			}
			if len(reads) > 0 && reads[0].Cause != "readahead-sync" {
				tr.errorf(t, "the first READ's cause is %q, want readahead-sync", reads[0].Cause)
			}
			if maxWindow <= firstWindow {
				tr.errorf(t, "readahead windows did not grow: first %d pages, largest %d", firstWindow, maxWindow)
			}
			if maxLen <= 4096 {
				tr.errorf(t, "largest READ %d bytes: want readahead's large reads", maxLen)
			}
			pages := uint64(size / os.Getpagesize())
			if added, _, ok := tr.layerFile("mount", "big"); !ok || added < pages {
				tr.errorf(t, "mount cache: %d pages of big added, want all %d (summary %+v)", added, pages, tr.summary.Layers)
			}
			if added, _, ok := tr.layerFile("store", "big"); !ok || added == 0 {
				tr.errorf(t, "store cache: %d pages of big added, want the cold blob's pages", added)
			}
			if faulted == 0 {
				tr.errorf(t, "the daemon faulted in no page of the cold blob")
			}
			if len(tr.eventsOf("readahead")) == 0 {
				tr.errorf(t, "no readahead events in the JSON")
			}
		})
	}
}

// TestTraceMappedWrite is case 2: a client stores into every page of a
// MAP_SHARED mapping, then msyncs. The stores dirty the mount's pages;
// msync writes them back as WRITEs sent in the client's own task, then
// sends FSYNC; the daemon copies each WRITE into its mapping (dirtying
// the blob's pages) and msyncs them at the FSYNC (the fsync policy), so
// after the trace the blob's pages are clean. The same under every switch
// set: shared writable mappings always write back through the page cache.
func TestTraceMappedWrite(t *testing.T) {
	t.Parallel()
	const size = 1 << 20
	for _, sw := range traceSwitchSets {
		t.Run(sw.name, func(t *testing.T) {
			t.Parallel()
			m := startMount(t, sw.flags...)
			defer m.stop(t)
			tr := runTraced(t, m, nil, "mapwrite", filepath.Join(m.mnt, "mapped"), fmt.Sprint(size))
			writes := tr.byOp("WRITE")
			var written uint64
			for _, r := range writes {
				written += uint64(r.Result)
				if r.File != "mapped" {
					tr.errorf(t, "WRITE %d names file %q, want mapped: %+v", r.Unique, r.File, r)
				}
			}
			if written != size {
				tr.errorf(t, "WRITEs carried %d bytes, want the %d the client stored", written, size)
			}
			c := causes(writes)
			if c["msync"] == 0 {
				tr.errorf(t, "WRITE causes %v: want msync (the client's msync writes its dirty pages back)", c)
			}
			for cause := range c {
				if cause != "msync" && cause != "writeback" {
					t.Errorf("WRITE cause %q: a mapped store reaches the daemon only by writeback or msync", cause)
				}
			}
			var synced bool
			for _, r := range tr.byOp("FSYNC") {
				if r.Cause == "msync" && r.Msyncs > 0 && r.MsyncBytes >= size {
					synced = true
				}
			}
			if !synced {
				tr.errorf(t, "no FSYNC caused by msync in which the daemon msynced the %d bytes: %+v", size, tr.byOp("FSYNC"))
			}
			if added, _, ok := tr.layerFile("mount", "mapped"); !ok || added < size/uint64(os.Getpagesize()) {
				tr.errorf(t, "mount cache: %d pages of mapped added, want %d", added, size/os.Getpagesize())
			}
			f, err := os.Open(filepath.Join(m.store, "mapped"))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			var cs unix.Cachestat_t
			if err := unix.Cachestat(uint(f.Fd()), &unix.CachestatRange{Len: 0}, &cs, 0); err != nil {
				t.Fatalf("cachestat of the blob: %v", err)
			}
			if cs.Dirty != 0 || cs.Writeback != 0 {
				t.Errorf("the blob has %d dirty and %d writeback pages after msync: want them clean", cs.Dirty, cs.Writeback)
			}
		})
	}
}

// TestTraceThrottle is case 3: a writer of 128 MiB on a mount whose bdi
// has the kernel's 1 % strict budget (--bdi-max-ratio 1 --bdi-strict-limit
// 1, the kernel's values; not the root default) is paused by balance_dirty_pages;
// the same writer with --bdi-max-ratio 50 --bdi-strict-limit 0 is paused
// less. This needs the writeback cache: without it (the defaults,
// --keep-cache) writes are sent write-through and never dirty the mount's
// pages, so no writer is throttled and every WRITE's cause is "write".
func TestTraceThrottle(t *testing.T) {
	t.Parallel()
	const size = 128 << 20
	run := func(t *testing.T, flags []string, extra ...string) *traced {
		m := startMount(t, flags...)
		defer m.stop(t)
		return runTraced(t, m, extra, "write", filepath.Join(m.mnt, "log"), fmt.Sprint(size))
	}
	paused := func(tr *traced) (n uint64, total int64) {
		for _, th := range tr.summary.Throttled {
			if th.Layer == "mount" {
				n += th.Count
				total += th.Total
			}
		}
		return n, total
	}
	t.Run("writeback-cache", func(t *testing.T) {
		t.Parallel()
		plot := filepath.Join(t.TempDir(), "throttle.png")
		var plotArgs []string
		if _, err := exec.LookPath("gnuplot"); err == nil {
			plotArgs = []string{"--plot", plot}
		} else {
			t.Log("no gnuplot (apt-get install gnuplot-nox): --plot not tried")
		}
		// The kernel's FUSE budget, asked for: a root daemon's default
		// is fs.RootMaxRatio.
		strict := run(t, []string{"--writeback-cache", "--bdi-max-ratio", "1", "--bdi-strict-limit", "1"}, plotArgs...)
		relaxed := run(t, []string{"--writeback-cache", "--bdi-max-ratio", "50", "--bdi-strict-limit", "0"})
		ns, ts := paused(strict)
		nr, tr := paused(relaxed)
		t.Logf("strict 1%% budget: %d pauses, %v in all; max-ratio 50, no strict limit: %d pauses, %v", ns, time.Duration(ts), nr, time.Duration(tr))
		if ns == 0 || ts <= 0 {
			traceShort(t, strict.lost() || relaxed.lost(), "the writer was not throttled on the 1%% budget: summary %+v", strict.summary.Throttled)
		}
		if tr >= ts {
			traceShort(t, strict.lost() || relaxed.lost(), "the relaxed budget paused the writer %v, not less than the strict one's %v", time.Duration(tr), time.Duration(ts))
		}
		// The throttled writer's pages are written back by the flusher
		// while it writes. Under the relaxed budget 128 MiB is far
		// below the background threshold: nothing starts the flusher
		// before the close, whose flush writes the pages back (and
		// waits for them). Over /dev/fuse the kernel sends the
		// flush's WRITEs past max_background from the daemon's
		// context as earlier ones are answered, which the trace
		// tells as the flusher's "writeback"; over the rings each
		// queue takes them as they come, from the closing client's
		// context: "close". Either way, every byte goes out by one
		// of the two.
		for _, r := range []struct {
			name string
			tr   *traced
		}{{"strict 1%", strict}, {"max-ratio 50, no strict limit", relaxed}} {
			writes := r.tr.byOp("WRITE")
			c := causes(writes)
			t.Logf("%s: WRITE causes %v", r.name, c)
			var written uint64
			for _, w := range writes {
				written += uint64(w.Result)
				if w.Cause != "writeback" && w.Cause != "close" {
					t.Errorf("%s: WRITE %d caused by %q: under the writeback cache a write(2) dirties pages, which the flusher or the close's flush writes back", r.name, w.Unique, w.Cause)
				}
			}
			if written != size {
				r.tr.errorf(t, "%s: WRITEs carried %d bytes, want %d", r.name, written, size)
			}
			if r.tr == strict && c["writeback"] == 0 {
				r.tr.errorf(t, "%s: WRITE causes %v: want writeback of the dirty pages while the writer is throttled", r.name, c)
			}
		}
		if len(strict.eventsOf("throttle")) == 0 {
			strict.errorf(t, "no throttle events in the JSON")
		}
		if plotArgs != nil {
			png, err := os.ReadFile(plot)
			if err != nil || !bytes.HasPrefix(png, []byte("\x89PNG\r\n\x1a\n")) || len(png) < 2000 {
				t.Errorf("--plot %s: %d bytes, err %v: want a PNG", plot, len(png), err)
			}
		}
	})
	for _, sw := range traceSwitchSets {
		if sw.name == "writeback-cache" {
			continue
		}
		t.Run(sw.name, func(t *testing.T) {
			t.Parallel()
			tr := run(t, sw.flags)
			if n, total := paused(tr); n != 0 {
				tr.errorf(t, "%d throttle pauses (%v) without the writeback cache: want none", n, time.Duration(total))
			}
			writes := tr.byOp("WRITE")
			var written uint64
			for _, r := range writes {
				written += uint64(r.Result)
			}
			if written != size {
				tr.errorf(t, "WRITEs carried %d bytes, want %d", written, size)
			}
			if c := causes(writes); c["write"] != len(writes) {
				tr.errorf(t, "WRITE causes %v: without the writeback cache every write(2) is sent as it is made", c)
			}
		})
	}
}

// TestTraceMappedRead is case 4: a client loads a byte of every page of a
// MAP_SHARED mapping of a 4 MiB file. Each load of a page not yet cached
// faults, and the fault is served by READs (with the fault's read-around
// window): the pages enter the mount's page cache like any read's, so a
// mapped read does not bypass the page cache. The same under every switch
// set.
func TestTraceMappedRead(t *testing.T) {
	t.Parallel()
	const size = 4 << 20
	for _, sw := range traceSwitchSets {
		t.Run(sw.name, func(t *testing.T) {
			t.Parallel()
			store := t.TempDir()
			coldStoreFile(t, store, "mapped", size)
			m := startMountAt(t, store, t.TempDir(), sw.flags...)
			defer m.stop(t)
			tr := runTraced(t, m, nil, "mapread", filepath.Join(m.mnt, "mapped"))
			reads := tr.byOp("READ")
			var bytes uint64
			for _, r := range reads {
				bytes += uint64(r.Result)
			}
			if bytes != size {
				tr.errorf(t, "READs answered %d bytes, want the file's %d", bytes, size)
			}
			c := causes(reads)
			if c["fault"] == 0 {
				tr.errorf(t, "READ causes %v: want fault (the mapping's page faults)", c)
			}
			if c["read"] != 0 {
				tr.errorf(t, "READ causes %v: the client made no read(2)", c)
			}
			faults := 0
			for _, e := range tr.eventsOf("fault") {
				if e["layer"] == "mount" && e["file"] == "mapped" {
					faults++
				}
			}
			if faults == 0 {
				tr.errorf(t, "no page fault on the mount's file in the JSON")
			}
			pages := uint64(size / os.Getpagesize())
			if added, _, ok := tr.layerFile("mount", "mapped"); !ok || added < pages {
				tr.errorf(t, "mount cache: %d pages of mapped added, want all %d: the mapping's pages are the mount's page cache", added, pages)
			}
		})
	}
}
