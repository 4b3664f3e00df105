package tracereport

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mmapfs/mmapfs/cmd/mmapfs/ktrace"
)

// scenario feeds a little of everything: a sequential read, a mapped
// read, writeback, an msync, a close, throttling, page cache events and
// dirty samples.
func scenario(c *Collector, f feed) {
	f.ra(1*ms, false, 100, "cat", 5, 0, 32, 0, 0, 32, -1)
	f.k(ktrace.Event{Kind: ktrace.PageAdd, Time: testStart + 1*ms + 1*us, Pid: 100, Comm: "cat", Dev: testConn, Ino: 5, Index: 0, Pages: 32})
	f.request(1*ms+5*us, 1, readOp, 100, "cat", 5, 0, 128<<10, 100)
	f.k(ktrace.Event{Kind: ktrace.PageAdd, Time: testStart + 1*ms + 20*us, Pid: daemonTid, Comm: "mmapfs", Dev: testStoreDev, Ino: 5, Index: 0, Pages: 32})
	f.ra(2*ms, true, 100, "cat", 5, 16, 32, 32, 16, 32, 15*4096)
	f.request(2*ms+5*us, 2, readOp, daemonTid, "mmapfs", 5, 128<<10, 128<<10, 100)
	f.fault(10*ms, 200, "mapper", 7, 3)
	f.request(10*ms+5*us, 3, readOp, 200, "mapper", 7, 0, 128<<10, 200)
	c.Sample(testStart+50*ms, 1<<20, 0)
	f.syscall(100*ms, true, 300, "writer", "msync")
	f.request(100*ms+5*us, 4, writeOp, 300, "writer", 9, 0, 64<<10, 300)
	f.syscall(101*ms, false, 300, "writer", "msync")
	f.k(ktrace.Event{Kind: ktrace.Throttle, Time: testStart + 150*ms, Pid: 500, Comm: "dd", BDI: "0:52", Pause: 12 * ms, Dirty: 2000, Limit: 1900, WBDirty: 300, WBSetpoint: 250})
	f.k(ktrace.Event{Kind: ktrace.WritebackStart, Time: testStart + 200*ms, Pid: kworkerPid, Comm: "kworker/u8:2+flush-0:52", BDI: "0:52", Reason: "background"})
	f.request(200*ms+5*us, 5, writeOp, kworkerPid, "kworker/u8:2+flush-0:52", 9, 64<<10, 128<<10, kworkerPid)
	f.k(ktrace.Event{Kind: ktrace.WritebackEnd, Time: testStart + 201*ms, Pid: kworkerPid, Comm: "kworker/u8:2+flush-0:52", BDI: "0:52", Reason: "background", Pages: 32})
	c.Sample(testStart+250*ms, 4<<20, 1<<20)
	f.syscall(300*ms, true, 400, "sh", "close")
	f.request(300*ms+5*us, 6, flushOp, 400, "sh", 9, 0, 0, 400)
	f.syscall(300*ms+100*us, false, 400, "sh", "close")
	f.k(ktrace.Event{Kind: ktrace.PageDelete, Time: testStart + 1100*ms, Pid: 100, Comm: "cat", Dev: testConn, Ino: 5, Index: 0, Pages: 8})
	f.send(1200*ms, 7, getattrOp, 100, "cat")
	f.end(1200*ms+40*us, 7)
	c.Flush()
}

// Every JSON line parses back, with its type's fields.
func TestJSONLines(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	j := NewJSON(&out)
	c, r, f := newTest(Options{Sink: j})
	scenario(c, f)
	if j.Err() != nil {
		t.Fatal(j.Err())
	}
	types := map[string]int{}
	sc := bufio.NewScanner(&out)
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		typ, _ := m["type"].(string)
		types[typ]++
		if _, ok := m["t_ns"].(float64); !ok {
			t.Errorf("line without t_ns: %s", sc.Text())
		}
		if _, ok := m["mono_ns"].(float64); !ok {
			t.Errorf("line without mono_ns: %s", sc.Text())
		}
		if typ == "request" && m["unique"].(float64) == 3 {
			var q JSONRequest
			if err := json.Unmarshal(sc.Bytes(), &q); err != nil {
				t.Fatal(err)
			}
			if q.Cause != "fault" || q.FaultPage == nil || *q.FaultPage != 3 || q.Window == nil || q.Window.Pages != 32 ||
				q.Latency == nil || *q.Latency != 50*us || *q.Service != 30*us || q.File != "mapped.bin" || q.T != 10*ms+5*us || q.Mono != testStart+10*ms+5*us {
				t.Errorf("request 3: %s", sc.Text())
			}
		}
		if typ == "request" && m["unique"].(float64) == 7 {
			if _, ok := m["service_ns"]; ok || m["missing"] == nil {
				t.Errorf("request 7 (no record): %s", sc.Text())
			}
		}
		if typ == "throttle" && (m["pause_ns"].(float64) != float64(12*ms) || m["comm"] != "dd" || m["layer"] != "mount") {
			t.Errorf("throttle: %s", sc.Text())
		}
		if typ == "readahead" && m["ino"].(float64) == 5 && m["kind"] == "sync" && (m["pages"].(float64) != 32 || m["file"] != "big.bin") {
			t.Errorf("readahead: %s", sc.Text())
		}
	}
	want := map[string]int{"request": 7, "readahead": 2, "fault": 1, "page_add": 2, "page_delete": 1, "throttle": 1,
		"writeback_start": 1, "writeback_end": 1, "syscall_enter": 2, "syscall_exit": 2, "sample": 2}
	for k, n := range want {
		if types[k] != n {
			t.Errorf("%d lines of type %q, want %d (all: %v)", types[k], k, n, types)
		}
	}
	if len(r.reqs) != 7 {
		t.Errorf("%d requests", len(r.reqs))
	}
}

