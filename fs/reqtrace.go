package fs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log"
	"math"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/mmapfs/mmapfs/backing"
	"github.com/mmapfs/mmapfs/fs/wire"
)

// The daemon's record of each request, for `mmapfs trace`: a tracer asks
// through the control file (wire.ControlTrace) and the daemon connects
// to its unix socket, sends a wire.TraceHello line, then one
// wire.TraceRecord per request it serves until the tracer goes.
//
// countingFS begins a record when it gets a request (begin) and ends it
// after the answer (end); with no tracer connected, begin is one atomic
// load and returns nil, every other step is a nil check, and a handle
// method pays one more atomic load (current). While a
// request is served, its record is in the in-flight table under the
// request's cancel channel, which go-fuse hands to the handle as the
// Cancel of its *fuse.Context (unique among the requests in flight): a
// handle method finds it there (current) and notes what it did to the
// blob (inflight.enter, leave). Records go into each tracer's ring, a
// preallocated buffer that a goroutine of the tracer's own drains to its
// socket: a request never waits for a tracer, and a full ring drops the
// record and counts it, for a wire.TraceDropped record in its place.

// traceRing is how many records a tracer's ring holds: 112 bytes each,
// 900 KiB a tracer, a quarter of a second of 4 KiB direct-I/O preads at
// their full rate here (30,000 a second) with no read from the tracer.
const traceRing = 8192

// traceBatch is how many records a tracer's drainer takes out of its ring
// at once: the copy it makes with the ring locked stays short.
const traceBatch = 256

// traceFlushDelay is how long a tracer's records gather in its ring
// before they are sent, unless the ring is half full: a write to the
// socket per request would cost the traced requests more than they cost.
const traceFlushDelay = 10 * time.Millisecond

// traceIOTimeout bounds the connect and the hello to a new tracer, and
// the last flush to a tracer at unmount: it is the socket's send timeout.
const traceIOTimeout = 2 * time.Second

// reqTracer is a mount's record of the requests it serves, for the
// tracers connected to it. It is safe for concurrent use.
type reqTracer struct {
	log *log.Logger // read only

	// tracers is the connected tracers, nil when there are none: the
	// one load a request pays when no trace runs. Replaced whole (copy
	// on write) with mu held.
	tracers atomic.Pointer[[]*tracer]

	// anchor and base tie Go's monotonic clock to CLOCK_MONOTONIC (which
	// Go's monotonic readings are, from an origin Go keeps to itself):
	// base is CLOCK_MONOTONIC's reading at anchor, in ns. Read only.
	anchor time.Time
	base   int64

	// ring is how many records each tracer's ring holds; read only.
	ring int

	// mu guards inflight, free, closed and the replacing of tracers.
	mu       sync.Mutex
	inflight map[<-chan struct{}]*inflight // the requests being served, by cancel channel
	free     []*inflight                   // records to reuse
	closed   bool                          // the mount is gone: no new tracer

	// mincoreFailed says a failed mincore was logged (once a mount).
	mincoreFailed atomic.Bool

	wg sync.WaitGroup // the tracers' goroutines
}

// newReqTracer returns a mount's tracer state, logging to l, with rings
// of ring records.
func newReqTracer(l *log.Logger, ring int) *reqTracer {
	t := &reqTracer{log: l, ring: ring, inflight: make(map[<-chan struct{}]*inflight, 64)}
	var err error
	t.anchor, t.base, err = calibrateMonotonic()
	if err != nil {
		l.Printf("trace: %v; the records' start times will not match the kernel's events", err)
	}
	return t
}

