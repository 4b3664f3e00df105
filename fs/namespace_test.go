package fs

import (
	"bytes"
	"errors"
	"fmt"
	"log"
	"syscall"
	"testing"
)

// TestQuietErrno: the fast path of the namespace operations' everyday
// failures gives what errno() gives, and only for errors errno() would
// not log; everything else (wrapped deeper, another errno, no errno) is
// left to errno().
func TestQuietErrno(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		err   error
		quiet bool
	}{
		{syscall.ENOENT, true},
		{pathErr("statx", "d/f", syscall.ENOENT), true},
		{pathErr("getxattr", "d/f", syscall.ENODATA), true},
		{pathErr("open", "d/f", syscall.EEXIST), true},
		{pathErr("rmdir", "d", syscall.ENOTEMPTY), true},
		{fmt.Errorf("wrapped: %w", pathErr("statx", "d/f", syscall.ENOENT)), false},
		{pathErr("open", "d/f", syscall.EACCES), false},
		{pathErr("write", "d/f", syscall.EIO), false},
		{pathErr("open", "d/f", syscall.ELOOP), false},
		{pathErr("open", "d/f", errors.New("no errno")), false},
		{errors.New("no errno in here"), false},
	} {
		var logs bytes.Buffer
		m := &mountState{log: log.New(&logs, "LOG ", 0)}
		want := m.errno("lookup", "d/f", c.err)
		got, ok := quietErrno(c.err)
		switch {
		case ok != c.quiet:
			t.Errorf("quietErrno(%v) = %v, %v; want quiet %v", c.err, got, ok, c.quiet)
		case ok && got != want:
			t.Errorf("quietErrno(%v) = %v, errno() = %v", c.err, got, want)
		case ok && logs.Len() != 0:
			t.Errorf("quietErrno(%v) answered what errno() logs: %q", c.err, logs.String())
		}
	}
}
