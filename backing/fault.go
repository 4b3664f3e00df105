package backing

import (
	"runtime/debug"
	"unsafe"

	"golang.org/x/sys/unix"
)

// This file holds the only functions that touch mapped memory or take its
// address, and the package's only use of unsafe (which ioctlBuf needs too,
// to hand a buffer's address to ioctl(2)). The copies run with
// debug.SetPanicOnFault(true) so that a SIGBUS or SIGSEGV on a mapped page
// becomes a recovered panic and then a *faultError, instead of killing the
// daemon. Nothing else in the package may read or write a mapping.

// faultError reports that an access to a mapping faulted. done is how many
// bytes were copied, in whole pages, before the faulting page.
type faultError struct {
	addr uintptr
	done int
}

func (e *faultError) Error() string { return "fault on mapped memory" }

// faultAddr reports whether r, a recovered panic value, is a memory fault
// raised under SetPanicOnFault, and at which address.
func faultAddr(r any) (uintptr, bool) {
	if f, ok := r.(interface{ Addr() uintptr }); ok {
		return f.Addr(), true
	}
	return 0, false
}

// copyGuarded copies src to dst (len(dst) >= len(src)) page by page, where
// off is the file offset of whichever side is the mapping, so that chunks
// end on page boundaries of the mapping. It returns the bytes copied and a
// *faultError if a page faulted.
func copyGuarded(dst, src []byte, off int64) (n int, err error) {
	old := debug.SetPanicOnFault(true)
	defer func() {
		debug.SetPanicOnFault(old)
		if r := recover(); r != nil {
			addr, ok := faultAddr(r)
			if !ok {
				panic(r)
			}
			err = &faultError{addr: addr, done: n}
		}
	}()
	for n < len(src) {
		// The next page boundary of the mapping, past off+n.
		c := pageSize - int((off+int64(n))%int64(pageSize))
		c = min(c, len(src)-n)
		copy(dst[n:n+c], src[n:n+c])
		n += c
	}
	return n, nil
}

// mincore fills vec (one byte per page of m) with mincore(2): bit 0 of
// vec[i] is set when page i of m is resident. It reads no mapped memory,
// so it cannot fault. x/sys/unix has no wrapper for it on Linux.
func mincore(m, vec []byte) error {
	if len(m) == 0 {
		return nil
	}
	_, _, e := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&m[0])), uintptr(len(m)), uintptr(unsafe.Pointer(&vec[0])))
	if e != 0 {
		return e
	}
	return nil
}

// mappingAddr returns the address of data, a mapping, for unmapBatch to
// find mappings that lie end to end. It does not touch the memory.
func mappingAddr(data []byte) uintptr {
	return uintptr(unsafe.Pointer(unsafe.SliceData(data)))
}

// munmapRange unmaps [addr, addr+length), which must be exactly the
// pages of mappings the caller owns and no longer uses.
func munmapRange(addr, length uintptr) error {
	if _, _, e := unix.Syscall(unix.SYS_MUNMAP, addr, length, 0); e != 0 {
		return e
	}
	return nil
}

// ioctlBuf is ioctl(2) with the address of buf, which the kernel reads or
// fills (len(buf) must be what cmd encodes), as its argument.
func ioctlBuf(fd int, cmd uint, buf []byte) error {
	if len(buf) == 0 {
		return unix.EINVAL
	}
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), uintptr(cmd), uintptr(unsafe.Pointer(&buf[0]))); e != 0 {
		return e
	}
	return nil
}
