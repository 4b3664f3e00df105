package uring

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/mmapfs/mmapfs/backing/ringmem"
)

// The FUSE-over-io_uring ABI (include/uapi/linux/fuse.h).
const (
	cmdRegister       = 1 // FUSE_IO_URING_CMD_REGISTER
	cmdCommitAndFetch = 2 // FUSE_IO_URING_CMD_COMMIT_AND_FETCH

	inHeaderSize  = 40  // struct fuse_in_header
	outHeaderSize = 16  // struct fuse_out_header
	opInOff       = 128 // fuse_uring_req_header.op_in
	opInSize      = 128
	entInOutOff   = 256 // fuse_uring_req_header.ring_ent_in_out
	reqHeaderSize = 288 // sizeof(struct fuse_uring_req_header)

	// minPayload is the kernel's FUSE_MIN_READ_BUFFER: the smallest
	// payload buffer it takes.
	minPayload = 8192

	opRead  = 15 // FUSE_READ
	opIoctl = 39 // FUSE_IOCTL: its input and output share the payload buffer
)

// DefaultEntries is how many entries (threads) each queue has unless
// Config says otherwise: enough for a queue to go on serving while a few
// of its requests block.
const DefaultEntries = 4

// Handler serves one FUSE request. in is the request as a byte stream in
// iovecs (the fuse_in_header, the op's header, the payload), out the
// reply's iovecs (the fuse_out_header's room, then the payload buffer);
// it returns how many bytes of out it wrote. go-fuse's
// *fuse.ProtocolServer is one; it must be safe for concurrent use.
type Handler interface {
	HandleRequest(in, out [][]byte) (int, fuse.Status)
}

// Config is what Start needs.
type Config struct {
	// Dev is the connection's /dev/fuse descriptor, after INIT was
	// answered with FUSE_OVER_IO_URING. Start duplicates it; the
	// caller keeps its own.
	Dev int
	// Queues is how many queues the kernel made: one per possible CPU
	// (PossibleCPUs). Queue q's threads are pinned to CPU q.
	Queues int
	// Entries is how many entries each queue has; 0 means
	// DefaultEntries.
	Entries int
	// Payload is the size of each entry's payload buffer: at least the
	// kernel's max(8192, max_write, max_pages*page size) for the
	// connection (PayloadSize computes it from the INIT reply).
	Payload int
	// Handler serves the requests.
	Handler Handler
	// Connection is the connection's directory in fusectl
	// (/sys/fs/fuse/connections/N, see ConnectionDir), written to abort
	// the connection if registration fails; "" when unknown.
	Connection string
	// Mountpoint is the mount's path. When the connection cannot be
	// aborted through fusectl (Connection unknown, fusectl not mounted
	// and not mountable here), it is force-unmounted instead
	// (AbortByUnmount), which aborts the connection without fusectl;
	// "" leaves the aborting to the caller then.
	Mountpoint string
	// Logger receives the transport's log lines.
	Logger *log.Logger
	// HandoffDelay, for the tests only, makes each entry's thread wait
	// this long before handing a READ it was given to the Handler,
	// logging "holding READ" as it starts to: it widens the window in
	// which the request is the entry's but not yet in flight in the
	// Handler, where an INTERRUPT for it finds nothing (see ServeDev).
	// 0 in production.
	HandoffDelay time.Duration
}

// QueueStats are the figures of one queue.
type QueueStats struct {
	Queue    int    // the queue's index, the CPU its requests come from
	Entries  int    // entries registered
	Pinned   int    // of those, the ones whose thread is pinned to the queue's CPU (while it serves a stream of large READs, off it: see awayRead)
	Requests uint64 // requests served
	Busy     int32  // entries serving a request now: the queue depth in use
	MaxBusy  int32  // the most entries that were serving at once
	Away     uint64 // large READs served off the queue's CPU (see awayRead)
}

