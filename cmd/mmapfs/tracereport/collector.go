package tracereport

import (
	"container/heap"
	"sort"
	"strings"
	"sync"

	"github.com/mmapfs/mmapfs/cmd/mmapfs/ktrace"
	"github.com/mmapfs/mmapfs/fs/wire"
)

// Options tune a Collector; zero fields take the defaults.
type Options struct {
	// Sink receives the requests and events; nil: Discard.
	Sink Sink
	// Wait is how long (event time, ns) a request is held for its missing
	// parts after its last part came. Default 1 s.
	Wait int64
	// MaxPending bounds the requests held at once; past it the oldest is
	// emitted with what is known (Summary.GivenUp). Default 4096.
	MaxPending int
	// FaultNear is how long before a READ's send a fault on its file by
	// its task still counts as its cause. Default 100 ms.
	FaultNear int64
	// Reorder is how long (event time, ns) every request and event is
	// held before it goes to the Sink, so that the Sink sees them in time
	// order although a request's parts come late. Default 100 ms; a
	// request that waited longer for its parts comes out of order.
	Reorder int64
}

const (
	defaultWait       = int64(1e9)
	defaultMaxPending = 4096
	defaultFaultNear  = int64(100e6)
	defaultReorder    = int64(100e6)
	// maxHeld bounds the items held for ordering.
	maxHeld = 1 << 16
	// raNear is how soon after a fault a readahead of the same task on
	// the same file counts as triggered by it (both happen in one call
	// of the kernel's fault handler).
	raNear = int64(10e6)
	// inFlightWait is how long a request that was sent and never ended
	// is held, at least (its end event may have been lost).
	inFlightWait = int64(60e9)
	// Bounds of the histories kept for causes.
	syscallHistory = 8
	maxInodes      = 4096
	maxTasks       = 8192
	maxFiles       = 4096 // per layer, in the summary
	maxThrottled   = 1024 // processes, in the summary
	maxBlobs       = 1 << 16
)

// pend is a request being joined.
type pend struct {
	seq             uint64 // arrival order
	hasSend, hasEnd bool
	hasRec          bool
	send            ktrace.Event // RequestSend: Time, Pid, Comm, Opcode, Len
	endTime         int64
	endErr          int32
	rec             wire.TraceRecord
}

// last is the time of the latest part that came.
func (p *pend) last() int64 {
	t := int64(0)
	if p.hasSend {
		t = p.send.Time
	}
	if p.hasEnd && p.endTime > t {
		t = p.endTime
	}
	if p.hasRec && p.rec.Start+p.rec.Service > t {
		t = p.rec.Start + p.rec.Service
	}
	return t
}

// interval is a span of a task's time: in a syscall, or writing back.
type interval struct {
	name       string // syscall name, or writeback reason
	start, end int64  // end 0: still open
}

func (iv *interval) covers(t int64) bool {
	return iv.start <= t && (iv.end == 0 || iv.end >= t)
}

// syscallSpan is a task's traced syscall, from its enter to its exit.
// The kernel traces these syscalls for every process on the machine, so
// the Collector hands one to the sink only when it concerns the mount:
// when a request's cause is it (used), or its process caused requests on
// the mount before (Collector.clients); either way once (emitted).
type syscallSpan struct {
	interval
	pid, tgid     int
	comm          string
	arg           uint64
	ret           int64
	used, emitted bool
}

// task is what the collector knows of one thread.
type task struct {
	comm     string
	last     int64
	syscalls []syscallSpan // at most syscallHistory, oldest first
}

// item is one thing for the sink, at time t (mono ns); seq keeps the
// order of items of the same time.
type item struct {
	t      int64
	seq    uint64
	req    *Request
	ev     *Event
	sample *Sample
}

// itemHeap is a min-heap of items by time (container/heap).
type itemHeap []item

// Len implements heap.Interface.
func (h itemHeap) Len() int { return len(h) }

// Less implements heap.Interface: by time, then by order made.
func (h itemHeap) Less(i, j int) bool {
	if h[i].t != h[j].t {
		return h[i].t < h[j].t
	}
	return h[i].seq < h[j].seq
}

// Swap implements heap.Interface.
func (h itemHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }

// Push implements heap.Interface.
func (h *itemHeap) Push(x any) { *h = append(*h, x.(item)) }