// calibrateMonotonic returns a time.Time and CLOCK_MONOTONIC's reading
// at it, in ns: the reading taken between the two closest time.Now calls
// of a few tries, set to their midpoint (off by less than half their gap,
// a few hundred ns at most). Go's monotonic clock is CLOCK_MONOTONIC
// (from an origin of its own), so that differences of time.Time are
// differences of CLOCK_MONOTONIC: one clock_gettime(2) a mount, none a
// request (x/sys's is a system call, not the vDSO's).
func calibrateMonotonic() (time.Time, int64, error) {
	var best time.Time
	var bestMono int64
	var err error
	gap := time.Duration(math.MaxInt64)
	for range 8 {
		var ts unix.Timespec
		t0 := time.Now()
		if e := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); e != nil {
			err = fmt.Errorf("reading CLOCK_MONOTONIC: %w", e)
			continue
		}
		t1 := time.Now()
		if d := t1.Sub(t0); d < gap {
			gap, best, bestMono = d, t0.Add(d/2), ts.Nano()
		}
	}
	if best.IsZero() {
		return time.Now(), 0, err
	}
	return best, bestMono, nil
}

// monotonic returns CLOCK_MONOTONIC's reading at t, in ns.
func (t *reqTracer) monotonic(at time.Time) int64 { return t.base + int64(at.Sub(t.anchor)) }

// on reports whether a tracer is connected.
func (t *reqTracer) on() bool { return t.tracers.Load() != nil }

// inflight is the record of one request being served. Only the goroutine
// serving the request touches it between begin and end.
type inflight struct {
	rec    wire.TraceRecord
	cancel <-chan struct{} // its key in reqTracer.inflight; nil when not there
	start  time.Time

	// blob is the blob a handle method served the request from, and its
	// sync counts when it began (enter).
	blob                 *backing.Blob
	syncCalls, syncBytes uint64
}

// begin starts the record of a request that started at start, or returns
// nil when no tracer is connected. cancel (nil for the requests that have
// none) is the key a handle finds the record by.
func (t *reqTracer) begin(cancel <-chan struct{}, h *fuse.InHeader, start time.Time) *inflight {
	if t.tracers.Load() == nil {
		return nil
	}
	return t.beginTraced(cancel, h.Unique, h.NodeId, h.Opcode, h.Caller.Pid, start)
}

// forgetOp is FUSE_FORGET, whose request go-fuse hands over without its
// header.
const forgetOp = 2

// beginForget is begin for a forget of node (go-fuse serves a batch
// forget one node at a time, without the header): its record has the
// opcode of FORGET, Unique 0 and Pid 0.
func (t *reqTracer) beginForget(node uint64, start time.Time) *inflight {
	if t.tracers.Load() == nil {
		return nil
	}
	return t.beginTraced(nil, 0, node, forgetOp, 0, start)
}

func (t *reqTracer) beginTraced(cancel <-chan struct{}, unique, node uint64, opcode, pid uint32, start time.Time) *inflight {
	t.mu.Lock()
	var rq *inflight
	if n := len(t.free); n > 0 {
		rq, t.free = t.free[n-1], t.free[:n-1]
	} else {
		rq = new(inflight)
	}
	if cancel != nil {
		if _, dup := t.inflight[cancel]; !dup {
			t.inflight[cancel] = rq
			rq.cancel = cancel
		}
	}
	t.mu.Unlock()
	rq.rec = wire.TraceRecord{Unique: unique, NodeID: node, Opcode: opcode, Pid: pid, Start: t.monotonic(start)}
	rq.start = start
	return rq
}

// current returns the record of the request ctx is of, or nil when no
// tracer is connected or the request is not being recorded.
func (t *reqTracer) current(ctx context.Context) *inflight {
	if t.tracers.Load() == nil {
		return nil
	}
	return t.lookup(ctx)
}

func (t *reqTracer) lookup(ctx context.Context) *inflight {
	c, ok := ctx.(*fuse.Context)
	if !ok || c.Cancel == nil {
		return nil
	}
	t.mu.Lock()
	rq := t.inflight[c.Cancel]
	t.mu.Unlock()
	return rq
}

// end completes the record with the answer (st, and result: the bytes it
// carried) and hands it to every tracer.
func (t *reqTracer) end(rq *inflight, st fuse.Status, result uint32) {
	if rq == nil {
		return
	}
	rq.rec.Service = int64(time.Since(rq.start))
	if st != fuse.OK {
		rq.rec.Errno = int32(st)
	}
	rq.rec.Result = result
	rec := rq.rec
	t.release(rq)
	if list := t.tracers.Load(); list != nil {
		for _, tr := range *list {
			tr.push(&rec)
		}
	}
}

