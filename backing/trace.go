package backing

import "time"

// What a request's trace needs of a Blob (mmapfs trace): which of the
// pages it is about to copy are not in the page cache, and the syncs made
// on it while it served the request. Both are read only when a trace runs.

// residentChunk is how many pages NotResident asks mincore(2) about at
// once, into a vector on its stack.
const residentChunk = 256

// NotResident returns how many pages of the file's bytes [off, off+n),
// clipped to its size, are not in the page cache now, by mincore(2) over
// the mapping: the pages a copy of that range would fault in. The kernel
// answers for the page cache only when the daemon owns the file, may
// write it, or has CAP_FOWNER; otherwise it says every page is resident
// and the count is 0. It allocates nothing.
func (b *Blob) NotResident(off, n int64) (int, error) {
	if off < 0 || n <= 0 {
		return 0, nil
	}
	if err := b.rlock(); err != nil {
		return 0, err
	}
	defer b.mu.RUnlock()
	end := min(off+n, b.size)
	if off >= end {
		return 0, nil
	}
	ps := int64(pageSize)
	lo, hi := off/ps*ps, min(roundUp(end), int64(len(b.data)))
	var vec [residentChunk]byte
	missing := 0
	for at := lo; at < hi; {
		c := min(hi-at, residentChunk*ps)
		pages := vec[:pagesCeil(c)]
		if err := mincore(b.data[at:at+c], pages); err != nil {
			return 0, b.pathErr("mincore", err)
		}
		for _, v := range pages {
			missing += int(^v & 1)
		}
		at += c
	}
	return missing, nil
}

// recordSync counts one msync or fdatasync of bytes that took d: in the
// store's figures and in the blob's own counts.
func (b *Blob) recordSync(bytes int64, d time.Duration) {
	b.store.stats.recordSync(bytes, d)
	b.syncCalls.Add(1)
	b.syncBytes.Add(uint64(bytes))
}

// SyncCounts returns how many msync and fdatasync calls the store has
// made on the blob since it was opened, and the bytes they covered (an
// fdatasync after msyncs, for the size, covers 0; one of the whole file
// covers its size). The difference across a request is what was synced
// while it was served, its own syncs and any other made on the blob then.
func (b *Blob) SyncCounts() (calls, bytes uint64) {
	return b.syncCalls.Load(), b.syncBytes.Load()
}

// Ino returns the file's inode number in its filesystem (the store's,
// but for a file of a filesystem mounted inside the store).
func (b *Blob) Ino() uint64 { return b.key.ino }
