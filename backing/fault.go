package backing

import (
	"runtime/debug"
)

// This file holds the only functions that touch mapped memory. Each runs
// with debug.SetPanicOnFault(true) so that a SIGBUS or SIGSEGV on a mapped
// page becomes a recovered panic and then a *faultError, instead of killing
// the daemon. Nothing else in the package may read or write a mapping.

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
