package tracereport

import (
	"os"
	"strings"

	"github.com/mmapfs/mmapfs/cmd/mmapfs/ktrace"
)

// pageSize is the size of the pages the kernel's events count.
var pageSize = uint64(os.Getpagesize())

// Mount says which of the kernel's events are this mount's and how to
// name what they refer to. Everything is fixed before NewCollector.
type Mount struct {
	// Conn is the mount's FUSE connection as fuse_request_send gives it
	// (the mount's device, kernel encoding: ktrace.KernelDev).
	Conn uint32
	// MountDev and StoreDev are the s_dev (kernel encoding) of the mount
	// and of the store's filesystem: page cache and readahead events on
	// them are the mount's layer and the store's layer.
	MountDev, StoreDev uint32
	// BDI and StoreBDI are the names of the mount's and the store's
	// backing devices as writeback events give them ("0:52", "8:16").
	BDI, StoreBDI string
	// DaemonPid is the daemon's process id: requests the kernel sent in
	// its context are background ones.
	DaemonPid int
	// TracePid is the tracing process's id: its own requests (to the
	// control file) are counted in Summary.Own and not shown. 0: none.
	TracePid int
	// Names returns the path, relative to the mount, of a file by inode
	// number, or "" when it does not know it (yet). A name it did not
	// know when a request or event was joined is asked for again when
	// the item goes to the Sink (Options.Reorder later, or at Flush), so
	// a file made during the trace is named once Names has learnt it.
	// It is called with Collector.mu or Collector.outMu held, from the
	// goroutines of Kernel, Daemon, Sample and Flush: it must be safe
	// for concurrent use. Nil: no names.
	Names func(ino uint64) string
	// StoreNames is Names for an inode of the store's device that may not
	// be the store's at all (the page-cache events of its other files):
	// it may answer "" sooner rather than look harder. Nil: Names.
	StoreNames func(ino uint64) string
	// Comm returns a process's command name, or "" when it does not know
	// it; used for tasks no event has named. Nil: none.
	Comm func(pid int) string
	// Tgid returns the process (thread group) of a thread id, the ids the
	// kernel's events and request headers carry, or the id itself when
	// it cannot tell. Nil: every thread is taken as its own process (so
	// only the main threads of DaemonPid and TracePid are recognised).
	Tgid func(tid int) int
	// RAPages is the mount's maximum readahead in pages (its bdi's
	// read_ahead_kb / 4), for the read-around window of a fault before
	// any readahead event has told it. 0: until then, a fault causes
	// only the READs of its own page.
	RAPages uint32
	// Start is when the trace began, CLOCK_MONOTONIC ns: times are shown
	// relative to it.
	Start int64
}

// Part names, as Request.Missing lists them.
const (
	PartSend   = "send"   // fuse_request_send
	PartEnd    = "end"    // fuse_request_end
	PartDaemon = "daemon" // the daemon's TraceRecord
)

// Request is one FUSE request, joined: the kernel's send and end events
// and the daemon's record, and the cause decided from the events around
// it. Fields of a part in Missing are zero.
type Request struct {
	Unique uint64
	Opcode uint32
	Op     string
	// Send and End are the kernel's event times (mono ns); Rel is the
	// request's time shown: Send (or, without it, the daemon's Start)
	// less Mount.Start.
	Send, End int64
	Rel       int64
	// Pid and Comm are the task in whose context the kernel sent it.
	Pid  int
	Comm string
	// TaskPid and TaskComm are the task that caused it: Pid, or for a
	// Background request the requester the kernel put in its header.
	TaskPid    int
	TaskComm   string
	Background bool
	// Len is the size of the request the kernel sent (send event); Error
	// its answer's error as the end event gives it (negative errno).
	Len   uint32
	Error int32

	// From the daemon's record.
	NodeID     uint64
	Ino        uint64
	File       string
	Offset     uint64
	Length     uint32
	Start      int64 // daemon's start, mono ns
	Service    int64 // ns
	Errno      int32
	Result     uint32
	FaultPages uint32
	Msyncs     uint32
	MsyncBytes uint64

	// Latency is End-Send (ns), -1 when either is missing; Queue is
	// Latency-Service (queue and transfer time), -1 when unknown.
	Latency int64
	Queue   int64

	// Cause is "read", "readahead-sync", "readahead-async", "fault",
	// "writeback", "write", a syscall name ("msync", "close", ...) or the
	// op's name in lower case. Window is the readahead window of a READ
	// (for "fault" too when the fault triggered a readahead); FaultPage
	// the faulting page of a "fault" (FaultPage valid when HasFault);
	// Reason the flusher's reason of a "writeback".
	Cause     string
	Window    *Window
	HasFault  bool
	FaultPage uint64
	Reason    string

	// Missing lists the parts that never came (PartSend, PartEnd,
	// PartDaemon); GivenUp says it was emitted early because too many
	// requests were pending.
	Missing []string
	GivenUp bool
}

