package backing

import (
	"sync"

	"golang.org/x/sys/unix"
)

// How a READ's pages come into memory. A copy out of the mapping that
// touches a page not in the page cache faults, and the fault reads the
// page. Left to the kernel (MADV_NORMAL), a fault reads around itself by
// the store device's read_ahead_kb (8 MiB on a virtio disk): a cold 4 KiB
// random read then costs 8 MiB of I/O, about 1,000 times what it asked
// for. So under the default advice the mapping gets MADV_RANDOM (a fault
// reads only its page; see Advice) and the daemon does the reading ahead
// itself, by what the READ asks for: the kernel's FUSE readahead already
// sizes READs by how the client reads (128 KiB windows, growing up to the
// mount's read_ahead_kb, for a sequential reader or a client mapping's
// fault; a page for a random read).
//
// A range of one page is copied as it is: its fault reads exactly that
// page, which is all an fadvise would read, so warm and cold 4 KiB reads
// make no system call for it. A range of more pages is checked with
// mincore(2) (one call per 64 pages: about 2 µs for 1 MiB, beside the
// 100 µs its copy takes) and, from its first page not in the page cache,
// read in with fadvise(WILLNEED): one request for the rest of the range,
// read as single pages, whose I/O the copy then waits for page by page,
// instead of one synchronous read per page as the faults would make under
// MADV_RANDOM. (fadvise alone would do, since the kernel skips cached
// pages, but on a warm range it walks the page cache page by page: 13 µs
// for 1 MiB.) mincore answers "all resident" for a file the daemon
// neither owns nor may write, unless it has CAP_FOWNER (so that the page
// cache cannot be spied on): for a blob mapped read-only without
// CAP_FOWNER, the range is given to fadvise unchecked.

// readInLocked reads the pages of [off, end) that are not in memory into
// the page cache before a copy out of them, when the advice says the
// daemon reads ahead and the range spans more than one page. A hint:
// errors are ignored (the copy's faults read what is still missing).
// b.mu must be held (shared is enough).
func (b *Blob) readInLocked(off, end int64) {
	if !b.store.opts.Advice.readsAhead() {
		return
	}
	first, last := off&^int64(pageSize-1), roundUp(end)
	if last-first <= int64(pageSize) {
		return
	}
	if b.writable || hasFowner() {
		first = b.firstMissingLocked(first, last)
		if first >= last {
			return
		}
	}
	_ = unix.Fadvise(b.fd, first, last-first, unix.FADV_WILLNEED)
}

// residentVec is how many pages firstMissingLocked asks mincore about at
// once, with a vector on the stack.
const residentVec = 64

// firstMissingLocked returns the offset of the first page of [first, last)
// (page aligned, within the mapping) that is not in the page cache, or
// last if all are. If mincore fails it returns first: read it all in.
// b.mu must be held (shared is enough).
func (b *Blob) firstMissingLocked(first, last int64) int64 {
	var vec [residentVec]byte
	for at := first; at < last; {
		n := min(last-at, residentVec*int64(pageSize))
		v := vec[:n/int64(pageSize)]
		if err := mincore(b.data[at:at+n], v); err != nil {
			return first
		}
		for i, r := range v {
			if r&1 == 0 {
				return at + int64(i)*int64(pageSize)
			}
		}
		at += n
	}
	return last
}

// hasFowner reports whether the daemon has CAP_FOWNER in its effective
// set, with which mincore tells the truth about every file it maps. Asked
// once; if capget fails, the answer is no (fadvise unchecked is always
// right, only dearer on warm pages).
var hasFowner = sync.OnceValue(func() bool {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData // version 3 fills two
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return false
	}
	return data[unix.CAP_FOWNER/32].Effective&(1<<(unix.CAP_FOWNER%32)) != 0
})