// Pop implements heap.Interface.
func (h *itemHeap) Pop() any {
	old := *h
	it := old[len(old)-1]
	old[len(old)-1] = item{}
	*h = old[:len(old)-1]
	return it
}

// Collector joins the kernel's events and the daemon's records of one
// mount into Requests, decides their causes, hands them and the other
// events to a Sink, and keeps the Summary. Safe for concurrent use (see
// the package doc, Locking).
type Collector struct {
	m       Mount // read only
	opts    Options
	discard bool // opts.Sink is Discard: make no Events

	// outMu serializes the calls to opts.Sink; taken while mu is held
	// (lock order: mu, then outMu), held alone while the sink runs.
	outMu sync.Mutex

	// mu guards every field below.
	mu      sync.Mutex
	pending map[uint64]*pend
	order   []uint64 // uniques in arrival order (some already gone)
	seq     uint64
	// now is the time both streams have reached, mono ns: the lesser of
	// kernelNow (the latest kernel event's time) and daemonNow (the end
	// of the latest daemon record), each also moved on by Tick. A part
	// is given up for missing only once both streams are past it, so a
	// stream that lags (the kernel's, read slower than the daemon's
	// records come) does not split its requests in two.
	now                  int64
	kernelNow, daemonNow int64
	lastScan             int64
	tasks                map[int]*task
	inodes               map[uint64]*inode
	tgids                map[int]int     // thread to process: from events' Tgid, and m.Tgid's
	clients              map[int]bool    // processes that caused requests on the mount
	wbAll                []wbSpan        // writebacks of the mount's BDI (history.go), in time order
	histLen              int             // entries of the histories (inodes, wbAll)
	raPages              uint32          // the latest maximum readahead of a file of the mount
	openSync             map[int]bool    // tasks inside a traced syncSyscalls syscall
	blobs                map[uint64]bool // inodes of the store's files (daemon records, Names)
	held                 itemHeap        // made, held for Reorder (oldest first)
	out                  []item          // released, not yet handed to the sink
	stats                stats
}

// NewCollector returns a Collector for the mount m.
func NewCollector(m Mount, opts Options) *Collector {
	if opts.Sink == nil {
		opts.Sink = Discard{}
	}
	_, discard := opts.Sink.(Discard)
	if opts.Wait <= 0 {
		opts.Wait = defaultWait
	}
	if opts.MaxPending <= 0 {
		opts.MaxPending = defaultMaxPending
	}
	if opts.FaultNear <= 0 {
		opts.FaultNear = defaultFaultNear
	}
	if opts.Reorder <= 0 {
		opts.Reorder = defaultReorder
	}
	return &Collector{
		m:        m,
		opts:     opts,
		discard:  discard,
		pending:  make(map[uint64]*pend),
		tasks:    make(map[int]*task),
		inodes:   make(map[uint64]*inode),
		tgids:    make(map[int]int),
		clients:  make(map[int]bool),
		openSync: make(map[int]bool),
		blobs:    make(map[uint64]bool),
		stats:    newStats(),
	}
}

// holdLocked keeps an item for the sink until Options.Reorder has passed
// since its time t (mono ns), so that items whose parts came late are
// still handed over in time order.
func (c *Collector) holdLocked(it item) {
	c.seq++
	it.seq = c.seq
	heap.Push(&c.held, it)
	if c.held.Len() > maxHeld {
		c.out = append(c.out, heap.Pop(&c.held).(item))
	}
}

// releaseLocked moves the held items whose time is up (all, when all is
// set) to c.out, oldest first.
func (c *Collector) releaseLocked(all bool) {
	for c.held.Len() > 0 && (all || c.held[0].t+c.opts.Reorder <= c.now) {
		c.out = append(c.out, heap.Pop(&c.held).(item))
	}
}

// deliverLocked hands the items whose time is up to the sink; it is
// called with c.mu held and returns with it released.
func (c *Collector) deliverLocked() {
	c.releaseLocked(false)
	out := c.out
	c.out = nil
	if len(out) == 0 {
		c.mu.Unlock()
		return
	}
	c.outMu.Lock()
	c.mu.Unlock()
	defer c.outMu.Unlock()
	c.give(out)
}

