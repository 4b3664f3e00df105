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

	"github.com/mmapfs/mmapfs/backing/latency"

	"github.com/mmapfs/mmapfs/fs/wire"
)

// maxClosedDirty bounds how many closed blobs' unsynced pages the store
// remembers. Past it the store forgets them all and syncs every blob whole
// on its next Sync until a Store.Sync makes the store clean again.
const maxClosedDirty = 4096

type fileKey struct{ dev, ino uint64 }

// closedDirty is what a blob closed without a sync still owes the disk.
type closedDirty struct {
	name  string // the blob's name when it was closed, for messages
	pages pageSet
	since time.Time
	meta  bool
	whole bool
	gen   uint64 // Store.gen when it was recorded
}

// maxIdleDirty bounds how many released blobs the periodic policy keeps
// open until its next pass; past it a released blob is synced at once.
const maxIdleDirty = 1024

// Options are a store's settings.
type Options struct {
	// Policy decides when the daemon msyncs what it wrote.
	Policy Policy
	// IgnoreFsync makes Fsync a no-op that reports success: unsafe, for
	// experiments that measure what fsync costs.
	IgnoreFsync bool
	// Advice is given to every mapping with madvise(2).
	Advice Advice
	// Populate maps with MAP_POPULATE, faulting every page in up front.
	Populate bool
	// Preallocate fallocates what an extending write adds before it
	// copies, so that a full disk is ENOSPC before anything is written;
	// without it a full disk is ENOSPC from the fault path.
	Preallocate bool
	// MaxResident bounds the blobs that have a descriptor and a mapping
	// at once; past it, blobs open but not in use are dropped and
	// reopened on their next access (see resident.go). 0 means
	// DefaultMaxResident; negative means no bound.
	MaxResident int
	// PowerCutSim keeps, for every page changed since its last sync,
	// the content it had then, so that PowerCut can put the store back
	// to what a power cut would leave (see journal.go and powercut.go). It costs a
	// page of memory and a copy at the first change of each page after
	// a sync, and makes syncs exclusive of writes to the same file.
	PowerCutSim bool
	// Inject, if set, is asked before the store's own work on a file
	// (fault injection; the rules are the caller's): op "msync" before a
	// sync writes a blob's pages or its size (n: the pages' bytes, 0 for
	// the size alone), "fault" before a copy to or from its mapping (n:
	// the bytes asked for, within the file); the blob's Path is its file's
	// path now. A non-nil wait is called first, with none of the blob's
	// locks held (a delay). An error then fails that work as the store's
	// device failing would: the sync or the copy does not happen, and the
	// error is returned, wrapped. From "msync", a *WritebackLost also
	// loses the pages (see WritebackLost). Inject itself may be called
	// with the blob's lock held, so it must not call into the store or
	// wait.
	Inject func(op string, b *Blob, n int64) (wait func(), err error)
}

// DefaultMaxResident keeps the daemon well inside a 20,000-descriptor
// limit and vm.max_map_count's 65,530 mappings.
const DefaultMaxResident = 8192

