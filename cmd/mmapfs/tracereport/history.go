package tracereport

import "sort"

// The histories a request's cause is decided from: the readahead windows
// and faults of each file of the mount, and the writebacks of the
// mount's BDI. A cause is decided when a request's last part comes, which
// may be long after its send and after many more events, so they are kept
// by time, not by count: everything since the horizon (historyKeep before
// the latest event, and never past the send of the oldest request still
// pending, less FaultNear), up to maxHistory entries in all. Past that
// bound a file's oldest half goes, and a request whose cause was in it
// gets a plainer cause ("read", "writeback" without reason): the one way
// a cause is lost, counted in Summary.HistoryDropped.

// Bounds of the histories.
const (
	maxHistory = 1 << 17 // entries of all files and writebacks
	maxScan    = 4096    // entries looked at for one request
)

// fault is one mm_filemap_fault on a file of the mount.
type fault struct {
	index uint64
	time  int64
	pid   int
}

// inode is the readahead and fault history of one file of the mount,
// each in time order.
type inode struct {
	last    int64
	raPages uint32 // the latest maximum readahead its events gave
	ra      []Window
	faults  []fault
}

// wbSpan is a flusher's writeback of the mount's BDI.
type wbSpan struct {
	interval // name: the reason
	pid      int
}

// historyKeep is how long history is kept at least (event time).
func (c *Collector) historyKeep() int64 {
	return c.opts.Wait + c.opts.Reorder + c.opts.FaultNear + raNear
}

// addRALocked adds a readahead window to its file's history.
func (c *Collector) addRALocked(ino uint64, w Window) {
	in := c.inodeLocked(ino, w.Time)
	if w.RAPages > 0 {
		in.raPages = w.RAPages
	}
	i := len(in.ra)
	for i > 0 && in.ra[i-1].Time > w.Time {
		i--
	}
	in.ra = append(in.ra, Window{})
	copy(in.ra[i+1:], in.ra[i:])
	in.ra[i] = w
	c.grewLocked(in)
}

// addFaultLocked adds a fault to its file's history.
func (c *Collector) addFaultLocked(ino uint64, f fault) {
	in := c.inodeLocked(ino, f.time)
	i := len(in.faults)
	for i > 0 && in.faults[i-1].time > f.time {
		i--
	}
	in.faults = append(in.faults, fault{})
	copy(in.faults[i+1:], in.faults[i:])
	in.faults[i] = f
	c.grewLocked(in)
}

// grewLocked keeps the histories within maxHistory after in grew.
func (c *Collector) grewLocked(in *inode) {
	c.histLen++
	if c.histLen <= maxHistory {
		return
	}
	c.pruneHistoryLocked(c.now - c.historyKeep())
	if c.histLen <= maxHistory {
		return
	}
	// Still too many within the horizon: drop the oldest half of this
	// file's (the one growing).
	nr, nf := len(in.ra)/2, len(in.faults)/2
	in.ra = append(in.ra[:0], in.ra[nr:]...)
	in.faults = append(in.faults[:0], in.faults[nf:]...)
	c.histLen -= nr + nf
	c.stats.historyDropped += uint64(nr + nf)
}

// pruneHistoryLocked forgets the history from before horizon.
func (c *Collector) pruneHistoryLocked(horizon int64) {
	for ino, in := range c.inodes {
		nr := sort.Search(len(in.ra), func(i int) bool { return in.ra[i].Time >= horizon })
		nf := sort.Search(len(in.faults), func(i int) bool { return in.faults[i].time >= horizon })
		if nr > 0 {
			in.ra = append(in.ra[:0], in.ra[nr:]...)
		}
		if nf > 0 {
			in.faults = append(in.faults[:0], in.faults[nf:]...)
		}
		c.histLen -= nr + nf
		if len(in.ra) == 0 && len(in.faults) == 0 && in.last < horizon {
			delete(c.inodes, ino)
		}
	}
	kept := c.wbAll[:0]
	for _, s := range c.wbAll {
		if s.end != 0 && s.end < horizon {
			c.histLen--
			continue
		}
		kept = append(kept, s)
	}
	clear(c.wbAll[len(kept):])
	c.wbAll = kept
}

// inodeLocked returns the history of a file of the mount, made if new.
func (c *Collector) inodeLocked(ino uint64, now int64) *inode {
	in := c.inodes[ino]
	if in == nil {
		if len(c.inodes) >= maxInodes {
			c.pruneHistoryLocked(c.now - c.historyKeep())
		}
		in = &inode{}
		c.inodes[ino] = in
	}
	in.last = max(in.last, now)
	return in
}

// wbStartLocked notes a flusher's writeback_start on the mount's BDI.
func (c *Collector) wbStartLocked(pid int, reason string, t int64) {
	c.wbAll = append(c.wbAll, wbSpan{interval: interval{name: reason, start: t}, pid: pid})
	c.histLen++
	if len(c.wbAll) > maxScan {
		// Starts whose ends were lost: drop the oldest.
		n := len(c.wbAll) - maxScan
		c.wbAll = append(c.wbAll[:0], c.wbAll[n:]...)
		c.histLen -= n
		c.stats.historyDropped += uint64(n)
	}
}

// wbEndLocked notes a flusher's writeback_written: the end of its latest
// open writeback.
func (c *Collector) wbEndLocked(pid int, t int64) {
	for i := len(c.wbAll) - 1; i >= 0; i-- {
		if s := &c.wbAll[i]; s.pid == pid && s.end == 0 {
			s.end = t
			return
		}
	}
}

// writebackAtLocked returns the latest writeback of the mount's BDI that
// covers t, by task pid (any task when pid is 0).
func (c *Collector) writebackAtLocked(pid int, t int64) *wbSpan {
	for i := len(c.wbAll) - 1; i >= 0; i-- {
		if s := &c.wbAll[i]; (pid == 0 || s.pid == pid) && s.covers(t) {
			return s
		}
	}
	return nil
}

// writebackBeforeLocked returns the writeback of the mount's BDI that
// covers t or, when none does, the latest that started within
// historyKeep before t: the kernel queues the WRITEs of a writeback
// pass and sends them as the daemon answers earlier ones, often after
// the pass has ended.
func (c *Collector) writebackBeforeLocked(t int64) *wbSpan {
	if s := c.writebackAtLocked(0, t); s != nil {
		return s
	}
	for i := len(c.wbAll) - 1; i >= 0; i-- {
		s := &c.wbAll[i]
		if s.start <= t {
			if t-s.start <= c.historyKeep() {
				return s
			}
			return nil
		}
	}
	return nil
}

// windowAtLocked returns the latest readahead window of in at or before
// t that covers page first.
func (in *inode) windowAt(t int64, first uint64) *Window {
	i := sort.Search(len(in.ra), func(i int) bool { return in.ra[i].Time > t })
	for n := 0; i > 0 && n < maxScan; n++ {
		i--
		if in.ra[i].covers(first) {
			w := in.ra[i]
			return &w
		}
	}
	return nil
}

// faultAt returns the latest fault of in by task pid or pid2 at or
// before t and no more than near before it.
func (in *inode) faultAt(t, near int64, pid, pid2 int) *fault {
	i := sort.Search(len(in.faults), func(i int) bool { return in.faults[i].time > t })
	for n := 0; i > 0 && n < maxScan; n++ {
		i--
		f := &in.faults[i]
		if t-f.time > near {
			return nil
		}
		if f.pid == pid || f.pid == pid2 {
			cp := *f
			return &cp
		}
	}
	return nil
}