// give hands items to the sink, in order; c.outMu held.
func (c *Collector) give(out []item) {
	for _, it := range out {
		switch {
		case it.req != nil:
			c.nameLate(&it.req.File, it.req.Ino)
			c.opts.Sink.Request(it.req)
		case it.ev != nil:
			if it.ev.Layer == layerMount {
				c.nameLate(&it.ev.File, it.ev.K.Ino)
			}
			c.opts.Sink.Event(it.ev)
		case it.sample != nil:
			c.opts.Sink.Sample(it.sample)
		}
	}
}

// nameLate asks Mount.Names again for the name of ino that it did not
// know when the item was made (*file empty): a file made during the
// trace is unknown to it until its next walk of the store, which it
// makes only so often. By the time an item reaches the sink it has
// been held Options.Reorder at least, and at Flush the caller has had
// the chance to refresh its names. c.outMu held (Names is read only).
func (c *Collector) nameLate(file *string, ino uint64) {
	if *file == "" && ino != 0 && c.m.Names != nil {
		*file = c.m.Names(ino)
	}
}

// Kernel takes one of the kernel's events. It keeps what it needs (e is
// not retained); events of other mounts are ignored.
func (c *Collector) Kernel(e *ktrace.Event) {
	c.mu.Lock()
	c.kernelLocked(e)
	c.maintainLocked()
	c.deliverLocked()
}

func (c *Collector) kernelLocked(e *ktrace.Event) {
	c.stats.events++
	c.kernelNow = max(c.kernelNow, e.Time)
	c.advanceLocked()
	if e.Pid != 0 && knownComm(e.Comm) {
		t := c.taskLocked(e.Pid)
		t.comm = e.Comm
		t.last = e.Time
	}
	if e.Pid > 0 && e.Tgid > 0 {
		if _, ok := c.tgids[e.Pid]; !ok && len(c.tgids) >= maxTasks {
			clear(c.tgids)
		}
		c.tgids[e.Pid] = e.Tgid
	}
	switch e.Kind {
	case ktrace.RequestSend:
		if e.Conn != c.m.Conn {
			return
		}
		p := c.pendLocked(e.Unique)
		p.hasSend = true
		p.send = ktrace.Event{Kind: e.Kind, Time: e.Time, Pid: e.Pid, Tgid: e.Tgid, Comm: e.Comm, Opcode: e.Opcode, Len: e.Len}
		c.completeLocked(e.Unique, p)
	case ktrace.RequestEnd:
		if e.Conn != c.m.Conn {
			return
		}
		p := c.pendLocked(e.Unique)
		p.hasEnd, p.endTime, p.endErr = true, e.Time, e.Error
		c.completeLocked(e.Unique, p)
	case ktrace.SyncReadahead, ktrace.AsyncReadahead:
		layer := c.fileLayerLocked(e.Dev, e.Ino)
		if layer == "" {
			return
		}
		if layer == layerMount {
			w := newWindow(e)
			if e.RAPages > 0 {
				c.raPages = e.RAPages
			}
			c.addRALocked(e.Ino, w)
			c.stats.window(w)
		}
		c.eventLocked(EventReadahead, layer, e)
	case ktrace.Fault:
		layer := c.fileLayerLocked(e.Dev, e.Ino)
		if layer == "" {
			return
		}
		if layer == layerMount {
			c.addFaultLocked(e.Ino, fault{index: e.Index, time: e.Time, pid: e.Pid})
		}
		c.eventLocked(EventFault, layer, e)
	case ktrace.PageAdd, ktrace.PageDelete:
		layer := c.fileLayerLocked(e.Dev, e.Ino)
		if layer == "" {
			return
		}
		c.stats.pages(layer, e.Ino, e.Kind == ktrace.PageAdd, pagesOf(e))
		typ := EventPageAdd
		if e.Kind == ktrace.PageDelete {
			typ = EventPageDelete
		}
		c.eventLocked(typ, layer, e)
	case ktrace.Throttle:
		layer := c.bdiLayer(e.BDI)
		if layer == "" {
			return
		}
		if e.Pause > 0 {
			pid := e.Tgid
			if pid <= 0 {
				pid = c.tgidLocked(e.Pid)
			}
			c.stats.throttle(layer, pid, c.commLocked(pid, e.Comm), e.Pause)
		}
		c.eventLocked(EventThrottle, layer, e)
	case ktrace.WritebackStart, ktrace.WritebackEnd:
		layer := c.bdiLayer(e.BDI)
		if layer == "" {
			return
		}
		typ := EventWritebackStart
		if layer == layerMount {
			if e.Kind == ktrace.WritebackStart {
				c.wbStartLocked(e.Pid, e.Reason, e.Time)
			} else {
				typ = EventWritebackEnd
				c.wbEndLocked(e.Pid, e.Time)
			}
		} else if e.Kind == ktrace.WritebackEnd {
			typ = EventWritebackEnd
		}
		c.eventLocked(typ, layer, e)
	case ktrace.SyscallEnter:
		t := c.taskLocked(e.Pid)
		t.syscalls = appendBounded(t.syscalls, syscallSpan{
			interval: interval{name: e.Syscall, start: e.Time},
			pid:      e.Pid, tgid: c.tgidLocked(e.Pid), comm: e.Comm, arg: e.Arg,
		}, syscallHistory)
		if syncSyscalls[e.Syscall] && len(c.openSync) < maxTasks {
			c.openSync[e.Pid] = true
		}
	case ktrace.SyscallExit:
		t := c.taskLocked(e.Pid)
		if syncSyscalls[e.Syscall] {
			delete(c.openSync, e.Pid)
		}
		for i := len(t.syscalls) - 1; i >= 0; i-- {
			sp := &t.syscalls[i]
			if sp.end == 0 && sp.name == e.Syscall {
				sp.end, sp.ret = e.Time, e.Ret
				if sp.used || c.clients[sp.tgid] {
					c.syscallEventsLocked(sp)
				}
				return
			}
		}
		// Entered before the trace began (or the enter was lost).
		if c.clients[c.tgidLocked(e.Pid)] {
			c.eventLocked(EventSyscallExit, "", e)
		}
	}
}

