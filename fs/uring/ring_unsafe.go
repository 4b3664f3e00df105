// This is the one file of package uring that uses unsafe, and the only
// things it does with it are the ones an io_uring cannot be driven
// without: pass the address of the setup parameters to io_uring_setup,
// read and write the head and tail words the kernel shares with us
// atomically, and take the address of memory the kernel is told about
// (an SQE's addr, an iovec's base). Every such memory is an mmap made
// here or in entry.go, never Go heap: the kernel writes it while no Go
// code looks, and the garbage collector never sees it.

package uring

import (
	"encoding/binary"
	"fmt"
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The io_uring ABI (include/uapi/linux/io_uring.h) as far as this
// package uses it.
const (
	setupSQE128       = 1 << 10
	setupSingleIssuer = 1 << 12
	setupDeferTaskrun = 1 << 13

	featSingleMmap = 1 << 0

	enterGetEvents = 1 << 0

	offSQRing = 0
	offCQRing = 0x8000000
	offSQEs   = 0x10000000

	opNop      = 0
	opURINGCmd = 46

	sqeSize = 128 // with IORING_SETUP_SQE128
	cqeSize = 16
)

// ring is one io_uring instance made with IORING_SETUP_SQE128: its
// descriptor and the three shared mappings. It is used by one thread
// only (IORING_SETUP_SINGLE_ISSUER): the one that made it.
type ring struct {
	fd     int
	sqMem  []byte // the SQ ring (and, with a single mmap, the CQ ring)
	cqMem  []byte // the CQ ring; the same memory as sqMem with featSingleMmap
	sqeMem []byte // the SQE array, sqeSize bytes each

	sqEntries, cqEntries           uint32
	sqHead, sqTail, sqMask, sqArr  uint32 // offsets in sqMem
	cqHead, cqTail, cqMask, cqCQEs uint32 // offsets in cqMem
	single                         bool   // cqMem is sqMem
}

// newRing sets up an io_uring with room for entries SQEs of 128 bytes,
// single issuer, its completions' task work run when the issuer waits
// (IORING_SETUP_DEFER_TASKRUN), and maps its rings. The caller must be
// locked to its OS thread and stay the only one to touch the ring.
func newRing(entries uint32) (*ring, error) {
	// struct io_uring_params: 120 bytes, 30 words.
	var p [30]uint32
	p[2] = setupSQE128 | setupSingleIssuer | setupDeferTaskrun
	fd, _, errno := syscall.Syscall(unix.SYS_IO_URING_SETUP, uintptr(entries), uintptr(unsafe.Pointer(&p[0])), 0)
	if errno != 0 {
		return nil, fmt.Errorf("io_uring_setup(%d, SQE128|SINGLE_ISSUER|DEFER_TASKRUN): %w", entries, errno)
	}
	r := &ring{fd: int(fd), sqEntries: p[0], cqEntries: p[1]}
	features := p[5]
	// sq_off at word 10, cq_off at word 20.
	r.sqHead, r.sqTail, r.sqMask, r.sqArr = p[10], p[11], p[12], p[16]
	r.cqHead, r.cqTail, r.cqMask, r.cqCQEs = p[20], p[21], p[22], p[25]

	sqSize := int(r.sqArr + r.sqEntries*4)
	cqSize := int(r.cqCQEs + r.cqEntries*cqeSize)
	r.single = features&featSingleMmap != 0
	if r.single {
		sqSize = max(sqSize, cqSize)
	}
	var err error
	if r.sqMem, err = unix.Mmap(r.fd, offSQRing, sqSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE); err != nil {
		return nil, r.closeWith(fmt.Errorf("mmap of the io_uring SQ ring (%d bytes): %w", sqSize, err))
	}
	if r.single {
		r.cqMem = r.sqMem
	} else if r.cqMem, err = unix.Mmap(r.fd, offCQRing, cqSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE); err != nil {
		return nil, r.closeWith(fmt.Errorf("mmap of the io_uring CQ ring (%d bytes): %w", cqSize, err))
	}
	if r.sqeMem, err = unix.Mmap(r.fd, offSQEs, int(r.sqEntries)*sqeSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE); err != nil {
		return nil, r.closeWith(fmt.Errorf("mmap of the io_uring SQEs (%d bytes): %w", int(r.sqEntries)*sqeSize, err))
	}
	return r, nil
}

// word returns the shared 32-bit word at off in b, for atomic access.
func word(b []byte, off uint32) *uint32 {
	return (*uint32)(unsafe.Pointer(&b[off]))
}

// addrOf is the address of b's first byte, for the kernel. b must be
// memory the garbage collector does not manage (an mmap), or be kept
// alive and unmoved for as long as the kernel may use the address.
func addrOf(b []byte) uint64 {
	return uint64(uintptr(unsafe.Pointer(&b[0])))
}

// nextSQE returns the next free SQE, zeroed, or nil if the SQ is full.
func (r *ring) nextSQE() []byte {
	head := atomic.LoadUint32(word(r.sqMem, r.sqHead))
	tail := *word(r.sqMem, r.sqTail) // only this thread writes the tail
	if tail-head >= r.sqEntries {
		return nil
	}
	i := tail & *word(r.sqMem, r.sqMask)
	sqe := r.sqeMem[int(i)*sqeSize : int(i+1)*sqeSize]
	clear(sqe)
	return sqe
}

// pushSQE publishes the SQE nextSQE returned last: it puts its index in
// the SQ array and moves the tail on, with release order, so that the
// kernel sees the SQE's contents before the new tail.
func (r *ring) pushSQE() {
	tail := *word(r.sqMem, r.sqTail)
	i := tail & *word(r.sqMem, r.sqMask)
	*word(r.sqMem, r.sqArr+4*i) = i
	atomic.StoreUint32(word(r.sqMem, r.sqTail), tail+1)
}

// pendingSQEs is how many SQEs were pushed that the kernel has not
// consumed yet.
func (r *ring) pendingSQEs() uint32 {
	return *word(r.sqMem, r.sqTail) - atomic.LoadUint32(word(r.sqMem, r.sqHead))
}

// cqe is one completion: the SQE's user_data and its result.
type cqe struct {
	userData uint64
	res      int32
}

// peekCQE takes the oldest completion off the CQ, if there is one.
func (r *ring) peekCQE() (cqe, bool) {
	head := *word(r.cqMem, r.cqHead) // only this thread writes the head
	tail := atomic.LoadUint32(word(r.cqMem, r.cqTail))
	if head == tail {
		return cqe{}, false
	}
	off := r.cqCQEs + (head&*word(r.cqMem, r.cqMask))*cqeSize
	c := cqe{
		userData: binary.LittleEndian.Uint64(r.cqMem[off:]),
		res:      int32(binary.LittleEndian.Uint32(r.cqMem[off+8:])),
	}
	atomic.StoreUint32(word(r.cqMem, r.cqHead), head+1)
	return c, true
}

// enter is io_uring_enter(2): submit toSubmit SQEs and, with
// enterGetEvents, wait for minComplete completions. An EINTR (a signal
// to this thread: Go's preemption) is returned for the caller to retry.
func (r *ring) enter(toSubmit, minComplete, flags uint32) (int, error) {
	n, _, errno := syscall.Syscall6(unix.SYS_IO_URING_ENTER, uintptr(r.fd), uintptr(toSubmit), uintptr(minComplete), uintptr(flags), 0, 0)
	if errno != 0 {
		return int(n), errno
	}
	return int(n), nil
}

// close unmaps the rings and closes the descriptor.
func (r *ring) close() error {
	var errs []error
	if r.sqeMem != nil {
		errs = append(errs, unix.Munmap(r.sqeMem))
	}
	if r.cqMem != nil && !r.single {
		errs = append(errs, unix.Munmap(r.cqMem))
	}
	if r.sqMem != nil {
		errs = append(errs, unix.Munmap(r.sqMem))
	}
	errs = append(errs, unix.Close(r.fd))
	for _, err := range errs {
		if err != nil {
			return fmt.Errorf("closing io_uring %d: %w", r.fd, err)
		}
	}
	return nil
}

// closeWith closes the half-made ring and returns err with what closing
// said.
func (r *ring) closeWith(err error) error {
	if cerr := r.close(); cerr != nil {
		return fmt.Errorf("%w (and %v)", err, cerr)
	}
	return err
}
