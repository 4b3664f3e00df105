package tracereport

import (
	"fmt"
	"io"
	"strconv"
	"strings"
)

// timelineFormat is a timeline line's columns: time, op, task, file,
// range, cause, kernel latency, daemon service, notes.
const timelineFormat = "%10s  %-8s %-28s %-24s %-18s %-38s %9s %10s  %s"

// TimelineHeader is the first line a Timeline writes: the columns.
var TimelineHeader = strings.TrimRight(fmt.Sprintf(timelineFormat,
	"# time(s)", "op", "task[pid]", "file", "offset+length", "cause", "kernel", "daemon", "notes"), " ")

// Timeline is the Sink of the default output: one line per request (its
// time in seconds since the trace began, op, the task that caused it,
// file, offset+length, cause with the readahead window or writeback
// reason, kernel-side latency, daemon service time, and notes: pages the
// daemon faulted in, its msyncs, the error, who sent a background
// request, the parts missing), a line per throttle pause and per daemon
// drop record, and every CacheEvery a line of the pages that entered and
// left each page cache (instead of a line per page). Lines come in the
// order the Collector emits them, so a request whose parts came late may
// follow a later throttle line; its time column is its own.
type Timeline struct {
	w          io.Writer
	err        error
	lastRel    int64
	cacheEvery int64
	since      int64 // start of the cache interval, Rel ns
	started    bool
	cache      [2][2]uint64 // [mount, store][added, deleted] pages
}

// NewTimeline returns a Timeline writing to w, a line per Write (so a
// terminal sees each line as it comes); cacheEvery is the cache line's
// interval (ns; 0: 1 s). It writes TimelineHeader first.
func NewTimeline(w io.Writer, cacheEvery int64) *Timeline {
	if cacheEvery <= 0 {
		cacheEvery = 1e9
	}
	t := &Timeline{w: w, cacheEvery: cacheEvery}
	t.line(TimelineHeader)
	return t
}

// Err returns the first error writing the timeline.
func (t *Timeline) Err() error { return t.err }

func (t *Timeline) line(s string) {
	if t.err != nil {
		return
	}
	if _, err := io.WriteString(t.w, s+"\n"); err != nil {
		t.err = fmt.Errorf("write timeline: %w", err)
	}
}

// seconds formats ns since the trace began as seconds, to the µs.
func seconds(rel int64) string { return fmt.Sprintf("%10.6f", float64(rel)/1e9) }

// advance writes the cache line when rel is past its interval.
func (t *Timeline) advance(rel int64) {
	t.lastRel = max(t.lastRel, rel)
	if !t.started {
		t.started = true
		t.since = rel - rel%t.cacheEvery
		return
	}
	if rel < t.since+t.cacheEvery {
		return
	}
	t.cacheLine(t.since + t.cacheEvery)
	t.since = rel - rel%t.cacheEvery
}

// cacheLine writes the pages moved since t.since, if any, at time at.
func (t *Timeline) cacheLine(at int64) {
	c := t.cache
	if c == [2][2]uint64{} {
		return
	}
	t.cache = [2][2]uint64{}
	t.line(fmt.Sprintf("%s  %-8s mount +%d -%d pages, store +%d -%d pages (since %s s)",
		seconds(at), "CACHE", c[0][0], c[0][1], c[1][0], c[1][1], strings.TrimSpace(seconds(t.since))))
}

// Request implements Sink.
func (t *Timeline) Request(r *Request) {
	t.advance(r.Rel)
	t.line(FormatRequest(r))
}

