package main

import (
	"os"
	"runtime"
)

// minDaemonProcs is the least GOMAXPROCS mmapfs runs with.
//
// A FUSE daemon's goroutines spend most of their time blocked in
// read(2) on /dev/fuse, each holding a P while it waits. With GOMAXPROCS
// at the CPU count (2 here) no P is idle, so the runtime's sysmon takes
// the P from every such reader after 20 us and keeps waking every 20 us
// to do so (runtime.sysmon was 18-20 % of the daemon's samples serving
// create+stat+unlink); when the request comes, the reader finds its P
// gone and hands its goroutine to another thread: a wake-up and a
// context switch more per request. With idle Ps to spare the runtime
// leaves a reader its P. It also gives go-fuse up to that many readers.
//
// Measured on 2 CPUs, GOMAXPROCS 2 -> 8: 4 KiB random reads served by the
// daemon 115,000-132,000 -> 191,000-249,000 IOPS; create+stat+unlink
// 11,900-12,700 -> 13,100-14,300 ops/s; 1 MiB writes, warm 1 MiB reads
// and write+fsync unchanged.
const minDaemonProcs = 8

// setDaemonProcs raises GOMAXPROCS to minDaemonProcs unless the
// environment sets GOMAXPROCS, and returns the value in force.
func setDaemonProcs() int {
	if os.Getenv("GOMAXPROCS") != "" {
		return runtime.GOMAXPROCS(0)
	}
	if n := daemonProcs(runtime.GOMAXPROCS(0)); n != runtime.GOMAXPROCS(0) {
		runtime.GOMAXPROCS(n)
	}
	return runtime.GOMAXPROCS(0)
}

// daemonProcs is the GOMAXPROCS for a daemon the runtime would give cur.
func daemonProcs(cur int) int {
	return max(cur, minDaemonProcs)
}