// Transport is the io_uring side of one FUSE connection: its queues
// and their entries, each served by a thread of its own.
type Transport struct {
	cfg    Config
	dev    int // our duplicate of Config.Dev; closed once every entry has ended
	queues []queue

	wg      sync.WaitGroup
	errOnce sync.Once
	err     error // the first unexpected failure; written once under errOnce, read after wg.Wait
	aborted atomic.Bool

	closeOnce sync.Once
	closeErr  error // closing dev, by the first Wait; written once under closeOnce

	// serving holds, for each entry (by its index, q*Entries+i), the
	// unique of the request it has handed the Handler, 0 when it
	// serves none: what CancelInFlight interrupts.
	serving    []servingSlot
	ended      chan struct{} // closed once every entry has ended
	cancelOnce sync.Once
}

// servingSlot is one entry's place in Transport.serving, a cache line of
// its own: each entry writes its slot twice a request, from its own CPU,
// and slots packed together would bounce one line between the CPUs.
type servingSlot struct {
	unique atomic.Uint64
	_      [56]byte
}

// cancelEvery is how often CancelInFlight interrupts again the requests
// the entries still serve, until every entry has ended: a request given
// to an entry but not yet to the Handler (which registers it in flight)
// is not found by its first INTERRUPT.
const cancelEvery = 5 * time.Millisecond

// queue is one of the kernel's queues as the transport serves it. Its
// fields are atomics, updated by the queue's entries.
type queue struct {
	registered atomic.Int32
	pinned     atomic.Int32
	requests   atomic.Uint64
	busy       atomic.Int32
	maxBusy    atomic.Int32
	away       atomic.Uint64
}

// awayRead is the smallest READ an entry serves off its queue's CPU. The
// kernel queues a request on the queue of the CPU its caller runs on
// (fuse_uring_task_to_queue: task_cpu(current)), and the queue's threads
// are pinned there: right for a request whose caller sleeps until the
// answer (a LOOKUP, a GETATTR, a small read), which then runs where the
// caller's caches are. A large READ is mostly readahead, which the
// kernel sends in the background while the reader goes on copying what
// is already cached. Served on the reader's CPU, the daemon's copy out
// of the store mapping and the commit's copy into the page cache take
// turns with the reader on one CPU while the others idle, and the
// entry's thread, woken there for each READ, preempts the reader. So an
// entry given a READ of at least awayRead bytes moves its thread to the
// other CPUs, and it stays there, waiting for the stream's next READ
// where it wakes without preempting the reader; the first small
// request it is given it serves where it is, then pins its thread back
// to the queue's CPU before it waits again. Cold 1 MiB sequential reads
// on the defaults, against the dev transport: 0.89 before, 1.01 after
// with fio free; 0.62 before, 0.96 after with fio pinned by taskset
// (README, issue 17). A stream costs one sched_setaffinity at its first
// READ and one after it.
const awayRead = 64 << 10

// Start registers cfg.Entries entries on each of cfg.Queues queues and
// serves the connection's requests on them until the connection ends
// (unmount, abort). It returns once every entry is registered, which is
// when the kernel starts sending requests. If any entry fails to
// register, Start aborts the connection (AbortConnection: cfg.Connection,
// else a forced unmount of cfg.Mountpoint), waits for the entries
// already registered to end, and returns the error: the caller must then
// detach the mount. If the connection could not be aborted, the error
// wraps ErrNotAborted and nothing was waited for: the caller must exit.
func Start(cfg Config) (*Transport, error) {
	if cfg.Entries <= 0 {
		cfg.Entries = DefaultEntries
	}
	if cfg.Queues <= 0 {
		return nil, fmt.Errorf("io_uring transport: %d queues", cfg.Queues)
	}
	if cfg.Payload < minPayload {
		cfg.Payload = minPayload
	}
	if cfg.Logger == nil {
		cfg.Logger = log.New(os.Stderr, "uring: ", log.LstdFlags)
	}
	dev, err := unix.FcntlInt(uintptr(cfg.Dev), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, errors.Join(fmt.Errorf("io_uring transport: duplicating /dev/fuse descriptor %d: %w", cfg.Dev, err), cfg.abort())
	}
	n := cfg.Queues * cfg.Entries
	t := &Transport{cfg: cfg, dev: dev, queues: make([]queue, cfg.Queues), serving: make([]servingSlot, n), ended: make(chan struct{})}
	ready := make(chan error, n)
	t.wg.Add(n)
	for q := range cfg.Queues {
		for i := range cfg.Entries {
			go t.runEntry(q, q*cfg.Entries+i, ready)
		}
	}
	go func() {
		t.wg.Wait()
		close(t.ended)
	}()
	var errs []error
	for range n {
		if err := <-ready; err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		err := fmt.Errorf("io_uring transport: registering the queues' entries: %w", errors.Join(errs...))
		if aerr := t.abort(); aerr != nil {
			// Neither fusectl nor a forced unmount could abort
			// the connection: the entries registered still wait
			// for requests. Leave them: the caller cannot do
			// better than exit, which ends the connection with
			// the last /dev/fuse descriptor.
			return nil, errors.Join(err, aerr)
		}
		t.wg.Wait()
		return nil, errors.Join(err, t.closeDev())
	}
	return t, nil
}