// discard drops the record of a request go-fuse serves again another way
// (a WRITE that Writev answered ENOSYS goes to Write).
func (t *reqTracer) discard(rq *inflight) {
	if rq != nil {
		t.release(rq)
	}
}

func (t *reqTracer) release(rq *inflight) {
	t.mu.Lock()
	if rq.cancel != nil {
		delete(t.inflight, rq.cancel)
	}
	*rq = inflight{}
	t.free = append(t.free, rq)
	t.mu.Unlock()
}

// span notes the request's range.
func (rq *inflight) span(off, n uint64) {
	if rq != nil {
		rq.rec.Offset, rq.rec.Length = off, uint32(min(n, math.MaxUint32))
	}
}

// ino notes the inode number of the request's node, unless a handle did.
func (rq *inflight) ino(ino uint64) {
	if rq != nil && rq.rec.Ino == 0 {
		rq.rec.Ino = ino
	}
}

// enter notes, as a handle method begins to serve the request from b:
// b's inode number and sync counts and, for a copy of [off, off+n), how
// many of its pages are not in the page cache, so will fault in.
func (rq *inflight) enter(t *reqTracer, b *backing.Blob, off, n int64) {
	if rq == nil {
		return
	}
	rq.rec.Ino = b.Ino()
	rq.blob = b
	rq.syncCalls, rq.syncBytes = b.SyncCounts()
	if n <= 0 {
		return
	}
	pages, err := b.NotResident(off, n)
	if err != nil {
		// The copy that follows meets the same trouble and reports
		// it; this one is the trace's only, said once a mount.
		if !t.mincoreFailed.Swap(true) {
			t.log.Printf("trace: counting the cold pages of %s (no more such messages): %v", b.Name(), err)
		}
		return
	}
	rq.rec.FaultPages += uint32(pages)
}

// leave notes the syncs made on the blob since enter.
func (rq *inflight) leave() {
	if rq == nil || rq.blob == nil {
		return
	}
	calls, bytes := rq.blob.SyncCounts()
	rq.rec.Msyncs += uint32(calls - rq.syncCalls)
	rq.rec.MsyncBytes += bytes - rq.syncBytes
	rq.syncCalls, rq.syncBytes = calls, bytes
}

// tracer is one connected tracer: its socket and its ring of records not
// yet sent.
//
// The socket is a plain blocking descriptor, written by drain and polled
// by watch in system calls of their own, never through Go's network
// poller, and no runtime timer runs for it: a goroutine parked in the
// poller, or a pending timer, makes the runtime's idle threads wait in
// epoll instead of a futex, which cost every request of a traced mount
// some 10 µs more (the 4 KiB pread benchmark, 2 cores).
type tracer struct {
	t    *reqTracer // read only
	fd   int        // the socket; closed by drain once watch has ended
	path string     // the socket's path, for messages; read only

	// mu guards the ring and the fields below it.
	mu   sync.Mutex
	ring []traceSlot // preallocated
	head int         // the oldest record's slot
	n    int         // records in the ring
	// closing says the tracer is being dropped: push adds nothing;
	// flush says its drain sends what is left first (at unmount), until
	// deadline.
	closing, flush bool
	deadline       time.Time
	sent, dropped  uint64

	kick      chan struct{} // cap 1: drain should send what the ring holds (or stop)
	watchDone chan struct{} // closed when watch has ended
	once      sync.Once     // drops the tracer
}

// traceSlot is a record and the records dropped right after it.
type traceSlot struct {
	rec wire.TraceRecord
	// drops is how many records were dropped after rec while the ring
	// was full (rec was then the newest); the first began at dropStart,
	// the last ended at dropEnd (CLOCK_MONOTONIC ns).
	drops              uint64
	dropStart, dropEnd int64
}

// newTracer returns a tracer writing to fd (which it owns from then on),
// with a ring of ring records.
func newTracer(t *reqTracer, fd int, path string, ring int) *tracer {
	return &tracer{t: t, fd: fd, path: path, ring: make([]traceSlot, ring), kick: make(chan struct{}, 1), watchDone: make(chan struct{})}
}

