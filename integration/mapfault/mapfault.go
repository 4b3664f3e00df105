// Package mapfault catches the memory faults of a client's access to a
// mapping of a file, so that a test or a checker can report a SIGBUS or
// SIGSEGV as a finding instead of dying of it.
//
// A fault on a MAP_SHARED mapping is what Linux promises for an access past
// the end of the file, and what a dead or failing FUSE daemon gives a
// client: the caller decides which of the two it is looking at.
//
// It must never catch anything but a memory fault (every other panic goes
// on), and never leave the runtime's panic-on-fault setting changed.
package mapfault

import (
	"reflect"
	"runtime"
	"runtime/debug"
)

// Catch runs fn and reports whether it raised a memory fault (SIGBUS or
// SIGSEGV on a mapping), which it recovers from, and the faulting address.
// Other panics propagate. fn runs on the calling goroutine; the setting of
// debug.SetPanicOnFault it needs is that goroutine's, and is restored.
func Catch(fn func()) (faulted bool, addr uintptr) {
	old := debug.SetPanicOnFault(true)
	defer debug.SetPanicOnFault(old)
	defer func() {
		r := recover()
		if r == nil {
			return
		}
		if e, ok := r.(interface{ Addr() uintptr }); ok {
			if _, ok := r.(runtime.Error); ok {
				faulted, addr = true, e.Addr()
				return
			}
		}
		panic(r)
	}()
	fn()
	return false, 0
}

// Offset returns where addr, an address Catch reported, lies in b: the
// offset from b's first byte (negative or past len(b) if it is outside).
func Offset(b []byte, addr uintptr) int64 {
	if len(b) == 0 {
		return int64(addr)
	}
	return int64(addr - reflect.ValueOf(b).Pointer())
}
