package tracereport

import (
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"unicode/utf8"
)

// Summary is what a trace came to. Collector.Summary makes it; the caller
// sets KernelLost (the kernel's lost events, which only the reader of the
// trace pipe knows) before writing it.
type Summary struct {
	// Duration is from the first request to the last, ns.
	Duration int64 `json:"duration_ns"`
	// Events is the kernel events taken; Records the daemon's records.
	Events   uint64 `json:"events"`
	Records  uint64 `json:"daemon_records"`
	Requests uint64 `json:"requests"`
	// Own is the tracing process's own requests, not shown; GivenUp the
	// requests emitted early because MaxPending were pending.
	Own     uint64 `json:"own_requests"`
	GivenUp uint64 `json:"given_up"`
	// Incomplete is the requests that lacked a part; Missing* count
	// them by the part they lacked (a request may lack several).
	Incomplete    uint64 `json:"incomplete"`
	MissingSend   uint64 `json:"missing_send"`
	MissingEnd    uint64 `json:"missing_end"`
	MissingDaemon uint64 `json:"missing_daemon"`
	// KernelLost is set by the caller: events the kernel dropped.
	KernelLost uint64 `json:"kernel_lost"`
	// DaemonLost is the records the daemon said it dropped, in
	// DaemonDrops drop records.
	DaemonLost  uint64 `json:"daemon_lost"`
	DaemonDrops uint64 `json:"daemon_drop_records"`
	// HistoryDropped is the kernel events forgotten before the requests
	// they may have caused were decided, because the history was full
	// (see history.go): those requests may show a plainer cause.
	HistoryDropped uint64 `json:"history_dropped"`

	Ops       []OpSummary       `json:"ops"`
	Windows   []WindowCount     `json:"readahead_windows"`
	Layers    []LayerSummary    `json:"layers"`
	Throttled []ThrottleSummary `json:"throttled"`

	// Samples of the mount's dirty bytes, and the largest seen.
	Samples      uint64 `json:"samples"`
	MaxDirty     uint64 `json:"max_dirty_bytes"`
	MaxWriteback uint64 `json:"max_writeback_bytes"`
}

// OpSummary is the requests of one op and cause (Request.CauseLabel).
type OpSummary struct {
	Op    string `json:"op"`
	Cause string `json:"cause"`
	Count uint64 `json:"count"`
	// Timed is how many had both kernel events (so a latency), Served
	// how many a daemon record.
	Timed  uint64 `json:"timed"`
	Served uint64 `json:"served"`
	// Bytes is what the daemon read or wrote (its Result; the request's
	// Length without a record), for READ and WRITE.
	Bytes uint64 `json:"bytes"`
	// Kernel-side latency quantiles and max, ns (of the requests with
	// both kernel events).
	LatencyP50 int64 `json:"latency_p50_ns"`
	LatencyP90 int64 `json:"latency_p90_ns"`
	LatencyP99 int64 `json:"latency_p99_ns"`
	LatencyMax int64 `json:"latency_max_ns"`
	// Daemon service time quantiles, ns (of the requests with a record).
	ServiceP50 int64 `json:"service_p50_ns"`
	ServiceP99 int64 `json:"service_p99_ns"`
}

// WindowCount is how many readahead windows of the mount had Pages pages
// (Window.Pages: 0 when it cannot be told).
type WindowCount struct {
	Kind  string `json:"kind"` // WindowSync or WindowAsync
	Pages uint32 `json:"pages"`
	Count uint64 `json:"count"`
}

// LayerSummary is the pages that entered and left one page cache.
type LayerSummary struct {
	Layer   string `json:"layer"` // "mount" or "store"
	Added   uint64 `json:"pages_added"`
	Deleted uint64 `json:"pages_deleted"`
	// Files are the files with most pages moved, at most summaryFiles.
	Files []FileSummary `json:"files"`
}

// summaryFiles is how many files per layer a Summary lists.
const summaryFiles = 10

// FileSummary is the pages of one file (by inode number) that entered
// and left a page cache.
type FileSummary struct {
	Ino     uint64 `json:"ino"`
	File    string `json:"file,omitempty"`
	Added   uint64 `json:"pages_added"`
	Deleted uint64 `json:"pages_deleted"`
}

