package backing

import (
	"errors"
	"fmt"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/mmapfs/mmapfs/fs/wire"
)

// Residency: a Blob is resident while it has a descriptor and a mapping.
// A process may hold 20,000 descriptors at most here and the kernel allows
// vm.max_map_count (65530) mappings, while clients may hold far more files
// open. So the store keeps at most Options.MaxResident blobs resident and,
// past that, drops the descriptor and mapping of blobs that are open but
// not in use (a clock sweep over the resident ones), keeping everything
// else of the Blob: its size, its dirty pages (still in the page cache),
// its references. An access reopens it by file handle (open_by_handle_at),
// which follows the file across renames.
//
// Never dropped: a blob whose file has no name left (nlink 0: an unlinked
// open file, an O_TMPFILE), since closing the last descriptor would free
// it; a blob on another filesystem than the store root (open_by_handle_at
// needs a descriptor on the same one); a blob whose file is immutable or
// append-only, or that has an append descriptor (flags.go: it could not be
// reopened as it is); and nothing at all when the daemon cannot open by
// handle (it needs CAP_DAC_READ_SEARCH, so root).

// rlock takes b.mu shared with the blob resident, reopening it first if
// the store dropped it.
func (b *Blob) rlock() error {
	for {
		b.mu.RLock()
		if b.fd >= 0 {
			b.touch()
			return nil
		}
		b.mu.RUnlock()
		if err := b.reopen(); err != nil {
			return err
		}
	}
}

// lock takes b.mu exclusively with the blob resident.
func (b *Blob) lock() error {
	for {
		b.mu.Lock()
		if b.fd >= 0 {
			b.touch()
			return nil
		}
		b.mu.Unlock()
		if err := b.reopen(); err != nil {
			return err
		}
	}
}

// touch marks the blob used for the clock sweep. It loads before it
// stores, so that readers of one blob share the cache line instead of
// writing it on every access.
func (b *Blob) touch() {
	if !b.used.Load() {
		b.used.Store(true)
	}
}

// reopen makes a dropped blob resident again and tells the store, which
// may drop another one to stay within its bound.
func (b *Blob) reopen() error {
	b.mu.Lock()
	if b.fd >= 0 {
		b.mu.Unlock()
		return nil
	}
	err := b.reopenLocked()
	b.mu.Unlock()
	if err != nil {
		return err
	}
	b.store.stats.add(wire.Reopens, 1)
	b.store.noteResident(b)
	return nil
}