// Wait blocks until every entry has ended (the connection is gone),
// closes the transport's duplicate of the /dev/fuse descriptor (the
// first call only), and returns the first unexpected error an entry met,
// joined with the close's.
func (t *Transport) Wait() error {
	t.wg.Wait()
	t.closeOnce.Do(func() { t.closeErr = t.closeDev() })
	return errors.Join(t.err, t.closeErr)
}

// CancelInFlight cancels every request the entries are serving, as
// go-fuse's /dev/fuse loop does (its unexported cancelAll) when its read
// gets ENODEV: the caller calls it once the connection has ended
// (ServeDev returned, the connection was aborted). Each request is
// interrupted through the Handler, with the INTERRUPT the kernel would
// send, so that a request waiting on its cancel channel (an injected
// delay, anything that waits on the request's context) returns at once;
// otherwise the entry serving it, and Wait with it, would wait until the
// request ends by itself. The kernel has already answered the callers
// (ECONNABORTED): no reply reaches anyone. The INTERRUPTs are sent again
// every cancelEvery, from a goroutine of their own, until every entry
// has ended: a request given to an entry but not yet to the Handler is
// caught by a later one. A request that does not watch its cancel
// channel still ends only when it does. Safe to call more than once and
// from any goroutine; the entries call it themselves when the kernel
// ends them.
func (t *Transport) CancelInFlight() {
	t.cancelOnce.Do(func() { go t.cancelInFlight() })
}

func (t *Transport) cancelInFlight() {
	out := make([]byte, outHeaderSize)
	inv, outv := [][]byte{nil}, [][]byte{out}
	// found holds, by slot, the request an INTERRUPT found: it is not
	// sent again while the slot still serves that request (go-fuse
	// would answer EAGAIN to each, logging it under --debug, for as
	// long as a request that does not watch its cancel channel runs).
	found := make([]uint64, len(t.serving))
	tick := time.NewTicker(cancelEvery)
	defer tick.Stop()
	for first := true; ; first = false {
		busy := 0
		for i := range t.serving {
			u := t.serving[i].unique.Load()
			if u == 0 {
				continue
			}
			busy++
			if found[i] == u {
				continue
			}
			inv[0] = interruptFor(u)
			if n, st := t.cfg.Handler.HandleRequest(inv, outv); !st.Ok() || !interruptNotFound(inv[0], out[:n]) {
				// Found (no reply), or answered otherwise than
				// EAGAIN: sending it again changes nothing.
				found[i] = u
			}
		}
		if first && busy > 0 {
			t.cfg.Logger.Printf("io_uring: the connection ended with %d requests in the daemon; cancelling them", busy)
		}
		select {
		case <-t.ended:
			return
		case <-tick.C:
		}
	}
}

