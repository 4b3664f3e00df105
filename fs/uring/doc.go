// Package uring serves a FUSE connection over io_uring (FUSE over
// io_uring, Linux 6.14 and later, CONFIG_FUSE_IO_URING, gated by the fuse
// module's enable_uring parameter), by raw system calls through
// golang.org/x/sys/unix: no io_uring library.
//
// # The protocol
//
// The daemon answers INIT over /dev/fuse with FUSE_OVER_IO_URING among
// its flags (go-fuse's fuse.Server does that when MountOptions has
// fuse.CAP_OVER_IO_URING in ExtraCapabilities and the kernel offered it).
// From then on the kernel holds every request back until each of its
// queues, one per possible CPU, has an entry registered: an
// IORING_OP_URING_CMD with cmd_op FUSE_IO_URING_CMD_REGISTER on the
// /dev/fuse descriptor, whose 80-byte command area (IORING_SETUP_SQE128)
// holds a struct fuse_uring_cmd_req naming the queue, and whose addr and
// len are two iovecs: a struct fuse_uring_req_header (the fuse_in_header
// or fuse_out_header in in_out, the op's own header in op_in, and
// ring_ent_in_out with the commit id and the payload size) and a payload
// buffer at least as large as the connection's largest request. The
// command completes when the kernel has put a request in those buffers;
// the daemon serves it, writes the reply into the same buffers and sends
// FUSE_IO_URING_CMD_COMMIT_AND_FETCH with the commit id, which hands the
// kernel the reply and waits for the next request in one system call. A
// request is queued on the queue of the CPU its caller runs on. FORGET,
// INTERRUPT and notifications stay on /dev/fuse.
//
// # How this package does it
//
// Each queue has several entries; each entry is one OS thread, locked
// (runtime.LockOSThread) and pinned (sched_setaffinity) to the queue's
// CPU, with its own small io_uring (IORING_SETUP_SINGLE_ISSUER and
// DEFER_TASKRUN: the kernel's completion work runs in the thread's own
// io_uring_enter), its own header and payload buffers, mmapped once and
// reused for every request (package backing/ringmem makes and drives
// them). A thread serves its entry's request inline and then commits and
// fetches; a request that blocks (an fsync, a page
// fault in a store mapping) holds up its own entry only, the queue's
// other entries go on serving. The requests themselves are handed to a
// Handler: go-fuse's fuse.ProtocolServer, which parses the byte stream
// [in header, op header, payload] and writes [out header, out args and
// payload] into the reply iovecs. ServeDev serves what still comes over
// /dev/fuse (FORGET, INTERRUPT) with the same Handler, so that an
// interrupt finds the ring request it is for.
//
// # Interrupts
//
// The kernel sends a ring request's INTERRUPT over /dev/fuse
// (fuse_io_uring_ops.send_interrupt is fuse_dev_queue_interrupt) once
// the request's FR_SENT bit is set, which fuse_uring_prepare_send does
// when it has copied the request into an entry's buffers, before the
// entry's command completes. Between that and the entry's thread calling
// HandleRequest (which registers the request as in flight) go-fuse finds
// no such unique and answers EAGAIN. Over /dev/fuse alone the kernel
// queues the interrupt again on that answer, but fuse_dev_do_write looks
// the unique up only in /dev/fuse's own processing queue, and a ring
// request is in its ring queue's (fuse_uring_add_to_pq): the reply gets
// ENOENT, the interrupt is dropped, and a killed caller waits for the
// request to end. So ServeDev does not answer an INTERRUPT's EAGAIN but
// retries it against the Handler, every millisecond for up to 100 ms
// (the hand-off takes microseconds), then drops it; an INTERRUPT for a
// request already answered costs those retries only, and they end with
// ServeDev.
//
// What is left is the kernel's own window: fuse_dev_do_read, having set
// FR_SENT, checks FR_INTERRUPTED again and queues the interrupt of a
// request whose caller was signalled meanwhile; fuse_uring_prepare_send
// sets FR_SENT without that check. A caller signalled after its request
// was given to an entry (fuse_uring_add_req_to_ring_ent clears
// FR_PENDING, so the request can no longer be taken back) but before
// the entry's task work set FR_SENT sends no INTERRUPT at all
// (request_wait_answer sees FR_SENT unset), and a killed one then waits
// for the request to end: nothing reaches the daemon to act on.
//
// # The connection's end
//
// Over /dev/fuse, go-fuse's server loop cancels every request in flight
// when its read gets ENODEV (the connection aborted through fusectl or
// by umount -f, or the mount gone): it closes each request's cancel
// channel (its unexported cancelAll), so that a handler waiting on it,
// such as an injected delay, returns at once. Nothing of go-fuse's sees
// the end of a ring connection: the kernel answers the callers of the
// requests the entries hold (ECONNABORTED) and ends the idle entries'
// commands, but an entry whose thread is in the Handler stays there
// until the request ends by itself, and Transport.Wait (and with it the
// daemon's exit) waits for it; so did the daemon's own unmount of the
// aborted mount on SIGTERM, which did not return while an entry held a
// request (the kernel waits for the queues to stop). So the transport
// cancels them itself (Transport.CancelInFlight): each entry keeps the
// unique of the request it has handed the Handler, and once the
// connection has ended (an entry sees the kernel end it, ServeDev reads
// ENODEV, or the transport aborted the connection) an INTERRUPT for each
// such unique goes to the Handler, as the kernel's own would, every 5 ms
// until every entry has ended: one sent before the entry's thread handed
// the request over finds nothing, a later one finds it. A request that
// does not watch its cancel channel (a store-level delay, an msync)
// still ends only when it does, as over /dev/fuse.
//
// # What go-fuse does not give
//
// go-fuse v2.12.1 has no io_uring transport, and fuse.Server does not
// export what a second request parser needs: the INIT it answered (only
// KernelSettings, the kernel's half) and the flags it negotiated. Prime
// replays the kernel's INIT to the ProtocolServer, which computes the
// same reply from the same MountOptions. ProtocolServer.HandleRequest
// allocates a request (and a cancel channel) per call: the rings' own
// buffers are reused, go-fuse's per-request state is not. The
// descriptor fusermount3 passes go-fuse is not exported either: only a
// daemon that mounts /dev/fuse itself (as root) can use the rings.
//
// # What it must never do
//
//   - Never change enable_uring: Enabled only reads it, and a caller that
//     finds it off refuses with a message naming the parameter.
//   - Never leave a hung mount: once the daemon has negotiated io_uring the
//     kernel blocks every request until the queues are registered, so Start
//     returns an error only after it has aborted the connection: through
//     fusectl (/sys/fs/fuse/connections/N/abort, mounting fusectl on a
//     temporary directory if it is not mounted), or, where that fails (a
//     container that may not mount fusectl) or the connection is unknown,
//     by a forced unmount of Config.Mountpoint (umount2 MNT_FORCE: the
//     kernel aborts the connection, busy or not; AbortByUnmount). The
//     caller must then detach the mount and exit. Only if both fail does
//     Start leave its entries waiting and say so; the daemon's exit, which
//     closes the last /dev/fuse descriptor, then ends the connection.
//   - Never hand the kernel Go heap memory: the rings, the headers and the
//     payloads are mmaps, unmapped only once the kernel is done with them
//     (the entry's thread has seen its last completion).
//   - Never use unsafe: the rings' shared memory (setup, the SQ and CQ
//     head and tail words, the entries' mappings and their addresses)
//     is package backing/ringmem's, the project's rule keeping every
//     unsafe use under backing/.
package uring
