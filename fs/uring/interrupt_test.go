package uring

import (
	"encoding/binary"
	"io"
	"log"
	"maps"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// interruptHandler answers INTERRUPTs as go-fuse's ProtocolServer does:
// EAGAIN until the request is in flight (inFlight), then nothing (the
// request is interrupted). mu guards its fields.
type interruptHandler struct {
	mu       sync.Mutex
	inFlight bool
	calls    int
}

func (h *interruptHandler) HandleRequest(in, out [][]byte) (int, fuse.Status) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.calls++
	if h.inFlight {
		return 0, fuse.OK
	}
	o := out[0]
	binary.LittleEndian.PutUint32(o[0:], outHeaderSize)
	binary.LittleEndian.PutUint32(o[4:], errWord(syscall.EAGAIN))
	copy(o[8:16], in[0][8:16])
	return outHeaderSize, fuse.OK
}

// set makes the request in flight or not and returns the calls so far.
func (h *interruptHandler) set(inFlight bool) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.inFlight = inFlight
	return h.calls
}

// callCount returns the calls so far.
func (h *interruptHandler) callCount() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.calls
}

// errWord is errno as a fuse_out_header's error field holds it.
func errWord(errno syscall.Errno) uint32 { return uint32(-int32(errno)) }

// TestInterruptRetried: an INTERRUPT answered EAGAIN is retried until
// its request is in flight, and then no more.
func TestInterruptRetried(t *testing.T) {
	t.Parallel()
	h := &interruptHandler{}
	r := startInterruptRetrier(h, time.Millisecond, 5*time.Second)
	defer r.stop()
	req := interruptFor(2)
	r.add(req)
	clear(req) // the caller's buffer is reused: add kept a copy
	deadline := time.Now().Add(5 * time.Second)
	for h.callCount() < 3 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if n := h.callCount(); n < 3 {
		t.Fatalf("%d retries in 5s", n)
	}
	found := h.set(true)
	time.Sleep(50 * time.Millisecond)
	if n := h.callCount(); n > found+1 {
		t.Errorf("%d calls after the request was found at call %d: the retries went on", n-found, found)
	}
}

// TestInterruptRetriesBounded: an INTERRUPT for a request that is never
// in flight (answered already) is retried for the bound only.
func TestInterruptRetriesBounded(t *testing.T) {
	t.Parallel()
	h := &interruptHandler{}
	r := startInterruptRetrier(h, time.Millisecond, 30*time.Millisecond)
	defer r.stop()
	start := time.Now()
	r.add(interruptFor(4))
	time.Sleep(200 * time.Millisecond)
	n := h.callCount()
	time.Sleep(100 * time.Millisecond)
	if m := h.callCount(); m != n || n == 0 || n > 31 {
		t.Errorf("%d calls in %v, %d more 100ms later: want 1 to 31, then none", n, time.Since(start).Round(time.Millisecond), m-n)
	}
}

// TestInterruptRetriesEndWithStop: stop ends the retries of pending
// INTERRUPTs at once.
func TestInterruptRetriesEndWithStop(t *testing.T) {
	t.Parallel()
	h := &interruptHandler{}
	r := startInterruptRetrier(h, time.Millisecond, time.Hour)
	r.add(interruptFor(6))
	// Stopped while it is retrying: once it has called twice.
	deadline := time.Now().Add(5 * time.Second)
	for h.callCount() < 2 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	r.stop()
	n := h.callCount()
	time.Sleep(50 * time.Millisecond)
	if m := h.callCount(); m != n || n == 0 {
		t.Errorf("%d calls before stop, %d after", n, m-n)
	}
}