// Store is a directory of blobs. It hands out one Blob per backing inode,
// shared and reference-counted across every open of every name of it.
type Store struct {
	root      string  // absolute path of the store directory; read only
	rootFd    int     // descriptor of root, for openat2, syncfs and open_by_handle_at; read only
	rootDev   uint64  // st_dev of root; read only
	canReopen bool    // blobs can be reopened by file handle; read only
	opts      Options // read only
	stats     counters
	unmaps    unmapBatch // released blobs' mappings waiting to be unmapped (unmap.go)

	stop chan struct{} // closed by Close to end the periodic pass
	done chan struct{} // closed when the periodic pass has ended

	// mu guards the fields below up to cut (blobs, opening, idle, ring,
	// hand, resident, closed, gen, the lost* fields, simClosed) and every
	// Blob's refs, removed, counted, ringed and fdKept. It is never held
	// across a system call, a page fault or a wait for a lock that is
	// (see the package doc, Locking).
	mu sync.Mutex
	// blobs holds every Blob with a descriptor: the open ones and, under
	// the periodic policy, released ones kept until the next pass syncs
	// them (refs == 0; counted in idle).
	blobs map[fileKey]*Blob
	// opening holds the files whose first open is making their Blob
	// outside mu (acquireOpen); the channel is closed when it is done.
	opening map[fileKey]chan struct{}
	idle    int
	// ring holds the blobs that may be resident, for the clock sweep
	// (hand is its position); resident counts the resident ones.
	ring     []*Blob
	hand     int
	resident int
	closed   map[fileKey]*closedDirty
	// gen counts changes to closed (records and overflows), so that a
	// syncfs forgets only what was recorded before it started.
	gen uint64
	// closedLost is set when unsynced state of a closed blob was
	// forgotten (or never known: the store could not be synced at
	// open): every newly opened blob then syncs whole. lostGen is gen at
	// the last loss; lostBytes and lostSince are what was forgotten, still
	// at risk until a syncfs.
	closedLost bool
	lostGen    uint64
	lostBytes  int64
	lostSince  time.Time
	// simClosed holds the power-cut simulation's records of files
	// closed with changes not synced (see journal.go).
	simClosed map[fileKey]*simClosed
	// lostWriteback holds the lost writebacks (fault injection's
	// fsyncgate, inject.go) of blobs dropped before any fsync reported
	// them: the file's next blob takes it over, so that its next fsync
	// reports it, as Linux reports a writeback error to an fsync of a
	// descriptor opened after it. Nil until the first one.
	lostWriteback map[fileKey]error

	// cut is set once PowerCut has run: no blob may change afterwards.
	cut atomic.Bool
	// drops counts blobs taken out of blobs (written under mu), so that
	// an open can tell whether its fstat, taken without mu, may predate
	// a change a blob made.
	drops atomic.Uint64
}

// Open opens the store at root, which must be an existing directory, and
// syncs its filesystem so that every page the daemon later dirties is one
// it tracks. Under the periodic policy it starts the background pass,
// which Close stops.
func Open(root string, opts Options) (*Store, error) {
	fd, err := unix.Open(root, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open store", Path: root, Err: err}
	}
	if opts.MaxResident == 0 {
		opts.MaxResident = DefaultMaxResident
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(fd, &st); err != nil {
		return nil, errors.Join(&os.PathError{Op: "fstat", Path: root, Err: err}, closeFd(fd, root))
	}
	s := &Store{
		root:      root,
		rootFd:    fd,
		rootDev:   st.Dev,
		canReopen: probeReopen(fd),
		opts:      opts,
		blobs:     make(map[fileKey]*Blob),
		opening:   make(map[fileKey]chan struct{}),
		closed:    make(map[fileKey]*closedDirty),
		simClosed: make(map[fileKey]*simClosed),
		stats:     counters{figures: wire.NewCounters()},
		stop:      make(chan struct{}),
		done:      make(chan struct{}),
	}
	if err := s.syncfs(); err != nil {
		s.closedLost = true
	}
	if opts.Policy.Kind == PolicyPeriodic {
		go s.periodic(opts.Policy.Period)
	} else {
		close(s.done)
	}
	return s, nil
}

// Options returns the store's settings.
func (s *Store) Options() Options { return s.opts }

// periodic syncs every blob with dirty pages every period until Close.
// A failed pass leaves the pages dirty for the next one; its error is
// counted and kept for stats.
func (s *Store) periodic(period time.Duration) {
	defer close(s.done)
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			if err := s.syncOpen(); err != nil {
				s.stats.fail(wire.PassErrors, err)
			}
		}
	}
}

// syncOpen syncs every blob the store has a descriptor of; released ones
// kept for the pass are closed after it.
func (s *Store) syncOpen() error {
	if s.cut.Load() {
		// After a power cut nothing can be synced; the cut synced
		// what it put back.
		return nil
	}
	var errs []error
	for _, b := range s.pinAll() {
		errs = append(errs, b.Sync(), s.Release(b))
	}
	return errors.Join(errs...)
}

