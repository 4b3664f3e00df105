package backing

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

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
// make no system call for it. A range of more pages is read in first with
// fadvise(WILLNEED): one request for the pages not in the page cache,
// read as single pages, whose I/O the copy then waits for page by page,
// instead of one synchronous read per page as the faults would make under
// MADV_RANDOM.
//
// The kernel's FUSE readahead alone would leave a sequential reader with
// one READ of 128 KiB (the mount's read_ahead_kb) in flight, so one I/O
// of 128 KiB at a time on the store: a third of what the disk gives. So
// the daemon follows a sequential stream as the kernel's own readahead
// does: a READ that goes on where the daemon's last window ended reads in
// a window ahead of it, twice as large each time, up to the store
// device's read_ahead_kb, and the next window is read in when the reader
// reaches the second half of the last one, so that I/O is under way
// ahead of the READs. A READ anywhere else starts again with exactly its
// own range. One stream a blob: readers interleaving on one file fall
// back to their READs' ranges, which is still no amplification.
//
// Before an fadvise the range is checked with mincore(2) (one call per 64
// pages: about 2 µs for 1 MiB, beside the 100 µs its copy takes), or, for
// a window ahead, its last page: fadvise alone would do, since the kernel
// skips cached pages, but on a warm range it walks the page cache page by
// page (13 µs for 1 MiB). mincore answers "all resident" for a file the
// daemon neither owns nor may write, unless it has CAP_FOWNER (so that
// the page cache cannot be spied on): for a blob mapped read-only without
// CAP_FOWNER, ranges go to fadvise unchecked.

// readState is what the daemon read in ahead of the blob's sequential
// reader. Its fields are guarded by mu, a leaf never held across a system
// call.
type readState struct {
	mu    sync.Mutex
	ahead int64 // where the last range read in ended
	win   int64 // the size of that range; 0 before the first

	// maxWin is storeReadahead of the blob's file plus one, 0 until
	// first needed. Atomic: asked outside mu.
	maxWin atomic.Int64
}

// plan says what to read in before a copy of the pages [first, last): the
// range [from, to), empty when a window already covers it; window says it
// is a window ahead of a sequential stream. maxWin caps the window.
func (r *readState) plan(first, last, maxWin int64) (from, to int64, window bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.win > 0 && first <= r.ahead && first >= r.ahead-2*r.win && maxWin > last-first {
		// The stream goes on, within what was read in for it.
		if last <= r.ahead-r.win/2 {
			return 0, 0, true // the next window is not due yet
		}
		r.win = min(2*r.win, maxWin)
		from = r.ahead
		to = max(from+r.win, last)
		r.ahead = to
		return from, to, true
	}
	r.ahead, r.win = last, last-first
	return first, last, false
}

// readInLocked reads the pages of [off, end) that are not in memory into
// the page cache before a copy out of them, with a window ahead of a
// sequential reader, when the advice says the daemon reads ahead and the
// range spans more than one page. A hint: errors are ignored (the copy's
// faults read what is still missing). b.mu must be held (shared is
// enough).
func (b *Blob) readInLocked(off, end int64) {
	if !b.store.opts.Advice.readsAhead() {
		return
	}
	first, last := off&^int64(pageSize-1), roundUp(end)
	if last-first <= int64(pageSize) {
		return
	}
	maxWin := b.ra.maxWin.Load() - 1
	if maxWin < 0 {
		maxWin = storeReadahead(b.fd)
		b.ra.maxWin.Store(maxWin + 1)
	}
	from, to, window := b.ra.plan(first, last, maxWin)
	to = min(to, roundUp(b.size))
	if from >= to {
		return
	}
	if b.writable || hasFowner() {
		if window {
			// Warm if its last page is: a window is read in as
			// one, and a warm stream must not pay for a walk of
			// the page cache over every window.
			if b.firstMissingLocked(to-int64(pageSize), to) == to {
				return
			}
		} else if from = b.firstMissingLocked(from, to); from >= to {
			return
		}
	}
	_ = unix.Fadvise(b.fd, from, to-from, unix.FADV_WILLNEED)
}

// storeReadahead returns the read_ahead_kb of the device under the file
// fd, in bytes: how far the kernel reads ahead of a sequential read(2) of
// it, and so the daemon's largest window. Read from sysfs once per device
// (the device's queue, or its disk's for a partition, or its bdi); 128 KiB,
// the kernel's default, if none says.
func storeReadahead(fd int) int64 {
	var st unix.Stat_t
	if unix.Fstat(fd, &st) != nil {
		return defaultReadahead
	}
	if v, ok := readaheadOf.Load(st.Dev); ok {
		return v.(int64)
	}
	v := int64(defaultReadahead)
	maj, mnr := unix.Major(st.Dev), unix.Minor(st.Dev)
	for _, p := range []string{
		fmt.Sprintf("/sys/dev/block/%d:%d/queue/read_ahead_kb", maj, mnr),
		fmt.Sprintf("/sys/dev/block/%d:%d/../queue/read_ahead_kb", maj, mnr),
		fmt.Sprintf("/sys/class/bdi/%d:%d/read_ahead_kb", maj, mnr),
	} {
		if b, err := os.ReadFile(p); err == nil {
			if kb, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64); err == nil && kb >= 0 {
				v = kb << 10
				break
			}
		}
	}
	readaheadOf.Store(st.Dev, v)
	return v
}

// defaultReadahead is the kernel's default read_ahead_kb, in bytes.
const defaultReadahead = 128 << 10

// readaheadOf caches storeReadahead by device number.
var readaheadOf sync.Map

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