func (b *Blob) reopenLocked() error {
	flags := unix.O_RDONLY
	if b.writable {
		flags = unix.O_RDWR
	}
	fd, err := unix.OpenByHandleAt(b.store.rootFd, *b.fh, flags|unix.O_CLOEXEC|unix.O_NOATIME)
	if errors.Is(err, syscall.EPERM) {
		fd, err = unix.OpenByHandleAt(b.store.rootFd, *b.fh, flags|unix.O_CLOEXEC)
	}
	if errors.Is(err, syscall.EPERM) && b.writable {
		// Made immutable or append-only behind the daemon while
		// dropped: the blob comes back read-only and learns why.
		fd, err = unix.OpenByHandleAt(b.store.rootFd, *b.fh, unix.O_RDONLY|unix.O_CLOEXEC)
		if err == nil {
			b.writable = false
			f, ferr := fileFlags(fd)
			if ferr != nil {
				return errors.Join(b.pathErr("statx", ferr), closeFd(fd, b.name))
			}
			b.flags.Store(f)
		}
	}
	if err != nil {
		return b.pathErr("reopen", fmt.Errorf("open by handle: %w", err))
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(fd, &st); err != nil {
		return errors.Join(b.pathErr("fstat", err), closeFd(fd, b.name))
	}
	b.fd = fd
	if st.Size < b.size {
		// Shrunk behind the daemon's back while it was not mapped.
		b.size = st.Size
		b.dmu.Lock()
		b.dirty.removeFrom(pagesCeil(st.Size))
		b.dmu.Unlock()
	}
	if b.size > 0 {
		if err := b.ensureCapLocked(b.size); err != nil {
			b.fd = -1
			return errors.Join(err, closeFd(fd, b.name))
		}
	}
	return nil
}

// evictLocked drops the descriptor and mapping of a resident blob nobody
// is using (the caller holds b.mu exclusively, and not the store's mu).
// It returns false when the blob must stay resident (see above). The
// mapping goes to the store's batch of unmaps.
func (b *Blob) evictLocked() (bool, error) {
	if b.afd >= 0 || b.flags.Load() != 0 || b.fh == nil && b.sim != nil {
		// A blob of the power-cut simulation got its handle when it
		// was opened, if it can have one, and keeps it unchanged
		// (recordSimLocked relies on it).
		return false, nil
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(b.fd, &st); err != nil {
		return false, b.pathErr("fstat", err)
	}
	if st.Nlink == 0 || st.Dev != b.store.rootDev {
		return false, nil
	}
	if b.fh == nil {
		fh, _, err := unix.NameToHandleAt(b.fd, "", unix.AT_EMPTY_PATH)
		if err != nil {
			return false, nil // the filesystem cannot export handles: keep it
		}
		b.fh = &fh
	}
	if err := b.applyMtimeLocked(); err != nil {
		return false, err
	}
	if err := b.unmapLocked(); err != nil {
		return false, err
	}
	err := syscall.Close(b.fd)
	b.fd = -1
	if err != nil {
		return true, b.pathErr("close", err)
	}
	return true, nil
}

// noteResident counts a blob that became resident and drops others if the
// store is over its bound.
func (s *Store) noteResident(b *Blob) {
	s.mu.Lock()
	s.countResidentLocked(b)
	s.mu.Unlock()
	s.evictOver(b)
}

// countResidentLocked counts b as resident and puts it in the ring.
// s.mu must be held.
func (s *Store) countResidentLocked(b *Blob) {
	if !b.counted {
		b.counted = true
		s.resident++
	}
	if !b.ringed {
		b.ringed = true
		s.ring = append(s.ring, b)
	}
}

// uncountLocked stops counting b as resident (it was dropped or closed).
// s.mu must be held. The ring forgets it lazily.
func (s *Store) uncountLocked(b *Blob) {
	if b.counted {
		b.counted = false
		s.resident--
	}
}

// evictOver drops resident blobs, oldest-unused first (clock), until the
// store is within its bound or no blob can be dropped now. It never waits
// for a blob in use (TryLock) and never drops keep. The sweep picks a blob
// under s.mu; the drop (fstat, name_to_handle_at, utimensat, close) runs
// outside it, with the blob's b.mu held. s.mu must not be held.
func (s *Store) evictOver(keep *Blob) {
	if s.opts.MaxResident <= 0 || !s.canReopen {
		return
	}
	s.mu.Lock()
	tries := 2 * len(s.ring)
	for {
		c := s.pickVictimLocked(keep, &tries)
		if c == nil {
			break
		}
		s.mu.Unlock()
		ok, err := c.evictLocked()
		c.mu.Unlock()
		if err != nil {
			s.stats.fail(wire.EvictErrors, err)
		}
		s.mu.Lock()
		switch {
		case ok:
			s.stats.add(wire.Evictions, 1)
		case s.blobs[c.key] == c:
			// It stays resident (and was not closed meanwhile):
			// count it again.
			s.countResidentLocked(c)
		}
	}
	s.mu.Unlock()
}

// pickVictimLocked moves the clock hand to the next blob to drop while the
// store is over its bound: resident, not keep, not used since the hand
// last passed it, and not in use now. It returns it with its b.mu held
// (TryLock), no longer counted as resident nor in the ring (evictOver
// counts it again if it stays), or nil once the store is within its bound
// or tries (visits of the ring) ran out. s.mu must be held.
func (s *Store) pickVictimLocked(keep *Blob, tries *int) *Blob {
	for ; s.resident > s.opts.MaxResident && *tries > 0 && len(s.ring) > 0; *tries-- {
		if s.hand >= len(s.ring) {
			s.hand = 0
		}
		c := s.ring[s.hand]
		if !c.counted {
			s.dropFromRingLocked(s.hand)
			continue
		}
		if c == keep || c.used.Swap(false) || !c.mu.TryLock() {
			s.hand++
			continue
		}
		*tries--
		s.uncountLocked(c)
		s.dropFromRingLocked(s.hand)
		return c
	}
	return nil
}

// dropFromRingLocked removes ring[i], moving the last entry into its place.
func (s *Store) dropFromRingLocked(i int) {
	s.ring[i].ringed = false
	last := len(s.ring) - 1
	s.ring[i] = s.ring[last]
	s.ring[last] = nil
	s.ring = s.ring[:last]
}

// probeReopen reports whether blobs can be reopened by file handle here:
// the store's filesystem exports handles and the daemon may open them.
func probeReopen(rootFd int) bool {
	fh, _, err := unix.NameToHandleAt(rootFd, "", unix.AT_EMPTY_PATH)
	if err != nil {
		return false
	}
	fd, err := unix.OpenByHandleAt(rootFd, fh, unix.O_RDONLY|unix.O_CLOEXEC)
	if err != nil {
		return false
	}
	return syscall.Close(fd) == nil
}

// Resident bytes (the resident_bytes figure): how many of a mapped file's
// pages are in the page cache. cachestat(2) (Linux 6.5) counts them on
// the blob's descriptor by walking the file's page cache over the mapped
// range, so it costs the pages cached, not the file's size, and takes no
// memory of the daemon's. mincore(2) over the mapping, the fallback where
// the kernel has no cachestat, looks up every page of the range: it is
// asked a chunk at a time, into a vector on the stack. For a MAP_SHARED
// mapping of the file, which is what a blob has, both count the same
// pages: those of the file in the page cache, whether or not a process
// has them mapped in.

// mincoreChunk is how many pages residentMincore asks mincore(2) about
// at once (16 MiB of mapping with 4 KiB pages), holding b.mu shared for
// one call at a time.
const mincoreChunk = 4096

// Resident returns how many bytes of the blob's file, over its mapped
// range, are in the page cache now: by cachestat(2) on its descriptor, or
// by mincore(2) over its mapping where the kernel has no cachestat. It
// allocates nothing, and holds b.mu shared for one short system call at a
// time (a dup of the descriptor, which cachestat then uses unlocked; or
// mincore of one chunk of mincoreChunk pages), so that a stats reader
// never holds up a grow or a remap of the blob (nor, behind that, every
// copy) for longer. A blob the store has dropped counts 0, and so does
// one dropped while mincore is counting it. A file that the daemon
// neither owns nor may write (nor has CAP_FOWNER for) counts 0: the
// kernel refuses cachestat on it (EPERM); its mincore, the fallback's,
// says every page is resident.
func (b *Blob) Resident() (int64, error) { return b.resident(nil) }

// resident is Resident, stopped (0 bytes, no error) when stopped, if not
// nil, says so between chunks of mincore.
func (b *Blob) resident(stopped func() bool) (int64, error) {
	if no := &b.store.stats.noCachestat; !no.Load() {
		n, err := b.residentCachestat()
		switch {
		case errors.Is(err, errNoCachestat):
			no.Store(true)
		case errors.Is(err, syscall.EOPNOTSUPP):
			// A file whose filesystem keeps no page cache that
			// cachestat counts (hugetlbfs): mincore, for it only.
		default:
			return n, err
		}
	}
	return b.residentMincore(stopped)
}

// errNoCachestat is residentCachestat's answer when the daemon cannot use
// cachestat(2) at all.
var errNoCachestat = errors.New("cachestat(2) is not available")

// residentCachestat is Resident by cachestat(2). It returns
// errNoCachestat when the daemon cannot use cachestat at all, and
// EOPNOTSUPP when it cannot on this file.
//
// cachestat walks the file's cached pages in the range, which takes some
// 20 ms a GiB cached in 4 KiB pages: too long to hold b.mu, behind which
// a grow or remap of the blob, and every copy behind that, would wait.
// So it runs on a duplicate of the blob's descriptor, made under b.mu
// and closed after, which keeps the file open should the blob close or
// drop its own meanwhile. Without a descriptor to spare it runs under
// b.mu on the blob's own.
func (b *Blob) residentCachestat() (int64, error) {
	b.mu.RLock()
	n := min(roundUp(b.size), int64(len(b.data)))
	if n <= 0 || b.fd < 0 {
		b.mu.RUnlock()
		return 0, nil
	}
	writable := b.writable
	fd, err := unix.FcntlInt(uintptr(b.fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		defer b.mu.RUnlock()
		return b.cachestat(b.fd, n, writable)
	}
	b.mu.RUnlock()
	got, err := b.cachestat(fd, n, writable)
	return got, errors.Join(err, closeFd(fd, b.name))
}

// cachestat returns the bytes of the file open on fd (writable: for
// writing) in the page cache over [0, n), by cachestat(2); errors as
// residentCachestat's.
func (b *Blob) cachestat(fd int, n int64, writable bool) (int64, error) {
	var cs unix.Cachestat_t
	err := unix.Cachestat(uint(fd), &unix.CachestatRange{Off: 0, Len: uint64(n)}, &cs, 0)
	switch {
	case err == nil:
		return int64(cs.Cache) * int64(pageSize), nil
	case errors.Is(err, syscall.ENOSYS):
		return 0, errNoCachestat
	case errors.Is(err, syscall.EPERM) && writable:
		// The kernel lets cachestat every descriptor open for
		// writing: this EPERM is a seccomp filter's.
		return 0, errNoCachestat
	case errors.Is(err, syscall.EPERM):
		return 0, nil // not the daemon's to know (see Resident)
	case errors.Is(err, syscall.EOPNOTSUPP):
		return 0, syscall.EOPNOTSUPP
	}
	return 0, b.pathErr("cachestat", err)
}

// residentMincore is Resident by mincore(2), one chunk of the mapping at
// a time, each under b.mu shared; it stops (0 bytes, no error) when
// stopped, if not nil, says so before a chunk.
func (b *Blob) residentMincore(stopped func() bool) (int64, error) {
	var total int64
	for at := int64(0); ; {
		if stopped != nil && stopped() {
			return 0, nil
		}
		b.mu.RLock()
		n := min(roundUp(b.size), int64(len(b.data)))
		if b.fd < 0 || n <= 0 {
			b.mu.RUnlock()
			return 0, nil // dropped, or emptied, meanwhile
		}
		if at >= n {
			b.mu.RUnlock()
			return total, nil
		}
		c := min(n-at, mincoreChunk*int64(pageSize))
		got, err := b.residentMincoreLocked(at, at+c)
		b.mu.RUnlock()
		if err != nil {
			return 0, err
		}
		total += got
		at += c
	}
}

// residentMincoreLocked returns the bytes of the mapping's pages in
// [lo, hi) (page-aligned, within the mapping) that mincore(2) says are
// resident, asking it mincoreChunk pages at a time. b.mu must be held.
func (b *Blob) residentMincoreLocked(lo, hi int64) (int64, error) {
	var vec [mincoreChunk]byte
	var pages int64
	for at := lo; at < hi; {
		c := min(hi-at, mincoreChunk*int64(pageSize))
		v := vec[:pagesCeil(c)]
		if err := mincore(b.data[at:at+c], v); err != nil {
			return 0, b.pathErr("mincore", err)
		}
		for _, p := range v {
			pages += int64(p & 1)
		}
		at += c
	}
	return pages * int64(pageSize), nil
}