// CauseLabel is the cause as shown and summarised: the cause with the
// writeback reason ("writeback (background)").
func (r *Request) CauseLabel() string {
	if r.Cause == "writeback" && r.Reason != "" {
		return "writeback (" + r.Reason + ")"
	}
	return r.Cause
}

// Error names a request's error (the daemon's errno, or the kernel's
// when there is no record), "" when it succeeded.
func (r *Request) ErrorName() string {
	if r.Errno != 0 {
		return errnoName(r.Errno)
	}
	return errnoName(r.Error)
}

// Event types, as Event.Type and the JSON "type" give them.
const (
	EventReadahead      = "readahead"
	EventFault          = "fault"
	EventPageAdd        = "page_add"
	EventPageDelete     = "page_delete"
	EventThrottle       = "throttle"
	EventWritebackStart = "writeback_start"
	EventWritebackEnd   = "writeback_end"
	EventSyscallEnter   = "syscall_enter"
	EventSyscallExit    = "syscall_exit"
	EventDaemonDropped  = "daemon_dropped"
)

// Event is one of the kernel's events other than a request's send and
// end (which make Requests), or a daemon drop record.
type Event struct {
	Type string
	// Rel is the event's time less Mount.Start, ns.
	Rel int64
	// Layer is "mount" or "store": the device or BDI the event is on
	// ("" for syscalls and daemon drops).
	Layer string
	// File is the path of K.Ino on the mount, when known.
	File string
	// K is the kernel's event (a copy); for EventDaemonDropped only its
	// Time is set (the record's start).
	K ktrace.Event
}

// Sample is the mount's dirty and writeback bytes at a moment.
type Sample struct {
	Time, Rel        int64
	Dirty, Writeback uint64
}

// Sink receives what a Collector makes, in order, from one goroutine at a
// time (the Collector serializes the calls). It must not call back into
// the Collector. The pointers are the sink's to keep.
type Sink interface {
	Request(r *Request)
	Event(e *Event)
	Sample(s *Sample)
	// Flush is called by Collector.Flush after the last pending request
	// was handed over: write out what is buffered.
	Flush()
}

// Discard is a Sink that keeps nothing (for --summary, where only the
// Collector's Summary is wanted).
type Discard struct{}

// Request implements Sink.
func (Discard) Request(*Request) {}

// Event implements Sink.
func (Discard) Event(*Event) {}

// Sample implements Sink.
func (Discard) Sample(*Sample) {}

// Flush implements Sink.
func (Discard) Flush() {}

// Tee is a Sink that hands every item to each of its sinks in turn.
type Tee []Sink

// Request implements Sink.
func (t Tee) Request(r *Request) {
	for _, s := range t {
		s.Request(r)
	}
}

// Event implements Sink.
func (t Tee) Event(e *Event) {
	for _, s := range t {
		s.Event(e)
	}
}

// Sample implements Sink.
func (t Tee) Sample(x *Sample) {
	for _, s := range t {
		s.Sample(x)
	}
}

// Flush implements Sink.
func (t Tee) Flush() {
	for _, s := range t {
		s.Flush()
	}
}

// isFlusherComm says whether a task's name is a kernel worker's (the
// flusher threads are "kworker/u8:3+flush-0:52" and the like).
func isFlusherComm(comm string) bool { return strings.HasPrefix(comm, "kworker/") }
