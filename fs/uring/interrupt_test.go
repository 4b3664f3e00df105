package uring

import (
	"encoding/binary"
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

// interruptFor is an INTERRUPT (unique u|1) for request u.
func interruptFor(u uint64) []byte {
	b := make([]byte, inHeaderSize+8)
	binary.LittleEndian.PutUint32(b[0:], uint32(len(b)))
	binary.LittleEndian.PutUint32(b[4:], opInterrupt)
	binary.LittleEndian.PutUint64(b[8:], u|1)
	binary.LittleEndian.PutUint64(b[inHeaderSize:], u)
	return b
}

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
	time.Sleep(20 * time.Millisecond)
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
