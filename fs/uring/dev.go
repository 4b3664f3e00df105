package uring

import (
	"encoding/binary"
	"errors"
	"fmt"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// ServeDev serves what still comes over /dev/fuse (fd) once the rings
// carry the requests: FORGET and BATCH_FORGET, INTERRUPT, and any request
// the kernel sends there instead of a ring. It hands each to h, the same
// Handler the rings use, so that an INTERRUPT reaches the request it is
// for: go-fuse's fuse.Server, whose loop would otherwise read them, only
// knows its own requests, and a ring request's interrupt would be lost
// (the caller blocked, a killed one unkillable, until the request ends).
//
// An INTERRUPT h answers EAGAIN for (no such request in flight) is not
// answered: for a ring request the kernel would not find the unique
// among /dev/fuse's and drop the reply, and with it the interrupt. The
// request may well be in flight all the same, given to a ring entry
// whose thread has not yet handed it to h; ServeDev keeps a copy of the
// INTERRUPT and retries it against h every interruptRetryEvery for up to
// interruptRetryFor (uniques are never reused within a connection, so a
// late retry cannot hit another request), then drops it. The retries end
// with ServeDev.
//
// bufSize is the largest request the kernel may send (PayloadSize plus
// the headers). ServeDev returns nil when the connection ends (ENODEV:
// unmounted or aborted); the caller should then run fuse.Server.Serve,
// which reads ENODEV at once and closes the server down as go-fuse does.
func ServeDev(fd int, h Handler, bufSize int) error {
	in := make([]byte, max(bufSize, minPayload))
	out := make([]byte, max(bufSize, minPayload))
	inv := [][]byte{nil}
	outv := [][]byte{out}
	retry := startInterruptRetrier(h, interruptRetryEvery, interruptRetryFor)
	defer retry.stop()
	for {
		n, err := unix.Read(fd, in)
		switch {
		case errors.Is(err, syscall.ENODEV):
			return nil
		case errors.Is(err, syscall.EINTR), errors.Is(err, syscall.ENOENT), errors.Is(err, syscall.EAGAIN):
			// A signal; a request interrupted before it was read.
			continue
		case err != nil:
			return fmt.Errorf("reading /dev/fuse: %w", err)
		}
		inv[0] = in[:n]
		m, st := h.HandleRequest(inv, outv)
		if !st.Ok() || m == 0 {
			continue // no reply: FORGET, an interrupt found, or a request go-fuse could not parse (it logged it)
		}
		if interruptNotFound(in[:n], out[:m]) {
			retry.add(in[:n])
			continue
		}
		if _, err := unix.Write(fd, out[:m]); err != nil && !errors.Is(err, syscall.ENOENT) && !errors.Is(err, syscall.ENODEV) {
			// ENOENT: the request is gone (answered or
			// interrupted meanwhile). ENODEV: unmounted.
			return fmt.Errorf("writing a reply to /dev/fuse: %w", err)
		}
	}
}

const (
	opInterrupt = 36 // FUSE_INTERRUPT

	// interruptRetryEvery and interruptRetryFor bound the retries of an
	// INTERRUPT whose request is not (yet) in flight: the hand-off
	// from a ring entry's completion to the Handler takes microseconds;
	// a request already answered costs interruptRetryFor /
	// interruptRetryEvery calls of the Handler that find nothing.
	interruptRetryEvery = time.Millisecond
	interruptRetryFor   = 100 * time.Millisecond

	// maxPendingInterrupts bounds the INTERRUPTs retried at once; one
	// more is dropped, as the kernel drops it without the retries.
	maxPendingInterrupts = 1024
)

// interruptNotFound says whether reply is the Handler's EAGAIN to the
// INTERRUPT req: no request of that unique in flight.
func interruptNotFound(req, reply []byte) bool {
	if len(req) < inHeaderSize || len(reply) < outHeaderSize {
		return false
	}
	if binary.LittleEndian.Uint32(req[4:]) != opInterrupt {
		return false
	}
	return syscall.Errno(-int32(binary.LittleEndian.Uint32(reply[4:]))) == syscall.EAGAIN
}

// interruptRetrier retries INTERRUPTs against a Handler from a goroutine
// of its own, until each finds its request or its time is up. Its
// fields are set at the start; the pending INTERRUPTs are the
// goroutine's alone.
type interruptRetrier struct {
	h            Handler
	every, until time.Duration
	in           chan []byte   // INTERRUPTs to retry, copies the goroutine owns
	done         chan struct{} // closed by stop: end the retries
	ended        chan struct{} // closed when the goroutine has ended
}

// startInterruptRetrier starts the retries of h's INTERRUPTs: every
// every, for until each.
func startInterruptRetrier(h Handler, every, until time.Duration) *interruptRetrier {
	r := &interruptRetrier{
		h:     h,
		every: every,
		until: until,
		in:    make(chan []byte, 64),
		done:  make(chan struct{}),
		ended: make(chan struct{}),
	}
	go r.run()
	return r
}

// add queues a copy of the INTERRUPT req (the caller's buffer is reused)
// for retries. If the queue is full, the INTERRUPT is dropped.
func (r *interruptRetrier) add(req []byte) {
	select {
	case r.in <- append([]byte(nil), req...):
	default:
	}
}

// stop ends the retries and waits for the goroutine to end; the pending
// INTERRUPTs are dropped.
func (r *interruptRetrier) stop() {
	close(r.done)
	<-r.ended
}

// pendingInterrupt is an INTERRUPT retried until deadline.
type pendingInterrupt struct {
	req      []byte
	deadline time.Time
}

func (r *interruptRetrier) run() {
	defer close(r.ended)
	var pending []pendingInterrupt
	out := make([]byte, outHeaderSize)
	inv, outv := [][]byte{nil}, [][]byte{out}
	tick := time.NewTicker(r.every)
	tick.Stop()
	defer tick.Stop()
	for {
		select {
		case <-r.done:
			return
		case req := <-r.in:
			if len(pending) >= maxPendingInterrupts {
				continue
			}
			if len(pending) == 0 {
				tick.Reset(r.every)
			}
			pending = append(pending, pendingInterrupt{req: req, deadline: time.Now().Add(r.until)})
		case <-tick.C:
			now := time.Now()
			kept := pending[:0]
			for _, p := range pending {
				inv[0] = p.req
				m, st := r.h.HandleRequest(inv, outv)
				// Found (no reply), or an answer other than EAGAIN
				// (ENOSYS): done either way.
				if st.Ok() && interruptNotFound(p.req, out[:m]) && now.Before(p.deadline) {
					kept = append(kept, p)
				}
			}
			clear(pending[len(kept):])
			pending = kept
			if len(pending) == 0 {
				tick.Stop()
			}
		}
	}
}

// Compile-time check: go-fuse's ProtocolServer is a Handler.
var _ Handler = (*fuse.ProtocolServer)(nil)
