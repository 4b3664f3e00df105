package fs

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"log"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/mmapfs/mmapfs/fs/wire"
)

// traceReader is a tracer's end of a daemon's socket, as a test reads it.
type traceReader struct {
	t     *testing.T
	ln    *net.UnixListener
	conn  *net.UnixConn
	r     *bufio.Reader
	hello wire.TraceHello
}

// listenTrace listens on a unix socket in a new temporary directory.
func listenTrace(t *testing.T) (*net.UnixListener, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "trace.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln, path
}

// connectTrace asks m for a trace on a new socket through the control
// file, accepts the daemon's connection and reads the hello.
func connectTrace(t *testing.T, m *mountState) *traceReader {
	t.Helper()
	ln, path := listenTrace(t)
	_, errno, r := ask(t, m, wire.ControlTrace+" "+path+"\n")
	if errno != 0 || r.Error != "" {
		t.Fatalf("trace %s: %v, %q", path, errno, r.Error)
	}
	if err := ln.SetDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	conn, err := ln.AcceptUnix()
	if err != nil {
		t.Fatalf("accepting the daemon's connection: %v", err)
	}
	t.Cleanup(func() { conn.Close() })
	tr := &traceReader{t: t, ln: ln, conn: conn, r: bufio.NewReader(conn)}
	if err := conn.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	line, err := tr.r.ReadBytes('\n')
	if err != nil {
		t.Fatalf("reading the hello: %v", err)
	}
	if err := json.Unmarshal(line, &tr.hello); err != nil {
		t.Fatalf("the hello %q: %v", line, err)
	}
	return tr
}

// next reads the next record, failing the test after 5 s.
func (tr *traceReader) next() wire.TraceRecord {
	tr.t.Helper()
	rec, err := tr.read()
	if err != nil {
		tr.t.Fatalf("reading a record: %v", err)
	}
	return rec
}

func (tr *traceReader) read() (wire.TraceRecord, error) {
	var rec wire.TraceRecord
	if err := tr.conn.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
		return rec, err
	}
	b := make([]byte, wire.TraceRecordSize)
	if _, err := io.ReadFull(tr.r, b); err != nil {
		return rec, err
	}
	return rec, rec.UnmarshalBinary(b)
}

// until reads records until one of opcode comes, and returns it.
func (tr *traceReader) until(opcode uint32) wire.TraceRecord {
	tr.t.Helper()
	for {
		if rec := tr.next(); rec.Opcode == opcode {
			return rec
		}
	}
}

// monoNow is CLOCK_MONOTONIC now, in ns.
func monoNow(t *testing.T) int64 {
	t.Helper()
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		t.Fatal(err)
	}
	return ts.Nano()
}

// traced is a request header as the kernel sends it.
func traced(node, unique uint64, opcode uint32) fuse.InHeader {
	h := header(node)
	h.Unique, h.Opcode = unique, opcode
	return h
}

// The FUSE opcodes of fuse.h the tests send.
const (
	opcodeGetattr = 3
	opcodeOpen    = 14
	opcodeRead    = 15
	opcodeWrite   = 16
	opcodeRelease = 18
	opcodeFsync   = 20
	opcodeFlush   = 25
	opcodeCreate  = 35
)