// The timeline and the summary of the scenario, checked line by line
// where it matters (see the test log for the whole text).
func TestTimelineAndSummaryText(t *testing.T) {
	t.Parallel()
	var tl bytes.Buffer
	c, _, f := newTest(Options{Sink: NewTimeline(&tl, 0)})
	scenario(c, f)
	text := tl.String()
	t.Logf("timeline:\n%s", text)
	lines := strings.Split(strings.TrimSuffix(text, "\n"), "\n")
	if lines[0] != TimelineHeader {
		t.Errorf("first line %q", lines[0])
	}
	wantLines := []string{
		"  0.001005  READ     cat[100]                     big.bin                  0+128KiB           readahead-sync ra 0+32p (async 16)          50µs       30µs",
		"  0.002005  READ     cat[100]                     big.bin                  128KiB+128KiB      readahead-async ra 32+32p (async 32)        50µs       30µs  background, sent by mmapfs[901]",
		"  0.010005  READ     mapper[200]                  mapped.bin               0+128KiB           fault p3 around ra 0+32p (async 8)          50µs       30µs",
		"  0.100005  WRITE    writer[300]                  out.bin                  0+64KiB            msync                                       50µs       30µs",
		"  0.150000  THROTTLE dd[500]                      paused 12ms: bdi 0:52 of the mount 300 pages dirty, its setpoint 250; all 2000 dirty, limit 1900",
		"  0.200005  WRITE    kworker/u8:2+flush-0:52[50]  out.bin                  64KiB+128KiB       writeback (background)                      50µs       30µs",
		"  0.300005  FLUSH    sh[400]                      out.bin                  -                  close                                       50µs       30µs",
		"  1.000000  CACHE    mount +32 -0 pages, store +32 -0 pages (since 0.000000 s)",
		"  1.200000  GETATTR  cat[100]                     -                        -                  getattr                                     40µs          -  missing daemon",
		"  1.200000  CACHE    mount +0 -8 pages, store +0 -0 pages (since 1.000000 s)",
	}
	got := lines[1:]
	if len(got) != len(wantLines) {
		t.Fatalf("%d lines, want %d:\n%s", len(got), len(wantLines), text)
	}
	for i := range wantLines {
		if got[i] != wantLines[i] {
			t.Errorf("line %d:\n got %q\nwant %q", i+1, got[i], wantLines[i])
		}
	}

	s := c.Summary()
	s.KernelLost = 5
	var b strings.Builder
	if err := s.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	t.Logf("summary:\n%s", b.String())
	for _, w := range []string{
		"requests 7 over 1.2s (kernel events 27, daemon records 6)",
		"op       cause                   count   bytes  kernel p50   p90   p99   max  daemon p50   p99\n",
		"READ     readahead-async             1  128KiB        50µs  50µs  50µs  50µs        30µs  30µs\n",
		"READ     readahead-sync              1  128KiB",
		"READ     fault                       1  128KiB",
		"WRITE    msync                       1   64KiB",
		"WRITE    writeback (background)      1  128KiB",
		"FLUSH    close                       1       -",
		"GETATTR  getattr                     1       -        40µs  40µs  40µs  40µs           -     -\n",
		"sync  32: 1\n  async 32: 1",
		"mount 32 added (128KiB), 8 evicted (32KiB)",
		"store 32 added (128KiB), 0 evicted (0B)",
		"dd[500] on the mount's bdi: 1 pauses, total 12ms, max 12ms",
		"mount dirty: max 4MiB, under writeback: max 1MiB (2 samples)",
		"lost: kernel events 5, daemon records 0 (0 drop records)",
		"no send 0, no end 0, no daemon record 1",
	} {
		if !strings.Contains(b.String(), w) {
			t.Errorf("summary lacks %q", w)
		}
	}
	var js bytes.Buffer
	if err := s.WriteJSON(&js); err != nil {
		t.Fatal(err)
	}
	var back Summary
	if err := json.Unmarshal(js.Bytes(), &back); err != nil {
		t.Fatal(err)
	}
	if back.Requests != 7 || back.KernelLost != 5 || len(back.Ops) != len(s.Ops) || back.Layers[0].Files[0].File != "big.bin" {
		t.Errorf("summary JSON: %s", js.String())
	}
}

