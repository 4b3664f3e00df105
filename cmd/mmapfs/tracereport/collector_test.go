package tracereport

import (
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/mmapfs/mmapfs/cmd/mmapfs/ktrace"
	"github.com/mmapfs/mmapfs/fs/wire"
)

// A cold sequential read by 128 KiB read(2)s, readahead at most 256
// pages: the sync readahead at the file's start makes the initial window
// (64 pages: twice the 32 asked), each hit on the marker an async window
// twice as large up to the maximum; the READs the windows cover take
// their cause and window, background ones (sent from the daemon's
// context) are the reader's.
func TestColdSequentialRead(t *testing.T) {
	t.Parallel()
	c, r, f := newTest(Options{})
	const cat = 100
	f.ra(1*ms, false, cat, "cat", 5, 0, 32, 0, 0, 256, -1)
	f.request(1*ms+5*us, 1, readOp, cat, "cat", 5, 0, 128<<10, cat)
	f.request(1*ms+60*us, 2, readOp, cat, "cat", 5, 128<<10, 128<<10, cat)
	// The read of pages 32-63 hits the marker at 32 (64-32).
	f.ra(2*ms, true, cat, "cat", 5, 32, 32, 64, 32, 256, 31*4096)
	for i := uint64(0); i < 4; i++ {
		f.request(2*ms+int64(i)*60*us, 3+i, readOp, daemonTid, "mmapfs", 5, (64+32*i)*4096, 128<<10, cat)
	}
	// The marker of [64,192) is at 64.
	f.ra(3*ms, true, cat, "cat", 5, 64, 32, 128, 128, 256, 63*4096)
	f.request(3*ms+5*us, 7, readOp, cat, "cat", 5, 192*4096, 128<<10, cat)
	// A READ past every window: a plain read.
	f.request(4*ms, 8, readOp, cat, "cat", 5, 64<<20, 4096, cat)
	// Another file with no readahead at all.
	f.request(5*ms, 9, readOp, cat, "cat", 9, 0, 4096, cat)
	c.Flush()

	if len(r.reqs) != 9 {
		t.Fatalf("%d requests, want 9", len(r.reqs))
	}
	want := []struct {
		cause      string
		start      uint64
		pages      uint32
		lookahead  uint32
		background bool
	}{
		{"readahead-sync", 0, 64, 32, false},
		{"readahead-sync", 0, 64, 32, false},
		{"readahead-async", 64, 128, 128, true},
		{"readahead-async", 64, 128, 128, true},
		{"readahead-async", 64, 128, 128, true},
		{"readahead-async", 64, 128, 128, true},
		{"readahead-async", 192, 256, 256, false},
		{"read", 0, 0, 0, false},
		{"read", 0, 0, 0, false},
	}
	for i, w := range want {
		q := r.byUnique(t, uint64(i+1))
		wantCause(t, q, w.cause)
		if w.pages != 0 {
			if q.Window == nil || q.Window.Start != w.start || q.Window.Pages != w.pages || q.Window.Lookahead != w.lookahead {
				t.Errorf("request %d: window %+v, want %d+%d (async %d)", q.Unique, q.Window, w.start, w.pages, w.lookahead)
			}
		} else if q.Window != nil {
			t.Errorf("request %d: window %+v, want none", q.Unique, q.Window)
		}
		if q.Background != w.background {
			t.Errorf("request %d: background %v, want %v", q.Unique, q.Background, w.background)
		}
		if q.TaskPid != cat || q.TaskComm != "cat" {
			t.Errorf("request %d: task %s[%d], want cat[%d]", q.Unique, q.TaskComm, q.TaskPid, cat)
		}
		if q.Latency != 50*us || q.Service != 30*us || q.Queue != 20*us {
			t.Errorf("request %d: latency %d service %d queue %d, want 50µs 30µs 20µs", q.Unique, q.Latency, q.Service, q.Queue)
		}
		if len(q.Missing) != 0 {
			t.Errorf("request %d: missing %v", q.Unique, q.Missing)
		}
	}
	if q := r.byUnique(t, 1); q.File != "big.bin" {
		t.Errorf("request 1: file %q", q.File)
	}

	s := c.Summary()
	wantWindows := []WindowCount{{"sync", 64, 1}, {"async", 128, 1}, {"async", 256, 1}}
	if len(s.Windows) != len(wantWindows) {
		t.Fatalf("windows %+v, want %+v", s.Windows, wantWindows)
	}
	for i := range wantWindows {
		if s.Windows[i] != wantWindows[i] {
			t.Errorf("window %d: %+v, want %+v", i, s.Windows[i], wantWindows[i])
		}
	}
	ops := map[string]OpSummary{}
	for _, o := range s.Ops {
		ops[o.Op+" "+o.Cause] = o
	}
	if o := ops["READ readahead-async"]; o.Count != 5 || o.Bytes != 5*128<<10 || o.LatencyP50 != 50*us || o.ServiceP99 != 30*us {
		t.Errorf("READ readahead-async: %+v", o)
	}
	if o := ops["READ read"]; o.Count != 2 || o.Bytes != 8192 {
		t.Errorf("READ read: %+v", o)
	}
	var b strings.Builder
	if err := s.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	text := b.String()
	for _, w := range []string{"requests 9 over", "readahead-async", "sync  64: 1", "async 128: 1 256: 1", "640KiB", "50µs", "30µs"} {
		if !strings.Contains(text, w) {
			t.Errorf("summary lacks %q:\n%s", w, text)
		}
	}
}

