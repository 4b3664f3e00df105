package tracereport

import (
	"encoding/json"
	"fmt"
	"io"

	"github.com/mmapfs/mmapfs/cmd/mmapfs/ktrace"
)

// JSON is the Sink of --json: one JSON object per line for every request
// ({"type":"request",...}), kernel event ("readahead", "fault",
// "page_add", "page_delete", "throttle", "writeback_start",
// "writeback_end", "syscall_enter", "syscall_exit"), daemon drop record
// ("daemon_dropped") and dirty-bytes sample ("sample"). Every object has
// "t_ns" (ns since the trace began) and "mono_ns" (CLOCK_MONOTONIC).
type JSON struct {
	w   io.Writer
	err error
}

// NewJSON returns a JSON sink writing to w, a line per Write.
func NewJSON(w io.Writer) *JSON { return &JSON{w: w} }

// Err returns the first error encoding or writing.
func (j *JSON) Err() error { return j.err }

func (j *JSON) put(v any) {
	if j.err != nil {
		return
	}
	b, err := json.Marshal(v)
	if err != nil {
		j.err = fmt.Errorf("json trace: %w", err)
		return
	}
	if _, err := j.w.Write(append(b, '\n')); err != nil {
		j.err = fmt.Errorf("write json trace: %w", err)
	}
}

// JSONRequest is the JSON form of a Request.
type JSONRequest struct {
	Type       string `json:"type"` // "request"
	T          int64  `json:"t_ns"`
	Mono       int64  `json:"mono_ns"`
	Unique     uint64 `json:"unique"`
	Op         string `json:"op"`
	Opcode     uint32 `json:"opcode"`
	Pid        int    `json:"pid"`
	Comm       string `json:"comm"`
	TaskPid    int    `json:"task_pid"`
	TaskComm   string `json:"task_comm"`
	Background bool   `json:"background,omitempty"`
	NodeID     uint64 `json:"node,omitempty"`
	Ino        uint64 `json:"ino,omitempty"`
	File       string `json:"file,omitempty"`
	Offset     uint64 `json:"offset"`
	Length     uint32 `json:"length"`
	Len        uint32 `json:"len,omitempty"`
	Cause      string `json:"cause"`
	Reason     string `json:"reason,omitempty"`
	// Readahead window of a READ.
	Window *JSONWindow `json:"readahead,omitempty"`
	// FaultPage is the faulting page of a "fault".
	FaultPage *uint64 `json:"fault_page,omitempty"`
	// Latencies, absent when unknown.
	Latency *int64 `json:"latency_ns,omitempty"`
	Service *int64 `json:"service_ns,omitempty"`
	Queue   *int64 `json:"queue_ns,omitempty"`
	// DaemonStart is when the daemon began serving it (mono ns).
	DaemonStart int64    `json:"daemon_start_mono_ns,omitempty"`
	Error       string   `json:"error,omitempty"`
	Result      uint32   `json:"result"`
	FaultPages  uint32   `json:"fault_pages"`
	Msyncs      uint32   `json:"msyncs"`
	MsyncBytes  uint64   `json:"msync_bytes"`
	Missing     []string `json:"missing,omitempty"`
	GivenUp     bool     `json:"given_up,omitempty"`
}

// JSONWindow is a readahead window (Window) in JSON.
type JSONWindow struct {
	Kind      string `json:"kind"` // "sync", "async" or "around"
	Index     uint64 `json:"index"`
	ReqCount  uint64 `json:"req_count"`
	Size      uint32 `json:"prev_size"`
	AsyncSize uint32 `json:"prev_async_size"`
	RAPages   uint32 `json:"ra_pages"`
	Start     uint64 `json:"start"`
	Pages     uint32 `json:"pages"`
	Lookahead uint32 `json:"lookahead"`
}

