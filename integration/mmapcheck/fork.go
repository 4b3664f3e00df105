package mmapcheck

import (
	"fmt"
	"syscall"
)

// forkSawOld is the exit status of a forked child that found the byte the
// parent stored missing from the mapping it inherited.
const forkSawOld = 3

// forkAndStore forks (a fork, not a fork and exec: the child must inherit
// the mapping m), and the child checks that m[at] is want, stores put at
// m[putAt] and exits; the parent waits for it and returns its exit status.
// The child runs nothing of the Go runtime: childStore is all it does.
func forkAndStore(m []byte, at int, want byte, putAt int, put byte) (int, error) {
	if at < 0 || at >= len(m) || putAt < 0 || putAt >= len(m) {
		return 0, fmt.Errorf("fork: offsets %d, %d outside a %d-byte mapping", at, putAt, len(m))
	}
	// The child's bytes are locked in by the fork; the mapping must not
	// move meanwhile (it does not: nothing else unmaps it).
	syscall.ForkLock.Lock()
	pid, errno := childStore(m, at, want, putAt, put)
	syscall.ForkLock.Unlock()
	if errno != 0 {
		return 0, fmt.Errorf("fork: %w", errno)
	}
	var ws syscall.WaitStatus
	for {
		_, err := syscall.Wait4(int(pid), &ws, 0, nil)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return 0, fmt.Errorf("waiting for the forked child: %w", err)
		}
		break
	}
	if ws.Signaled() {
		return 0x80 | int(ws.Signal()), nil
	}
	return ws.ExitStatus(), nil
}

// childStore forks. In the child, which has only this thread and must not
// enter the Go runtime (no allocation, no stack growth, no race
// detector), it compares, stores and exits with a raw system call. A fault
// kills the child, which the parent sees in its status.
//
//go:nosplit
//go:norace
func childStore(m []byte, at int, want byte, putAt int, put byte) (uintptr, syscall.Errno) {
	pid, _, errno := syscall.RawSyscall6(syscall.SYS_CLONE, uintptr(syscall.SIGCHLD), 0, 0, 0, 0, 0)
	if errno != 0 || pid != 0 {
		return pid, errno
	}
	status := uintptr(0)
	if m[at] != want {
		status = forkSawOld
	}
	m[putAt] = put
	for {
		syscall.RawSyscall(syscall.SYS_EXIT_GROUP, status, 0, 0)
	}
}