// refLocked takes a reference to b. s.mu must be held.
func (s *Store) refLocked(b *Blob) {
	b.refs++
	if b.idle {
		// A released blob kept for the periodic pass. Not every blob
		// found with no reference is one: a last release that syncs
		// outside the lock leaves its blob in the table meanwhile.
		b.idle = false
		s.idle--
	}
}

// pinAll takes a reference to every blob with a descriptor; each must be
// Released.
func (s *Store) pinAll() []*Blob {
	s.mu.Lock()
	defer s.mu.Unlock()
	pinned := make([]*Blob, 0, len(s.blobs))
	for _, b := range s.blobs {
		s.refLocked(b)
		pinned = append(pinned, b)
	}
	return pinned
}

// Root returns the store's directory.
func (s *Store) Root() string { return s.root }

// acquire returns the Blob for the file open on fd, taking a reference.
// It owns fd from then on.
func (s *Store) acquire(fd int, name string, writable bool) (*Blob, error) {
	return s.acquireOpen(fd, name, writable, false, false, -1)
}

// acquireOpen is acquire for an open that may have created the file
// (fresh: it cannot carry file capabilities yet), whose O_RDWR attempt the
// file may have refused with EPERM (refused: it may carry a flag, which
// the blob then reads), and which may come with an append descriptor afd
// (or -1), which the blob owns from then on.
//
// Its system calls run outside s.mu: the fstat that finds the file's key
// before it, and a first open's mapping (with MAP_POPULATE, the whole file
// read in) after it, while s.opening holds the key so that another open of
// the same file waits for the blob instead of making a second one.
func (s *Store) acquireOpen(fd int, name string, writable, fresh, refused bool, afd int) (*Blob, error) {
	var flags uint32
	if refused {
		f, err := fileFlags(fd)
		if err != nil {
			err = &os.PathError{Op: "statx", Path: name, Err: err}
			return nil, errors.Join(err, closeFd(fd, name), closeAfd(afd, name))
		}
		flags = f
	}
	drops := s.drops.Load()
	var st syscall.Stat_t
	if err := syscall.Fstat(fd, &st); err != nil {
		return nil, errors.Join(&os.PathError{Op: "fstat", Path: name, Err: err}, closeFd(fd, name), closeAfd(afd, name))
	}
	if st.Mode&syscall.S_IFMT != syscall.S_IFREG {
		return nil, errors.Join(&os.PathError{Op: "open", Path: name, Err: fmt.Errorf("not a regular file: %w", syscall.EINVAL)}, closeFd(fd, name), closeAfd(afd, name))
	}
	key := fileKey{dev: st.Dev, ino: st.Ino}
	for {
		s.mu.Lock()
		if b := s.blobs[key]; b != nil {
			s.refLocked(b)
			s.mu.Unlock()
			return s.share(b, fd, name, writable, refused, afd)
		}
		if wait := s.opening[key]; wait != nil {
			// Another open is making the blob: wait for it, then
			// share it (or make it, if that open failed).
			s.mu.Unlock()
			<-wait
			continue
		}
		done := make(chan struct{})
		s.opening[key] = done
		// A blob of the file released since the fstat may have
		// changed its size: take it again. None can be made or
		// released from now on until this one is in s.blobs.
		stale := s.drops.Load() != drops
		s.mu.Unlock()
		b, err := s.newBlob(key, &st, stale, fd, name, writable, fresh, flags, afd)
		return s.install(key, done, b, err)
	}
}