// ToJSON returns r's JSON form.
func (r *Request) ToJSON() JSONRequest {
	o := JSONRequest{
		Type: "request", T: r.Rel, Mono: r.Send, Unique: r.Unique, Op: r.Op, Opcode: r.Opcode,
		Pid: r.Pid, Comm: r.Comm, TaskPid: r.TaskPid, TaskComm: r.TaskComm, Background: r.Background,
		NodeID: r.NodeID, Ino: r.Ino, File: r.File, Offset: r.Offset, Length: r.Length, Len: r.Len,
		Cause: r.Cause, Reason: r.Reason, Error: r.ErrorName(), Result: r.Result,
		FaultPages: r.FaultPages, Msyncs: r.Msyncs, MsyncBytes: r.MsyncBytes,
		Missing: r.Missing, GivenUp: r.GivenUp,
	}
	if o.Mono == 0 {
		o.Mono = r.Start
	}
	if w := r.Window; w != nil {
		o.Window = &JSONWindow{Kind: w.Kind, Index: w.Index, ReqCount: w.ReqCount, Size: w.Size, AsyncSize: w.AsyncSize,
			RAPages: w.RAPages, Start: w.Start, Pages: w.Pages, Lookahead: w.Lookahead}
	}
	if r.HasFault {
		p := r.FaultPage
		o.FaultPage = &p
	}
	if r.Latency >= 0 {
		v := r.Latency
		o.Latency = &v
	}
	if !contains(r.Missing, PartDaemon) {
		v := r.Service
		o.Service = &v
		o.DaemonStart = r.Start
	}
	if r.Queue >= 0 {
		v := r.Queue
		o.Queue = &v
	}
	return o
}

// Request implements Sink.
func (j *JSON) Request(r *Request) { j.put(r.ToJSON()) }

// EventJSON returns the JSON object of an event: "type", "t_ns",
// "mono_ns", "pid", "comm", "layer" and the fields of its kind.
func EventJSON(e *Event) map[string]any {
	k := &e.K
	o := map[string]any{"type": e.Type, "t_ns": e.Rel, "mono_ns": k.Time}
	if e.Type == EventDaemonDropped {
		o["dropped"] = k.ReqCount
		return o
	}
	o["pid"], o["comm"] = k.Pid, k.Comm
	if k.Tgid > 0 {
		o["tgid"] = k.Tgid
	}
	if e.Layer != "" {
		o["layer"] = e.Layer
	}
	if e.File != "" {
		o["file"] = e.File
	}
	switch k.Kind {
	case ktrace.SyncReadahead, ktrace.AsyncReadahead:
		o["kind"] = "sync"
		if k.Kind == ktrace.AsyncReadahead {
			o["kind"] = "async"
		}
		o["ino"], o["index"], o["req_count"], o["prev_size"], o["prev_async_size"] = k.Ino, k.Index, k.ReqCount, k.Size, k.AsyncSize
		o["ra_pages"], o["mmap_miss"], o["prev_pos"], o["order"] = k.RAPages, k.MmapMiss, k.PrevPos, k.Order
		if e.Layer == layerMount {
			w := newWindow(k)
			o["start"], o["pages"], o["lookahead"] = w.Start, w.Pages, w.Lookahead
		}
	case ktrace.Fault:
		o["ino"], o["index"] = k.Ino, k.Index
	case ktrace.PageAdd, ktrace.PageDelete:
		o["ino"], o["index"], o["pages"] = k.Ino, k.Index, pagesOf(k)
	case ktrace.Throttle:
		o["bdi"], o["pause_ns"], o["paused_ns"] = k.BDI, k.Pause, k.Paused
		o["dirty_pages"], o["limit_pages"], o["bdi_dirty_pages"], o["bdi_setpoint_pages"] = k.Dirty, k.Limit, k.WBDirty, k.WBSetpoint
	case ktrace.WritebackStart:
		o["bdi"], o["reason"] = k.BDI, k.Reason
	case ktrace.WritebackEnd:
		o["bdi"], o["reason"], o["pages"] = k.BDI, k.Reason, k.Pages
	case ktrace.SyscallEnter:
		o["syscall"] = k.Syscall
	case ktrace.SyscallExit:
		o["syscall"], o["ret"] = k.Syscall, k.Ret
	}
	return o
}

// Event implements Sink.
func (j *JSON) Event(e *Event) { j.put(EventJSON(e)) }

// Sample implements Sink.
func (j *JSON) Sample(s *Sample) {
	j.put(map[string]any{"type": "sample", "t_ns": s.Rel, "mono_ns": s.Time, "dirty_bytes": s.Dirty, "writeback_bytes": s.Writeback})
}

// Flush implements Sink.
func (j *JSON) Flush() {}
