package backing

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// maxClosedDirty bounds how many closed blobs' unsynced pages the store
// remembers. Past it the store forgets them all and syncs every blob whole
// on its next Sync until a Store.Sync makes the store clean again.
const maxClosedDirty = 4096

type fileKey struct{ dev, ino uint64 }

// closedDirty is what a blob closed without a sync still owes the disk.
type closedDirty struct {
	pages pageSet
	since time.Time
	meta  bool
	whole bool
}

// Store is a directory of blobs. It hands out one Blob per backing inode,
// shared and reference-counted across every open of every name of it.
type Store struct {
	root   string // absolute path of the store directory; read only
	rootFd int    // descriptor of root, for openat2 and syncfs; read only
	stats  counters

	// mu guards blobs, closed, closedLost, and every Blob's refs.
	mu     sync.Mutex
	blobs  map[fileKey]*Blob
	closed map[fileKey]*closedDirty
	// closedLost is set when unsynced state of a closed blob was
	// forgotten (or never known: the store could not be synced at
	// open): every newly opened blob then syncs whole.
	closedLost bool
}

// Open opens the store at root, which must be an existing directory, and
// syncs its filesystem so that every page the daemon later dirties is one
// it tracks.
func Open(root string) (*Store, error) {
	fd, err := unix.Open(root, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open store", Path: root, Err: err}
	}
	s := &Store{
		root:   root,
		rootFd: fd,
		blobs:  make(map[fileKey]*Blob),
		closed: make(map[fileKey]*closedDirty),
	}
	if err := s.syncfs(); err != nil {
		s.closedLost = true
	}
	return s, nil
}

// Root returns the store's directory.
func (s *Store) Root() string { return s.root }

