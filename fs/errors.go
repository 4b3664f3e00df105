package fs

import (
	"errors"
	"os"
	"syscall"
)

func pathErr(op, path string, err error) error {
	return &os.PathError{Op: op, Path: path, Err: err}
}

// errno turns err into the errno the kernel is given: the Errno at the
// bottom of its chain, or EIO when it has none. It is the package's only
// errno table. Errors that mean data refused or at risk are logged here,
// once, naming the operation and the file.
func (m *mountState) errno(op, name string, err error) syscall.Errno {
	if err == nil {
		return 0
	}
	var e syscall.Errno
	if !errors.As(err, &e) {
		e = syscall.EIO
	}
	switch e {
	case syscall.EIO, syscall.ENOSPC, syscall.EDQUOT, syscall.EROFS, syscall.EFBIG, syscall.EACCES, syscall.EPERM:
		// EACCES and EPERM come from the store refusing the daemon:
		// it may not use the store, or a file's flags (immutable,
		// append-only) forbid the change. The caller's own permissions
		// were checked by the kernel first (default_permissions; without
		// it only the mounting user gets in), so either way the log
		// says which file refused what.
		m.log.Printf("%s %q: %v", op, name, err)
	case syscall.ELOOP:
		// Resolution beneath the store refused a symlink in the way:
		// someone planted one, or swapped a directory for one.
		m.log.Printf("%s %q: refused to follow a symlink inside the store: %v", op, name, err)
	}
	return e
}