// syscallEventsLocked hands a syscall's enter and (when it has ended)
// exit to the sink, once.
func (c *Collector) syscallEventsLocked(sp *syscallSpan) {
	if sp.emitted {
		return
	}
	sp.emitted = true
	enter := ktrace.Event{Kind: ktrace.SyscallEnter, Time: sp.start, Pid: sp.pid, Tgid: sp.tgid, Comm: sp.comm, Syscall: sp.name, Arg: sp.arg}
	c.eventLocked(EventSyscallEnter, "", &enter)
	if sp.end != 0 {
		exit := ktrace.Event{Kind: ktrace.SyscallExit, Time: sp.end, Pid: sp.pid, Tgid: sp.tgid, Comm: sp.comm, Syscall: sp.name, Ret: sp.ret}
		c.eventLocked(EventSyscallExit, "", &exit)
	}
}

// knownComm says whether an event's comm names the task ("<...>" is the
// kernel's "I do not know").
func knownComm(s string) bool { return s != "" && s != "<...>" }

// pagesOf is how many pages a page cache event covers (1 when the
// kernel's event gives no count).
func pagesOf(e *ktrace.Event) uint64 {
	if e.Pages == 0 {
		return 1
	}
	return uint64(e.Pages)
}

// appendBounded appends v to s, dropping the oldest past n.
func appendBounded[T any](s []T, v T, n int) []T {
	if len(s) >= n {
		copy(s, s[1:])
		s = s[:len(s)-1]
	}
	return append(s, v)
}

// The layers.
const (
	layerMount = "mount"
	layerStore = "store"
)

// layer names the layer of a device, "" when it is neither.
func (c *Collector) layer(dev uint32) string {
	switch dev {
	case c.m.MountDev:
		return layerMount
	case c.m.StoreDev:
		return layerStore
	}
	return ""
}

// fileLayerLocked names the layer of a page cache, readahead or fault
// event on file ino of device dev, "" when it is not the mount's: the
// store's device holds other files than the store's (the store may be a
// directory of /tmp), so a store event counts only for a file the daemon
// served or Mount.Names knows.
func (c *Collector) fileLayerLocked(dev uint32, ino uint64) string {
	layer := c.layer(dev)
	if layer != layerStore || c.m.Names == nil || c.blobs[ino] {
		return layer
	}
	names := c.m.Names
	if c.m.StoreNames != nil {
		names = c.m.StoreNames
	}
	if names(ino) == "" {
		return ""
	}
	c.addBlobLocked(ino)
	return layer
}

// addBlobLocked notes ino as a file of the store.
func (c *Collector) addBlobLocked(ino uint64) {
	if ino == 0 {
		return
	}
	if len(c.blobs) >= maxBlobs {
		clear(c.blobs)
	}
	c.blobs[ino] = true
}