// TestTraceRecordsThroughTree: with a tracer connected through the
// control file, a create, write, fsync, read of a cold file and a getattr
// served by the node tree each come as a record with the request's id,
// node, opcode, caller, range and answer, the store's inode number, the
// cold pages the read faulted in and the fsync's msyncs; the hello names
// the daemon and the store.
func TestTraceRecordsThroughTree(t *testing.T) {
	t.Parallel()
	tt := newTestTree(t, DefaultOptions())
	tr := connectTrace(t, tt.m)
	var st unix.Stat_t
	if err := unix.Stat(tt.store, &st); err != nil {
		t.Fatal(err)
	}
	if tr.hello.Pid != os.Getpid() || tr.hello.Store != tt.m.store.Root() || tr.hello.StoreDev != st.Dev || tr.hello.Clock != "monotonic" {
		t.Errorf("hello %+v; want pid %d, store %s, dev %d, clock monotonic", tr.hello, os.Getpid(), tt.m.store.Root(), st.Dev)
	}
	cancel := make(chan struct{})
	before := monoNow(t)

	var cout fuse.CreateOut
	ch := traced(fuse.FUSE_ROOT_ID, 100, opcodeCreate)
	if s := tt.raw.Create(cancel, &fuse.CreateIn{InHeader: ch, Flags: uint32(os.O_RDWR), Mode: 0o644}, "f", &cout); s != fuse.OK {
		t.Fatalf("CREATE f: %v", s)
	}
	data := bytes.Repeat([]byte("x"), 3*4096)
	wh := traced(cout.NodeId, 101, opcodeWrite)
	if n, s := tt.raw.Write(cancel, &fuse.WriteIn{InHeader: wh, Fh: cout.Fh, Offset: 4096, Size: uint32(len(data))}, data); s != fuse.OK || int(n) != len(data) {
		t.Fatalf("WRITE: %d, %v", n, s)
	}
	if s := tt.raw.Fsync(cancel, &fuse.FsyncIn{InHeader: traced(cout.NodeId, 102, opcodeFsync), Fh: cout.Fh}); s != fuse.OK {
		t.Fatalf("FSYNC: %v", s)
	}
	tt.raw.Release(cancel, &fuse.ReleaseIn{InHeader: traced(cout.NodeId, 103, opcodeRelease), Fh: cout.Fh})

	// A cold file: written behind the mount, out of the page cache.
	cold := filepath.Join(tt.store, "cold")
	if err := os.WriteFile(cold, bytes.Repeat([]byte("c"), 64*4096), 0o644); err != nil {
		t.Fatal(err)
	}
	dropPageCache(t, cold)
	var coldSt unix.Stat_t
	if err := unix.Stat(cold, &coldSt); err != nil {
		t.Fatal(err)
	}
	e := lookup(t, tt.raw, "cold")
	var oout fuse.OpenOut
	if s := tt.raw.Open(cancel, &fuse.OpenIn{InHeader: traced(e.NodeId, 104, opcodeOpen), Flags: uint32(os.O_RDONLY)}, &oout); s != fuse.OK {
		t.Fatalf("OPEN cold: %v", s)
	}
	buf := make([]byte, 8*4096)
	res, s := tt.raw.Read(cancel, &fuse.ReadIn{InHeader: traced(e.NodeId, 105, opcodeRead), Fh: oout.Fh, Offset: 8 * 4096, Size: uint32(len(buf))}, buf)
	if s != fuse.OK || res.Size() != len(buf) {
		t.Fatalf("READ cold: %v, %d bytes", s, res.Size())
	}
	var aout fuse.AttrOut
	if s := tt.raw.GetAttr(cancel, &fuse.GetAttrIn{InHeader: traced(e.NodeId, 106, opcodeGetattr)}, &aout); s != fuse.OK {
		t.Fatalf("GETATTR cold: %v", s)
	}
	if s := tt.raw.Flush(cancel, &fuse.FlushIn{InHeader: traced(e.NodeId, 107, opcodeFlush), Fh: oout.Fh}); s != fuse.OK {
		t.Fatalf("FLUSH cold: %v", s)
	}
	tt.raw.Release(cancel, &fuse.ReleaseIn{InHeader: traced(e.NodeId, 108, opcodeRelease), Fh: oout.Fh})
	after := monoNow(t)

	var fSt unix.Stat_t
	if err := unix.Stat(filepath.Join(tt.store, "f"), &fSt); err != nil {
		t.Fatal(err)
	}
	pid := uint32(os.Getpid())
	want := []wire.TraceRecord{
		{Unique: 100, NodeID: fuse.FUSE_ROOT_ID, Opcode: opcodeCreate, Pid: pid},
		{Unique: 101, NodeID: cout.NodeId, Ino: fSt.Ino, Opcode: opcodeWrite, Offset: 4096, Length: uint32(len(data)), Result: uint32(len(data)), Pid: pid},
		{Unique: 102, NodeID: cout.NodeId, Ino: fSt.Ino, Opcode: opcodeFsync, Pid: pid, Msyncs: 2, MsyncBytes: uint64(len(data))},
		{Unique: 103, NodeID: cout.NodeId, Ino: fSt.Ino, Opcode: opcodeRelease, Pid: pid},
		{Unique: 104, NodeID: e.NodeId, Opcode: opcodeOpen, Pid: pid},
		{Unique: 105, NodeID: e.NodeId, Ino: coldSt.Ino, Opcode: opcodeRead, Offset: 8 * 4096, Length: uint32(len(buf)), Result: uint32(len(buf)), Pid: pid, FaultPages: 8},
		{Unique: 106, NodeID: e.NodeId, Ino: coldSt.Ino, Opcode: opcodeGetattr, Pid: pid},
		{Unique: 107, NodeID: e.NodeId, Ino: coldSt.Ino, Opcode: opcodeFlush, Pid: pid},
		{Unique: 108, NodeID: e.NodeId, Ino: coldSt.Ino, Opcode: opcodeRelease, Pid: pid},
	}
	// lookup's LOOKUP, made with a nil cancel and no opcode, comes
	// between; skip what the test did not number.
	for _, w := range want {
		var got wire.TraceRecord
		for got = tr.next(); got.Unique == 0; got = tr.next() {
		}
		if got.Start < before || got.Start > after || got.Service <= 0 || got.Start+got.Service > after {
			t.Errorf("request %d: start %d, service %d ns; want within [%d, %d]", w.Unique, got.Start, got.Service, before, after)
		}
		got.Start, got.Service = 0, 0
		if got != w {
			t.Errorf("record of request %d:\n got %+v\nwant %+v", w.Unique, got, w)
		}
	}
}