// interruptFor is the INTERRUPT of request unique, as the kernel sends
// it (its own unique is the request's with FUSE_INT_REQ_BIT set).
func interruptFor(unique uint64) []byte {
	b := make([]byte, inHeaderSize+8)
	binary.LittleEndian.PutUint32(b[0:], uint32(len(b)))
	binary.LittleEndian.PutUint32(b[4:], opInterrupt)
	binary.LittleEndian.PutUint64(b[8:], unique|1)
	binary.LittleEndian.PutUint64(b[inHeaderSize:], unique)
	return b
}

// Stats returns the figures of each queue now.
func (t *Transport) Stats() []QueueStats {
	s := make([]QueueStats, len(t.queues))
	for i := range t.queues {
		q := &t.queues[i]
		s[i] = QueueStats{
			Queue:    i,
			Entries:  int(q.registered.Load()),
			Pinned:   int(q.pinned.Load()),
			Requests: q.requests.Load(),
			Busy:     q.busy.Load(),
			MaxBusy:  q.maxBusy.Load(),
			Away:     q.away.Load(),
		}
	}
	return s
}

func (t *Transport) closeDev() error {
	if err := unix.Close(t.dev); err != nil {
		return fmt.Errorf("io_uring transport: closing /dev/fuse duplicate %d: %w", t.dev, err)
	}
	return nil
}

// fail records an entry's unexpected failure and aborts the connection:
// a queue that lost an entry might have none left, and then the
// requests of its CPU would wait for ever.
func (t *Transport) fail(err error) {
	t.errOnce.Do(func() {
		t.err = err
		t.cfg.Logger.Printf("%v; aborting the connection", err)
		if aerr := t.abort(); aerr != nil {
			t.cfg.Logger.Print(aerr)
			return
		}
		t.CancelInFlight()
	})
}

func (t *Transport) abort() error {
	if t.aborted.Swap(true) {
		return nil
	}
	return t.cfg.abort()
}

func (cfg *Config) abort() error {
	return AbortConnection(cfg.Connection, cfg.Mountpoint, cfg.Logger)
}

// ErrNotAborted is in the error of AbortConnection (and of Start) when
// the connection could not be aborted at all: the kernel may still hold
// requests back, so nothing may wait for the connection to end.
var ErrNotAborted = errors.New("the FUSE connection could not be aborted")

// AbortConnection aborts the FUSE connection whose fusectl directory is
// conn ("" when unknown) and whose mount is at mnt ("" when unknown):
// through fusectl (Abort), else by a forced unmount of mnt
// (AbortByUnmount), which it then logs to logger (if not nil) with why
// fusectl failed. An error wraps ErrNotAborted.
func AbortConnection(conn, mnt string, logger *log.Logger) error {
	var err error
	if conn == "" {
		err = errors.New("io_uring transport: the connection's fusectl directory is unknown")
	} else if err = Abort(conn); err == nil {
		return nil
	}
	if mnt == "" {
		return fmt.Errorf("%w: %w", ErrNotAborted, err)
	}
	if uerr := AbortByUnmount(mnt); uerr != nil {
		return fmt.Errorf("%w: %w", ErrNotAborted, errors.Join(err, uerr))
	}
	if logger != nil {
		logger.Printf("%v; aborted the connection by a forced unmount of %s instead", err, mnt)
	}
	return nil
}

// AbortByUnmount aborts the FUSE connection of the mount at mnt without
// fusectl: umount2(MNT_FORCE) has the kernel abort the connection
// (fuse_umount_begin: fuse_abort_conn) before it looks whether the mount
// is busy, so that EBUSY, a process still using the mount, also means
// aborted; the caller detaches what is left. Needs CAP_SYS_ADMIN in the
// mount's namespace, as the mount did.
func AbortByUnmount(mnt string) error {
	if err := unix.Unmount(mnt, unix.MNT_FORCE); err != nil && !errors.Is(err, syscall.EBUSY) {
		return fmt.Errorf("aborting the FUSE connection of %s by a forced unmount: %w", mnt, err)
	}
	return nil
}

// entry is one registered ring entry: its memory, one mmap laid out as
// [iovecs | request header | ... | payload from entryPayloadOff].
type entry struct {
	mem     *ringmem.Mem
	hdr     []byte // struct fuse_uring_req_header
	payload []byte
	scratch []byte // a copy of an IOCTL's input, whose output shares the payload buffer; made on first use

	in  [3][]byte // the request's iovecs for the Handler
	out [2][]byte // the reply's
}