// bdiLayer names the layer of a BDI, "" when it is neither.
func (c *Collector) bdiLayer(bdi string) string {
	switch {
	case bdi != "" && bdi == c.m.BDI:
		return layerMount
	case bdi != "" && bdi == c.m.StoreBDI:
		return layerStore
	}
	return ""
}

func (c *Collector) eventLocked(typ, layer string, e *ktrace.Event) {
	if c.discard {
		return
	}
	ev := &Event{Type: typ, Rel: e.Time - c.m.Start, Layer: layer, K: *e}
	if layer == layerMount && e.Ino != 0 && c.m.Names != nil {
		ev.File = c.m.Names(e.Ino)
	}
	c.holdLocked(item{t: e.Time, ev: ev})
}

func (c *Collector) taskLocked(pid int) *task {
	t := c.tasks[pid]
	if t == nil {
		if len(c.tasks) >= maxTasks {
			c.pruneTasksLocked()
		}
		t = &task{}
		c.tasks[pid] = t
	}
	return t
}

// pruneTasksLocked forgets the tasks not seen for longest (half of them).
func (c *Collector) pruneTasksLocked() {
	lasts := make([]int64, 0, len(c.tasks))
	for _, t := range c.tasks {
		lasts = append(lasts, t.last)
	}
	sort.Slice(lasts, func(i, j int) bool { return lasts[i] < lasts[j] })
	cut := lasts[len(lasts)/2]
	for pid, t := range c.tasks {
		if t.last <= cut {
			delete(c.tasks, pid)
			delete(c.openSync, pid)
		}
	}
}

// tgidLocked is the process of a thread: as events gave it, else m.Tgid's
// (cached), else the thread id itself.
func (c *Collector) tgidLocked(tid int) int {
	if tid <= 0 {
		return tid
	}
	if g, ok := c.tgids[tid]; ok {
		return g
	}
	if c.m.Tgid == nil {
		return tid
	}
	if len(c.tgids) >= maxTasks {
		clear(c.tgids)
	}
	g := c.m.Tgid(tid)
	c.tgids[tid] = g
	return g
}

// commLocked names a task: seen is the name an event gave (may be ""),
// else the one events gave it before, else m.Comm's.
func (c *Collector) commLocked(pid int, seen string) string {
	if knownComm(seen) {
		return seen
	}
	if t := c.tasks[pid]; t != nil && t.comm != "" {
		return t.comm
	}
	if c.m.Comm != nil && pid > 0 {
		if s := c.m.Comm(pid); s != "" {
			return s
		}
	}
	return "?"
}

func (c *Collector) pendLocked(unique uint64) *pend {
	p := c.pending[unique]
	if p == nil {
		c.seq++
		p = &pend{seq: c.seq}
		c.pending[unique] = p
		c.order = append(c.order, unique)
	}
	return p
}

// Daemon takes one of the daemon's records (r is not retained). A record
// with Opcode 0 says the daemon dropped records before it.
func (c *Collector) Daemon(r *wire.TraceRecord) {
	c.mu.Lock()
	c.daemonLocked(r)
	c.maintainLocked()
	c.deliverLocked()
}

func (c *Collector) daemonLocked(r *wire.TraceRecord) {
	c.daemonNow = max(c.daemonNow, r.Start+r.Service)
	c.advanceLocked()
	if r.Opcode == wire.TraceDropped {
		n := droppedOf(r)
		c.stats.daemonLost += n
		c.stats.daemonDrops++
		ev := &Event{Type: EventDaemonDropped, Rel: r.Start - c.m.Start, K: ktrace.Event{Time: r.Start, ReqCount: n}}
		c.holdLocked(item{t: r.Start, ev: ev})
		return
	}
	c.stats.records++
	c.addBlobLocked(r.Ino)
	p := c.pendLocked(r.Unique)
	p.hasRec, p.rec = true, *r
	c.completeLocked(r.Unique, p)
}

// droppedOf is how many records a drop record stands for (its Result).
func droppedOf(r *wire.TraceRecord) uint64 { return uint64(r.Result) }

// completeLocked emits p when all its parts are there.
func (c *Collector) completeLocked(unique uint64, p *pend) {
	if p.hasSend && p.hasEnd && p.hasRec {
		delete(c.pending, unique)
		c.emitLocked(unique, p, false)
	}
}