// dropPageCache writes the file at path out and drops its pages from the
// page cache.
func dropPageCache(t testing.TB, path string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
		t.Fatalf("fadvise DONTNEED %s: %v", path, err)
	}
}

// newBareTracer is a tracer of rt, listed as connected, whose goroutines
// do not run until startBare: what is pushed stays in its ring. The
// peer's end of its socket is returned.
func newBareTracer(t *testing.T, rt *reqTracer, ring int) (*tracer, *net.UnixConn) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fds[1]), "socketpair")
	c, err := net.FileConn(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	peer := c.(*net.UnixConn)
	t.Cleanup(func() { peer.Close() })
	tr := newTracer(rt, fds[0], "socketpair", ring)
	rt.mu.Lock()
	var list []*tracer
	if old := rt.tracers.Load(); old != nil {
		list = append(list, *old...)
	}
	list = append(list, tr)
	rt.tracers.Store(&list)
	rt.mu.Unlock()
	return tr, peer
}

// startBare starts the goroutines a connect starts for tr; they close
// its socket once it is dropped.
func startBare(rt *reqTracer, tr *tracer) {
	rt.wg.Add(2)
	go tr.drain()
	go tr.watch()
}

// TestTraceRecordingAllocatesNothing: beginning, looking up, noting and
// ending a request's record with a tracer connected allocates nothing,
// with room in the ring and with the ring full; with no tracer, nothing
// either (not parallel: counting allocations needs the process to
// itself).
func TestTraceRecordingAllocatesNothing(t *testing.T) {
	tt := newTestTree(t, DefaultOptions())
	if err := os.WriteFile(filepath.Join(tt.store, "f"), make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	b, err := tt.m.store.Open("f", os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := tt.m.store.Release(b); err != nil {
			t.Error(err)
		}
	}()
	rt := newReqTracer(log.New(io.Discard, "", 0), 64)
	cancel := make(chan struct{})
	ctx := &fuse.Context{Cancel: cancel}
	h := traced(5, 1, opcodeRead)
	record := func() {
		rq := rt.begin(cancel, &h, time.Now())
		cur := rt.current(ctx)
		cur.enter(rt, b, 4096, 32*4096)
		rq.span(4096, 32*4096)
		cur.leave()
		rt.end(rq, fuse.OK, 32*4096)
	}
	if a := testing.AllocsPerRun(100, record); a != 0 {
		t.Errorf("with no tracer, a request allocates %.1f times for its record, want 0", a)
	}
	tr, _ := newBareTracer(t, rt, 1000)
	if a := testing.AllocsPerRun(500, record); a != 0 {
		t.Errorf("with a tracer, a request allocates %.1f times for its record, want 0", a)
	}
	if a := testing.AllocsPerRun(1000, record); a != 0 {
		t.Errorf("with a tracer whose ring is full, a request allocates %.1f times for its record, want 0", a)
	}
	tr.mu.Lock()
	n, dropped := tr.n, tr.dropped
	tr.mu.Unlock()
	if n != 1000 || dropped != 502 {
		t.Errorf("ring of 1000 after 1502 records: %d kept, %d dropped; want 1000, 502", n, dropped)
	}
	startBare(rt, tr)
	tr.drop(errors.New("test over"), false)
	rt.wg.Wait()

	// A whole READ through the tree allocates what go-fuse's bridge
	// does (its Context, the ReadResult), no more when traced.
	e := lookup(t, tt.raw, "f")
	var oout fuse.OpenOut
	if s := tt.raw.Open(nil, &fuse.OpenIn{InHeader: header(e.NodeId), Flags: uint32(os.O_RDONLY)}, &oout); s != fuse.OK {
		t.Fatalf("OPEN f: %v", s)
	}
	buf := make([]byte, 4096)
	in := &fuse.ReadIn{InHeader: traced(e.NodeId, 2, opcodeRead), Fh: oout.Fh, Size: 4096}
	read := func() {
		if _, s := tt.raw.Read(cancel, in, buf); s != fuse.OK {
			t.Fatalf("READ f: %v", s)
		}
	}
	untraced := testing.AllocsPerRun(100, read)
	ttr, _ := newBareTracer(t, tt.m.trace, 1000)
	if a := testing.AllocsPerRun(500, read); a != untraced {
		t.Errorf("a READ through the tree allocates %.1f times traced, %.1f untraced", a, untraced)
	}
	startBare(tt.m.trace, ttr)
	ttr.drop(errors.New("test over"), false)
	tt.m.trace.wg.Wait()
	tt.raw.Release(nil, &fuse.ReleaseIn{InHeader: header(e.NodeId), Fh: oout.Fh})
}

// TestTraceDropsCounted: a tracer's ring that is full drops records and
// counts them; the drop record comes where they would have, with the
// count and their span, and the records on both sides of it are whole.
func TestTraceDropsCounted(t *testing.T) {
	t.Parallel()
	rt := newReqTracer(log.New(io.Discard, "", 0), 4)
	tr, peer := newBareTracer(t, rt, 4)
	rec := func(u uint64) *wire.TraceRecord {
		return &wire.TraceRecord{Unique: u, Opcode: opcodeRead, Start: int64(1000 * u), Service: 10}
	}
	for u := uint64(1); u <= 10; u++ { // 1-4 kept, 5-10 dropped
		tr.push(rec(u))
	}
	startBare(rt, tr)
	r := &traceReader{t: t, conn: peer, r: bufio.NewReader(peer)}
	for u := uint64(1); u <= 4; u++ {
		if got := r.next(); got != *rec(u) {
			t.Errorf("record %d: %+v, want %+v", u, got, *rec(u))
		}
	}
	want := wire.TraceRecord{Opcode: wire.TraceDropped, Result: 6, Start: 5000, Service: 10000 + 10 - 5000}
	if got := r.next(); got != want {
		t.Errorf("after the ring's 4 records: %+v, want the drop record %+v", got, want)
	}
	tr.push(rec(11))
	if got := r.next(); got != *rec(11) {
		t.Errorf("after the drop record: %+v, want record 11", got)
	}
	tr.drop(errors.New("test over"), false)
	rt.wg.Wait()
	if rt.on() {
		t.Error("the last tracer dropped, recording is still on")
	}
}

// TestTraceTwoTracers: two tracers each get every record; when one goes,
// the other still does; when both have gone, recording stops.
func TestTraceTwoTracers(t *testing.T) {
	t.Parallel()
	tt := newTestTree(t, DefaultOptions())
	a, b := connectTrace(t, tt.m), connectTrace(t, tt.m)
	var out fuse.AttrOut
	getattr := func(unique uint64) {
		if s := tt.raw.GetAttr(nil, &fuse.GetAttrIn{InHeader: traced(fuse.FUSE_ROOT_ID, unique, opcodeGetattr)}, &out); s != fuse.OK {
			t.Fatalf("GETATTR /: %v", s)
		}
	}
	getattr(1)
	for name, r := range map[string]*traceReader{"first": a, "second": b} {
		if got := r.next(); got.Unique != 1 || got.Opcode != opcodeGetattr || got.NodeID != fuse.FUSE_ROOT_ID || got.Ino != out.Ino {
			t.Errorf("%s tracer: %+v, want GETATTR 1 of the root (ino %d)", name, got, out.Ino)
		}
	}
	a.conn.Close()
	waitFor(t, "the first tracer dropped", func() bool { return len(*tt.m.trace.tracers.Load()) == 1 })
	getattr(2)
	if got := b.next(); got.Unique != 2 {
		t.Errorf("second tracer, once the first left: %+v, want GETATTR 2", got)
	}
	b.conn.Close()
	waitFor(t, "recording stopped", func() bool { return !tt.m.trace.on() })
	tt.m.trace.wg.Wait()
	if logs := tt.logs.String(); strings.Count(logs, "trace: tracer at ") != 2 {
		t.Errorf("log: %q; want one line for each tracer gone", logs)
	}
}

// waitFor polls cond for up to 5 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("after 5 s, not %s", what)
		}
	}
}

