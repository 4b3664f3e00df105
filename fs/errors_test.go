package fs

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"log"
	"strings"
	"syscall"
	"testing"
)

// TestErrno: the errno is the one at the bottom of the chain, however it
// was wrapped (the case go-fuse's ToErrno gets wrong); an error without
// one is EIO; nil is 0. Errors that mean data refused or at risk are
// logged once with the operation and the file, ELOOP with the reason,
// and the everyday ones (ENOENT, EEXIST, ...) not at all.
func TestErrno(t *testing.T) {
	t.Parallel()
	wrap := func(e error) error {
		return fmt.Errorf("blob a/b: %w", pathErr("write", "a/b", e))
	}
	for _, c := range []struct {
		err  error
		want syscall.Errno
		log  string // a part of the line logged; "" for none
	}{
		{nil, 0, ""},
		{syscall.ENOENT, syscall.ENOENT, ""},
		{wrap(syscall.ENOENT), syscall.ENOENT, ""},
		{wrap(syscall.EEXIST), syscall.EEXIST, ""},
		{wrap(syscall.ENOTEMPTY), syscall.ENOTEMPTY, ""},
		{wrap(syscall.EXDEV), syscall.EXDEV, ""},
		{wrap(syscall.EINVAL), syscall.EINVAL, ""},
		{wrap(syscall.ENOSPC), syscall.ENOSPC, `write "f": blob a/b: write a/b: no space left on device`},
		{wrap(syscall.EDQUOT), syscall.EDQUOT, "quota"},
		{wrap(syscall.EIO), syscall.EIO, "input/output error"},
		{wrap(syscall.EROFS), syscall.EROFS, "read-only"},
		{wrap(syscall.EFBIG), syscall.EFBIG, "too large"},
		{wrap(syscall.EACCES), syscall.EACCES, "permission denied"},
		{wrap(syscall.EPERM), syscall.EPERM, "not permitted"},
		{wrap(syscall.ELOOP), syscall.ELOOP, `write "f": refused to follow a symlink inside the store`},
		{errors.New("no errno in here"), syscall.EIO, `write "f": no errno in here`},
		{errors.Join(errors.New("first"), wrap(syscall.ENOSPC)), syscall.ENOSPC, "first"},
		{&fs.PathError{Op: "open", Path: "x", Err: syscall.ENAMETOOLONG}, syscall.ENAMETOOLONG, ""},
	} {
		var logs bytes.Buffer
		m := &mountState{log: log.New(&logs, "LOG ", 0)}
		if got := m.errno("write", "f", c.err); got != c.want {
			t.Errorf("errno(%v) = %v, want %v", c.err, got, c.want)
		}
		lines := strings.Count(logs.String(), "LOG ") // a joined error spans lines
		switch {
		case c.log == "" && lines != 0:
			t.Errorf("errno(%v) logged %q, want nothing", c.err, logs.String())
		case c.log != "" && (lines != 1 || !strings.Contains(logs.String(), c.log)):
			t.Errorf("errno(%v) logged %q, want one entry with %q", c.err, logs.String(), c.log)
		}
	}
}

// TestPathErr keeps the errno reachable and names op and path.
func TestPathErr(t *testing.T) {
	t.Parallel()
	err := pathErr("statx", "d/f", syscall.ENOENT)
	if !errors.Is(err, syscall.ENOENT) || err.Error() != "statx d/f: no such file or directory" {
		t.Errorf("pathErr = %v", err)
	}
}