// maintainLocked enforces the pending bound and, every tenth of Wait of
// event time, emits the requests whose wait is over.
func (c *Collector) maintainLocked() {
	for len(c.pending) > c.opts.MaxPending && len(c.order) > 0 {
		u := c.order[0]
		c.order = c.order[1:]
		if p, ok := c.pending[u]; ok {
			delete(c.pending, u)
			c.stats.givenUp++
			c.emitLocked(u, p, true)
		}
	}
	if c.now-c.lastScan < c.opts.Wait/10 {
		return
	}
	c.lastScan = c.now
	var done []*pendU
	horizon := c.now - c.historyKeep()
	for u, p := range c.pending {
		if p.hasSend && p.send.Time-c.opts.FaultNear-raNear < horizon {
			horizon = p.send.Time - c.opts.FaultNear - raNear
		}
		wait := c.opts.Wait
		if p.hasSend && !p.hasEnd && wait < inFlightWait {
			wait = inFlightWait
		}
		if p.last()+wait < c.now {
			done = append(done, &pendU{u, p})
		}
	}
	c.emitAllLocked(done)
	c.pruneHistoryLocked(horizon)
	// Drop the queue's entries already gone (keep it bounded).
	if len(c.order) > 2*len(c.pending)+64 {
		kept := c.order[:0]
		for _, u := range c.order {
			if _, ok := c.pending[u]; ok {
				kept = append(kept, u)
			}
		}
		c.order = kept
	}
}

type pendU struct {
	u uint64
	p *pend
}

// emitAllLocked emits the requests in the order they arrived.
func (c *Collector) emitAllLocked(done []*pendU) {
	sort.Slice(done, func(i, j int) bool { return done[i].p.seq < done[j].p.seq })
	for _, d := range done {
		delete(c.pending, d.u)
		c.emitLocked(d.u, d.p, false)
	}
}

// Sample records the mount's dirty and writeback bytes at t (mono ns).
func (c *Collector) Sample(t int64, dirty, writeback uint64) {
	c.mu.Lock()
	s := &Sample{Time: t, Rel: t - c.m.Start, Dirty: dirty, Writeback: writeback}
	c.stats.sample(s)
	c.holdLocked(item{t: t, sample: s})
	c.maintainLocked()
	c.deliverLocked()
}

// Tick tells the Collector that both streams have reached now (mono ns):
// every kernel event and every daemon record of before it has been given
// (the caller knows: the trace pipe and the daemon's socket were empty
// then). What it holds for its missing parts or for ordering is emitted
// when its wait is over even if no event comes.
func (c *Collector) Tick(now int64) {
	c.mu.Lock()
	c.tickLocked(now)
	c.deliverLocked()
}

func (c *Collector) tickLocked(now int64) {
	c.kernelNow = max(c.kernelNow, now)
	c.daemonNow = max(c.daemonNow, now)
	c.advanceLocked()
	c.maintainLocked()
}

// advanceLocked moves now to the time both streams have reached.
func (c *Collector) advanceLocked() {
	c.now = max(c.now, min(c.kernelNow, c.daemonNow))
}

// Flush emits every pending request with what is known, then calls the
// sink's Flush. Call it once the streams have ended; later calls only
// flush the sink again.
func (c *Collector) Flush() {
	c.mu.Lock()
	done := make([]*pendU, 0, len(c.pending))
	for u, p := range c.pending {
		done = append(done, &pendU{u, p})
	}
	c.emitAllLocked(done)
	c.order = nil
	c.releaseLocked(true)
	c.outMu.Lock()
	out := c.out
	c.out = nil
	c.mu.Unlock()
	defer c.outMu.Unlock()
	c.give(out)
	c.opts.Sink.Flush()
}

// Counts returns the kernel events taken, the requests emitted (or
// joined so far) and the requests still pending, for progress lines.
func (c *Collector) Counts() (events, requests, pending uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stats.events, c.stats.requests, uint64(len(c.pending))
}