// TestTraceCloseFlushes: at unmount (reqTracer.close) a tracer gets what
// its ring holds, then the end of the stream, and no tracer can connect.
func TestTraceCloseFlushes(t *testing.T) {
	t.Parallel()
	tt := newTestTree(t, DefaultOptions())
	r := connectTrace(t, tt.m)
	list := *tt.m.trace.tracers.Load()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for u := uint64(1); u <= 100; u++ {
			list[0].push(&wire.TraceRecord{Unique: u, Opcode: opcodeRead})
		}
	}()
	wg.Wait()
	tt.m.trace.close()
	for u := uint64(1); u <= 100; u++ {
		if got := r.next(); got.Unique != u {
			t.Fatalf("record %d after the unmount: %+v", u, got)
		}
	}
	if _, err := r.read(); !errors.Is(err, io.EOF) {
		t.Errorf("after the last record: %v, want EOF", err)
	}
	_, path := listenTrace(t)
	if _, errno, rep := ask(t, tt.m, "trace "+path); errno != syscall.ESHUTDOWN || !strings.Contains(rep.Error, "going away") {
		t.Errorf("trace after the unmount: %v, %q; want ESHUTDOWN", errno, rep.Error)
	}
}

// TestTraceRequestErrors: a trace request to no socket, a file that is no
// socket, a socket nobody listens on, a datagram socket, a relative path
// or none is refused with the errno and a message naming the path.
func TestTraceRequestErrors(t *testing.T) {
	t.Parallel()
	m := newTestTree(t, DefaultOptions()).m
	dir := t.TempDir()
	regular := filepath.Join(dir, "regular")
	if err := os.WriteFile(regular, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	dead := filepath.Join(dir, "dead.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: dead, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close()
	dgram := filepath.Join(dir, "dgram.sock")
	pc, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: dgram, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	for _, c := range []struct {
		req   string
		errno syscall.Errno
		says  string
	}{
		{"trace " + filepath.Join(dir, "missing"), syscall.ENOENT, "no socket " + filepath.Join(dir, "missing")},
		{"trace " + regular, syscall.ENOTSOCK, regular + " is not a socket (it is a regular file)"},
		{"trace " + dir, syscall.ENOTSOCK, dir + " is not a socket (it is a directory)"},
		{"trace " + dead, syscall.ECONNREFUSED, dead + " refused the connection"},
		{"trace " + dgram, syscall.EPROTOTYPE, dgram + " is not a stream socket"},
		{"trace sock", syscall.EINVAL, `"sock" is not absolute`},
		{"trace", syscall.EINVAL, "no socket given"},
	} {
		_, errno, r := ask(t, m, c.req)
		if errno != c.errno || !strings.Contains(r.Error, c.says) {
			t.Errorf("%q: %v, %q; want %v and %q", c.req, errno, r.Error, c.errno, c.says)
		}
	}
	if m.trace.on() {
		t.Error("a refused trace left recording on")
	}
}

// TestTracePath: the socket path is what follows "trace " as written,
// spaces inside kept, echo's newline not.
func TestTracePath(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"trace /a/b\n":     "/a/b",
		"  trace /a  b \n": "/a  b",
		"trace\t/x":        "/x",
		"trace":            "",
		"trace \n":         "",
	} {
		if got, ok := tracePath(in); !ok || got != want {
			t.Errorf("tracePath(%q) = %q, %v; want %q", in, got, ok, want)
		}
	}
	for _, in := range []string{"tracer /x", "powercut", "", "x trace /y"} {
		if got, ok := tracePath(in); ok {
			t.Errorf("tracePath(%q) = %q, a trace request; want none", in, got)
		}
	}
}

// BenchmarkTreeRead is a 4 KiB READ served by the node tree (no kernel,
// no mount), with no tracer ("off") and with one connected that discards
// the records ("on"): the daemon's own cost of recording a request.
func BenchmarkTreeRead(b *testing.B) {
	for _, on := range []bool{false, true} {
		b.Run(map[bool]string{false: "off", true: "on"}[on], func(b *testing.B) {
			opts := DefaultOptions()
			opts.Logger = log.New(io.Discard, "", 0)
			m, raw, in := treeReadSetup(b, opts)
			if on {
				ln, path := listenBench(b)
				if _, err := m.traceRequest("trace", path); err != nil {
					b.Fatal(err)
				}
				conn, err := ln.Accept()
				if err != nil {
					b.Fatal(err)
				}
				defer conn.Close()
				go io.Copy(io.Discard, conn)
			}
			cancel := make(chan struct{})
			buf := make([]byte, 4096)
			in.InHeader = traced(in.NodeId, 1, opcodeRead)
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

// listenBench listens on a unix socket in a new temporary directory.
func listenBench(b *testing.B) (*net.UnixListener, string) {
	path := filepath.Join(b.TempDir(), "trace.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ln.Close() })
	return ln, path
}