// ThrottleSummary is one process's dirty-page throttling on a layer's BDI.
type ThrottleSummary struct {
	Layer string `json:"layer"`
	Pid   int    `json:"pid"` // -1: the processes past the table's bound
	Comm  string `json:"comm"`
	Count uint64 `json:"count"`
	Total int64  `json:"total_ns"`
	Max   int64  `json:"max_ns"`
}

// Summary returns the summary so far.
func (c *Collector) Summary() Summary {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := &c.stats
	out := Summary{
		Events: s.events, Records: s.records, Requests: s.requests,
		Own: s.own, GivenUp: s.givenUp, Incomplete: s.incomplete,
		MissingSend: s.missing[PartSend], MissingEnd: s.missing[PartEnd], MissingDaemon: s.missing[PartDaemon],
		DaemonLost: s.daemonLost, DaemonDrops: s.daemonDrops, HistoryDropped: s.historyDropped,
		Samples: s.samples, MaxDirty: s.maxDirty, MaxWriteback: s.maxWriteback,
	}
	if s.last > s.first {
		out.Duration = s.last - s.first
	}
	for k, a := range s.ops {
		lat := a.lat.quantiles(0.5, 0.9, 0.99)
		svc := a.svc.quantiles(0.5, 0.99)
		out.Ops = append(out.Ops, OpSummary{
			Op: k.op, Cause: k.cause, Count: a.count, Bytes: a.bytes, Timed: a.lat.n, Served: a.svc.n,
			LatencyP50: lat[0], LatencyP90: lat[1], LatencyP99: lat[2], LatencyMax: a.lat.max,
			ServiceP50: svc[0], ServiceP99: svc[1],
		})
	}
	sort.Slice(out.Ops, func(i, j int) bool {
		a, b := out.Ops[i], out.Ops[j]
		if a.Op != b.Op {
			return a.Op < b.Op
		}
		return a.Cause < b.Cause
	})
	for k, n := range s.windows {
		out.Windows = append(out.Windows, WindowCount{Kind: k.kind, Pages: k.pages, Count: n})
	}
	sort.Slice(out.Windows, func(i, j int) bool {
		a, b := out.Windows[i], out.Windows[j]
		if a.Kind != b.Kind {
			return a.Kind > b.Kind // sync first
		}
		return a.Pages < b.Pages
	})
	for _, name := range []string{layerMount, layerStore} {
		l := s.layers[name]
		ls := LayerSummary{Layer: name, Added: l.added, Deleted: l.deleted}
		for ino, f := range l.files {
			ls.Files = append(ls.Files, FileSummary{Ino: ino, Added: f.added, Deleted: f.deleted})
		}
		sort.Slice(ls.Files, func(i, j int) bool {
			a, b := ls.Files[i], ls.Files[j]
			if a.Added+a.Deleted != b.Added+b.Deleted {
				return a.Added+a.Deleted > b.Added+b.Deleted
			}
			return a.Ino < b.Ino
		})
		if len(ls.Files) > summaryFiles {
			ls.Files = ls.Files[:summaryFiles]
		}
		if c.m.Names != nil {
			for i := range ls.Files {
				ls.Files[i].File = c.m.Names(ls.Files[i].Ino)
			}
		}
		out.Layers = append(out.Layers, ls)
	}
	for k, a := range s.throttled {
		out.Throttled = append(out.Throttled, ThrottleSummary{Layer: k.layer, Pid: k.pid, Comm: a.comm, Count: a.count, Total: a.total, Max: a.max})
	}
	sort.Slice(out.Throttled, func(i, j int) bool {
		a, b := out.Throttled[i], out.Throttled[j]
		if a.Total != b.Total {
			return a.Total > b.Total
		}
		return a.Pid < b.Pid
	})
	return out
}

// WriteJSON writes s as one indented JSON object.
func (s *Summary) WriteJSON(w io.Writer) error {
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return fmt.Errorf("summary: %w", err)
	}
	if _, err := w.Write(append(b, '\n')); err != nil {
		return fmt.Errorf("write summary: %w", err)
	}
	return nil
}