// emitLocked turns a pending request into a Request, decides its cause,
// counts it and queues it for the sink (unless it is the trace's own).
func (c *Collector) emitLocked(unique uint64, p *pend, givenUp bool) {
	r := &Request{Unique: unique, Latency: -1, Queue: -1, GivenUp: givenUp}
	if p.hasSend {
		r.Opcode = p.send.Opcode
		r.Send = p.send.Time
		r.Rel = p.send.Time - c.m.Start
		r.Pid = p.send.Pid
		r.Comm = c.commLocked(p.send.Pid, p.send.Comm)
		r.Len = p.send.Len
	} else {
		r.Missing = append(r.Missing, PartSend)
	}
	if p.hasEnd {
		r.End, r.Error = p.endTime, p.endErr
		if !p.hasSend {
			r.Rel = p.endTime - c.m.Start // replaced by the record's start, if any
		}
	} else {
		r.Missing = append(r.Missing, PartEnd)
	}
	if p.hasRec {
		x := &p.rec
		if !p.hasSend {
			r.Opcode = x.Opcode
			r.Rel = x.Start - c.m.Start
		}
		r.NodeID, r.Ino = x.NodeID, x.Ino
		r.Offset, r.Length = x.Offset, x.Length
		r.Start, r.Service = x.Start, x.Service
		r.Errno, r.Result = x.Errno, x.Result
		r.FaultPages, r.Msyncs, r.MsyncBytes = x.FaultPages, x.Msyncs, x.MsyncBytes
		if c.m.Names != nil && x.Ino != 0 {
			r.File = c.m.Names(x.Ino)
		}
	} else {
		r.Missing = append(r.Missing, PartDaemon)
	}
	r.Op = OpName(r.Opcode)
	if p.hasSend && p.hasEnd {
		r.Latency = p.endTime - p.send.Time
		if p.hasRec {
			r.Queue = r.Latency - r.Service
		}
	}

	// Who caused it.
	r.TaskPid, r.TaskComm = r.Pid, r.Comm
	sendTgid := 0
	if p.hasSend {
		sendTgid = p.send.Tgid
		if sendTgid <= 0 {
			sendTgid = c.tgidLocked(p.send.Pid)
		}
	}
	sendFromDaemon := p.hasSend && c.m.DaemonPid != 0 && sendTgid == c.m.DaemonPid
	if p.hasRec && p.rec.Pid != 0 && (!p.hasSend || int(p.rec.Pid) != p.send.Pid) {
		r.Background = p.hasSend
		r.TaskPid = int(p.rec.Pid)
		r.TaskComm = c.commLocked(r.TaskPid, "")
	} else if sendFromDaemon {
		r.Background = true
	}
	if c.m.TracePid != 0 && ((p.hasSend && sendTgid == c.m.TracePid) ||
		(p.hasRec && p.rec.Pid != 0 && c.tgidLocked(int(p.rec.Pid)) == c.m.TracePid)) {
		c.stats.own++
		return
	}

	c.causeLocked(r, p)
	if len(c.clients) < maxTasks {
		if g := c.tgidLocked(r.TaskPid); g > 0 && g != c.m.DaemonPid {
			c.clients[g] = true
		}
	}
	c.stats.request(r)
	c.holdLocked(item{t: r.Rel + c.m.Start, req: r})
}

// causeLocked decides r's cause from the histories (see the package doc).
func (c *Collector) causeLocked(r *Request, p *pend) {
	t := r.Send
	if !p.hasSend {
		t = r.Start
	}
	switch r.Opcode {
	case opRead:
		r.Cause = "read"
		if !p.hasRec {
			return
		}
		c.readCauseLocked(r, t)
	case opWrite:
		for _, pid := range []int{r.Pid, r.TaskPid} {
			if reason, ok := c.flusherLocked(pid, t); ok {
				r.Cause, r.Reason = "writeback", reason
				return
			}
		}
		if sc := c.syscallLocked(r, t); sc != "" {
			r.Cause = sc
			return
		}
		if p.hasRec && p.rec.Pid == 0 {
			c.kernelWriteCauseLocked(r, t)
			return
		}
		r.Cause = "write"
	default:
		if sc := c.syscallLocked(r, t); sc != "" {
			r.Cause = sc
			return
		}
		r.Cause = strings.ToLower(r.Op)
	}
}

