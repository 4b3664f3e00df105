package ktrace

import "strconv"

// Kind is what a kernel event is.
type Kind int

// The kinds of events an Instance records.
const (
	// RequestSend is fuse:fuse_request_send: the kernel queued a request
	// to the daemon (Conn, Unique, Opcode, Len).
	RequestSend Kind = iota + 1
	// RequestEnd is fuse:fuse_request_end: the answer arrived (Conn,
	// Unique, Len, Error).
	RequestEnd
	// SyncReadahead and AsyncReadahead are readahead:page_cache_sync_ra
	// and page_cache_async_ra (Dev, Ino, Index, Size, AsyncSize,
	// ReqCount, RAPages, MmapMiss).
	SyncReadahead
	AsyncReadahead
	// Fault is filemap:mm_filemap_fault: a page fault on a file mapping
	// (Dev, Ino, Index).
	Fault
	// PageAdd and PageDelete are filemap:mm_filemap_add_to_page_cache and
	// mm_filemap_delete_from_page_cache (Dev, Ino, Index, Pages).
	PageAdd
	PageDelete
	// Throttle is writeback:balance_dirty_pages: the task was paused for
	// Pause (ns; 0 or negative when it was not) by the dirty-page budget
	// of BDI (Dirty, Limit, Setpoint, WBDirty, WBSetpoint: pages; Paused,
	// Period, Think: ns). The kernel records the times in milliseconds
	// (jiffies*1000/HZ); they are converted to ns here.
	Throttle
	// WritebackStart and WritebackEnd are writeback:writeback_start and
	// writeback_written: a flusher's writeback of BDI for Reason
	// ("background", "periodic", "sync", "vmscan", ...). NrPages is the
	// kernel's nr_pages: the work's page budget at start, what is left of
	// it at the end. Pages (WritebackEnd) is the pages written since the
	// same task's WritebackStart (start's NrPages minus end's), 0 when
	// that start was not seen.
	WritebackStart
	WritebackEnd
	// SyscallEnter and SyscallExit are the syscalls:sys_enter_NAME and
	// sys_exit_NAME events of the syscalls that make the kernel write or
	// send requests on a task's behalf (Syscall: fsync, fdatasync, msync,
	// close, sync_file_range, syncfs, sync; Ret on exit).
	SyscallEnter
	SyscallExit
)

var kindNames = [...]string{
	RequestSend: "RequestSend", RequestEnd: "RequestEnd",
	SyncReadahead: "SyncReadahead", AsyncReadahead: "AsyncReadahead",
	Fault: "Fault", PageAdd: "PageAdd", PageDelete: "PageDelete",
	Throttle: "Throttle", WritebackStart: "WritebackStart", WritebackEnd: "WritebackEnd",
	SyscallEnter: "SyscallEnter", SyscallExit: "SyscallExit",
}

// String is the Kind's name ("PageAdd").
func (k Kind) String() string {
	if k > 0 && int(k) < len(kindNames) {
		return kindNames[k]
	}
	return "Kind(" + strconv.Itoa(int(k)) + ")"
}

// Event is one kernel event, as parsed from the instance's trace pipe.
// Only the fields its Kind names are set.
type Event struct {
	Kind Kind
	// Time is when it happened, CLOCK_MONOTONIC nanoseconds (the
	// instance's trace_clock is "mono"), to the microsecond.
	Time int64
	CPU  int
	// Pid and Comm are the task (thread) in whose context it happened,
	// Tgid its process. The kernel names the task when the line is read
	// (from its saved_cmdlines), not when the event happened. When the kernel printed the task as "<...>"
	// (its saved_cmdlines had no entry for it) Comm and Tgid are read
	// from /proc/PID when the task still exists; else Comm stays
	// "<...>" and Tgid 0.
	Pid  int
	Tgid int
	Comm string

	Conn   uint32 // FUSE connection: the mount's device, kernel encoding
	Unique uint64
	Opcode uint32
	Len    uint32
	Error  int32

	Dev       uint32 // s_dev, kernel encoding (major<<20 | minor)
	Ino       uint64
	Index     uint64 // page index
	Pages     uint32 // pages the event covers (1<<order for folios)
	Order     uint32 // folio order (PageAdd, PageDelete, readahead)
	PrevPos   int64  // readahead: the file's previous read position, -1 none
	Size      uint32 // readahead window, pages
	AsyncSize uint32
	ReqCount  uint64
	RAPages   uint32
	MmapMiss  uint32

	BDI        string
	Dirty      uint64 // pages (Throttle)
	Limit      uint64
	Setpoint   uint64
	WBDirty    uint64
	WBSetpoint uint64
	Pause      int64 // ns (Throttle)
	Paused     int64 // ns
	Period     int64 // ns
	Think      int64 // ns
	Reason     string
	NrPages    int64 // writeback work's nr_pages (WritebackStart, WritebackEnd)

	// Syscall is the name without "sys_enter_"/"sys_exit_" ("fsync"),
	// Arg its first argument (SyscallEnter: the fd, msync's start
	// address; 0 for sync), Ret its return value (SyscallExit; -errno
	// on failure).
	Syscall string
	Arg     uint64
	Ret     int64
}

// KernelDev returns the kernel's encoding of a device number (as the
// events carry it) from the major and minor numbers.
func KernelDev(major, minor uint32) uint32 { return major<<20 | minor }