// The windows worked out from the kernel's readahead events.
func TestWindowFromEvent(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name             string
		e                ktrace.Event
		start            uint64
		pages, lookahead uint32
	}{
		{"first read of 1 page", ktrace.Event{Kind: ktrace.SyncReadahead, Index: 0, ReqCount: 1, RAPages: 32, PrevPos: -1}, 0, 4, 3},
		{"first read of 32 pages, max 32", ktrace.Event{Kind: ktrace.SyncReadahead, Index: 0, ReqCount: 32, RAPages: 32, PrevPos: -1}, 0, 32, 16},
		{"first read of 8 pages, max 2048", ktrace.Event{Kind: ktrace.SyncReadahead, Index: 0, ReqCount: 8, RAPages: 2048, PrevPos: -1}, 0, 32, 24},
		{"sequential miss", ktrace.Event{Kind: ktrace.SyncReadahead, Index: 100, ReqCount: 4, RAPages: 32, PrevPos: 99 * 4096}, 100, 8, 4},
		{"oversized read", ktrace.Event{Kind: ktrace.SyncReadahead, Index: 100, ReqCount: 64, RAPages: 32, PrevPos: -1}, 100, 64, 32},
		{"random read: the cache decides", ktrace.Event{Kind: ktrace.SyncReadahead, Index: 100, ReqCount: 4, RAPages: 32, PrevPos: 10 * 4096}, 100, 0, 0},
		{"readahead off", ktrace.Event{Kind: ktrace.SyncReadahead, Index: 7, ReqCount: 3}, 7, 3, 0},
		{"async ramp x4", ktrace.Event{Kind: ktrace.AsyncReadahead, Index: 1, ReqCount: 1, Size: 4, AsyncSize: 3, RAPages: 2048}, 4, 16, 16},
		{"async ramp x2", ktrace.Event{Kind: ktrace.AsyncReadahead, Index: 32, ReqCount: 32, Size: 64, AsyncSize: 32, RAPages: 256}, 64, 128, 128},
		{"async at max", ktrace.Event{Kind: ktrace.AsyncReadahead, Index: 48, ReqCount: 1, Size: 32, AsyncSize: 32, RAPages: 32}, 80, 32, 32},
		// The kernel's golden line: dev=254:0 index=20 req_count=1 order=4
		// size=60 async_size=60 ra_pages=2048.
		{"golden async", ktrace.Event{Kind: ktrace.AsyncReadahead, Index: 20, ReqCount: 1, Order: 4, Size: 60, AsyncSize: 60, RAPages: 2048, PrevPos: 81920}, 80, 240, 240},
	} {
		w := newWindow(&tc.e)
		if w.Start != tc.start || w.Pages != tc.pages || w.Lookahead != tc.lookahead {
			t.Errorf("%s: window %d+%d (async %d), want %d+%d (async %d)", tc.name, w.Start, w.Pages, w.Lookahead, tc.start, tc.pages, tc.lookahead)
		}
	}
}

// A client's mapped reads. A fault on a mapping reads around the
// faulting page with no readahead event: the READs of that window are
// the fault's. A fault on the read-around's marker starts an async
// readahead in the faulting task: its READs are the fault's too, with the
// async window. Under MADV_SEQUENTIAL the fault's sync readahead does the
// same.
func TestMappedRead(t *testing.T) {
	t.Parallel()
	c, r, f := newTest(Options{})
	const client = 200
	// Read-around of 32 pages around page 100: [84,116), in two READs.
	f.fault(1*ms, client, "mapper", 7, 100)
	f.request(1*ms+6*us, 1, readOp, client, "mapper", 7, 84*4096, 64<<10, client)
	f.request(1*ms+70*us, 2, readOp, client, "mapper", 7, 100*4096, 64<<10, client)
	// Its marker: 84+32-8.
	f.fault(2*ms, client, "mapper", 7, 108)
	f.ra(2*ms+2*us, true, client, "mapper", 7, 108, 32, 32, 8, 32, 107*4096)
	f.request(2*ms+5*us, 3, readOp, daemonTid, "mmapfs", 7, 116*4096, 128<<10, client)
	// MADV_SEQUENTIAL: the fault at 0 of another file asks for a sync
	// readahead of ra_pages.
	f.fault(3*ms, client, "mapper", 8, 0)
	f.ra(3*ms+2*us, false, client, "mapper", 8, 0, 32, 0, 0, 32, -1)
	f.request(3*ms+5*us, 4, readOp, client, "mapper", 8, 0, 128<<10, client)
	// Another task's read of the first file a while later: the fault was
	// not its, and long ago.
	f.ra(500*ms, false, 201, "cat", 7, 0, 32, 32, 32, 32, -1)
	f.request(500*ms+5*us, 5, readOp, 201, "cat", 7, 0, 128<<10, 201)
	// A fault long before (past FaultNear) is not the cause.
	f.fault(600*ms, 202, "late", 7, 300)
	f.request(800*ms, 6, readOp, 202, "late", 7, 300*4096, 4096, 202)
	// A fault on the store's device is the daemon's, not a client's.
	f.k(ktrace.Event{Kind: ktrace.Fault, Time: testStart + 900*ms, Pid: 203, Comm: "x", Dev: testStoreDev, Ino: 7, Index: 400})
	f.request(900*ms+5*us, 7, readOp, 203, "x", 7, 400*4096, 4096, 203)
	c.Flush()

	for u, want := range map[uint64]string{
		1: "fault p100 around ra 84+32p (async 8)",
		2: "fault p100 around ra 84+32p (async 8)",
		3: "fault p108 async ra 116+32p (async 32)",
		4: "fault p0 sync ra 0+32p (async 16)",
		5: "readahead-sync ra 0+32p (async 16)",
		6: "read",
		7: "read",
	} {
		q := r.byUnique(t, u)
		if got := describeCause(q); got != want {
			t.Errorf("request %d: cause %q, want %q", u, got, want)
		}
	}
	if q := r.byUnique(t, 3); !q.Background || q.TaskComm != "mapper" {
		t.Errorf("request 3: background %v task %s", q.Background, q.TaskComm)
	}
	// The read-around is no readahead event: the summary counts the two.
	s := c.Summary()
	if len(s.Windows) != 2 || s.Windows[0] != (WindowCount{"sync", 32, 2}) || s.Windows[1] != (WindowCount{"async", 32, 1}) {
		t.Errorf("windows %+v", s.Windows)
	}
}