// Where an entry's memory holds the request header and the payload.
const (
	hdrOff          = 64
	entryPayloadOff = 4096
)

// runEntry is the thread of entry slot (its index in t.serving) of queue
// q: it pins itself to CPU q, registers the entry and serves its
// requests until the connection ends. It reports on ready once, whether
// the registration went through.
func (t *Transport) runEntry(q, slot int, ready chan<- error) {
	defer t.wg.Done()
	// Never unlocked: the thread ends with the goroutine, affinity and
	// all.
	runtime.LockOSThread()
	qs := &t.queues[q]
	pinned := false
	if err := pin(q); err != nil {
		t.cfg.Logger.Printf("io_uring queue %d: %v; its entry runs unpinned", q, err)
	} else {
		qs.pinned.Add(1)
		pinned = true
	}
	r, e, err := t.register(q)
	ready <- err
	if err != nil {
		return
	}
	qs.registered.Add(1)
	err = t.serve(r, e, qs, q, slot, pinned)
	cerr := errors.Join(r.Close(), e.mem.Unmap())
	if err != nil {
		t.fail(fmt.Errorf("io_uring queue %d: %w", q, err))
	} else if cerr != nil {
		t.fail(fmt.Errorf("io_uring queue %d: %w", q, cerr))
	}
}

// pin binds the calling thread to cpu.
func pin(cpu int) error {
	var set unix.CPUSet
	set.Set(cpu)
	if err := unix.SchedSetaffinity(0, &set); err != nil {
		return fmt.Errorf("sched_setaffinity to CPU %d: %w", cpu, err)
	}
	return nil
}

// register makes the entry's ring and memory and registers it on queue
// q. A failure the kernel reports at once (EOPNOTSUPP with enable_uring
// off, EINVAL for a buffer too small) comes back as an error; the
// registration itself completes only with the first request.
func (t *Transport) register(q int) (*ringmem.Ring, *entry, error) {
	r, err := ringmem.Setup(2, ringmem.SetupSingleIssuer|ringmem.SetupDeferTaskrun)
	if err != nil {
		return nil, nil, fmt.Errorf("queue %d: %w", q, err)
	}
	m, err := ringmem.Map(entryPayloadOff + t.cfg.Payload)
	if err != nil {
		return nil, nil, errors.Join(fmt.Errorf("queue %d: %w", q, err), r.Close())
	}
	mem := m.Bytes()
	e := &entry{mem: m, hdr: mem[hdrOff : hdrOff+reqHeaderSize], payload: mem[entryPayloadOff:]}
	// struct iovec[2] at the start: the header, the payload.
	binary.LittleEndian.PutUint64(mem[0:], m.Addr(hdrOff))
	binary.LittleEndian.PutUint64(mem[8:], uint64(len(e.hdr)))
	binary.LittleEndian.PutUint64(mem[16:], m.Addr(entryPayloadOff))
	binary.LittleEndian.PutUint64(mem[24:], uint64(len(e.payload)))

	sqe := r.NextSQE()
	t.prepCmd(sqe, cmdRegister, q, 0)
	binary.LittleEndian.PutUint64(sqe[16:], m.Addr(0)) // addr: the iovecs
	binary.LittleEndian.PutUint32(sqe[24:], 2)         // len: two of them
	r.PushSQE()
	if err := t.submit(r, 0); err != nil {
		return nil, nil, errors.Join(fmt.Errorf("queue %d: registering: %w", q, err), r.Close(), m.Unmap())
	}
	if c, ok := r.PeekCQE(); ok {
		err := fmt.Errorf("queue %d: FUSE_IO_URING_CMD_REGISTER: %w", q, syscall.Errno(-c.Res))
		if c.Res >= 0 {
			err = fmt.Errorf("queue %d: FUSE_IO_URING_CMD_REGISTER completed at once (%d) without a request", q, c.Res)
		}
		return nil, nil, errors.Join(err, r.Close(), m.Unmap())
	}
	return r, e, nil
}

