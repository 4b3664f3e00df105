package main

// The transport dimension: mmapfs under --transport uring (FUSE over
// io_uring) beside --transport dev, and the fuse module's enable_uring
// switch, which the bench turns on for its run when it is off and puts
// back on every exit path (shared with the test suites through
// internal/enableuring: the last user of any process puts it back).

import (
	"fmt"
	"os"
	"sync"

	"github.com/mmapfs/mmapfs/internal/enableuring"
)

// enableURingParam is the fuse module's switch for FUSE over io_uring
// (fs/uring.EnableParam); a variable so that the tests can point it at a
// file of their own.
var enableURingParam = "/sys/module/fuse/parameters/enable_uring"

// uringSwitch is the bench's use of enable_uring, shared with every
// other process that needs it on (the test suites, another bench):
// internal/enableuring turns it on if it is off and the last user of any
// process puts back what it was. mu guards use.
type uringSwitch struct {
	mu  sync.Mutex
	use *enableuring.Use // nil until enable, and after restore
}

// benchURing is this run's switch; restoreURing puts it back.
var benchURing = &uringSwitch{}

// enable makes path read Y for the run: it leaves a Y alone, and turns an
// N on (as root), for the last user to put back. The error says why the
// uring rows cannot be measured.
func (u *uringSwitch) enable(path string) error {
	u.mu.Lock()
	defer u.mu.Unlock()
	use, err := enableuring.For(path).Acquire()
	if err != nil {
		return fmt.Errorf("enable_uring: %w", err)
	}
	u.use = use
	if use.Changed {
		fmt.Printf("note: %s was N: on for this run, put back at its end (by the last of its users)\n", path)
	}
	return nil
}

// restore ends the bench's use: the switch goes back to what enable
// found if no other process uses it. Safe to call twice, and from the
// signal handler.
func (u *uringSwitch) restore() error {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.use == nil {
		return nil
	}
	err := u.use.Release()
	u.use = nil
	return err
}

// restoreURing puts enable_uring back (after the mounts are gone); on
// every exit path of the bench.
func restoreURing() {
	if err := benchURing.restore(); err != nil {
		fmt.Fprintf(os.Stderr, "bench: %v\n", err)
	}
}

// isURing says the configuration serves over io_uring.
func isURing(c fsConfig) bool { return c.Transport == "uring" }

// dropURing removes the uring configurations (kinds kMmapfsURing and
// kMmapfsBestURing) from cfgs, when uring cannot be had.
func dropURing(cfgs []fsConfig) []fsConfig {
	var o []fsConfig
	for _, c := range cfgs {
		if !isURing(c) {
			o = append(o, c)
		}
	}
	return o
}

// pinTransport names the transport of every mmapfs configuration that
// has none: dev, so that the dev rows stay dev whatever the binary's
// default is. A binary without --transport (one older than the flag)
// keeps its configurations as they are.
func pinTransport(cfgs []fsConfig, have map[string]bool) {
	if !have["transport"] {
		return
	}
	for i := range cfgs {
		if isMmapfsKind(cfgs[i].Kind) && cfgs[i].Transport == "" {
			cfgs[i].Transport = "dev"
		}
	}
}

// isMmapfsKind says the kind is an mmapfs mount (under either transport).
func isMmapfsKind(k string) bool {
	switch k {
	case kMmapfs, kMmapfsBest, kMmapfsURing, kMmapfsBestURing:
		return true
	}
	return false
}

// overlap compares two figures' runs: +1 when every run of a beats every
// run of b (a.Min > b.Max), -1 when every run of a is below every run of b
// (a.Max < b.Min), 0 when their ranges overlap: the difference is within
// the run's spread.
func overlap(a, b *figure) int {
	switch {
	case a == nil || b == nil:
		return 0
	case a.Min > b.Max:
		return 1
	case a.Max < b.Min:
		return -1
	}
	return 0
}

// spreadWord says what overlap found, for the tables.
func spreadWord(a, b *figure) string {
	if a == nil || b == nil {
		return "–"
	}
	if len(a.Runs) < 2 || len(b.Runs) < 2 {
		return "one run"
	}
	switch overlap(a, b) {
	case 1:
		return "faster"
	case -1:
		return "**slower**"
	}
	return "within"
}

// uringBestFor is, per workload, the switch set tried under uring beside
// the defaults: the one that was fastest under dev in the last full run
// (scripts/bench/results), so that "the fastest set under uring" costs
// one set a workload rather than all of bestFor's again.
var uringBestFor = map[string]string{
	"seqwrite":       "wbc-cache-1m-bdi",
	"randwrite":      "wbc-cache-1m-bdi",
	"mmap-randwrite": "cache-1m-bdi",
	"fsync-write":    "cache",
	"seqread-warm":   "cache-1m",
	"randread-1":     "cache",
	"randread-2":     "keep-1m-ra",
	"mmap-randread":  "keep-1m-bdi",
	"seqread-cold":   "cache-1m",
	"createstat":     "cache",
	"logger-pwrite":  "wbc-cache-1m-bdi",
	"logger-mmap":    "wbc-cache-1m-bdi",
}

// uringCandidates are the configurations "mmapfs-uring+SET" of the
// workloads wls, a set per workload (uringBestFor), each running the
// workloads it is the set of; a set naming a flag the binary lacks is
// left out (the dev candidates' note says so).
func uringCandidates(wls []string, have map[string]bool) []fsConfig {
	by := map[string][]string{}
	for _, w := range wls {
		if cn := uringBestFor[w]; cn != "" {
			by[cn] = append(by[cn], w)
		}
	}
	var o []fsConfig
	for _, c := range candidates {
		if len(by[c.Name]) == 0 {
			continue
		}
		if ok, _ := supported(c, have); !ok {
			continue
		}
		o = append(o, fsConfig{Name: "mmapfs-uring+" + c.Name, Kind: kMmapfsBestURing, Flags: c.Flags, Workloads: by[c.Name], Transport: "uring"})
	}
	return o
}

// wantsURing says some configuration of the run serves over uring: a
// workload's, or a selected curve group's.
func wantsURing(cfgs, ccfgs []fsConfig, cextra map[string][]fsConfig, groups map[string]bool) bool {
	for _, c := range cfgs {
		if isURing(c) {
			return true
		}
	}
	if len(groups) == 0 {
		return false
	}
	for _, c := range ccfgs {
		if isURing(c) {
			return true
		}
	}
	for g, cs := range cextra {
		for _, c := range cs {
			if groups[g] && isURing(c) {
				return true
			}
		}
	}
	return false
}
