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
// # Locking
//
// Lock order: Store.mu, then Blob.mu, then Blob.dmu. unmapBatch.mu (the
// store's batch of released mappings, unmap.go) is taken after Blob.mu
// and held across no other lock or system call. Copies in and out of a
// mapping hold Blob.mu shared for as long as they touch the bytes; grow,
// shrink, remap and descriptor upgrade hold it exclusively (the protocol of
// bbolt's mmaplock). Blob.dmu guards only the dirty-page bookkeeping and is
// never held across a system call that can block on I/O, except msync's
// bookkeeping being restored after a failure.
package backing