// kernelWriteCauseLocked decides the cause of a WRITE the kernel made on
// its own behalf (no requester in its header: page writeback) and sent
// from a task that tells nothing (the daemon's, flushing the background
// queue): a client inside a traced sync syscall then (its msync or fsync
// waits for this writeback), else the flusher's writeback of the mount's
// BDI then or latest before, else plain "writeback".
func (c *Collector) kernelWriteCauseLocked(r *Request, t int64) {
	r.Cause = "writeback"
	if r.Background {
		for tid := range c.openSync {
			tk := c.tasks[tid]
			if tk == nil {
				continue
			}
			for i := len(tk.syscalls) - 1; i >= 0; i-- {
				sp := &tk.syscalls[i]
				if sp.covers(t) && syncSyscalls[sp.name] && c.clients[sp.tgid] {
					sp.used = true
					r.Cause, r.TaskPid, r.TaskComm = sp.name, tid, c.commLocked(tid, sp.comm)
					return
				}
			}
		}
	}
	if wb := c.writebackBeforeLocked(t); wb != nil {
		r.Reason = wb.name
		r.TaskPid, r.TaskComm = wb.pid, c.commLocked(wb.pid, "")
	}
}

// syncSyscalls are the traced syscalls that wait for a file's writeback.
var syncSyscalls = map[string]bool{
	"fsync": true, "fdatasync": true, "msync": true, "sync_file_range": true, "syncfs": true, "sync": true,
	// A FUSE file's mapping is written back when it is unmapped
	// (fuse_vma_close), should the trace follow munmap.
	"munmap": true,
}

// readCauseLocked decides a READ's cause from the readahead and fault
// history of its file, as of t (its send): the latest readahead window
// that covers its first page, and the latest fault of its task on the
// file within FaultNear. A fault wins when the window's readahead came
// from it (same task, within raNear after), or when it is the later of
// the two and the READ reads its page or its read-around.
func (c *Collector) readCauseLocked(r *Request, t int64) {
	in := c.inodes[r.Ino]
	if in == nil {
		return
	}
	first := r.Offset / pageSize
	lastPage := first
	if r.Length > 0 {
		lastPage = (r.Offset + uint64(r.Length) - 1) / pageSize
	}
	w := in.windowAt(t, first)
	f := in.faultAt(t, c.opts.FaultNear, r.TaskPid, r.Pid)
	switch {
	case f != nil && w != nil && w.Pid == f.pid && f.time <= w.Time && w.Time-f.time <= raNear:
		r.Cause, r.HasFault, r.FaultPage, r.Window = "fault", true, f.index, w
	case w != nil && (f == nil || w.Time >= f.time):
		r.Window = w
		r.Cause = "readahead-sync"
		if w.Async() {
			r.Cause = "readahead-async"
		}
	case f != nil:
		ra := c.raPagesLocked(in)
		around := aroundWindow(f.index, ra, f.time, f.pid)
		inRange := f.index >= first && f.index <= lastPage
		inAround := ra > 0 && first < around.Start+uint64(around.Pages) && lastPage >= around.Start
		if inRange || inAround {
			r.Cause, r.HasFault, r.FaultPage = "fault", true, f.index
			if ra > 0 {
				r.Window = &around
			}
		} else if w != nil {
			r.Window = w
			r.Cause = "readahead-" + w.Kind
		}
	}
}

// raPagesLocked is the maximum readahead of a file of the mount: as its
// latest readahead event gave it, else the mount's latest, else
// Mount.RAPages (0: unknown).
func (c *Collector) raPagesLocked(in *inode) uint32 {
	if in.raPages > 0 {
		return in.raPages
	}
	if c.raPages > 0 {
		return c.raPages
	}
	return c.m.RAPages
}

// flusherLocked says whether pid was writing back the mount's BDI at t,
// and why.
func (c *Collector) flusherLocked(pid int, t int64) (string, bool) {
	if wb := c.writebackAtLocked(pid, t); wb != nil {
		return wb.name, true
	}
	if tk := c.tasks[pid]; tk != nil && isFlusherComm(tk.comm) {
		if wb := c.writebackBeforeLocked(t); wb != nil {
			return wb.name, true
		}
		return "", true
	}
	return "", false
}

// syscallLocked names the traced syscall the request's causing task (or
// the task that sent it) was in at t, "" when none, and marks it used
// (handing it to the sink if it has ended).
func (c *Collector) syscallLocked(r *Request, t int64) string {
	for _, pid := range []int{r.TaskPid, r.Pid} {
		tk := c.tasks[pid]
		if tk == nil {
			continue
		}
		for i := len(tk.syscalls) - 1; i >= 0; i-- {
			sp := &tk.syscalls[i]
			if sp.covers(t) {
				sp.used = true
				if sp.end != 0 {
					c.syscallEventsLocked(sp)
				}
				return sp.name
			}
		}
	}
	return ""
}
