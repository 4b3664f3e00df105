package uring

import (
	"errors"
	"fmt"
	"syscall"

	"golang.org/x/sys/unix"
)

// ServeDev serves what still comes over /dev/fuse (fd) once the rings
// carry the requests: FORGET and BATCH_FORGET, INTERRUPT, and any request
// the kernel sends there instead of a ring. It hands each to h, the same
// Handler the rings use, so that an INTERRUPT reaches the request it is
// for: go-fuse's fuse.Server, whose loop would otherwise read them, only
// knows its own requests, and a ring request's interrupt would be lost
// (the caller blocked, a killed one unkillable, until the request ends).
// bufSize is the largest request the kernel may send (PayloadSize plus
// the headers). ServeDev returns nil when the connection ends (ENODEV:
// unmounted or aborted); the caller should then run fuse.Server.Serve,
// which reads ENODEV at once and closes the server down as go-fuse does.
func ServeDev(fd int, h Handler, bufSize int) error {
	in := make([]byte, max(bufSize, minPayload))
	out := make([]byte, max(bufSize, minPayload))
	inv := [][]byte{nil}
	outv := [][]byte{out}
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
		if _, err := unix.Write(fd, out[:m]); err != nil && !errors.Is(err, syscall.ENOENT) && !errors.Is(err, syscall.ENODEV) {
			// ENOENT: the request is gone (an INTERRUPT's
			// EAGAIN for a ring request, which the kernel does not
			// look for among /dev/fuse's). ENODEV: unmounted.
			return fmt.Errorf("writing a reply to /dev/fuse: %w", err)
		}
	}
}
