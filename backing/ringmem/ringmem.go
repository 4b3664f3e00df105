// Package ringmem is the io_uring's shared memory for fs/uring, FUSE over
// io_uring: the one place outside backing/fault.go where the module uses
// unsafe, kept under backing/ because the project's rule puts every
// unsafe use there.
//
// It does three things and nothing else: it sets up an io_uring
// (io_uring_setup with the parameters' address) and maps its rings; it
// reads and writes the head and tail words the kernel shares with the
// ring's thread, atomically where the kernel may write them; and it maps
// the memory the kernel is told about by address (an SQE's addr, an
// iovec's base), giving out those addresses (Mem.Addr). Every byte the
// kernel reads or writes is an anonymous or io_uring mmap made here,
// never Go heap: the kernel writes it while no Go code looks, and the
// garbage collector never sees it.
//
// What it must never do: take the address of Go heap memory (Addr is a
// method of Mem, memory only Map makes); hand out an address of memory it
// has unmapped (a Mem is unmapped only by its owner, once the kernel is
// done with it: the ring's thread has seen its last completion); touch a
// store's file mapping (those are backing's, through fault.go's
// fault-safe copies); or be used by more than one thread per Ring
// (IORING_SETUP_SINGLE_ISSUER).
package ringmem

import (
	"encoding/binary"
	"fmt"
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The io_uring ABI (include/uapi/linux/io_uring.h) as far as fs/uring
// uses it.
const (
	SetupSQE128       = 1 << 10 // IORING_SETUP_SQE128
	SetupSingleIssuer = 1 << 12 // IORING_SETUP_SINGLE_ISSUER
	SetupDeferTaskrun = 1 << 13 // IORING_SETUP_DEFER_TASKRUN

	featSingleMmap = 1 << 0

	// EnterGetEvents is IORING_ENTER_GETEVENTS: Enter waits for
	// minComplete completions.
	EnterGetEvents = 1 << 0

	offSQRing = 0
	offCQRing = 0x8000000
	offSQEs   = 0x10000000

	OpNop      = 0  // IORING_OP_NOP
	OpURINGCmd = 46 // IORING_OP_URING_CMD

	// SQESize is the size of an SQE with IORING_SETUP_SQE128, the only
	// kind Setup makes.
	SQESize = 128
	cqeSize = 16
)

// Ring is one io_uring instance made with IORING_SETUP_SQE128: its
// descriptor and the three shared mappings. It is used by one thread
// only (IORING_SETUP_SINGLE_ISSUER): the one that made it; nothing in it
// is locked.
type Ring struct {
	fd     int
	sqMem  []byte // the SQ ring (and, with a single mmap, the CQ ring)
	cqMem  []byte // the CQ ring; the same memory as sqMem with featSingleMmap
	sqeMem []byte // the SQE array, SQESize bytes each

	sqEntries, cqEntries           uint32
	sqHead, sqTail, sqMask, sqArr  uint32 // offsets in sqMem
	cqHead, cqTail, cqMask, cqCQEs uint32 // offsets in cqMem
	single                         bool   // cqMem is sqMem
}

// Setup sets up an io_uring with room for entries SQEs of 128 bytes and
// the setup flags flags (SetupSQE128 is always added), and maps its
// rings. The caller must be locked to its OS thread and stay the only
// one to touch the ring.
func Setup(entries, flags uint32) (*Ring, error) {
	// struct io_uring_params: 120 bytes, 30 words.
	var p [30]uint32
	p[2] = flags | SetupSQE128
	fd, _, errno := syscall.Syscall(unix.SYS_IO_URING_SETUP, uintptr(entries), uintptr(unsafe.Pointer(&p[0])), 0)
	if errno != 0 {
		return nil, fmt.Errorf("io_uring_setup(%d, flags %#x): %w", entries, p[2], errno)
	}
	r := &Ring{fd: int(fd), sqEntries: p[0], cqEntries: p[1]}
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
	if r.sqeMem, err = unix.Mmap(r.fd, offSQEs, int(r.sqEntries)*SQESize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE); err != nil {
		return nil, r.closeWith(fmt.Errorf("mmap of the io_uring SQEs (%d bytes): %w", int(r.sqEntries)*SQESize, err))
	}
	return r, nil
}

// word returns the shared 32-bit word at off in b, for atomic access.
func word(b []byte, off uint32) *uint32 {
	return (*uint32)(unsafe.Pointer(&b[off]))
}

// NextSQE returns the next free SQE, zeroed, or nil if the SQ is full.
func (r *Ring) NextSQE() []byte {
	head := atomic.LoadUint32(word(r.sqMem, r.sqHead))
	tail := *word(r.sqMem, r.sqTail) // only this thread writes the tail
	if tail-head >= r.sqEntries {
		return nil
	}
	i := tail & *word(r.sqMem, r.sqMask)
	sqe := r.sqeMem[int(i)*SQESize : int(i+1)*SQESize]
	clear(sqe)
	return sqe
}

// PushSQE publishes the SQE NextSQE returned last: it puts its index in
// the SQ array and moves the tail on, with release order, so that the
// kernel sees the SQE's contents before the new tail.
func (r *Ring) PushSQE() {
	tail := *word(r.sqMem, r.sqTail)
	i := tail & *word(r.sqMem, r.sqMask)
	*word(r.sqMem, r.sqArr+4*i) = i
	atomic.StoreUint32(word(r.sqMem, r.sqTail), tail+1)
}

// PendingSQEs is how many SQEs were pushed that the kernel has not
// consumed yet.
func (r *Ring) PendingSQEs() uint32 {
	return *word(r.sqMem, r.sqTail) - atomic.LoadUint32(word(r.sqMem, r.sqHead))
}

// CQE is one completion: the SQE's user_data and its result.
type CQE struct {
	UserData uint64
	Res      int32
}

// PeekCQE takes the oldest completion off the CQ, if there is one.
func (r *Ring) PeekCQE() (CQE, bool) {
	head := *word(r.cqMem, r.cqHead) // only this thread writes the head
	tail := atomic.LoadUint32(word(r.cqMem, r.cqTail))
	if head == tail {
		return CQE{}, false
	}
	off := r.cqCQEs + (head&*word(r.cqMem, r.cqMask))*cqeSize
	c := CQE{
		UserData: binary.LittleEndian.Uint64(r.cqMem[off:]),
		Res:      int32(binary.LittleEndian.Uint32(r.cqMem[off+8:])),
	}
	atomic.StoreUint32(word(r.cqMem, r.cqHead), head+1)
	return c, true
}

// Enter is io_uring_enter(2): submit toSubmit SQEs and, with
// EnterGetEvents, wait for minComplete completions. An EINTR (a signal
// to this thread: Go's preemption) is returned for the caller to retry.
func (r *Ring) Enter(toSubmit, minComplete, flags uint32) (int, error) {
	n, _, errno := syscall.Syscall6(unix.SYS_IO_URING_ENTER, uintptr(r.fd), uintptr(toSubmit), uintptr(minComplete), uintptr(flags), 0, 0)
	if errno != 0 {
		return int(n), errno
	}
	return int(n), nil
}

// Close unmaps the rings and closes the descriptor.
func (r *Ring) Close() error {
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
func (r *Ring) closeWith(err error) error {
	if cerr := r.Close(); cerr != nil {
		return fmt.Errorf("%w (and %v)", err, cerr)
	}
	return err
}

// Mem is memory the kernel is told about by address: an anonymous
// private mapping, populated at once, never Go heap. Its owner unmaps it
// (Unmap) once the kernel can no longer use it.
type Mem struct {
	b []byte
}

// Map maps size bytes of zeroed anonymous memory.
func Map(size int) (*Mem, error) {
	b, err := unix.Mmap(-1, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_POPULATE)
	if err != nil {
		return nil, fmt.Errorf("mapping %d bytes for an io_uring entry: %w", size, err)
	}
	return &Mem{b: b}, nil
}

// Bytes is the memory itself.
func (m *Mem) Bytes() []byte { return m.b }

// Addr is the address of the byte at off, for the kernel; it panics if
// off is outside the memory.
func (m *Mem) Addr(off int) uint64 {
	return uint64(uintptr(unsafe.Pointer(&m.b[off])))
}

// Unmap unmaps the memory; m must not be used after.
func (m *Mem) Unmap() error {
	if err := unix.Munmap(m.b); err != nil {
		return fmt.Errorf("unmapping an io_uring entry's %d bytes: %w", len(m.b), err)
	}
	m.b = nil
	return nil
}