// Writeback: a flusher's WRITEs between its writeback_start and
// writeback_written take its reason; a kworker's outside any is
// writeback without one; a client's write(2) is a write.
func TestWriteback(t *testing.T) {
	t.Parallel()
	c, r, f := newTest(Options{})
	const flusher = "kworker/u8:2+flush-0:52"
	f.k(ktrace.Event{Kind: ktrace.WritebackStart, Time: testStart + 1*ms, Pid: kworkerPid, Comm: flusher, BDI: "0:52", Reason: "background"})
	f.request(1*ms+10*us, 1, writeOp, kworkerPid, flusher, 9, 0, 128<<10, kworkerPid)
	// Sent later from the daemon's context (the background queue).
	f.request(1*ms+90*us, 2, writeOp, daemonTid, "mmapfs", 9, 128<<10, 128<<10, kworkerPid)
	f.k(ktrace.Event{Kind: ktrace.WritebackEnd, Time: testStart + 2*ms, Pid: kworkerPid, Comm: flusher, BDI: "0:52", Reason: "background", Pages: 64})
	// Another BDI's writeback says nothing of this mount.
	f.k(ktrace.Event{Kind: ktrace.WritebackStart, Time: testStart + 3*ms, Pid: 51, Comm: "kworker/u8:3+flush-8:0", BDI: "8:0", Reason: "periodic"})
	f.k(ktrace.Event{Kind: ktrace.WritebackStart, Time: testStart + 4*ms, Pid: kworkerPid, Comm: flusher, BDI: "0:52", Reason: "periodic"})
	f.request(4*ms+10*us, 3, writeOp, kworkerPid, flusher, 9, 256<<10, 4096, kworkerPid)
	f.k(ktrace.Event{Kind: ktrace.WritebackEnd, Time: testStart + 5*ms, Pid: kworkerPid, Comm: flusher, BDI: "0:52", Reason: "periodic", Pages: 1})
	f.request(6*ms, 4, writeOp, 52, "kworker/1:1", 9, 0, 4096, 52)
	f.request(7*ms, 5, writeOp, 300, "writer", 9, 0, 100, 300)
	// The kernel's own WRITEs (page writeback: no requester in the header,
	// record Pid 0) sent from the daemon's context while the flusher writes
	// back, or while a client (300 made request 5) waits in msync; and one
	// of each after both, in the daemon's and in a client's context (the
	// kernel sends a pass's WRITEs as the daemon answers: the pass that
	// started last).
	f.k(ktrace.Event{Kind: ktrace.WritebackStart, Time: testStart + 8*ms, Pid: kworkerPid, Comm: flusher, BDI: "0:52", Reason: "background"})
	f.request(8*ms+10*us, 11, writeOp, daemonTid, "mmapfs", 9, 0, 4096, 0)
	f.k(ktrace.Event{Kind: ktrace.WritebackEnd, Time: testStart + 9*ms, Pid: kworkerPid, Comm: flusher, BDI: "0:52", Reason: "background"})
	f.syscall(10*ms, true, 300, "writer", "msync")
	f.request(10*ms+10*us, 12, writeOp, daemonTid, "mmapfs", 9, 0, 4096, 0)
	f.syscall(10*ms+100*us, false, 300, "writer", "msync")
	f.request(11*ms, 13, writeOp, daemonTid, "mmapfs", 9, 0, 4096, 0)
	f.request(12*ms, 14, writeOp, 301, "other", 9, 0, 4096, 0)
	c.Flush()

	wantCause(t, r.byUnique(t, 1), "writeback (background)")
	for u, want := range map[uint64]string{11: "writeback (background)", 12: "msync", 13: "writeback (background)", 14: "writeback (background)"} {
		wantCause(t, r.byUnique(t, u), want)
	}
	if q := r.byUnique(t, 11); q.TaskPid != kworkerPid || q.TaskComm != flusher || !q.Background {
		t.Errorf("request 11: task %s[%d] background %v, want the flusher's", q.TaskComm, q.TaskPid, q.Background)
	}
	if q := r.byUnique(t, 12); q.TaskPid != 300 || q.TaskComm != "writer" {
		t.Errorf("request 12: task %s[%d], want the msync's writer[300]", q.TaskComm, q.TaskPid)
	}
	q := r.byUnique(t, 2)
	wantCause(t, q, "writeback (background)")
	if !q.Background || q.TaskComm != flusher {
		t.Errorf("request 2: background %v task %s", q.Background, q.TaskComm)
	}
	wantCause(t, r.byUnique(t, 3), "writeback (periodic)")
	// A kworker's WRITE after the pass ended: the pass started last.
	wantCause(t, r.byUnique(t, 4), "writeback (periodic)")
	wantCause(t, r.byUnique(t, 5), "write")
	n := 0
	for _, e := range r.evs {
		if e.Type == EventWritebackStart || e.Type == EventWritebackEnd {
			n++
			if e.Layer != layerMount {
				t.Errorf("writeback event of layer %q: %+v", e.Layer, e.K)
			}
		}
	}
	if n != 6 {
		t.Errorf("%d writeback events of the mount, want 6", n)
	}
}

// A client's msync: its WRITEs (sent in its context, or from the
// daemon's on its behalf) have the cause "msync"; after the syscall,
// "write". close's FLUSH is "close"; an fsync's FSYNC "fsync".
func TestSyscallCauses(t *testing.T) {
	t.Parallel()
	c, r, f := newTest(Options{})
	f.syscall(1*ms, true, 300, "writer", "msync")
	f.request(1*ms+10*us, 1, writeOp, 300, "writer", 9, 0, 4096, 300)
	f.request(1*ms+90*us, 2, writeOp, daemonTid, "mmapfs", 9, 4096, 4096, 300)
	f.syscall(2*ms, false, 300, "writer", "msync")
	f.request(3*ms, 3, writeOp, 300, "writer", 9, 0, 10, 300)
	f.syscall(4*ms, true, 400, "sh", "close")
	f.request(4*ms+10*us, 4, flushOp, 400, "sh", 9, 0, 0, 400)
	f.syscall(4*ms+100*us, false, 400, "sh", "close")
	f.request(5*ms, 5, flushOp, 400, "sh", 9, 0, 0, 400)
	f.syscall(6*ms, true, 400, "sh", "fsync")
	f.request(6*ms+10*us, 6, fsyncOp, 400, "sh", 9, 0, 0, 400)
	f.syscall(6*ms+100*us, false, 400, "sh", "fsync")
	f.request(7*ms, 7, getattrOp, 400, "sh", 9, 0, 0, 400)
	// A syscall whose exit never came (lost) still covers what follows;
	// one of another task does not.
	f.syscall(8*ms, true, 401, "other", "fdatasync")
	f.request(8*ms+10*us, 8, fsyncOp, 400, "sh", 9, 0, 0, 400)
	c.Flush()

	for u, cause := range map[uint64]string{1: "msync", 2: "msync", 3: "write", 4: "close", 5: "flush", 6: "fsync", 7: "getattr", 8: "fsync"} {
		wantCause(t, r.byUnique(t, u), cause)
	}
	if q := r.byUnique(t, 2); !q.Background || q.TaskPid != 300 || q.TaskComm != "writer" || q.Comm != "mmapfs" || q.Pid != daemonTid {
		t.Errorf("request 2: %+v", q)
	}
}

