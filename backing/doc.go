// Package backing is the blob store behind mmapfs: it opens blobs (regular
// files in a store directory), maps each one MAP_SHARED once per backing
// inode, copies bytes in and out of that mapping, grows and shrinks it,
// tracks which pages it dirtied and msyncs exactly those.
//
// It knows nothing of FUSE and must never import go-fuse or package fs.
// Errors it returns are wrapped (*os.PathError or fmt.Errorf with %w) and
// carry a syscall.Errno at the bottom of the chain, so the FUSE boundary can
// turn them into an errno with errors.As.
//
// # Mappings
//
// A Blob owns one descriptor and one mapping of its file. The mapping's
// length (its capacity) is whole pages and may run past the end of the
// file: pages wholly past EOF are never touched, because every copy is
// clipped to the size the Blob keeps. An empty file has no mapping (mmap of
// length 0 fails with EINVAL). A write that extends the file grows the blob
// first (ftruncate; with Options.Preallocate, fallocate of the written
// range), then the mapping (mremap with MREMAP_MAYMOVE, with headroom so
// that appends do not remap every time), and only then copies. A page the
// store cannot back faults during the copy; the fault path (below) turns
// that into ENOSPC and puts the size back, so a full disk is an error to
// the writer either way, never a dead daemon.
//
// # Faults
//
// A page of the mapping can fault: the blob was truncated by another
// process, the disk failed, or there was no space to fill a hole. Every
// access to mapped memory goes through the functions in fault.go, which run
// with debug.SetPanicOnFault and turn the fault into an error (EIO, or
// ENOSPC when the faulting range cannot be allocated). The daemon must never
// die of a fault, and no access to a mapping may bypass those functions.
//
// # Durability
//
// Writes land in the page cache of the blob, shared with every other
// process that reads the blob, so a killed daemon loses nothing a client
// wrote. Sync makes a blob durable: msync(MS_SYNC) of exactly the pages
// dirtied since the last sync, then fdatasync when the size or allocation
// changed. A Blob opened while the store may hold unsynced pages from
// before (a blob closed dirty whose ranges were forgotten, see Store)
// syncs whole on its first Sync.
//
// # File flags
//
// An immutable file (chattr +i) takes no change; an append-only file
// (chattr +a) takes appends only. The store's filesystem enforces them on
// every open, name and attribute change the daemon makes; a Blob enforces
// them on what it does through a descriptor and mapping that outlive the
// flag. Blob.flags caches the flags (learned when an O_RDWR open is
// refused, at every SET through Blob.FileAttr under the blob's lock, and
// when a write fault or an EPERM shows a change behind the daemon);
// WriteAt, Truncate and Allocate load it once. Immutable: every change is
// EPERM before the mapping is touched. Append-only: never written through
// the mapping, since ext4 refuses a shared mapping of a writable
// descriptor of such a file (EACCES), ftruncate (to grow the mapping ahead
// of a copy) and explicit mtimes. A blob first opened while the file is
// append-only maps it read-only and appends with write(2) on an
// O_WRONLY|O_APPEND descriptor of its own, growing the mapping after; a
// write below the end may only send again what the file holds (the
// writeback cache resends a partly written page), anything else is EPERM.
// A blob writable from before the flag keeps its O_RDWR descriptor, which
// ext4 lets write anywhere: it writes with pwrite(2). Such writes count
// dirty and at risk like any other; since msync of a read-only mapping
// syncs nothing, Sync fdatasyncs them. The power-cut simulation lifts
// the flags to put a file back. The details and the rules measured on
// ext4 are in flags.go.
//
// # Files
//
// One concern a file: store.go, the Store (options, lifecycle, the table of
// blobs and its reference counts, the ledger of what closed blobs owe the
// disk); resolve.go, how a name becomes a descriptor; blob.go, the Blob and
// its mapping (reads, grow and remap, faults, upgrade, close);
// readahead.go, how a read's pages come into memory (advice, read-in);
// write.go, the changes (WriteAt, Truncate, Allocate) behind one gate;
// sync.go, durability; pageset.go, the dirty ledger's page sets; policy.go,
// the writeback policies; flags.go, immutable and append-only files;
// resident.go, the bound on resident blobs and the count of their pages in
// the page cache; unmap.go, the batch of unmaps; journal.go, the power-cut
// simulation's saved pages, and powercut.go, the cut; atrisk.go, what a
// power cut now would cost; counters.go, the figures; fault.go, the only
// code that touches a store's mapped memory or uses unsafe on it. The
// subpackage ringmem holds the module's only other unsafe: the shared
// memory of FUSE over io_uring's rings (fs/uring), which never maps a
// store file.
//
// # Locking
//
// The locks, as a tree: a lock is taken only while holding the locks on
// its path from the root, never the other way round. Beside each, what
// it guards and what it is never held across.
//
//	Store.mu         the store's tables: blobs, opening, idle, ring, hand,
//	│                resident, closed, gen, lost*, simClosed; every Blob's
//	│                refs, removed, counted, ringed, fdKept. Never held
//	│                across a system call, a page fault (no copy in or out
//	│                of a mapping), a channel wait, or a wait for any lock
//	│                below that is itself held across one of those.
//	├── Blob.mu      (TryLock only: the residency sweep picks a blob not in
//	│                use; it drops it after releasing Store.mu)
//	├── simFile.mu   only of a file no one is using (a blob without
//	│                references, a closed file's record), so never a wait
//	└── Blob.dmu
//	Blob.mu          (RWMutex) fd, fh, writable, afd, data, size. Held
//	│                across the blob's own system calls and page faults:
//	│                shared by copies for as long as they touch the bytes;
//	│                exclusively by grow, shrink, remap, residency changes
//	│                and descriptor upgrade (bbolt's mmaplock protocol).
//	│                Never held while taking Store.mu or another blob's
//	│                Blob.mu, never upgraded from shared to exclusive
//	│                (writeOnce lets go and relocks), and never across a
//	│                request to the mount itself.
//	├── simFile.mu   the power-cut simulation's saved pages and synced
//	│   │            size of one file (journal.go). Held across the page
//	│   │            copies of simSave (they can fault) and a cut's
//	│   │            ftruncate, pwrite and fdatasync; never while taking
//	│   │            Store.mu or Blob.mu.
//	│   └── Blob.dmu
//	├── Blob.dmu     the dirty-page ledger (dirty, dirtySince, metaDirty,
//	│                wholeSync). A leaf: never held across a system call,
//	│                a page fault or another lock.
//	└── unmapBatch.mu  the batch of mappings waiting to be unmapped
//	                 (unmap.go). A leaf: the munmap runs after it is
//	                 released.
//
// Blob.flags, Blob.caps, Blob.used, Blob.mtime, Store.cut, Store.drops
// and the counters are atomics and need no lock. An open (or a Find)
// that finds its file in Store.opening (another open is mapping it
// outside Store.mu) waits on that channel holding no lock, then shares
// the blob. How the store keeps system calls out of Store.mu: a first
// open fstats before it takes the lock and maps after it, then installs
// the blob and re-checks (acquireOpen, install); the sweep picks under it
// and drops outside it (evictOver); descriptors that records let go of
// are closed after it (Release, syncfs, install); and every mapping a
// blob lets go of goes to the batch of unmaps.
package backing