// TestInterruptNotFound: only an INTERRUPT's EAGAIN is one to retry.
func TestInterruptNotFound(t *testing.T) {
	t.Parallel()
	eagain := make([]byte, outHeaderSize)
	binary.LittleEndian.PutUint32(eagain[4:], errWord(syscall.EAGAIN))
	enosys := make([]byte, outHeaderSize)
	binary.LittleEndian.PutUint32(enosys[4:], errWord(syscall.ENOSYS))
	read := interruptFor(8)
	binary.LittleEndian.PutUint32(read[4:], opRead)
	for _, c := range []struct {
		name       string
		req, reply []byte
		want       bool
	}{
		{"INTERRUPT EAGAIN", interruptFor(8), eagain, true},
		{"INTERRUPT ENOSYS", interruptFor(8), enosys, false},
		{"READ EAGAIN", read, eagain, false},
		{"short reply", interruptFor(8), eagain[:8], false},
	} {
		if got := interruptNotFound(c.req, c.reply); got != c.want {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
}

// cancelHandler answers INTERRUPTs as go-fuse's ProtocolServer does for
// the requests in inFlight (found: no reply, the request's cancel
// channel closed) and EAGAIN for others (not yet handed to it, or
// answered). mu guards its fields.
type cancelHandler struct {
	mu        sync.Mutex
	inFlight  map[uint64]bool
	cancelled map[uint64]bool
	sent      map[uint64]int // INTERRUPTs received, by the request they name
	calls     int
	other     int // requests other than INTERRUPT
}

func (h *cancelHandler) HandleRequest(in, out [][]byte) (int, fuse.Status) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.calls++
	req := in[0]
	if binary.LittleEndian.Uint32(req[4:]) != opInterrupt || len(req) != inHeaderSize+8 {
		h.other++
		return 0, fuse.EIO
	}
	u := binary.LittleEndian.Uint64(req[inHeaderSize:])
	if binary.LittleEndian.Uint64(req[8:]) != u|1 {
		h.other++
		return 0, fuse.EIO
	}
	h.sent[u]++
	if h.inFlight[u] && !h.cancelled[u] {
		h.cancelled[u] = true
		return 0, fuse.OK
	}
	o := out[0]
	binary.LittleEndian.PutUint32(o[0:], outHeaderSize)
	binary.LittleEndian.PutUint32(o[4:], errWord(syscall.EAGAIN))
	copy(o[8:16], req[8:16])
	return outHeaderSize, fuse.OK
}

func (h *cancelHandler) state() (cancelled map[uint64]bool, calls, other int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return maps.Clone(h.cancelled), h.calls, h.other
}

func (h *cancelHandler) sentTo(u uint64) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.sent[u]
}

func (h *cancelHandler) handOver(u uint64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.inFlight[u] = true
}

// TestCancelInFlight: CancelInFlight interrupts, through the Handler,
// the request every busy entry serves: once it is found, again every
// cancelEvery until then (one given to an entry but not yet to the
// Handler is found once it is), none for an idle entry; a second call
// starts nothing more; the INTERRUPTs stop once every entry has ended,
// even one whose request was never found.
func TestCancelInFlight(t *testing.T) {
	t.Parallel()
	h := &cancelHandler{inFlight: map[uint64]bool{10: true}, cancelled: map[uint64]bool{}, sent: map[uint64]int{}}
	tr := &Transport{
		cfg:     Config{Handler: h, Logger: log.New(io.Discard, "", 0)},
		serving: make([]servingSlot, 4),
		ended:   make(chan struct{}),
	}
	tr.serving[0].unique.Store(10) // in the Handler
	tr.serving[2].unique.Store(12) // the entry's, not yet the Handler's
	tr.serving[3].unique.Store(14) // never the Handler's
	tr.CancelInFlight()
	tr.CancelInFlight() // a second call changes nothing
	waitFor := func(what string, ok func() bool) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for !ok() {
			if time.Now().After(deadline) {
				c, calls, _ := h.state()
				t.Fatalf("%s: not after 5s (cancelled: %v, %d calls)", what, c, calls)
			}
			time.Sleep(time.Millisecond)
		}
	}
	waitFor("request 10 cancelled", func() bool { c, _, _ := h.state(); return c[10] })
	// Request 12 is not found: its INTERRUPT is sent again, round
	// after round.
	waitFor("request 12 interrupted 3 times", func() bool { return h.sentTo(12) >= 3 })
	if c, _, _ := h.state(); c[12] {
		t.Fatalf("request 12 cancelled before it reached the Handler")
	}
	h.handOver(12)
	waitFor("request 12 cancelled once the Handler had it", func() bool { c, _, _ := h.state(); return c[12] })
	// Found, each is interrupted no more while its entry serves it
	// (two rounds' time), and by one goroutine only: a second one
	// would have found request 10 too.
	time.Sleep(2 * cancelEvery)
	if n := h.sentTo(10); n != 1 {
		t.Errorf("request 10, found by its first INTERRUPT, was interrupted %d times", n)
	}
	twelve := h.sentTo(12)
	time.Sleep(3 * cancelEvery)
	if n := h.sentTo(12); n != twelve {
		t.Errorf("request 12 interrupted %d more times after it was found", n-twelve)
	}
	if n := h.sentTo(0); n != 0 {
		t.Errorf("%d INTERRUPTs for the idle entry's request 0", n)
	}
	// Entry 3 still serves request 14, never found: the INTERRUPTs
	// stop all the same once every entry has ended.
	close(tr.ended)
	time.Sleep(2 * cancelEvery)
	_, n, other := h.state()
	time.Sleep(5 * cancelEvery)
	c, m, _ := h.state()
	if m != n {
		t.Errorf("%d more calls of the Handler after every entry had ended", m-n)
	}
	if other != 0 || len(c) != 2 {
		t.Errorf("%d requests other than a well-formed INTERRUPT; cancelled %v, want 10 and 12", other, c)
	}
}