// The plot is a PNG when gnuplot is installed.
func TestPlotPNG(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("gnuplot"); err != nil {
		t.Skip("gnuplot not installed (package gnuplot-nox)")
	}
	for _, name := range []string{"full", "empty"} {
		p := NewPlot()
		if name == "full" {
			c, _, f := newTest(Options{Sink: p})
			scenario(c, f)
			for i := int64(0); i < 40; i++ {
				f.request(1300*ms+i*10*ms, uint64(100+i), readOp, 100, "cat", 5, uint64(i)<<17, 128<<10, 100)
				c.Sample(testStart+1300*ms+i*10*ms, uint64(i)<<20, 0)
			}
			c.Flush()
		}
		path := filepath.Join(t.TempDir(), "it's a plot.png")
		if err := p.WritePNG(path); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.HasPrefix(b, []byte("\x89PNG\r\n\x1a\n")) || len(b) < 10000 {
			t.Errorf("%s: %d bytes starting %q: not a PNG plot", name, len(b), b[:min(8, len(b))])
		}
	}
}

// Without gnuplot, WritePNG says which package to install.
func TestPlotWithoutGnuplot(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	err := NewPlot().WritePNG(filepath.Join(t.TempDir(), "x.png"))
	if !errors.Is(err, ErrNoGnuplot) || !strings.Contains(err.Error(), "gnuplot-nox") || !strings.Contains(err.Error(), "x.png") {
		t.Errorf("error %v", err)
	}
}

// The plot's data: requests per bin by op and cause, dirty MiB.
func TestPlotData(t *testing.T) {
	t.Parallel()
	p := NewPlot()
	c, _, f := newTest(Options{Sink: p})
	scenario(c, f)
	dir := t.TempDir()
	if err := p.writeData(dir, filepath.Join(dir, "out.png")); err != nil {
		t.Fatal(err)
	}
	req, err := os.ReadFile(filepath.Join(dir, "requests.dat"))
	if err != nil {
		t.Fatal(err)
	}
	rows := strings.Split(strings.TrimSpace(string(req)), "\n")
	if !strings.HasPrefix(rows[0], "time ") || !strings.Contains(rows[0], `"READ readahead-sync"`) {
		t.Errorf("header %q", rows[0])
	}
	// Bin 0 (0–100 ms): three READs, 30 per second in all.
	var sum float64
	for _, x := range strings.Fields(rows[1])[1:] {
		var v float64
		if _, err := fmtSscan(x, &v); err != nil {
			t.Fatal(err)
		}
		sum += v
	}
	if sum != 30 {
		t.Errorf("first bin %q: %g requests/s, want 30", rows[1], sum)
	}
	dirty, err := os.ReadFile(filepath.Join(dir, "dirty.dat"))
	if err != nil {
		t.Fatal(err)
	}
	if string(dirty) != "0.050000 1.000 0.000\n0.250000 4.000 1.000\n" {
		t.Errorf("dirty.dat %q", dirty)
	}
}

func TestUnits(t *testing.T) {
	t.Parallel()
	for ns, want := range map[int64]string{0: "0ns", 999: "999ns", 1500: "1.5µs", 12_340: "12.3µs", 250_000: "250µs", 3_400_000: "3.4ms", 1_250_000_000: "1.25s"} {
		if got := Duration(ns); got != want {
			t.Errorf("Duration(%d) = %q, want %q", ns, got, want)
		}
	}
	for n, want := range map[uint64]string{0: "0B", 512: "512B", 4096: "4KiB", 1536 << 10: "1.5MiB", 3 << 30: "3GiB"} {
		if got := Bytes(n); got != want {
			t.Errorf("Bytes(%d) = %q, want %q", n, got, want)
		}
	}
	for n, want := range map[uint64]string{0: "0", 1000: "1000", 128 << 10: "128KiB", 3 << 20: "3MiB", 4936 << 10: "4936KiB"} {
		if got := exact(n); got != want {
			t.Errorf("exact(%d) = %q, want %q", n, got, want)
		}
	}
	if OpName(15) != "READ" || OpName(99) != "OP99" || errnoName(-2) != "ENOENT" || errnoName(28) != "ENOSPC" {
		t.Error("names")
	}
}

// The quantiles are nearest-rank, and the reservoir stays bounded.
func TestReservoir(t *testing.T) {
	t.Parallel()
	var r reservoir
	r.rng = 1
	for i := int64(1); i <= 100; i++ {
		r.add(i)
	}
	if q := r.quantiles(0.5, 0.9, 0.99, 1); q[0] != 50 || q[1] != 90 || q[2] != 99 || q[3] != 100 || r.max != 100 {
		t.Errorf("quantiles %v max %d", q, r.max)
	}
	for i := 0; i < 3*reservoirSize; i++ {
		r.add(7)
	}
	if len(r.vals) != reservoirSize || r.n != 100+3*reservoirSize || r.max != 100 {
		t.Errorf("reservoir of %d values, n %d, max %d", len(r.vals), r.n, r.max)
	}
	if q := r.quantiles(0.5); q[0] != 7 {
		t.Errorf("median %d after many 7s", q[0])
	}
}

func fmtSscan(s string, v *float64) (int, error) { return fmt.Sscan(s, v) }