// FormatRequest is a request's timeline line (without newline).
func FormatRequest(r *Request) string {
	task := fmt.Sprintf("%s[%d]", r.TaskComm, r.TaskPid)
	if r.TaskComm == "" && r.TaskPid == 0 {
		task = "-"
	}
	file := r.File
	if file == "" {
		switch {
		case r.Ino != 0:
			file = "ino " + strconv.FormatUint(r.Ino, 10)
		case r.NodeID == 1:
			file = "/" // FUSE_ROOT_ID
		case r.NodeID != 0:
			file = "node " + strconv.FormatUint(r.NodeID, 10)
		default:
			file = "-"
		}
	}
	rng := "-"
	if r.Length != 0 || r.Offset != 0 {
		rng = exact(r.Offset) + "+" + exact(uint64(r.Length))
	}
	lat, svc := "-", "-"
	if r.Latency >= 0 {
		lat = Duration(r.Latency)
	}
	if !contains(r.Missing, PartDaemon) {
		svc = Duration(r.Service)
	}
	var notes []string
	if r.FaultPages > 0 {
		notes = append(notes, fmt.Sprintf("faulted %dp", r.FaultPages))
	}
	if r.Msyncs > 0 {
		notes = append(notes, fmt.Sprintf("msync %d/%s", r.Msyncs, Bytes(r.MsyncBytes)))
	}
	if e := r.ErrorName(); e != "" {
		notes = append(notes, "error "+e)
	}
	if r.Background {
		notes = append(notes, fmt.Sprintf("background, sent by %s[%d]", r.Comm, r.Pid))
	}
	if len(r.Missing) > 0 {
		notes = append(notes, "missing "+strings.Join(r.Missing, ","))
	}
	if r.GivenUp {
		notes = append(notes, "given up waiting")
	}
	return strings.TrimRight(fmt.Sprintf(timelineFormat,
		seconds(r.Rel), r.Op, task, file, rng, describeCause(r), lat, svc, strings.Join(notes, "; ")), " ")
}

// describeCause is the cause with its window, fault page or reason.
func describeCause(r *Request) string {
	s := r.CauseLabel()
	if r.HasFault {
		s += " p" + strconv.FormatUint(r.FaultPage, 10)
	}
	if w := r.Window; w != nil {
		if r.HasFault {
			s += " " + w.Kind
		}
		if w.Pages > 0 {
			s += fmt.Sprintf(" ra %d+%dp", w.Start, w.Pages)
			if w.Lookahead > 0 {
				s += fmt.Sprintf(" (async %d)", w.Lookahead)
			}
		} else {
			s += fmt.Sprintf(" ra @%d req %dp", w.Index, w.ReqCount)
		}
	}
	return s
}

// exact formats a byte count in the largest binary unit that divides it:
// "128KiB", "3MiB", "1000".
func exact(n uint64) string {
	switch {
	case n == 0:
		return "0"
	case n%(1<<30) == 0:
		return strconv.FormatUint(n>>30, 10) + "GiB"
	case n%(1<<20) == 0:
		return strconv.FormatUint(n>>20, 10) + "MiB"
	case n%(1<<10) == 0:
		return strconv.FormatUint(n>>10, 10) + "KiB"
	}
	return strconv.FormatUint(n, 10)
}

// Event implements Sink: throttle pauses and daemon drops get lines,
// page cache events go into the cache line, the rest only into JSON.
func (t *Timeline) Event(e *Event) {
	t.advance(e.Rel)
	switch e.Type {
	case EventThrottle:
		k := &e.K
		if k.Pause <= 0 {
			return
		}
		t.line(fmt.Sprintf("%s  %-8s %-28s paused %s: bdi %s of the %s %d pages dirty, its setpoint %d; all %d dirty, limit %d",
			seconds(e.Rel), "THROTTLE", fmt.Sprintf("%s[%d]", k.Comm, k.Pid), Duration(k.Pause), k.BDI, e.Layer, k.WBDirty, k.WBSetpoint, k.Dirty, k.Limit))
	case EventDaemonDropped:
		t.line(fmt.Sprintf("%s  %-8s the daemon dropped %d records here (its tracer queue was full)", seconds(e.Rel), "LOST", e.K.ReqCount))
	case EventPageAdd, EventPageDelete:
		l := 0
		if e.Layer == layerStore {
			l = 1
		}
		d := 0
		if e.Type == EventPageDelete {
			d = 1
		}
		t.cache[l][d] += pagesOf(&e.K)
	}
}

// Sample implements Sink (samples are for the plot).
func (t *Timeline) Sample(*Sample) {}

// Flush implements Sink: the last cache line.
func (t *Timeline) Flush() {
	if t.started {
		t.cacheLine(t.lastRel)
	}
}