// Throttle pauses are summed per process and layer; pauses of 0 and
// other BDIs are not counted.
func TestThrottle(t *testing.T) {
	t.Parallel()
	var tl strings.Builder
	c, r, f := newTest(Options{Sink: NewTimeline(&tl, 0)})
	th := func(at int64, pid int, comm, bdi string, pause int64) {
		f.k(ktrace.Event{Kind: ktrace.Throttle, Time: testStart + at, Pid: pid, Comm: comm, BDI: bdi, Pause: pause, Dirty: 1000, Limit: 900})
	}
	th(1*ms, 500, "dd", "0:52", 10*ms)
	th(20*ms, 500, "dd", "0:52", 20*ms)
	th(50*ms, 500, "dd", "0:52", 0)
	th(60*ms, 501, "fio", "0:52", 5*ms)
	th(70*ms, 502, "cp", "8:0", 50*ms)
	th(80*ms, 503, "mmapfs", "8:1", 7*ms)
	c.Flush()
	s := c.Summary()
	want := []ThrottleSummary{
		{layerMount, 500, "dd", 2, 30 * ms, 20 * ms},
		{layerStore, 503, "mmapfs", 1, 7 * ms, 7 * ms},
		{layerMount, 501, "fio", 1, 5 * ms, 5 * ms},
	}
	if len(s.Throttled) != len(want) {
		t.Fatalf("throttled %+v, want %+v", s.Throttled, want)
	}
	for i := range want {
		if s.Throttled[i] != want[i] {
			t.Errorf("throttled %d: %+v, want %+v", i, s.Throttled[i], want[i])
		}
	}
	n := 0
	for _, e := range r.evs {
		if e.Type == EventThrottle {
			n++
		}
	}
	if n != 5 {
		t.Errorf("%d throttle events, want 5 (all of the mount's and store's bdi)", n)
	}
	lines := strings.Count(tl.String(), "THROTTLE")
	if lines != 4 {
		t.Errorf("%d THROTTLE lines, want 4 (the pauses):\n%s", lines, tl.String())
	}
	if !strings.Contains(tl.String(), "dd[500]") || !strings.Contains(tl.String(), "paused 20ms: bdi 0:52 of the mount") {
		t.Errorf("timeline:\n%s", tl.String())
	}
	var b strings.Builder
	if err := s.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "dd[500] on the mount's bdi: 2 pauses, total 30ms, max 20ms") {
		t.Errorf("summary:\n%s", b.String())
	}
}

// The daemon's records lag: a request is held until its record comes,
// and emitted without it (marked) once Wait has passed on both streams
// (not on the kernel's alone: its records may only be late); a record
// whose kernel events never came is emitted at Flush.
func TestLateAndMissingParts(t *testing.T) {
	t.Parallel()
	c, r, f := newTest(Options{})
	f.send(1*ms, 1, readOp, 100, "cat")
	f.end(2*ms, 1)
	f.send(3*ms, 2, readOp, 100, "cat")
	f.end(4*ms, 2)
	if len(r.reqs) != 0 {
		t.Fatalf("emitted %d requests before their records came", len(r.reqs))
	}
	// The record of 2 comes late, after more kernel events.
	f.k(ktrace.Event{Kind: ktrace.SyscallEnter, Time: testStart + 500*ms, Pid: 7, Comm: "x", Syscall: "sync"})
	f.rec(2, readOp, 5, 0, 4096, 100, 3*ms+10*us, 100*us)
	// Both streams have reached 500 ms (the driver's Tick says so when
	// neither has anything buffered).
	c.Tick(testStart + 500*ms)
	if len(r.reqs) != 1 || r.reqs[0].Unique != 2 || len(r.reqs[0].Missing) != 0 {
		t.Fatalf("after the late record: %+v", r.reqs)
	}
	// 1 has waited long enough once event time passes its end + 1 s.
	f.k(ktrace.Event{Kind: ktrace.SyscallExit, Time: testStart + 1200*ms, Pid: 7, Comm: "x", Syscall: "sync"})
	if len(r.reqs) != 1 {
		t.Fatalf("request 1 given up while the daemon's stream was still at 3 ms: %+v", r.reqs)
	}
	c.Tick(testStart + 1200*ms)
	q := r.byUnique(t, 1)
	if strings.Join(q.Missing, ",") != PartDaemon || q.Latency != 1*ms || q.Queue != -1 {
		t.Errorf("request 1: missing %v latency %d queue %d", q.Missing, q.Latency, q.Queue)
	}
	// A record only (the kernel's events of it were lost).
	f.rec(3, writeOp, 9, 0, 10, 300, 1300*ms, 10*us)
	// A request in flight: sent, no end yet.
	f.send(1300*ms, 4, getattrOp, 300, "writer")
	if len(r.reqs) != 2 {
		t.Fatalf("%d requests emitted before Flush, want 2", len(r.reqs))
	}
	c.Flush()
	q = r.byUnique(t, 3)
	if strings.Join(q.Missing, ",") != "send,end" || q.Op != "WRITE" || q.Rel != 1300*ms || q.TaskComm != "writer" {
		t.Errorf("request 3: %+v", q)
	}
	q = r.byUnique(t, 4)
	if strings.Join(q.Missing, ",") != "end,daemon" || q.Latency != -1 {
		t.Errorf("request 4: %+v", q)
	}
	if r.flushes != 1 {
		t.Errorf("sink flushed %d times", r.flushes)
	}
	s := c.Summary()
	if s.Incomplete != 3 || s.MissingSend != 1 || s.MissingEnd != 2 || s.MissingDaemon != 2 || s.Requests != 4 {
		t.Errorf("summary: %+v", s)
	}
	var b strings.Builder
	if err := s.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "no send 1, no end 2, no daemon record 2") {
		t.Errorf("summary:\n%s", b.String())
	}
	line := FormatRequest(r.byUnique(t, 1))
	if !strings.Contains(line, "missing daemon") {
		t.Errorf("timeline line %q does not say the record is missing", line)
	}
}

// At most MaxPending requests are held: the oldest go out, marked.
func TestPendingBound(t *testing.T) {
	t.Parallel()
	c, r, f := newTest(Options{MaxPending: 10})
	for u := uint64(1); u <= 25; u++ {
		f.send(int64(u)*us, u, getattrOp, 100, "ls")
	}
	c.Tick(testStart + 200*ms) // past Reorder
	if len(r.reqs) != 15 {
		t.Fatalf("%d requests given up, want 15", len(r.reqs))
	}
	for i, q := range r.reqs {
		if q.Unique != uint64(i+1) || !q.GivenUp {
			t.Errorf("given up #%d: unique %d given up %v, want %d, true", i, q.Unique, q.GivenUp, i+1)
		}
	}
	_, _, pending := c.Counts()
	if pending != 10 {
		t.Errorf("%d pending, want 10", pending)
	}
	c.Flush()
	if s := c.Summary(); s.GivenUp != 15 || s.Requests != 25 {
		t.Errorf("summary given up %d requests %d", s.GivenUp, s.Requests)
	}
	if !strings.Contains(FormatRequest(r.reqs[0]), "given up waiting") {
		t.Errorf("line %q", FormatRequest(r.reqs[0]))
	}
}

