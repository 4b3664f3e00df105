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

// Advice is the madvise(2) advice given to every mapping.
type Advice int

// The advice values. AdviceNormal is the kernel's default, so it is never
// given explicitly.
const (
	AdviceNormal Advice = iota
	AdviceRandom
	AdviceSequential
	AdviceWillNeed
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

func (a Advice) madv() int {
	switch a {
	case AdviceRandom:
		return unix.MADV_RANDOM
	case AdviceSequential:
		return unix.MADV_SEQUENTIAL
	case AdviceWillNeed:
		return unix.MADV_WILLNEED
	case AdviceHugePage:
		return unix.MADV_HUGEPAGE
	}
	return unix.MADV_NORMAL
}