// prepCmd fills sqe as an IORING_OP_URING_CMD of cmdOp on /dev/fuse for
// queue q, with commitID.
func (t *Transport) prepCmd(sqe []byte, cmdOp uint32, q int, commitID uint64) {
	sqe[0] = ringmem.OpURINGCmd
	binary.LittleEndian.PutUint32(sqe[4:], uint32(t.dev))
	binary.LittleEndian.PutUint32(sqe[8:], cmdOp)
	// struct fuse_uring_cmd_req in the command area at 48.
	binary.LittleEndian.PutUint64(sqe[48:], 0)
	binary.LittleEndian.PutUint64(sqe[56:], commitID)
	binary.LittleEndian.PutUint16(sqe[64:], uint16(q))
}

// submit hands the kernel the SQEs pushed and, with wait, waits for a
// completion; a signal's EINTR is retried.
func (t *Transport) submit(r *ringmem.Ring, minComplete uint32) error {
	flags := uint32(0)
	if minComplete > 0 {
		flags = ringmem.EnterGetEvents
	}
	for {
		// What a signal's EINTR interrupted, the submission or the
		// wait, the SQ head tells: submit what is still pending.
		_, err := r.Enter(r.PendingSQEs(), minComplete, flags)
		if errors.Is(err, syscall.EINTR) {
			continue
		}
		if err != nil {
			return fmt.Errorf("io_uring_enter: %w", err)
		}
		return nil
	}
}

// serve waits for the entry's requests and serves them, until the
// kernel ends the entry: a completion with ENOTCONN, ECONNABORTED,
// ENODEV or ECANCELED is the connection going away, and ends serve
// without an error, once it has had the requests other entries still
// serve cancelled (CancelInFlight).
func (t *Transport) serve(r *ringmem.Ring, e *entry, qs *queue, q, slot int, pinned bool) error {
	// others: the CPUs a large READ is served on (awayRead), all but
	// q's; all: where an entry that cannot pin back runs.
	var others, all unix.CPUSet
	for c := range len(t.queues) {
		all.Set(c)
		if c != q {
			others.Set(c)
		}
	}
	canLeave := pinned && others.Count() > 0
	away := false // the thread's affinity is others, not q
	for {
		c, ok := r.PeekCQE()
		if !ok {
			if err := t.submit(r, 1); err != nil {
				return err
			}
			continue
		}
		if c.Res < 0 {
			switch errno := syscall.Errno(-c.Res); errno {
			case syscall.ENOTCONN, syscall.ECONNABORTED, syscall.ENODEV, syscall.ECANCELED:
				t.CancelInFlight()
				return nil
			default:
				return fmt.Errorf("FUSE over io_uring command: %w", errno)
			}
		}
		busy := qs.busy.Add(1)
		for {
			m := qs.maxBusy.Load()
			if busy <= m || qs.maxBusy.CompareAndSwap(m, busy) {
				break
			}
		}
		// A large READ moves the thread to the other CPUs unless it is
		// there already; an affinity that cannot be had (the other
		// CPUs offline) leaves it where it is.
		large := canLeave && isLargeRead(e.hdr)
		if large && !away {
			away = unix.SchedSetaffinity(0, &others) == nil
		}
		commitID := t.handle(e, slot)
		qs.busy.Add(-1)
		qs.requests.Add(1)
		if large && away {
			qs.away.Add(1)
		}
		sqe := r.NextSQE()
		if sqe == nil {
			return errors.New("no free SQE for the commit")
		}
		t.prepCmd(sqe, cmdCommitAndFetch, q, commitID)
		r.PushSQE()
		if !away || large {
			// Pinned, or away and waiting there for the next READ
			// of the stream: the commit and the wait in one call.
			continue
		}
		// A small request served away: the caller waits for it, and
		// the next ones will too. The commit goes from here, the
		// wait from q.
		if err := t.submit(r, 0); err != nil {
			return err
		}
		away = false
		if err := pin(q); err != nil {
			// Not left on the other CPUs alone: on all of them.
			if aerr := unix.SchedSetaffinity(0, &all); aerr != nil {
				err = errors.Join(err, aerr)
			}
			t.cfg.Logger.Printf("io_uring queue %d: pinning back after large READs: %v; the entry runs unpinned", q, err)
			qs.pinned.Add(-1)
			canLeave = false
		}
	}
}