// push puts rec into the ring, or counts it dropped when the ring is
// full. It never blocks on the socket: drain sends the ring when watch
// (every traceFlushDelay) or push (at half full) kicks it.
func (tr *tracer) push(rec *wire.TraceRecord) {
	tr.mu.Lock()
	if tr.closing {
		tr.mu.Unlock()
		return
	}
	kick := tr.n == len(tr.ring)/2
	if tr.n == len(tr.ring) {
		s := &tr.ring[(tr.head+tr.n-1)%len(tr.ring)]
		// Records come in the order requests end, not start: the span
		// is the earliest start and the latest end of those dropped.
		if s.drops == 0 {
			s.dropStart, s.dropEnd = rec.Start, rec.Start+rec.Service
		}
		s.drops++
		s.dropStart = min(s.dropStart, rec.Start)
		s.dropEnd = max(s.dropEnd, rec.Start+rec.Service)
		tr.dropped++
	} else {
		tr.ring[(tr.head+tr.n)%len(tr.ring)] = traceSlot{rec: *rec}
		tr.n++
	}
	tr.mu.Unlock()
	if kick {
		signal(tr.kick)
	}
}

// signal sends on c, a channel of capacity 1, unless it is full.
func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// take copies up to len(batch) of the oldest records out of the ring and
// frees their slots; done says the tracer is being dropped and drain
// should stop once it has sent them (if flush) or at once.
func (tr *tracer) take(batch []traceSlot) (n int, done, flush bool) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	if tr.closing && !tr.flush {
		return 0, true, false
	}
	n = min(tr.n, len(batch))
	for i := range n {
		batch[i] = tr.ring[(tr.head+i)%len(tr.ring)]
	}
	tr.head = (tr.head + n) % len(tr.ring)
	tr.n -= n
	return n, tr.closing && tr.n == 0, tr.flush
}

// drain sends the ring's records to the socket, in batches, each time it
// is kicked, until the tracer is dropped; a write that fails drops it.
// It closes the socket once watch has ended.
func (tr *tracer) drain() {
	defer tr.t.wg.Done()
	batch := make([]traceSlot, traceBatch)
	buf := make([]byte, 0, 2*traceBatch*wire.TraceRecordSize)
	for {
		n, done, _ := tr.take(batch)
		if n == 0 && !done {
			<-tr.kick
			continue
		}
		buf = buf[:0]
		for i := range batch[:n] {
			buf = appendRecord(buf, &batch[i].rec)
			if s := &batch[i]; s.drops > 0 {
				for left := s.drops; left > 0; {
					c := min(left, math.MaxUint32)
					buf = appendRecord(buf, &wire.TraceRecord{Opcode: wire.TraceDropped, Result: uint32(c), Start: s.dropStart, Service: s.dropEnd - s.dropStart})
					left -= c
				}
			}
		}
		if len(buf) > 0 {
			if err := tr.send(buf); err != nil {
				tr.drop(err, false)
				done = true
			} else {
				tr.mu.Lock()
				tr.sent += uint64(n)
				tr.mu.Unlock()
			}
		}
		if done {
			break
		}
	}
	<-tr.watchDone
	if err := unix.Close(tr.fd); err != nil {
		tr.t.log.Printf("trace: closing the socket to the tracer at %s: %v", tr.path, err)
	}
}

// send writes all of buf to the socket. The socket's send timeout
// (traceIOTimeout) makes a write to a tracer that reads nothing return
// now and then; it goes on, but for the last flush past its deadline.
func (tr *tracer) send(buf []byte) error {
	for len(buf) > 0 {
		n, err := unix.SendmsgN(tr.fd, buf, nil, nil, unix.MSG_NOSIGNAL)
		if n > 0 {
			buf = buf[n:]
		}
		switch {
		case err == nil || errors.Is(err, unix.EINTR):
		case errors.Is(err, unix.EAGAIN):
			tr.mu.Lock()
			// Dropped without a last flush (the tracer hung up its
			// side, or failed): nothing more is owed to it.
			late := tr.closing && (!tr.flush || time.Now().After(tr.deadline))
			tr.mu.Unlock()
			if late {
				return fmt.Errorf("sending records: the tracer read none for %v at unmount: %w", traceIOTimeout, err)
			}
		default:
			return fmt.Errorf("sending records: %w", err)
		}
	}
	return nil
}