// The trace's own requests (any of its threads) are counted, not shown.
func TestOwnRequestsFiltered(t *testing.T) {
	t.Parallel()
	c, r, f := newTest(Options{})
	f.request(1*ms, 1, writeOp, traceTid, "mmapfs", 2, 0, 40, traceTid)
	f.request(2*ms, 2, readOp, tracePid, "mmapfs", 2, 0, 4096, tracePid)
	// Sent from the daemon's context on the trace's behalf.
	f.request(3*ms, 3, readOp, daemonTid, "mmapfs", 2, 0, 4096, traceTid)
	f.request(4*ms, 4, readOp, 100, "cat", 5, 0, 4096, 100)
	c.Flush()
	if len(r.reqs) != 1 || r.reqs[0].Unique != 4 {
		t.Fatalf("emitted %+v, want only request 4", r.reqs)
	}
	s := c.Summary()
	if s.Own != 3 || s.Requests != 1 {
		t.Errorf("own %d requests %d", s.Own, s.Requests)
	}
}

// Other connections' requests and other devices' events are ignored.
func TestOtherMountsIgnored(t *testing.T) {
	t.Parallel()
	c, r, f := newTest(Options{})
	f.k(ktrace.Event{Kind: ktrace.RequestSend, Time: testStart, Pid: 1, Conn: testConn + 1, Unique: 1, Opcode: readOp})
	f.k(ktrace.Event{Kind: ktrace.RequestEnd, Time: testStart, Pid: 1, Conn: testConn + 1, Unique: 1})
	f.k(ktrace.Event{Kind: ktrace.PageAdd, Time: testStart, Pid: 1, Dev: ktrace.KernelDev(9, 9), Ino: 5, Pages: 4})
	f.k(ktrace.Event{Kind: ktrace.SyncReadahead, Time: testStart, Pid: 1, Dev: ktrace.KernelDev(9, 9), Ino: 5, Size: 32})
	c.Flush()
	if len(r.reqs) != 0 || len(r.evs) != 0 {
		t.Errorf("requests %v events %v", r.reqs, r.evs)
	}
	if s := c.Summary(); s.Events != 4 || s.Layers[0].Added != 0 || len(s.Windows) != 0 {
		t.Errorf("summary %+v", s)
	}
}

// Page cache events count per layer and file, and the timeline shows
// them as one line per interval.
func TestPageCacheCounts(t *testing.T) {
	t.Parallel()
	var tl strings.Builder
	c, _, f := newTest(Options{Sink: NewTimeline(&tl, 0)})
	for i := uint64(0); i < 32; i++ {
		f.k(ktrace.Event{Kind: ktrace.PageAdd, Time: testStart + int64(i)*us, Pid: 100, Dev: testConn, Ino: 5, Index: i, Pages: 1})
		f.k(ktrace.Event{Kind: ktrace.PageAdd, Time: testStart + int64(i)*us, Pid: daemonTid, Dev: testStoreDev, Ino: 5, Index: i})
	}
	f.k(ktrace.Event{Kind: ktrace.PageAdd, Time: testStart + 10*ms, Pid: 100, Dev: testConn, Ino: 7, Index: 0, Pages: 16})
	f.k(ktrace.Event{Kind: ktrace.PageDelete, Time: testStart + 1500*ms, Pid: 100, Dev: testConn, Ino: 5, Index: 0, Pages: 4})
	c.Flush()
	s := c.Summary()
	m, st := s.Layers[0], s.Layers[1]
	if m.Layer != "mount" || m.Added != 48 || m.Deleted != 4 || st.Layer != "store" || st.Added != 32 || st.Deleted != 0 {
		t.Fatalf("layers %+v", s.Layers)
	}
	if len(m.Files) != 2 || m.Files[0] != (FileSummary{5, "big.bin", 32, 4}) || m.Files[1] != (FileSummary{7, "mapped.bin", 16, 0}) {
		t.Errorf("mount files %+v", m.Files)
	}
	got := tl.String()
	if n := strings.Count(got, "CACHE"); n != 2 {
		t.Errorf("%d CACHE lines, want 2:\n%s", n, got)
	}
	if !strings.Contains(got, "mount +48 -0 pages, store +32 -0 pages") || !strings.Contains(got, "mount +0 -4 pages") {
		t.Errorf("timeline:\n%s", got)
	}
	var b strings.Builder
	if err := s.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{"mount 48 added (192KiB), 4 evicted (16KiB)", "big.bin: +32 -4", "store 32 added"} {
		if !strings.Contains(b.String(), w) {
			t.Errorf("summary lacks %q:\n%s", w, b.String())
		}
	}
}

// A daemon drop record counts as lost records and shows in the timeline.
func TestDaemonDropRecord(t *testing.T) {
	t.Parallel()
	var tl strings.Builder
	c, r, f := newTest(Options{Sink: NewTimeline(&tl, 0)})
	c.Daemon(&wire.TraceRecord{Opcode: wire.TraceDropped, Result: 17, Start: testStart + 5*ms, Service: 1 * ms})
	f.request(6*ms, 1, readOp, 100, "cat", 5, 0, 4096, 100)
	c.Flush()
	s := c.Summary()
	if s.DaemonLost != 17 || s.DaemonDrops != 1 || s.Records != 1 || s.Requests != 1 {
		t.Errorf("summary %+v", s)
	}
	if len(r.reqs) != 1 {
		t.Errorf("requests %+v", r.reqs)
	}
	if !strings.Contains(tl.String(), "LOST     the daemon dropped 17 records") {
		t.Errorf("timeline:\n%s", tl.String())
	}
	if got := Progress(c, 3); got != "events 2, dropped 20, requests 1" {
		t.Errorf("progress %q", got)
	}
}

