package backing

import (
	"fmt"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// PolicyKind names a writeback policy: when the daemon msyncs what it
// wrote into a mapping.
type PolicyKind int

// The writeback policies. Under every one, fsync and fdatasync make the
// file durable before they return, unless Options.IgnoreFsync says
// otherwise.
const (
	// PolicyFsync msyncs on fsync and fdatasync only (and the store is
	// synced at unmount). The POSIX default.
	PolicyFsync PolicyKind = iota
	// PolicyWriteThrough msyncs (MS_SYNC) the written range after every
	// write, and fdatasyncs when the write changed the size.
	PolicyWriteThrough
	// PolicyClose msyncs on flush (every close of a descriptor) and at
	// release.
	PolicyClose
	// PolicyPeriodic msyncs everything dirty in a background pass every
	// Policy.Period.
	PolicyPeriodic
	// PolicyAsync starts writeback of the written range after every
	// write and does not wait for it. MS_ASYNC is a no-op on Linux (the
	// kernel tracks dirty pages itself), so this uses
	// sync_file_range(SYNC_FILE_RANGE_WRITE), which is what MS_ASYNC
	// promises: the I/O is scheduled. The pages stay counted as unsynced,
	// since nothing waited for them.
	PolicyAsync
	// PolicyNone never msyncs by the daemon's choice: dirty pages reach
	// the disk by the kernel's own writeback.
	PolicyNone
)

var policyNames = map[PolicyKind]string{
	PolicyFsync:        "fsync",
	PolicyWriteThrough: "write-through",
	PolicyClose:        "close",
	PolicyPeriodic:     "periodic",
	PolicyAsync:        "async",
	PolicyNone:         "none",
}

// PolicyNames lists the policies as ParsePolicy accepts them.
const PolicyNames = "fsync, write-through, close, periodic:DURATION (e.g. periodic:5s), async, none"

// Policy is a writeback policy; Period is set for PolicyPeriodic only.
type Policy struct {
	Kind   PolicyKind
	Period time.Duration
}

// String returns the policy as ParsePolicy accepts it.
func (p Policy) String() string {
	if p.Kind == PolicyPeriodic {
		return "periodic:" + p.Period.String()
	}
	return policyNames[p.Kind]
}

// ParsePolicy parses a policy name: fsync, write-through, close,
// periodic:DURATION, async or none.
func ParsePolicy(s string) (Policy, error) {
	if d, ok := strings.CutPrefix(s, "periodic:"); ok {
		period, err := time.ParseDuration(d)
		if err != nil || period <= 0 {
			return Policy{}, fmt.Errorf("writeback policy %q: the period must be a positive duration such as 200ms or 5s", s)
		}
		return Policy{Kind: PolicyPeriodic, Period: period}, nil
	}
	for k, name := range policyNames {
		if s == name && k != PolicyPeriodic {
			return Policy{Kind: k}, nil
		}
	}
	return Policy{}, fmt.Errorf("unknown writeback policy %q; valid policies: %s", s, PolicyNames)
}

// Advice is how the daemon reads a blob's pages into memory: the
// madvise(2) advice its mapping gets, and whether the daemon reads a
// READ's range in ahead of the copy (see readahead.go).
type Advice int

// The advice values.
const (
	// AdviceNormal, the default: the mapping gets MADV_RANDOM, so that
	// a fault reads the one page it needs and no read-around, and a
	// READ of more than a page whose range is not all in the page
	// cache is read in first with fadvise(WILLNEED) of exactly that
	// range, as one I/O. What a READ asks for is what is read: the
	// kernel's FUSE readahead sizes READs (large windows for a
	// sequential reader, a page for a random one).
	AdviceNormal Advice = iota
	// AdviceRandom: MADV_RANDOM and nothing read ahead by the daemon:
	// every page is read when the copy faults on it, one page at a
	// time, also within a large READ (a cold sequential read goes at
	// the speed of single-page reads).
	AdviceRandom
	// AdviceSequential: MADV_SEQUENTIAL and nothing read ahead by the
	// daemon: a fault reads ahead of itself by the store device's
	// read_ahead_kb, and the kernel reclaims the pages early. For
	// files read once from start to end; a random read costs a whole
	// readahead window.
	AdviceSequential
	// AdviceWillNeed: AdviceNormal, and MADV_WILLNEED of the whole
	// mapping at every map and remap: the kernel starts reading the
	// file in the background, from its start, as far as one call may
	// read ahead (the store device's read_ahead_kb: 8 MiB on a virtio
	// disk). A head start for small files read soon after the open.
	AdviceWillNeed
	// AdviceHugePage: MADV_HUGEPAGE and the kernel's own fault
	// read-around, nothing read ahead by the daemon (which would read
	// single pages and defeat it): faults read 2 MiB folios where the
	// kernel and the store's filesystem make them, so a cold 4 KiB
	// read costs 2-4 MiB.
	AdviceHugePage
)

var adviceNames = []string{"normal", "random", "sequential", "willneed", "hugepage"}

// AdviceNames lists the advice values as ParseAdvice accepts them.
var AdviceNames = strings.Join(adviceNames, ", ")

// String returns the advice as ParseAdvice accepts it.
func (a Advice) String() string { return adviceNames[a] }

// ParseAdvice parses normal, random, sequential, willneed or hugepage.
func ParseAdvice(s string) (Advice, error) {
	for i, name := range adviceNames {
		if s == name {
			return Advice(i), nil
		}
	}
	return 0, fmt.Errorf("unknown madvise advice %q; valid: %s", s, AdviceNames)
}

// madv returns the madvise(2) advice a mapping gets, in order.
func (a Advice) madv() []int {
	switch a {
	case AdviceNormal:
		return []int{unix.MADV_RANDOM}
	case AdviceRandom:
		return []int{unix.MADV_RANDOM}
	case AdviceSequential:
		return []int{unix.MADV_SEQUENTIAL}
	case AdviceWillNeed:
		return []int{unix.MADV_RANDOM, unix.MADV_WILLNEED}
	case AdviceHugePage:
		return []int{unix.MADV_HUGEPAGE}
	}
	return nil
}

// readsAhead reports whether the daemon reads a READ's range in before
// the copy (readahead.go).
func (a Advice) readsAhead() bool { return a == AdviceNormal || a == AdviceWillNeed }