// WriteText writes s for people: the requests per op and cause with
// their latencies, the readahead windows, the page caches, the throttled
// processes and what was lost.
func (s *Summary) WriteText(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "requests %d over %s (kernel events %d, daemon records %d)\n",
		s.Requests, Duration(s.Duration), s.Events, s.Records)
	if len(s.Ops) > 0 {
		rows := [][]string{{"op", "cause", "count", "bytes", "kernel p50", "p90", "p99", "max", "daemon p50", "p99"}}
		for _, o := range s.Ops {
			bytes := "-"
			if o.Op == "READ" || o.Op == "WRITE" {
				bytes = Bytes(o.Bytes)
			}
			lat := []string{"-", "-", "-", "-"}
			if o.Timed > 0 {
				lat = []string{Duration(o.LatencyP50), Duration(o.LatencyP90), Duration(o.LatencyP99), Duration(o.LatencyMax)}
			}
			svc := []string{"-", "-"}
			if o.Served > 0 {
				svc = []string{Duration(o.ServiceP50), Duration(o.ServiceP99)}
			}
			rows = append(rows, append(append([]string{o.Op, o.Cause, fmt.Sprint(o.Count), bytes}, lat...), svc...))
		}
		writeTable(&b, rows, 2)
	}
	b.WriteString("readahead windows of the mount (pages: count):")
	if len(s.Windows) == 0 {
		b.WriteString(" none")
	}
	kind := ""
	for _, x := range s.Windows {
		if x.Kind != kind {
			kind = x.Kind
			fmt.Fprintf(&b, "\n  %-5s", kind)
		}
		if x.Pages == 0 {
			fmt.Fprintf(&b, " ?: %d", x.Count)
		} else {
			fmt.Fprintf(&b, " %d: %d", x.Pages, x.Count)
		}
	}
	b.WriteString("\npage cache (pages): added, evicted\n")
	for _, l := range s.Layers {
		fmt.Fprintf(&b, "  %-5s %d added (%s), %d evicted (%s)\n", l.Layer,
			l.Added, Bytes(l.Added*pageSize), l.Deleted, Bytes(l.Deleted*pageSize))
		for _, f := range l.Files {
			name := f.File
			if name == "" {
				name = fmt.Sprintf("ino %d", f.Ino)
			}
			fmt.Fprintf(&b, "        %s: +%d -%d\n", name, f.Added, f.Deleted)
		}
	}
	b.WriteString("throttled by the dirty-page budget:")
	if len(s.Throttled) == 0 {
		b.WriteString(" none")
	}
	b.WriteString("\n")
	for _, t := range s.Throttled {
		fmt.Fprintf(&b, "  %s[%d] on the %s's bdi: %d pauses, total %s, max %s\n",
			t.Comm, t.Pid, t.Layer, t.Count, Duration(t.Total), Duration(t.Max))
	}
	if s.Samples > 0 {
		fmt.Fprintf(&b, "mount dirty: max %s, under writeback: max %s (%d samples)\n",
			Bytes(s.MaxDirty), Bytes(s.MaxWriteback), s.Samples)
	}
	fmt.Fprintf(&b, "lost: kernel events %d, daemon records %d (%d drop records)\n",
		s.KernelLost, s.DaemonLost, s.DaemonDrops)
	fmt.Fprintf(&b, "incomplete requests %d: no send %d, no end %d, no daemon record %d; given up (too many pending) %d\n",
		s.Incomplete, s.MissingSend, s.MissingEnd, s.MissingDaemon, s.GivenUp)
	if s.HistoryDropped > 0 {
		fmt.Fprintf(&b, "history full: %d kernel events forgotten before their requests were decided (their causes may be plainer)\n", s.HistoryDropped)
	}
	if s.Own > 0 {
		fmt.Fprintf(&b, "the trace's own requests, not shown: %d\n", s.Own)
	}
	if _, err := io.WriteString(w, b.String()); err != nil {
		return fmt.Errorf("write summary: %w", err)
	}
	return nil
}

// writeTable writes rows as columns two spaces apart: the first left
// columns aligned left, the others right.
func writeTable(b *strings.Builder, rows [][]string, left int) {
	var widths []int
	for _, r := range rows {
		for i, c := range r {
			if i >= len(widths) {
				widths = append(widths, 0)
			}
			widths[i] = max(widths[i], utf8.RuneCountInString(c))
		}
	}
	for _, r := range rows {
		var line strings.Builder
		for i, c := range r {
			pad := strings.Repeat(" ", widths[i]-utf8.RuneCountInString(c))
			if i > 0 {
				line.WriteString("  ")
			}
			if i < left {
				line.WriteString(c + pad)
			} else {
				line.WriteString(pad + c)
			}
		}
		b.WriteString(strings.TrimRight(line.String(), " ") + "\n")
	}
}