// share gives the caller the blob b of its file, which it took a reference
// to, with fd (and afd), its own descriptors of the file: b takes fd if it
// was read-only and fd is writable, and afd if it needs one; the others
// are closed.
func (s *Store) share(b *Blob, fd int, name string, writable, refused bool, afd int) (*Blob, error) {
	owned, nowResident := false, false
	var err error
	switch {
	case writable:
		owned, nowResident, err = b.upgrade(fd)
		if err == nil && !owned && b.flags.Load() != 0 {
			// The file took O_RDWR: it lost its flags since the
			// blob learned them (or is getting one now, which
			// the refresh, serialized with FileAttr, sees).
			err = b.refreshFlags()
		}
	case refused:
		err = b.refreshFlags()
	}
	if !owned {
		err = errors.Join(err, closeFd(fd, name))
	}
	if afd >= 0 && (err != nil || !b.attachAppend(afd)) {
		err = errors.Join(err, closeFd(afd, name))
	}
	if err != nil {
		return nil, errors.Join(err, s.Release(b))
	}
	if nowResident {
		s.noteResident(b)
	}
	return b, nil
}

// newBlob makes the Blob of a file the store has none of, mapping it,
// without s.mu: the caller holds the file's key in s.opening. stale says
// st may be out of date (see acquireOpen). On failure it closes fd and
// afd.
func (s *Store) newBlob(key fileKey, st *syscall.Stat_t, stale bool, fd int, name string, writable, fresh bool, flags uint32, afd int) (*Blob, error) {
	if stale {
		if err := syscall.Fstat(fd, st); err != nil {
			return nil, errors.Join(&os.PathError{Op: "fstat", Path: name, Err: err}, closeFd(fd, name), closeAfd(afd, name))
		}
	}
	b := &Blob{store: s, key: key, name: name, fd: fd, writable: writable, afd: afd, size: st.Size, refs: 1}
	if afd >= 0 {
		flags |= flagViaAppend
	}
	b.flags.Store(flags)
	if !fresh {
		if sz, err := unix.Fgetxattr(fd, capabilityXattr, nil); err == nil && sz > 0 {
			b.caps.Store(true)
		}
	}
	if s.opts.PowerCutSim && s.canReopen {
		// The power-cut record of the file, if it is closed with
		// changes not synced, reopens it by this handle (see
		// recordSimLocked); without one it keeps the descriptor.
		if fh, _, err := unix.NameToHandleAt(fd, "", unix.AT_EMPTY_PATH); err == nil {
			b.fh = &fh
		}
	}
	if hook := testHookMapping.Load(); hook != nil {
		(*hook)(name)
	}
	if st.Size > 0 {
		b.mu.Lock()
		err := b.ensureCapLocked(st.Size)
		b.mu.Unlock()
		if err != nil {
			return nil, errors.Join(err, closeFd(fd, name), closeAfd(afd, name))
		}
	}
	return b, nil
}

// testHookReleaseSync, set only by tests, runs in Release just before a
// last release syncs a dirty blob outside Store.mu under the periodic
// policy: the window in which the blob can be reopened and let go again.
var testHookReleaseSync atomic.Pointer[func(b *Blob)]

// testHookMapping, set only by tests, runs in newBlob just before it maps
// the file: a test holds an open there to see that nothing else waits for
// it.
var testHookMapping atomic.Pointer[func(name string)]

// install puts b, the new blob of key from newBlob (or its error err),
// into the store, lets the opens waiting on done go on, and drops other
// blobs if the store is now over its bound.
func (s *Store) install(key fileKey, done chan struct{}, b *Blob, err error) (*Blob, error) {
	s.mu.Lock()
	delete(s.opening, key)
	if err != nil {
		s.mu.Unlock()
		close(done)
		return nil, err
	}
	var old *simClosed
	b.sim, old = s.takeSimLocked(key, b.size)
	// Only now that the blob is usable does it take over what its
	// file owed the disk when it was last closed.
	if cd := s.closed[key]; cd != nil {
		b.dirty, b.dirtySince, b.metaDirty, b.wholeSync = cd.pages, cd.since, cd.meta, cd.whole
		delete(s.closed, key)
	} else {
		b.wholeSync = s.closedLost
	}
	if lost := s.lostWriteback[key]; lost != nil {
		b.lostErr = lost
		delete(s.lostWriteback, key)
	}
	s.blobs[key] = b
	s.stats.add(wire.BlobsOpened, 1)
	b.used.Store(true)
	s.countResidentLocked(b)
	s.mu.Unlock()
	close(done)
	if err := old.close(); err != nil {
		// The open goes on: the record is what matters.
		s.stats.setSimError(err)
	}
	s.evictOver(b)
	return b, nil
}

