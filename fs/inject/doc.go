// Package inject is the rule language of mmapfs's fault injection: it
// parses and checks rules (Parse), keeps the rules of one mount with their
// counters (Set), and decides, for one request, what the daemon is to do
// instead of, or before, serving it (Set.Decide).
//
// # Rules
//
// A rule is a comma-separated list of key=value, without spaces:
//
//	op=fsync,errno=EIO,times=1
//	op=write,path=db/*-wal,nth=3,torn=512
//	op=read,short=100,prob=0.5,seed=7
//	op=fsync,delay=5ms-50ms
//	op=msync,errno=EIO,fsyncgate
//	op=fault,path=big,errno=EIO,after=1MiB
//
// Which requests: op= (required: a FUSE op of the node tree, see Ops, or
// the daemon's own work on the store: msync, a sync of a blob's pages, and
// fault, a page fault while copying to or from a mapping); path= (a
// path.Match glob against the file's path relative to the mount root;
// default every file). When: nth=N (only the Nth matching call), after=N
// (only once N bytes of matching calls have passed: served by reads,
// given to writes, written by msyncs, copied by faults; those ops only), prob=P (0 < P <= 1, drawn from a generator seeded by seed=S,
// or by the mount's start and the rule's id), times=K (at most K times).
// What happens, exactly one of: errno=NAME, delay=D or delay=D1-D2 (uniform
// in the range), torn=K or torn=K:ERRNO (write only), short=K (read only).
// fsyncgate (with op=msync and errno= only) makes the failed msync lose the
// pages it was to write; the store must keep their synced content
// (--powercut-sim), which NewSet is told.
//
// torn=K lets only the first K bytes of a longer write reach the file and
// answers with that short count; torn=K:ERRNO answers with the errno
// instead (a write of K bytes or fewer reaches the file whole, then gets
// the errno). short=K answers a read with at most K bytes.
//
// Several rules may match one call: each counts it; the delays of all that
// fire add up, and the first (lowest id) that fires with another action
// decides that action.
// A delay ends early when its rule is cleared (Decision.Waits), and so at
// the mount's end, which clears every rule.
//
// # What it must never do
//
// The package is pure: it makes no system call, touches no file of the
// store or of the mount and does no I/O; it only parses, counts and
// decides. Applying a Decision (returning the errno, sleeping, writing
// only the first bytes of a write, putting pages back for fsyncgate) is
// the caller's, and the caller changes the store only as the mount itself
// would. Decide is cheap when no rule is set: Active is one atomic load,
// which the data path checks before anything else.
//
// # Locking
//
// Set.mu guards the rules and every counter; Active reads an atomic copy of
// the rule count and takes no lock.
package inject