// Both streams at once, from two goroutines, under -race.
func TestConcurrentStreams(t *testing.T) {
	t.Parallel()
	var tl strings.Builder
	c, r, f := newTest(Options{Sink: Tee{NewTimeline(&tl, 0), NewJSON(&strings.Builder{}), NewPlot()}})
	const n = 2000
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		for u := uint64(1); u <= n; u++ {
			f.send(int64(u)*10*us, u, readOp, 100, "cat")
			f.end(int64(u)*10*us+5*us, u)
		}
	}()
	go func() {
		defer wg.Done()
		for u := uint64(1); u <= n; u++ {
			f.rec(u, readOp, 5, (u-1)*4096, 4096, 100, int64(u)*10*us+1*us, 2*us)
			if u%100 == 0 {
				c.Sample(testStart+int64(u)*10*us, u*4096, 0)
			}
		}
	}()
	wg.Wait()
	c.Flush()
	if len(r.reqs) != n {
		t.Fatalf("%d requests, want %d", len(r.reqs), n)
	}
	for _, q := range r.reqs {
		if len(q.Missing) != 0 {
			t.Fatalf("request %d missing %v", q.Unique, q.Missing)
		}
	}
	if got := strings.Count(tl.String(), "\n"); got != n+1 {
		t.Errorf("%d timeline lines, want %d", got, n+1)
	}
	if len(r.samples) != n/100 {
		t.Errorf("%d samples", len(r.samples))
	}
}

// The kernel traces the syscalls of every process: only those of
// processes that caused requests on the mount, or that a request's cause
// is, reach the sink, each once, even when the request's record comes
// after the syscall's exit.
func TestSyscallEventsOfClientsOnly(t *testing.T) {
	t.Parallel()
	c, r, f := newTest(Options{})
	// An unrelated process closes files.
	f.syscall(1*ms, true, 700, "bash", "close")
	f.syscall(1*ms+1*us, false, 700, "bash", "close")
	// A client's msync whose WRITE was sent from the daemon's context and
	// whose record comes after the exit.
	f.syscall(2*ms, true, 300, "writer", "msync")
	f.send(2*ms+10*us, 1, writeOp, daemonTid, "mmapfs")
	f.end(2*ms+60*us, 1)
	f.syscall(2*ms+100*us, false, 300, "writer", "msync")
	if n := countEvents(r, EventSyscallEnter); n != 0 {
		t.Fatalf("%d syscall events before any request was the client's", n)
	}
	f.rec(1, writeOp, 9, 0, 4096, 300, 2*ms+20*us, 30*us)
	c.Tick(testStart + 200*ms)
	wantCause(t, r.byUnique(t, 1), "msync")
	// The writer is a client now: its next close shows without a request.
	f.syscall(3*ms, true, 300, "writer", "close")
	f.syscall(3*ms+5*us, false, 300, "writer", "close")
	f.syscall(4*ms, true, 700, "bash", "close")
	f.syscall(4*ms+1*us, false, 700, "bash", "close")
	c.Flush()
	var got []string
	for _, e := range r.evs {
		if e.Type == EventSyscallEnter || e.Type == EventSyscallExit {
			got = append(got, e.Type+" "+e.K.Syscall+" "+e.K.Comm)
		}
	}
	want := "syscall_enter msync writer,syscall_exit msync writer,syscall_enter close writer,syscall_exit close writer"
	if strings.Join(got, ",") != want {
		t.Errorf("syscall events %q, want %q", got, want)
	}
}

// A thread's process comes from the events' Tgid when the Mount has no
// Tgid func: a daemon thread's sends are background, the trace's threads'
// requests its own.
func TestTgidFromEvents(t *testing.T) {
	t.Parallel()
	r := &recorder{}
	m := testMount()
	m.Tgid = nil
	c := NewCollector(m, Options{Sink: r})
	f := feed{c}
	f.k(ktrace.Event{Kind: ktrace.RequestSend, Time: testStart + 1*ms, Pid: 905, Tgid: daemonPid, Comm: "mmapfs", Conn: testConn, Unique: 1, Opcode: getattrOp})
	f.end(1*ms+10*us, 1)
	f.rec(1, getattrOp, 9, 0, 0, 0, 1*ms+2*us, 3*us)
	f.k(ktrace.Event{Kind: ktrace.SyscallEnter, Time: testStart + 2*ms, Pid: 955, Tgid: tracePid, Comm: "mmapfs", Syscall: "close"})
	f.request(2*ms+1*us, 2, writeOp, 955, "mmapfs", 2, 0, 10, 955)
	c.Flush()
	if len(r.reqs) != 1 || !r.reqs[0].Background || r.reqs[0].Unique != 1 {
		t.Fatalf("requests %+v", r.reqs)
	}
	if s := c.Summary(); s.Own != 1 {
		t.Errorf("own %d", s.Own)
	}
}

func countEvents(r *recorder, typ string) int {
	n := 0
	for _, e := range r.evs {
		if e.Type == typ {
			n++
		}
	}
	return n
}

// With the Discard sink (--summary) the Collector makes no events but
// keeps the same summary.
func TestDiscardKeepsSummary(t *testing.T) {
	t.Parallel()
	c := NewCollector(testMount(), Options{})
	f := feed{c}
	f.ra(1*ms, false, 100, "cat", 5, 0, 32, 0, 0, 32, -1)
	f.k(ktrace.Event{Kind: ktrace.PageAdd, Time: testStart + 1*ms, Pid: 100, Dev: testConn, Ino: 5, Pages: 32})
	f.k(ktrace.Event{Kind: ktrace.Throttle, Time: testStart + 2*ms, Pid: 500, Comm: "dd", BDI: "0:52", Pause: 4 * ms})
	f.request(1*ms+5*us, 1, readOp, 100, "cat", 5, 0, 128<<10, 100)
	c.Flush()
	s := c.Summary()
	if s.Requests != 1 || s.Ops[0].Cause != "readahead-sync" || s.Layers[0].Added != 32 || len(s.Throttled) != 1 || len(s.Windows) != 1 {
		t.Errorf("summary %+v", s)
	}
}

