package backing

import (
	"errors"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// Name resolution: how a request's name becomes a descriptor of a file of
// the store. Every name is resolved beneath the store root (or beneath a
// directory of the store opened here) by openat2 with RESOLVE_BENEATH,
// RESOLVE_NO_SYMLINKS and RESOLVE_NO_MAGICLINKS, so that a symlink, or a
// directory swapped for one, inside the store cannot lead outside it. A
// regular file's descriptor then becomes its shared Blob in acquireOpen
// (store.go).

// Open opens the blob called name (a path relative to the store root,
// resolved beneath it without following any symlink) with the caller's
// open flags, and returns its shared Blob. The blob is mapped writable
// when the daemon may open it O_RDWR, read-only otherwise (then only
// O_RDONLY opens succeed). O_CREAT, O_EXCL and O_TMPFILE work as for
// open(2), with mode; O_TRUNC truncates through the mapping. Every Blob
// returned must be given back with Release.
func (s *Store) Open(name string, flags int, mode uint32) (*Blob, error) {
	return s.OpenAt(s.rootFd, name, name, flags, mode)
}

// OpenAt is Open of name relative to dirfd, a directory of the store
// opened by OpenDir (or RootFd), resolved beneath it without following
// symlinks. label names the blob in messages (its path in the store).
func (s *Store) OpenAt(dirfd int, name, label string, flags int, mode uint32) (*Blob, error) {
	acc := flags & unix.O_ACCMODE
	// The blob's descriptor is shared by every open, so it carries none
	// of the caller's per-open flags (append, sync, direct, ...): only
	// those that decide which file is opened.
	rest := flags&(unix.O_CREAT|unix.O_EXCL|unix.O_TMPFILE) | unix.O_CLOEXEC
	if rest&(unix.O_CREAT|unix.O_TMPFILE) == 0 {
		mode = 0 // openat2 refuses a mode it would not use
	}
	mode &= 0o7777 // the kernel's create mode carries the file type too
	writable := true
	afd := -1
	fd, err := s.openat(dirfd, name, rest|unix.O_RDWR, mode)
	refused := errors.Is(err, syscall.EPERM) // immutable or append-only (flags.go)
	switch {
	case (errors.Is(err, syscall.EACCES) || errors.Is(err, syscall.EROFS) || refused) && acc == unix.O_RDONLY:
		writable = false
		fd, err = s.openat(dirfd, name, rest|unix.O_RDONLY, mode)
	case refused && flags&unix.O_APPEND != 0:
		// An append-only file takes a writable open with O_APPEND
		// only, and no shared mapping of it: map it read-only and
		// append through a descriptor of its own. The store's
		// filesystem decides whether that open is allowed (an
		// immutable file refuses it too).
		writable = false
		fd, err = s.openat(dirfd, name, rest|unix.O_RDONLY, mode)
		if err == nil {
			afd, err = reopenFd(fd, label, unix.O_WRONLY|unix.O_APPEND)
			if err != nil {
				err = errors.Join(err, closeFd(fd, label))
			}
		}
	}
	if err != nil {
		return nil, err
	}
	// A file this open created (O_EXCL succeeded) is new: it carries no
	// capabilities to look for.
	fresh := flags&(unix.O_CREAT|unix.O_EXCL) == unix.O_CREAT|unix.O_EXCL || flags&unix.O_TMPFILE == unix.O_TMPFILE
	b, err := s.acquireOpen(fd, label, writable, fresh, refused, afd)
	if err != nil {
		return nil, err
	}
	if flags&unix.O_TRUNC != 0 && acc != unix.O_RDONLY {
		if err := b.Truncate(0); err != nil {
			return nil, errors.Join(err, s.Release(b))
		}
	}
	return b, nil
}

// OpenDir opens the directory called name (relative to the store root;
// "" is the root) with flags (O_PATH or O_RDONLY; O_DIRECTORY and
// O_CLOEXEC are added), resolved beneath the root without following any
// symlink. With O_PATH|O_NOFOLLOW and without O_DIRECTORY in want (see
// OpenEntry), it opens the final component itself, symlink or not. The
// caller closes the descriptor. This and Open are the only places where a
// request's name becomes a file: namespace operations act relative to a
// descriptor from here, so that a symlink or a directory swapped for one
// inside the store cannot lead them outside it.
func (s *Store) OpenDir(name string, flags int) (int, error) {
	return s.openat2(s.rootFd, name, flags|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
}

// OpenEntry opens the final component of name itself as an O_PATH
// descriptor, whatever it is (a symlink too), resolving the rest beneath
// the store root without following symlinks.
func (s *Store) OpenEntry(name string) (int, error) {
	return s.openat2(s.rootFd, name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
}

// RootFd returns the descriptor of the store root (owned by the store).
func (s *Store) RootFd() int { return s.rootFd }

// openat opens name beneath the store root, refusing symlinks and "..".
// It asks for O_NOATIME: mapping a file counts as an access, and an open
// on the mount must not change the blob's atime when the client reads
// nothing. The kernel refuses O_NOATIME (EPERM) on a file the daemon
// neither owns nor may override; then it opens without.
func (s *Store) openat(dirfd int, name string, flags int, mode uint32) (int, error) {
	fd, err := s.openat2(dirfd, name, flags|unix.O_NOATIME, mode)
	if errors.Is(err, syscall.EPERM) {
		fd, err = s.openat2(dirfd, name, flags, mode)
	}
	return fd, err
}

// openat2 opens name ("" is dirfd itself) beneath dirfd, a directory
// of the store, with flags and mode, refusing symlinks, magic links and
// any way out of dirfd; a rename that races the resolution is retried.
func (s *Store) openat2(dirfd int, name string, flags int, mode uint32) (int, error) {
	how := unix.OpenHow{
		Flags:   uint64(flags),
		Mode:    uint64(mode),
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
	}
	if name == "" {
		name = "."
	}
	for {
		fd, err := unix.Openat2(dirfd, name, &how)
		switch err {
		case nil:
			return fd, nil
		case unix.EAGAIN, unix.EINTR:
			// EAGAIN: a rename raced the resolution; try again.
			continue
		}
		return -1, &os.PathError{Op: "open", Path: name, Err: err}
	}
}