// Open opens the blob called name (a path relative to the store root,
// resolved beneath it without following any symlink) with the caller's
// open flags, and returns its shared Blob. The blob is mapped writable
// when the daemon may open it O_RDWR, read-only otherwise (then only
// O_RDONLY opens succeed). O_CREAT, O_EXCL and O_TMPFILE work as for
// open(2), with mode; O_TRUNC truncates through the mapping. Every Blob
// returned must be given back with Release.
func (s *Store) Open(name string, flags int, mode uint32) (*Blob, error) {
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
	fd, err := s.openat(name, rest|unix.O_RDWR, mode)
	if (errors.Is(err, syscall.EACCES) || errors.Is(err, syscall.EROFS) || errors.Is(err, syscall.EPERM)) && acc == unix.O_RDONLY {
		writable = false
		fd, err = s.openat(name, rest|unix.O_RDONLY, mode)
	}
	if err != nil {
		return nil, err
	}
	b, err := s.acquire(fd, name, writable)
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

// openat opens name beneath the store root, refusing symlinks and "..".
func (s *Store) openat(name string, flags int, mode uint32) (int, error) {
	how := unix.OpenHow{
		Flags:   uint64(flags),
		Mode:    uint64(mode),
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
	}
	if name == "" {
		name = "."
	}
	for {
		fd, err := unix.Openat2(s.rootFd, name, &how)
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

// acquire returns the Blob for the file open on fd, taking a reference.
// It owns fd from then on.
func (s *Store) acquire(fd int, name string, writable bool) (*Blob, error) {
	var st syscall.Stat_t
	if err := syscall.Fstat(fd, &st); err != nil {
		return nil, errors.Join(&os.PathError{Op: "fstat", Path: name, Err: err}, closeFd(fd, name))
	}
	if st.Mode&syscall.S_IFMT != syscall.S_IFREG {
		return nil, errors.Join(&os.PathError{Op: "open", Path: name, Err: fmt.Errorf("not a regular file: %w", syscall.EINVAL)}, closeFd(fd, name))
	}
	key := fileKey{dev: st.Dev, ino: st.Ino}

	s.mu.Lock()
	if b := s.blobs[key]; b != nil {
		b.refs++
		s.mu.Unlock()
		owned := false
		var err error
		if writable {
			owned, err = b.upgrade(fd)
		}
		if !owned {
			err = errors.Join(err, closeFd(fd, name))
		}
		if err != nil {
			return nil, errors.Join(err, s.Release(b))
		}
		return b, nil
	}
	defer s.mu.Unlock()
	b := &Blob{store: s, key: key, name: name, fd: fd, writable: writable, size: st.Size, refs: 1}
	if cd := s.closed[key]; cd != nil {
		b.dirty, b.dirtySince, b.metaDirty, b.wholeSync = cd.pages, cd.since, cd.meta, cd.whole
		delete(s.closed, key)
	} else {
		b.wholeSync = s.closedLost
	}
	if st.Size > 0 {
		b.mu.Lock()
		err := b.ensureCapLocked(st.Size)
		b.mu.Unlock()
		if err != nil {
			return nil, errors.Join(err, closeFd(fd, name))
		}
	}
	s.blobs[key] = b
	s.stats.opens.Add(1)
	return b, nil
}

// Find returns the open Blob of the file described by st, with a reference
// the caller must Release, or nil if the file is not open.
func (s *Store) Find(st *syscall.Stat_t) *Blob {
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.blobs[fileKey{dev: st.Dev, ino: st.Ino}]
	if b != nil {
		b.refs++
	}
	return b
}

// Release gives back a reference taken by Open or Find. The last one
// unmaps the blob and closes its descriptor; pages it dirtied and did not
// sync stay in the page cache, and the store remembers them so that a
// later Sync of the same file makes them durable.
func (s *Store) Release(b *Blob) error {
	s.mu.Lock()
	b.refs--
	if b.refs > 0 {
		s.mu.Unlock()
		return nil
	}
	delete(s.blobs, b.key)
	b.dmu.Lock()
	if !b.dirty.empty() || b.metaDirty || b.wholeSync {
		if len(s.closed) < maxClosedDirty {
			s.closed[b.key] = &closedDirty{pages: b.dirty, since: b.dirtySince, meta: b.metaDirty, whole: b.wholeSync}
		} else {
			s.closed = make(map[fileKey]*closedDirty)
			s.closedLost = true
		}
		b.dirty = pageSet{}
	}
	b.dmu.Unlock()
	s.mu.Unlock()
	return b.close()
}

// Sync makes the whole store durable: every open blob's dirty pages, then
// the store's filesystem (syncfs), which covers blobs closed dirty.
func (s *Store) Sync() error {
	s.mu.Lock()
	open := make([]*Blob, 0, len(s.blobs))
	for _, b := range s.blobs {
		b.refs++
		open = append(open, b)
	}
	s.mu.Unlock()
	var errs []error
	for _, b := range open {
		errs = append(errs, b.Sync(), s.Release(b))
	}
	if err := s.syncfs(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// syncfs syncs the store's filesystem and, on success, forgets what closed
// blobs owed the disk.
func (s *Store) syncfs() error {
	s.mu.Lock()
	before := s.closedLost
	s.mu.Unlock()
	if err := unix.Syncfs(s.rootFd); err != nil {
		return &os.PathError{Op: "syncfs", Path: s.root, Err: err}
	}
	s.mu.Lock()
	// Anything closed after syncfs started may not be covered; only
	// clear what was known before.
	if s.closedLost == before {
		s.closed = make(map[fileKey]*closedDirty)
		s.closedLost = false
	}
	s.mu.Unlock()
	return nil
}

// Close syncs the store and closes every blob still open (a mount torn
// down under open files). The Store must not be used afterwards.
func (s *Store) Close() error {
	errs := []error{s.Sync()}
	s.mu.Lock()
	open := s.blobs
	s.blobs = make(map[fileKey]*Blob)
	s.mu.Unlock()
	for _, b := range open {
		errs = append(errs, b.close())
	}
	if err := syscall.Close(s.rootFd); err != nil {
		errs = append(errs, &os.PathError{Op: "close", Path: s.root, Err: err})
	}
	return errors.Join(errs...)
}

// Unsynced returns the bytes written by the daemon and not yet synced,
// over open blobs and blobs closed dirty, and the age of the oldest.
func (s *Store) Unsynced() (bytes int64, oldest time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	older := func(t time.Time) {
		if !t.IsZero() && (oldest.IsZero() || t.Before(oldest)) {
			oldest = t
		}
	}
	for _, b := range s.blobs {
		n, since := b.Unsynced()
		if n > 0 {
			bytes += n
			older(since)
		}
	}
	for _, cd := range s.closed {
		if cd.pages.count > 0 {
			bytes += cd.pages.count * int64(pageSize)
			older(cd.since)
		}
	}
	return bytes, oldest
}

func closeFd(fd int, name string) error {
	if err := syscall.Close(fd); err != nil {
		return &os.PathError{Op: "close", Path: name, Err: err}
	}
	return nil
}

// counters are the store's running figures, updated atomically.
type counters struct {
	opens       atomic.Int64
	mappings    atomic.Int64
	mappedBytes atomic.Int64
	remaps      atomic.Int64
	faults      atomic.Int64
	syncCalls   atomic.Int64
	syncBytes   atomic.Int64
	syncNanos   atomic.Int64
}

func (c *counters) recordSync(bytes int64, d time.Duration) {
	c.syncCalls.Add(1)
	c.syncBytes.Add(bytes)
	c.syncNanos.Add(int64(d))
}

// Stats is a snapshot of the store's figures.
type Stats struct {
	Opens       int64         // blobs opened (first opens, not shared ones)
	Mappings    int64         // mappings live now
	MappedBytes int64         // bytes of address space mapped now
	Remaps      int64         // mremaps done to grow a mapping
	Faults      int64         // faults on a mapping turned into errors or retries
	SyncCalls   int64         // msync/fdatasync calls that synced data
	SyncBytes   int64         // bytes those calls covered
	SyncTime    time.Duration // time spent in them
}

// Stats returns the store's figures now.
func (s *Store) Stats() Stats {
	c := &s.stats
	return Stats{
		Opens:       c.opens.Load(),
		Mappings:    c.mappings.Load(),
		MappedBytes: c.mappedBytes.Load(),
		Remaps:      c.remaps.Load(),
		Faults:      c.faults.Load(),
		SyncCalls:   c.syncCalls.Load(),
		SyncBytes:   c.syncBytes.Load(),
		SyncTime:    time.Duration(c.syncNanos.Load()),
	}
}
