// Package ktrace is the kernel half of `mmapfs trace`: it records, for
// one FUSE mount, the kernel's own tracepoints through a tracefs instance
// of its own, and turns the instance's trace pipe into parsed Events.
//
// # What it records
//
// Open creates instances/mmapfs-trace-PID-START under the tracefs root
// (START is field 22 of /proc/self/stat, so the name tells a live trace
// from one whose process is gone or whose pid was reused), sets its
// trace_clock to "mono" (Event.Time is CLOCK_MONOTONIC ns, comparable
// with the daemon's clock_gettime(CLOCK_MONOTONIC)), its per-CPU buffer
// and record-tgid (the options of an instance are its own), and enables
// the events a Config selects, each with a kernel filter so that only
// the mount's events are written at all:
//
//   - fuse:fuse_request_send and fuse_request_end, `connection == N`;
//   - readahead:page_cache_sync_ra and page_cache_async_ra,
//     filemap:mm_filemap_fault, mm_filemap_add_to_page_cache and
//     mm_filemap_delete_from_page_cache, `s_dev == A || s_dev == B`;
//   - writeback:balance_dirty_pages (`bdi == "0:52"`), writeback_start
//     and writeback_written (`name == "0:52"`);
//   - syscalls:sys_enter_X and sys_exit_X of fsync, fdatasync, msync,
//     close, sync_file_range, syncfs and sync, unfiltered (the caller
//     filters by pid).
//
// Tracing is off until Start (or Run, which calls it). Run reads
// trace_pipe (text, O_NONBLOCK, woken by poll) and parses each line into
// one reused Event without allocating for the common case: comms, bdi
// names, reasons and syscall names are interned. The kernel fills in a
// line's comm when the line is read, from its saved_cmdlines (so a task
// that renamed itself shows its new name); a task it has no entry for is
// printed "<...>", and its comm and tgid are then read from /proc/PID
// while the task lives. To stop, Run turns tracing_on off and reads the
// pipe until it is empty (EAGAIN), twice, 10ms apart, so that nothing
// recorded is lost. The instance keeps the kernel's default overwrite
// mode: when the reader falls behind, the oldest unread events of a
// CPU's buffer are overwritten. Lost counts what the kernel dropped: the
// "CPU:N [LOST M EVENTS]" lines and the per_cpu/cpuN/stats counters
// (overrun, commit overrun, dropped events), which count the same
// events, so per CPU the larger of the two.
//
// The kernel records balance_dirty_pages' paused, pause, period and think
// in milliseconds (jiffies * 1000 / HZ, include/trace/events/writeback.h;
// the print fmt does not say); Event carries them in ns.
//
// # Tracefs
//
// tracefs is used where it is mounted, /sys/kernel/tracing or
// /sys/kernel/debug/tracing; when it is not mounted Open mounts it at
// /sys/kernel/tracing, as perf does, leaves it mounted, and says so in
// Notes. Everything needs root.
//
// # What it must never do
//
// It never writes to the top-level trace instance (no tracing_on,
// current_tracer, set_event, saved_cmdlines_size or options at the
// root): other tracers (perf, trace-cmd, bpftrace) share it. It touches
// no instance but its own, except that Open (RemoveStale) removes
// instances named mmapfs-trace-PID-START whose process is gone or has
// another start time: those are left by a trace that was killed before
// Close. Two traces at once each have their own instance and never
// remove each other's. Close (idempotent) turns tracing off, disables
// the events, closes the pipe (the instance cannot be removed while it is
// open: EBUSY) and removes the instance; every error path of Open
// removes what it made.
package ktrace