// isLargeRead reports whether the request whose header is h is a READ
// of at least awayRead bytes (fuse_read_in.size, at 16 in the op header).
func isLargeRead(h []byte) bool {
	return binary.LittleEndian.Uint32(h[4:]) == opRead && binary.LittleEndian.Uint32(h[opInOff+16:]) >= awayRead
}

// handle serves the request in e's buffers and writes the reply there;
// it returns the commit id. While the Handler serves it, the request's
// unique is the entry's in t.serving (slot).
func (t *Transport) handle(e *entry, slot int) uint64 {
	h := e.hdr
	length := binary.LittleEndian.Uint32(h[0:])
	opcode := binary.LittleEndian.Uint32(h[4:])
	unique := binary.LittleEndian.Uint64(h[8:])
	commitID := binary.LittleEndian.Uint64(h[entInOutOff+8:])
	payloadSz := int(binary.LittleEndian.Uint32(h[entInOutOff+16:]))
	// The in header's length counts every argument; the payload holds
	// all but the first, which is in op_in.
	opIn := int(length) - inHeaderSize - payloadSz
	if opIn < 0 || opIn > opInSize || payloadSz > len(e.payload) {
		t.cfg.Logger.Printf("io_uring: request %d (op %d) of %d bytes with a payload of %d: malformed", unique, opcode, length, payloadSz)
		return replyErr(e, unique, commitID, syscall.EIO)
	}
	e.in[0] = h[:inHeaderSize]
	e.in[1] = h[opInOff : opInOff+opIn]
	e.in[2] = e.payload[:payloadSz]
	if opcode == opIoctl && payloadSz > 0 {
		// The reply is written into the payload buffer while the
		// input is still read from it.
		if cap(e.scratch) < payloadSz {
			e.scratch = make([]byte, len(e.payload))
		}
		e.in[2] = e.scratch[:copy(e.scratch, e.payload[:payloadSz])]
	}
	e.out[0] = h[:outHeaderSize]
	e.out[1] = e.payload
	if t.cfg.HandoffDelay > 0 && opcode == opRead {
		t.cfg.Logger.Printf("io_uring: test hand-off delay: holding READ %d for %v before the handler", unique, t.cfg.HandoffDelay)
		time.Sleep(t.cfg.HandoffDelay)
	}
	t.serving[slot].unique.Store(unique)
	n, st := t.cfg.Handler.HandleRequest(e.in[:], e.out[:])
	t.serving[slot].unique.Store(0)
	switch {
	case !st.Ok():
		return replyErr(e, unique, commitID, syscall.Errno(st))
	case n == 0:
		// No reply (NOTIFY_REPLY): the entry must be committed all the
		// same to be given the next request.
		return replyErr(e, unique, commitID, 0)
	case n < outHeaderSize:
		t.cfg.Logger.Printf("io_uring: request %d (op %d): a reply of %d bytes", unique, opcode, n)
		return replyErr(e, unique, commitID, syscall.EIO)
	}
	binary.LittleEndian.PutUint32(h[entInOutOff+16:], uint32(n-outHeaderSize))
	return commitID
}

// replyErr writes a reply of errno alone (0: an empty success).
func replyErr(e *entry, unique, commitID uint64, errno syscall.Errno) uint64 {
	h := e.hdr
	binary.LittleEndian.PutUint32(h[0:], outHeaderSize)
	binary.LittleEndian.PutUint32(h[4:], uint32(-int32(errno)))
	binary.LittleEndian.PutUint64(h[8:], unique)
	binary.LittleEndian.PutUint32(h[entInOutOff+16:], 0)
	return commitID
}