// The sink sees requests and events in time order although the parts of
// a request came late; what waited past Reorder comes out of order.
func TestOrderedOutput(t *testing.T) {
	t.Parallel()
	c, r, f := newTest(Options{})
	var got []string
	f.send(1*ms, 1, readOp, 100, "cat")
	f.send(2*ms, 2, readOp, 100, "cat")
	f.end(3*ms, 2)
	f.rec(2, readOp, 5, 4096, 4096, 100, 2*ms, 10*us)
	f.k(ktrace.Event{Kind: ktrace.Throttle, Time: testStart + 4*ms, Pid: 500, Comm: "dd", BDI: "0:52", Pause: 1 * ms})
	f.end(5*ms, 1)
	f.rec(1, readOp, 5, 0, 4096, 100, 1*ms, 10*us)
	if len(r.reqs)+len(r.evs) != 0 {
		t.Fatalf("handed over before Reorder passed: %d requests, %d events", len(r.reqs), len(r.evs))
	}
	c.Tick(testStart + 104*ms)
	// Request 3 is sent now but its record comes after the Reorder.
	f.send(105*ms, 3, readOp, 100, "cat")
	f.end(106*ms, 3)
	f.k(ktrace.Event{Kind: ktrace.Throttle, Time: testStart + 150*ms, Pid: 500, Comm: "dd", BDI: "0:52", Pause: 1 * ms})
	c.Tick(testStart + 300*ms)
	f.rec(3, readOp, 5, 8192, 4096, 100, 105*ms, 10*us)
	c.Flush()
	for i := range r.reqs {
		got = append(got, fmt.Sprint(r.reqs[i].Unique))
	}
	if strings.Join(got, ",") != "1,2,3" {
		t.Errorf("requests in the order %v, want 1,2,3", got)
	}
	if len(r.evs) != 2 {
		t.Fatalf("%d events", len(r.evs))
	}
	// Merge what the sink saw into one sequence by arrival: the recorder
	// keeps them apart, so use a timeline.
	var tl strings.Builder
	c2, _, f2 := newTest(Options{Sink: NewTimeline(&tl, 0)})
	f2.send(1*ms, 1, readOp, 100, "cat")
	f2.send(2*ms, 2, readOp, 100, "cat")
	f2.end(3*ms, 2)
	f2.rec(2, readOp, 5, 4096, 4096, 100, 2*ms, 10*us)
	f2.k(ktrace.Event{Kind: ktrace.Throttle, Time: testStart + 4*ms, Pid: 500, Comm: "dd", BDI: "0:52", Pause: 1 * ms})
	f2.end(5*ms, 1)
	f2.rec(1, readOp, 5, 0, 4096, 100, 1*ms, 10*us)
	c2.Flush()
	lines := strings.Split(strings.TrimSpace(tl.String()), "\n")
	var kinds []string
	for _, l := range lines[1:] {
		kinds = append(kinds, strings.Fields(l)[0])
	}
	if strings.Join(kinds, " ") != "0.001000 0.002000 0.004000" {
		t.Errorf("timeline in the order %v:\n%s", kinds, tl.String())
	}
}

// The store's device holds other files than the store's: their page
// cache events are not the store's layer. A file is the store's when
// Names knows it or the daemon served it.
func TestStoreLayerOnlyStoreFiles(t *testing.T) {
	t.Parallel()
	c, r, f := newTest(Options{})
	add := func(at int64, ino uint64, pages uint32) {
		f.k(ktrace.Event{Kind: ktrace.PageAdd, Time: testStart + at, Pid: 1, Comm: "x", Dev: testStoreDev, Ino: ino, Pages: pages})
	}
	add(1*ms, 5, 4)    // big.bin: Names knows it
	add(2*ms, 77, 100) // not the store's
	add(3*ms, 42, 8)   // unknown yet
	f.request(4*ms, 1, readOp, 100, "cat", 42, 0, 4096, 100)
	add(5*ms, 42, 16) // served by the daemon: the store's
	c.Flush()
	s := c.Summary()
	if st := s.Layers[1]; st.Added != 20 || len(st.Files) != 2 {
		t.Errorf("store layer %+v, want 20 pages of inodes 5 and 42", st)
	}
	if n := countEvents(r, EventPageAdd); n != 2 {
		t.Errorf("%d page_add events, want 2", n)
	}
}

// A request's cause is decided when its last part comes, which may be
// after many more events (a client writing through a mapping faults on
// every page once its READ is answered, before the daemon's record of it
// arrives): the history the cause needs must still be there.
func TestCauseAfterManyLaterEvents(t *testing.T) {
	t.Parallel()
	c, r, f := newTest(Options{})
	f.fault(1*ms, 200, "mapper", 7, 0)
	f.send(1*ms+70*us, 1, readOp, 200, "mapper")
	f.end(1*ms+800*us, 1)
	for i := uint64(1); i <= 300; i++ {
		f.fault(1*ms+800*us+int64(i)*us, 200, "mapper", 7, i%32)
	}
	// The flusher starts and ends many writebacks meanwhile too.
	f.k(ktrace.Event{Kind: ktrace.WritebackStart, Time: testStart + 2*ms, Pid: kworkerPid, Comm: "kworker/u8:2", BDI: "0:52", Reason: "background"})
	f.send(2*ms+10*us, 2, writeOp, daemonTid, "mmapfs")
	f.end(2*ms+50*us, 2)
	for i := int64(0); i < 40; i++ {
		f.k(ktrace.Event{Kind: ktrace.WritebackEnd, Time: testStart + 3*ms + 2*i*us, Pid: kworkerPid, Comm: "kworker/u8:2", BDI: "0:52", Reason: "background"})
		f.k(ktrace.Event{Kind: ktrace.WritebackStart, Time: testStart + 3*ms + (2*i+1)*us, Pid: kworkerPid, Comm: "kworker/u8:2", BDI: "0:52", Reason: "periodic"})
	}
	f.rec(1, readOp, 7, 0, 128<<10, 200, 1*ms+80*us, 600*us)
	f.rec(2, writeOp, 7, 0, 4096, 0, 2*ms+20*us, 10*us)
	c.Flush()
	if q := r.byUnique(t, 1); describeCause(q) != "fault p0 around ra 0+32p (async 8)" {
		t.Errorf("request 1: cause %q, want the fault at page 0", describeCause(q))
	}
	if q := r.byUnique(t, 2); q.CauseLabel() != "writeback (background)" || q.TaskPid != kworkerPid {
		t.Errorf("request 2: cause %q task %d, want the flusher's background writeback", q.CauseLabel(), q.TaskPid)
	}
}

// The histories are bounded: by time when nothing pending needs them,
// by maxHistory entries in a flood (counted as dropped).
func TestHistoryBounds(t *testing.T) {
	t.Parallel()
	c, _, f := newTest(Options{})
	for i := 0; i < maxHistory+1000; i++ {
		f.fault(int64(i), 200, "mapper", 7, uint64(i))
	}
	c.mu.Lock()
	n, dropped := c.histLen, c.stats.historyDropped
	c.mu.Unlock()
	if n > maxHistory || dropped == 0 {
		t.Errorf("after a flood: %d entries (bound %d), %d dropped", n, maxHistory, dropped)
	}
	// 2 s later, with nothing pending, all of it is past the horizon.
	c.Tick(testStart + 2100*ms)
	c.mu.Lock()
	n, inodes := c.histLen, len(c.inodes)
	c.mu.Unlock()
	if n != 0 || inodes != 0 {
		t.Errorf("2 s later: %d entries of %d files kept", n, inodes)
	}
	var b strings.Builder
	s := c.Summary()
	if err := s.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "history full: ") {
		t.Errorf("summary does not say the history was full:\n%s", b.String())
	}
}