// appendRecord appends rec's wire form to buf.
func appendRecord(buf []byte, rec *wire.TraceRecord) []byte {
	l := len(buf)
	buf = append(buf, make([]byte, wire.TraceRecordSize)...)
	rec.MarshalBinary(buf[l:])
	return buf
}

// watch polls the socket every traceFlushDelay until the tracer is
// dropped: it kicks drain when the ring holds records, and drops the
// tracer when its peer has closed the socket (a tracer sends nothing;
// what it sends is read and ignored).
func (tr *tracer) watch() {
	defer tr.t.wg.Done()
	defer close(tr.watchDone)
	fds := []unix.PollFd{{Fd: int32(tr.fd), Events: unix.POLLIN | unix.POLLRDHUP}}
	var b [64]byte
	for {
		fds[0].Revents = 0
		_, err := unix.Poll(fds, int(traceFlushDelay/time.Millisecond))
		if err != nil && !errors.Is(err, unix.EINTR) {
			tr.drop(fmt.Errorf("polling its socket: %w", err), false)
			return
		}
		tr.mu.Lock()
		closing, pending := tr.closing, tr.n > 0
		tr.mu.Unlock()
		if closing {
			return
		}
		if ev := fds[0].Revents; ev&(unix.POLLHUP|unix.POLLRDHUP|unix.POLLERR) != 0 {
			tr.drop(errors.New("closed by the tracer"), false)
			return
		} else if ev&unix.POLLIN != 0 {
			if n, err := unix.Read(tr.fd, b[:]); n == 0 || (err != nil && !errors.Is(err, unix.EAGAIN) && !errors.Is(err, unix.EINTR)) {
				tr.drop(fmt.Errorf("closed by the tracer: read %d, %v", n, err), false)
				return
			}
		}
		if pending {
			signal(tr.kick)
		}
	}
}

// drop disconnects the tracer, once, and logs why with what it got; with
// flush, its drain sends the records left (within traceIOTimeout) before
// closing the socket.
func (tr *tracer) drop(why error, flush bool) {
	tr.once.Do(func() {
		t := tr.t
		t.mu.Lock()
		if list := t.tracers.Load(); list != nil {
			var rest []*tracer
			for _, o := range *list {
				if o != tr {
					rest = append(rest, o)
				}
			}
			if len(rest) == 0 {
				t.tracers.Store(nil)
			} else {
				t.tracers.Store(&rest)
			}
		}
		t.mu.Unlock()
		tr.mu.Lock()
		tr.closing, tr.flush, tr.deadline = true, flush, time.Now().Add(traceIOTimeout)
		sent, dropped := tr.sent, tr.dropped
		tr.mu.Unlock()
		signal(tr.kick)
		t.log.Printf("trace: tracer at %s gone (%v) after %d records (and %d dropped while it did not keep up)", tr.path, why, sent, dropped)
	})
}

// start lists tr as connected and starts its goroutines, unless the
// mount is going away.
func (t *reqTracer) start(tr *tracer) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return false
	}
	var list []*tracer
	if old := t.tracers.Load(); old != nil {
		list = append(list, *old...)
	}
	list = append(list, tr)
	t.tracers.Store(&list)
	t.wg.Add(2)
	go tr.drain()
	go tr.watch()
	return true
}