// Find returns the open Blob of the file described by st, with a reference
// the caller must Release, or nil if the file is not open. A first open
// of the file that is still mapping it is waited for, so that a change
// made by name (a truncate) goes through the blob that open makes.
func (s *Store) Find(st *syscall.Stat_t) *Blob {
	key := fileKey{dev: st.Dev, ino: st.Ino}
	s.mu.Lock()
	for {
		if b := s.blobs[key]; b != nil {
			s.refLocked(b)
			s.mu.Unlock()
			return b
		}
		wait := s.opening[key]
		s.mu.Unlock()
		if wait == nil {
			return nil
		}
		<-wait
		s.mu.Lock()
	}
}

// Release gives back a reference taken by Open or Find. After the last
// one, the blob's unsynced pages are dealt with as the policy says:
// close syncs them; periodic keeps the blob (descriptor and mapping)
// until its next pass; the others leave them in the page cache, and the
// store remembers them so that a later Sync of the same file makes them
// durable. Then the blob is unmapped and its descriptor closed.
func (s *Store) Release(b *Blob) error {
	var syncErr error
	if s.opts.Policy.Kind == PolicyClose && !s.cut.Load() {
		// Writes can arrive after the last flush (a client's mapping
		// written back before it is unmapped): sync before letting go.
		s.mu.Lock()
		last := b.refs == 1
		s.mu.Unlock()
		if last {
			syncErr = b.Sync()
		}
	}
	s.mu.Lock()
	b.refs--
	if b.refs > 0 {
		s.mu.Unlock()
		return syncErr
	}
	b.dmu.Lock()
	dirty := !b.dirty.empty() || b.metaDirty || b.wholeSync
	b.dmu.Unlock()
	if dirty && s.opts.Policy.Kind == PolicyPeriodic && s.idle < maxIdleDirty && !s.closing() {
		s.idle++
		b.idle = true
		s.mu.Unlock()
		return syncErr
	}
	if dirty && s.opts.Policy.Kind == PolicyPeriodic {
		// Too many kept already, or closing: sync it now rather
		// than forget what it owes.
		s.mu.Unlock()
		if hook := testHookReleaseSync.Load(); hook != nil {
			(*hook)(b)
		}
		syncErr = errors.Join(syncErr, b.Sync())
		s.mu.Lock()
		if b.refs > 0 || s.blobs[b.key] != b {
			// Reopened while it synced, or reopened and let go
			// again, which finished it (the key may even name a
			// newer blob of the file by now): nothing left to do.
			s.mu.Unlock()
			return syncErr
		}
	}
	delete(s.blobs, b.key)
	s.drops.Add(1)
	s.uncountLocked(b)
	b.dmu.Lock()
	if b.lostErr != nil && !b.removed {
		if s.lostWriteback == nil {
			s.lostWriteback = map[fileKey]error{}
		}
		s.lostWriteback[b.key] = b.lostErr
		b.lostErr = nil
	}
	b.dmu.Unlock()
	var replaced *simClosed
	if b.sim != nil {
		replaced = s.recordSimLocked(b)
	}
	b.dmu.Lock()
	if (!b.dirty.empty() || b.metaDirty || b.wholeSync) && !b.removed {
		s.recordClosedLocked(b.key, &closedDirty{name: b.name, pages: b.dirty, since: b.dirtySince, meta: b.metaDirty, whole: b.wholeSync})
		b.dirty = pageSet{}
	}
	b.dmu.Unlock()
	s.mu.Unlock()
	return errors.Join(syncErr, replaced.close(), b.close())
}

