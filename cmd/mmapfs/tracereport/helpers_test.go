package tracereport

import (
	"testing"

	"github.com/mmapfs/mmapfs/cmd/mmapfs/ktrace"
	"github.com/mmapfs/mmapfs/fs/wire"
)

// The synthetic mount of the tests.
var (
	testConn     = ktrace.KernelDev(0, 52)
	testStoreDev = ktrace.KernelDev(8, 1)
)

const (
	testStart  = int64(1_000_000_000)
	daemonPid  = 900
	daemonTid  = 901 // a thread of the daemon
	tracePid   = 950
	traceTid   = 951
	us         = int64(1000)
	ms         = int64(1000_000)
	readOp     = 15
	writeOp    = 16
	flushOp    = 25
	fsyncOp    = 20
	getattrOp  = 3
	kworkerPid = 50
)

func testMount() Mount {
	return Mount{
		Conn: testConn, MountDev: testConn, StoreDev: testStoreDev,
		BDI: "0:52", StoreBDI: "8:1",
		DaemonPid: daemonPid, TracePid: tracePid,
		Names: func(ino uint64) string {
			return map[uint64]string{5: "big.bin", 7: "mapped.bin", 9: "out.bin"}[ino]
		},
		Comm: func(pid int) string { return map[int]string{300: "writer"}[pid] },
		Tgid: func(tid int) int {
			switch tid {
			case daemonTid:
				return daemonPid
			case traceTid:
				return tracePid
			}
			return tid
		},
		RAPages: 32,
		Start:   testStart,
	}
}

// recorder is a Sink that keeps everything.
type recorder struct {
	reqs    []*Request
	evs     []*Event
	samples []*Sample
	flushes int
}

func (r *recorder) Request(x *Request) { r.reqs = append(r.reqs, x) }
func (r *recorder) Event(e *Event)     { r.evs = append(r.evs, e) }
func (r *recorder) Sample(s *Sample)   { r.samples = append(r.samples, s) }
func (r *recorder) Flush()             { r.flushes++ }

// byUnique finds a request.
func (r *recorder) byUnique(t *testing.T, u uint64) *Request {
	t.Helper()
	for _, x := range r.reqs {
		if x.Unique == u {
			return x
		}
	}
	t.Fatalf("request %d not emitted; have %d requests", u, len(r.reqs))
	return nil
}

// feed is a synthetic trace: it hands events and records to a Collector.
type feed struct {
	c *Collector
}

func (f feed) k(e ktrace.Event) { f.c.Kernel(&e) }

func (f feed) send(t int64, unique uint64, op uint32, pid int, comm string) {
	f.k(ktrace.Event{Kind: ktrace.RequestSend, Time: testStart + t, Pid: pid, Comm: comm, Conn: testConn, Unique: unique, Opcode: op, Len: 80})
}

func (f feed) end(t int64, unique uint64) {
	f.k(ktrace.Event{Kind: ktrace.RequestEnd, Time: testStart + t, Pid: daemonTid, Comm: "mmapfs", Conn: testConn, Unique: unique})
}

func (f feed) rec(unique uint64, op uint32, ino, off uint64, length uint32, pid int, start, service int64) {
	f.c.Daemon(&wire.TraceRecord{Unique: unique, NodeID: ino + 100, Ino: ino, Offset: off, Length: length, Opcode: op,
		Start: testStart + start, Service: service, Pid: uint32(pid), Result: length})
}

// request sends, serves and ends one request, all parts in order.
func (f feed) request(t int64, unique uint64, op uint32, pid int, comm string, ino, off uint64, length uint32, recPid int) {
	f.send(t, unique, op, pid, comm)
	f.rec(unique, op, ino, off, length, recPid, t+10*us, 30*us)
	f.end(t+50*us, unique)
}

// ra is a readahead event as the kernel gives it: the asking page and
// count, and the file's readahead state before (size, async size, max,
// previous position).
func (f feed) ra(t int64, async bool, pid int, comm string, ino, index, req uint64, size, asyncSize, raPages uint32, prevPos int64) {
	k := ktrace.SyncReadahead
	if async {
		k = ktrace.AsyncReadahead
	}
	f.k(ktrace.Event{Kind: k, Time: testStart + t, Pid: pid, Comm: comm, Dev: testConn, Ino: ino, Index: index, ReqCount: req,
		Size: size, AsyncSize: asyncSize, RAPages: raPages, PrevPos: prevPos})
}

func (f feed) fault(t int64, pid int, comm string, ino, index uint64) {
	f.k(ktrace.Event{Kind: ktrace.Fault, Time: testStart + t, Pid: pid, Comm: comm, Dev: testConn, Ino: ino, Index: index, Pages: 1})
}

func (f feed) syscall(t int64, enter bool, pid int, comm, name string) {
	k := ktrace.SyscallExit
	if enter {
		k = ktrace.SyscallEnter
	}
	f.k(ktrace.Event{Kind: k, Time: testStart + t, Pid: pid, Comm: comm, Syscall: name})
}

func newTest(opts Options) (*Collector, *recorder, feed) {
	r := &recorder{}
	if opts.Sink == nil {
		opts.Sink = r
	} else {
		opts.Sink = Tee{r, opts.Sink}
	}
	c := NewCollector(testMount(), opts)
	return c, r, feed{c}
}

func wantCause(t *testing.T, r *Request, cause string) {
	t.Helper()
	if got := r.CauseLabel(); got != cause {
		t.Errorf("request %d (%s at %d): cause %q, want %q", r.Unique, r.Op, r.Rel, got, cause)
	}
}