// A request pending for long keeps the history from its send on.
func TestHistoryKeptForPending(t *testing.T) {
	t.Parallel()
	c, r, f := newTest(Options{})
	f.fault(1*ms, 200, "mapper", 7, 5)
	f.send(1*ms+10*us, 1, readOp, 200, "mapper")
	// A slow daemon: the answer comes 5 s later, with events meanwhile.
	for i := int64(1); i <= 50; i++ {
		f.k(ktrace.Event{Kind: ktrace.SyscallEnter, Time: testStart + i*100*ms, Pid: 7, Comm: "x", Syscall: "sync"})
	}
	f.end(5*1000*ms, 1)
	f.rec(1, readOp, 7, 0, 128<<10, 200, 1*ms+20*us, 5*1000*ms)
	c.Flush()
	if q := r.byUnique(t, 1); q.Cause != "fault" || q.FaultPage != 5 {
		t.Errorf("request 1: cause %q page %d, want the fault at page 5", q.Cause, q.FaultPage)
	}
}

// The kernel's own WRITEs with no writeback of the mount's BDI in the
// history (long before, or never seen) are plain writeback.
func TestWritebackWithoutPass(t *testing.T) {
	t.Parallel()
	c, r, f := newTest(Options{})
	f.request(1*ms, 1, writeOp, daemonTid, "mmapfs", 9, 0, 4096, 0)
	f.request(2*ms, 2, writeOp, 300, "writer", 9, 0, 4096, 0)
	f.k(ktrace.Event{Kind: ktrace.WritebackStart, Time: testStart + 3*ms, Pid: kworkerPid, Comm: "kworker/u8:2", BDI: "0:52", Reason: "background"})
	f.k(ktrace.Event{Kind: ktrace.WritebackEnd, Time: testStart + 4*ms, Pid: kworkerPid, Comm: "kworker/u8:2", BDI: "0:52", Reason: "background"})
	f.request(3*1000*ms, 3, writeOp, daemonTid, "mmapfs", 9, 0, 4096, 0)
	c.Flush()
	for u := uint64(1); u <= 3; u++ {
		wantCause(t, r.byUnique(t, u), "writeback")
	}
}

// A request the trace saw only the end of (sent before it began) is
// shown at its end.
func TestEndOnly(t *testing.T) {
	t.Parallel()
	c, r, f := newTest(Options{})
	f.end(7*ms, 1)
	c.Flush()
	if q := r.byUnique(t, 1); q.Rel != 7*ms || strings.Join(q.Missing, ",") != "send,daemon" {
		t.Errorf("request 1: at %d, missing %v", q.Rel, q.Missing)
	}
}

// The kernel's stream lags the daemon's (the trace pipe is read slower
// than the records come): however far ahead the records run, a request
// waits for its kernel events, and is joined whole when they come.
func TestKernelStreamLags(t *testing.T) {
	t.Parallel()
	c, r, f := newTest(Options{})
	f.rec(1, readOp, 5, 0, 4096, 100, 1*ms, 100*us)
	for i := uint64(0); i < 50; i++ {
		f.rec(100+i, getattrOp, 5, 0, 0, 100, int64(i)*100*ms, 10*us)
	}
	f.send(1*ms-10*us, 1, readOp, 100, "cat")
	f.end(1*ms+200*us, 1)
	c.Flush()
	q := r.byUnique(t, 1)
	if len(q.Missing) != 0 || q.Latency != 210*us {
		t.Errorf("request 1 split or incomplete: missing %v, latency %d", q.Missing, q.Latency)
	}
	for _, q := range r.reqs {
		if q.Unique == 1 && len(q.Missing) > 0 {
			t.Errorf("request 1 emitted twice: %+v", r.reqs)
		}
	}
}

// A file made during the trace is unknown to Names until it next walks
// the store, which it does only so often (mmapfs trace: not more than a
// twentieth of the time): a request or mount event whose name Names did
// not know when it was joined is named when it reaches the sink, held
// Options.Reorder later, or at Flush, if Names knows it by then. (Under
// --transport uring, the msync's WRITEs of a file just made reached the
// sink with no name.)
func TestNameLearnedLater(t *testing.T) {
	t.Parallel()
	var known atomic.Bool // Names has walked the store since the file was made
	m := testMount()
	m.Names = func(ino uint64) string {
		if ino == 11 && known.Load() {
			return "made.bin"
		}
		return ""
	}
	r := &recorder{}
	c := NewCollector(m, Options{Sink: r})
	f := feed{c}
	// Joined while Names does not know inode 11 yet.
	f.request(1*ms, 1, writeOp, 100, "mapper", 11, 0, 4096, 0)
	f.k(ktrace.Event{Kind: ktrace.PageAdd, Time: testStart + 1*ms + 20*us, Pid: 100, Comm: "mapper", Dev: testConn, Ino: 11, Pages: 1})
	f.request(2*ms, 2, writeOp, 100, "mapper", 11, 4096, 4096, 0)
	if len(r.reqs) != 0 {
		t.Fatalf("requests reached the sink before Options.Reorder: %+v", r.reqs)
	}
	known.Store(true) // a walk found it
	// Event time passes 1 ms + Reorder: requests 1 and 2 and the
	// page_add go to the sink.
	f.request(300*ms, 3, writeOp, 100, "mapper", 11, 8192, 4096, 0)
	if len(r.reqs) < 2 {
		t.Fatalf("requests 1 and 2 not yet at the sink: %+v", r.reqs)
	}
	known.Store(false) // renamed, say, and not walked since
	f.request(301*ms, 4, writeOp, 100, "mapper", 11, 12288, 4096, 0)
	known.Store(true) // the walk at the end (storeNames.refresh)
	c.Flush()
	for u := uint64(1); u <= 4; u++ {
		if q := r.byUnique(t, u); q.File != "made.bin" {
			t.Errorf("request %d (%s at %d ms): file %q, want made.bin", u, q.Op, q.Rel/ms, q.File)
		}
	}
	var adds int
	for _, e := range r.evs {
		if e.Type == EventPageAdd && e.Layer == layerMount {
			adds++
			if e.File != "made.bin" {
				t.Errorf("the mount's page_add of inode 11: file %q, want made.bin", e.File)
			}
		}
	}
	if adds != 1 {
		t.Errorf("%d page_add events of the mount, want 1: %+v", adds, r.evs)
	}
}