// Removed tells the store that the regular file dev/ino has lost its last
// name (its stat, taken before an unlink or a rename over it, said
// Nlink == 1, and the removal succeeded): it is gone once no one has it
// open. What it owed the disk when it was closed is forgotten, so that
// Unsynced and AtRisk stop counting a file that no longer exists and a new
// file that reuses the inode number does not inherit its pages; a blob of it
// still open records nothing at its last release. The power-cut
// simulation's records are kept: the cut reports the file as gone.
func (s *Store) Removed(dev, ino uint64) {
	key := fileKey{dev: dev, ino: ino}
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.closed, key)
	delete(s.lostWriteback, key)
	if b := s.blobs[key]; b != nil {
		b.removed = true
	}
}

// recordClosedLocked remembers what a closed blob owes the disk. Past
// maxClosedDirty records it forgets them all, keeping only their total, and
// every blob opened afterwards syncs whole. s.mu must be held.
func (s *Store) recordClosedLocked(key fileKey, cd *closedDirty) {
	s.gen++
	cd.gen = s.gen
	if len(s.closed) < maxClosedDirty {
		s.closed[key] = cd
		return
	}
	s.closed[key] = cd
	for _, c := range s.closed {
		s.lostBytes += c.pages.count * int64(pageSize)
		if !c.since.IsZero() && (s.lostSince.IsZero() || c.since.Before(s.lostSince)) {
			s.lostSince = c.since
		}
	}
	s.closed = make(map[fileKey]*closedDirty)
	s.closedLost = true
	s.lostGen = s.gen
}

func (s *Store) closing() bool {
	select {
	case <-s.stop:
		return true
	default:
		return false
	}
}

// Sync makes the whole store durable: every open blob's dirty pages, then
// the store's filesystem (syncfs), which covers blobs closed dirty.
func (s *Store) Sync() error {
	errs := []error{s.syncOpen()}
	if err := s.syncfs(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// syncfs syncs the store's filesystem and, on success, forgets what closed
// blobs owed the disk when it started; what was recorded or lost while it
// ran may not be covered and is kept.
func (s *Store) syncfs() error {
	s.mu.Lock()
	gen := s.gen
	s.mu.Unlock()
	if hook := testHookSyncfs.Load(); hook != nil {
		(*hook)(s)
	}
	if err := unix.Syncfs(s.rootFd); err != nil {
		return &os.PathError{Op: "syncfs", Path: s.root, Err: err}
	}
	s.mu.Lock()
	for key, cd := range s.closed {
		if cd.gen <= gen {
			delete(s.closed, key)
		}
	}
	if s.closedLost && s.lostGen <= gen {
		s.closedLost, s.lostBytes, s.lostSince = false, 0, time.Time{}
	}
	forgotten := s.forgetSimLocked(gen)
	s.mu.Unlock()
	var errs []error
	for _, c := range forgotten {
		errs = append(errs, c.close())
	}
	return errors.Join(errs...)
}

// Close syncs the store and closes every blob still open (a mount torn
// down under open files). The Store must not be used afterwards.
func (s *Store) Close() error {
	close(s.stop)
	<-s.done
	errs := []error{s.Sync()}
	s.mu.Lock()
	open := s.blobs
	s.blobs = make(map[fileKey]*Blob)
	s.drops.Add(1)
	s.mu.Unlock()
	for _, b := range open {
		errs = append(errs, b.close())
	}
	errs = append(errs, s.flushUnmaps())
	s.mu.Lock()
	s.ring, s.resident = nil, 0
	s.mu.Unlock()
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
	if s.lostBytes > 0 {
		bytes += s.lostBytes
		older(s.lostSince)
	}
	return bytes, oldest
}

// closeAfd closes an append descriptor, if there is one (afd >= 0).
func closeAfd(afd int, name string) error {
	if afd < 0 {
		return nil
	}
	return closeFd(afd, name)
}

func closeFd(fd int, name string) error {
	if err := syscall.Close(fd); err != nil {
		return &os.PathError{Op: "close", Path: name, Err: err}
	}
	return nil
}

// SyncLatency returns the histogram of msync and fdatasync latencies.
func (s *Store) SyncLatency() latency.Snapshot { return s.stats.syncHist.Snapshot() }