// connect dials the tracer's socket at path, sends it hello and starts
// recording for it. The error says what is wrong with the socket.
func (t *reqTracer) connect(path string, hello wire.TraceHello) error {
	if !filepath.IsAbs(path) {
		return &requestError{fmt.Sprintf("trace: the socket path %q is not absolute (the daemon does not share your working directory)", path), nil, syscall.EINVAL}
	}
	fi, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return &requestError{fmt.Sprintf("trace: no socket %s: it does not exist", path), err, syscall.ENOENT}
	case err != nil:
		return &requestError{fmt.Sprintf("trace: socket %s: %v", path, err), err, errnoOf(err, syscall.EIO)}
	case fi.Mode().Type() != fs.ModeSocket:
		return &requestError{fmt.Sprintf("trace: %s is not a socket (it is a %s)", path, fileKind(fi.Mode())), nil, syscall.ENOTSOCK}
	}
	fd, err := dialTracer(path)
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return &requestError{fmt.Sprintf("trace: socket %s refused the connection: nothing listens on it", path), err, syscall.ECONNREFUSED}
	case errors.Is(err, syscall.EPROTOTYPE):
		return &requestError{fmt.Sprintf("trace: socket %s is not a stream socket (SOCK_STREAM)", path), err, syscall.EPROTOTYPE}
	case err != nil:
		return &requestError{fmt.Sprintf("trace: connecting to socket %s: %v", path, err), err, errnoOf(err, syscall.EIO)}
	}
	tr := newTracer(t, fd, path, t.ring)
	line, err := json.Marshal(hello)
	if err == nil {
		err = tr.send(append(line, '\n'))
	}
	if err != nil {
		return &requestError{fmt.Sprintf("trace: sending the hello to socket %s: %v", path, err), errors.Join(err, unix.Close(fd)), errnoOf(err, syscall.EIO)}
	}
	if !t.start(tr) {
		return &requestError{"trace: the mount is going away", unix.Close(fd), syscall.ESHUTDOWN}
	}
	t.log.Printf("trace: recording every request for the tracer at %s", path)
	return nil
}

// dialTracer connects a blocking SOCK_STREAM socket to the unix socket
// at path, with a send timeout of traceIOTimeout (which bounds the
// connect too).
func dialTracer(path string) (int, error) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("socket: %w", err)
	}
	tv := unix.NsecToTimeval(traceIOTimeout.Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv); err != nil {
		return -1, errors.Join(fmt.Errorf("setting the send timeout: %w", err), unix.Close(fd))
	}
	for {
		err = unix.Connect(fd, &unix.SockaddrUnix{Name: path})
		if !errors.Is(err, unix.EINTR) {
			break
		}
	}
	if err != nil {
		return -1, errors.Join(fmt.Errorf("connect: %w", err), unix.Close(fd))
	}
	return fd, nil
}

// close drops every tracer, after sending each what is left of its ring
// (within traceIOTimeout), and waits for their goroutines: the mount is
// gone.
func (t *reqTracer) close() {
	t.mu.Lock()
	t.closed = true
	list := t.tracers.Load()
	t.mu.Unlock()
	if list != nil {
		for _, tr := range *list {
			tr.drop(errors.New("the mount is gone"), true)
		}
	}
	t.wg.Wait()
}

// errnoOf returns the errno at the bottom of err, or def.
func errnoOf(err error, def syscall.Errno) syscall.Errno {
	var e syscall.Errno
	if errors.As(err, &e) {
		return e
	}
	return def
}

// fileKind names the type of a file of mode m, for messages.
func fileKind(m fs.FileMode) string {
	switch m.Type() {
	case 0:
		return "regular file"
	case fs.ModeDir:
		return "directory"
	case fs.ModeSymlink:
		return "symbolic link"
	case fs.ModeNamedPipe:
		return "FIFO"
	case fs.ModeDevice:
		return "block device"
	case fs.ModeDevice | fs.ModeCharDevice:
		return "character device"
	}
	return "file of mode " + m.String()
}

// traceRequest serves the control request to trace (wire.ControlTrace)
// for the tracer at path.
func (m *mountState) traceRequest(req, path string) (wire.ControlReply, error) {
	r := wire.ControlReply{Request: req, Simulation: m.store.Options().PowerCutSim}
	if path == "" {
		return r, &requestError{fmt.Sprintf("trace: no socket given (want %q)", wire.ControlTrace+" /path/to/socket"), nil, syscall.EINVAL}
	}
	hello := wire.TraceHello{Pid: os.Getpid(), Store: m.store.Root(), StoreDev: m.rootDev, Clock: "monotonic"}
	return r, m.trace.connect(path, hello)
}
