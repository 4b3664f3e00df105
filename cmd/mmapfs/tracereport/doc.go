// Package tracereport is the pure half of `mmapfs trace`: it joins the
// kernel's events of one FUSE mount (ktrace.Event, parsed from a tracefs
// instance by package ktrace) with the daemon's record of each request it
// served (wire.TraceRecord, read from the daemon's trace socket), decides
// why the kernel sent each request, and writes the result as a timeline,
// JSON lines, a summary or a gnuplot plot.
//
// # What it must never do
//
// It never reads tracefs, the mount, the store, /proc or a socket: every
// fact comes in through Collector.Kernel, Collector.Daemon,
// Collector.Sample, Collector.Tick and the Mount's callbacks (Names,
// Comm, Tgid), so that every rule here can be tested with synthetic
// events. The one outside program it runs is gnuplot, for Plot.WritePNG.
// Kernel and Daemon work in the caller's goroutine, on bounded tables;
// what may make a stream's reader wait is the Sink's writing (a slow
// terminal) and the Mount's callbacks (which may read /proc or walk the
// store), each called under the locks below.
//
// # Use
//
//	c := tracereport.NewCollector(tracereport.Mount{...}, tracereport.Options{
//		Sink: tracereport.NewTimeline(os.Stdout, 0), // or NewJSON, NewPlot, Tee{...}, nil for --summary
//	})
//	go inst.Run(ctx, c.Kernel)      // the kernel's events
//	go feed.records(r, c.Daemon)    // the daemon's records
//	every 100 ms: c.Sample(now, dirty, writeback) (or c.Tick(now))
//	every second on a terminal: tracereport.Progress(c, inst.Lost())
//	at the end: c.Flush(); s := c.Summary(); s.KernelLost = inst.Lost(); s.WriteText(os.Stdout)
//	plot.WritePNG(path)
//
// # Joining
//
// A request is a fuse_request_send event of the mount's connection, its
// fuse_request_end (same Unique) and the daemon's TraceRecord (same
// Unique). The two streams arrive independently and the daemon's lags, so
// the Collector holds each request until its three parts are there, or
// until Options.Wait of event time (the latest kernel event's time) has
// passed since its last part, or until Flush; then it hands it to the Sink
// with Request.Missing naming the parts it never got. Every request and
// event is then held Options.Reorder (100 ms) more, so that the Sink gets
// them in time order (a request that waited for a late part comes later
// than events after it; its times are its own). Event time advances with
// the kernel's events, the daemon's records, and Sample and Tick: call
// one of them regularly so that the last items go out while the mount is
// idle. At most
// Options.MaxPending requests are held; past that the oldest is emitted
// incomplete and counted (Summary.GivenUp). Requests made by the tracing
// process itself (Mount.TracePid: its control-file requests) are counted
// (Summary.Own) and never emitted.
//
// # Causes
//
// The cause of a request is decided when it is emitted, from the kernel's
// events kept around it (history.go: kept by time, bounded in size):
//
//   - READ: the latest page_cache_sync_ra/async_ra of the same file of
//     the mount, at or before the send, whose window covers the READ's
//     first page gives "readahead-sync" or "readahead-async" with that
//     window (Window: the kernel's events tell the asking page and the
//     state before; the window is worked out from them as
//     mm/readahead.c does). A mm_filemap_fault on the same file by the
//     task that caused the READ, within FaultNear before it, gives
//     "fault" when the window's readahead came from that fault (the
//     same task, within raNear after it: an async readahead on a mapped
//     marker page, or a sync one under MADV_SEQUENTIAL), or when the
//     fault is the later and the READ reads its page or its read-around
//     (the RAPages around the faulting page, which the kernel reads with
//     no readahead event). Otherwise "read".
//   - WRITE: sent by a flusher (a task inside a writeback_start /
//     writeback_written pair on the mount's BDI, or a "kworker/" task)
//     gives "writeback" with the flusher's reason; sent while the causing
//     task was inside a traced syscall (fsync, fdatasync, msync, close,
//     sync_file_range, syncfs, sync) gives that syscall's name. A WRITE
//     the kernel made on its own behalf (page writeback: the daemon's
//     record has Pid 0) sent from the daemon's context (its background
//     queue) is the traced sync syscall a client was inside then, else
//     the writeback the mount's flusher was doing then (or started last
//     before: the kernel sends a pass's WRITEs as the daemon answers,
//     often after the pass), else plain "writeback". Otherwise "write" (a write(2) sent write-through).
//   - Any other op: the traced syscall the causing task was inside, else
//     the op's name in lower case ("flush" outside close, ...).
//
// The kernel traces the syscalls of every process on the machine; only
// those of processes that caused requests on the mount, and those a
// request's cause is, reach the Sink.
//
// The causing task is the task in whose context the kernel sent the
// request, unless that is the daemon (Mount.DaemonPid) or differs from the
// requester the kernel put in the request's header (TraceRecord.Pid): then
// the request is a background one (Request.Background) and the header's
// task is the cause. The mount's inode numbers are the store's (fs
// stableAttr), so a kernel event's inode on the mount and the daemon's
// record name the same file.
//
// # Locking
//
// Kernel, Daemon, Sample and Flush may be called from different
// goroutines. Collector.mu guards the join and all state and counters;
// Collector.outMu serializes the calls to the Sink, so that a sink sees
// items in the order the collector made them and needs no lock of its
// own. Lock order: mu before outMu (outMu is taken before mu is released,
// then the sink is called with outMu alone held). A Sink must not call
// back into the Collector. Mount.Names is called under either lock (a
// name not known at the join is asked for again, under outMu, as the
// item goes to the Sink).
package tracereport
