package main

// The transport tables of results.md: mmapfs under --transport uring
// against dev per workload, issue 17's targets, and what each part of the
// run cost.

import (
	"fmt"
	"sort"
	"strings"
	"time"
)

// fmtRange is a figure's median and the range of its runs.
func fmtRange(f *figure) string {
	if f == nil {
		return "–"
	}
	if len(f.Runs) < 2 {
		return fmtNum(f.Median)
	}
	return fmt.Sprintf("%s [%s–%s]", fmtNum(f.Median), fmtNum(f.Min), fmtNum(f.Max))
}

// uringNote is what the transport tables say when the uring rows are
// missing.
func (r *report) uringNote() string {
	if r.URingWhy != "" {
		return "The uring rows were not measured in this run: " + r.URingWhy + "."
	}
	for _, c := range r.Configs {
		if isURing(c) {
			return ""
		}
	}
	return "This run has no uring rows (it predates them, or -only left them out)."
}

// transportTable: per workload, mmapfs's defaults under both transports,
// and the best switch set under each, with the ratio and whether the
// difference is beyond the runs' spread.
func (r *report) transportTable(p func(string, ...any)) {
	p("### The transports: mmapfs under `--transport uring` against `--transport dev` (issue 17)\n\n")
	if n := r.uringNote(); n != "" {
		p("%s\n\n", n)
	}
	p("Each cell: median [lowest–highest run]. uring/dev: the ratio of the medians. Spread: `faster` (or `slower`) when every uring run is above (below) every dev run, `within` when the two ranges overlap: a difference the run cannot tell from its noise.\n\n")
	p("| workload | unit | dev, defaults | uring, defaults | uring/dev | spread | dev, best switches | uring, best switches | uring/dev | spread |\n")
	p("|---|---|---:|---:|---:|:---:|---:|---:|---:|:---:|\n")
	for _, w := range r.Workloads {
		wl, _ := workloadByName(w)
		dd, ud := r.fig(kMmapfs, w), r.fig(kMmapfsURing, w)
		db, ub := r.Best[w], r.BestURing[w]
		dbf, ubf := r.fig(db, w), r.fig(ub, w)
		named := func(name string, f *figure) string {
			if f == nil {
				return "–"
			}
			return fmt.Sprintf("%s (%s)", fmtRange(f), configName(name))
		}
		p("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", wl.Title, wl.Unit,
			fmtRange(dd), fmtRange(ud), fmtRatio(r.ratio(kMmapfsURing, kMmapfs, w)), spreadWord(ud, dd),
			named(db, dbf), named(ub, ubf), fmtRatio(r.ratio(ub, db, w)), spreadWord(ubf, dbf))
	}
	var sets []string
	for _, c := range r.Configs {
		if c.Kind == kMmapfsBestURing {
			sets = append(sets, fmt.Sprintf("%s (`%s`)", candName(c.Name), strings.Join(c.Flags, " ")))
		}
	}
	if len(sets) > 0 {
		p("\nSwitch sets tried under uring, a set per workload (the fastest under dev in the last full run): %s.\n", strings.Join(sets, "; "))
	}
	p("\n")
}

// configName is the short name of an mmapfs configuration in a cell.
func configName(name string) string {
	if c := candName(name); c != "" {
		return c
	}
	return "defaults"
}

// fuseRivals are the FUSE filesystems of the run that serve over
// /dev/fuse, which create+stat+unlink under uring is to beat: the
// loopbacks, mmapfs's defaults under dev and its best set there.
func (r *report) fuseRivals(w string) []string {
	var o []string
	for _, k := range []string{kLoopback, kLoopbackNP, kMmapfs} {
		if r.fig(k, w) != nil {
			o = append(o, k)
		}
	}
	if b := r.Best[w]; b != "" && b != kMmapfs && r.fig(b, w) != nil {
		o = append(o, b)
	}
	return o
}

// targets17 is issue 17's targets, from this run's figures.
func (r *report) targets17(p func(string, ...any)) {
	p("### Issue 17's targets, from this run\n\n")
	if n := r.uringNote(); n != "" {
		p("%s\n\n", n)
	}
	p("| target | figures | ratio | met |\n|---|---|---:|:---:|\n")
	cell := func(fs, w string) string {
		f := r.fig(fs, w)
		if f == nil {
			return fs + " –"
		}
		return fmt.Sprintf("%s %s", fs, fmtRange(f))
	}
	met := func(ok, have bool) string {
		if !have {
			return "–"
		}
		return yesNo(ok)
	}

	// create+stat+unlink: at least 2x dev.
	cs := "createstat"
	rcs := r.ratio(kMmapfsURing, kMmapfs, cs)
	p("| create+stat+unlink: uring ≥ 2× dev | %s; %s ops/s | %s | %s |\n", cell(kMmapfsURing, cs), cell(kMmapfs, cs), fmtRatio(rcs), met(rcs >= 2, rcs > 0))

	// create+stat+unlink: above every FUSE filesystem in the run.
	u := r.fig(kMmapfsURing, cs)
	var figs []string
	least, beatsAll := 0.0, u != nil
	for _, k := range r.fuseRivals(cs) {
		x := r.ratio(kMmapfsURing, k, cs)
		figs = append(figs, fmt.Sprintf("%s (×%s)", cell(k, cs), fmtRatio(x)))
		if least == 0 || x < least {
			least = x
		}
		if x <= 1 {
			beatsAll = false
		}
	}
	if len(figs) == 0 {
		beatsAll = false
		figs = []string{"no other FUSE filesystem in the run"}
	}
	p("| create+stat+unlink: uring above every FUSE filesystem of the run | %s; %s | %s (the least) | %s |\n",
		cell(kMmapfsURing, cs), strings.Join(figs, ", "), fmtRatio(least), met(beatsAll, u != nil && least > 0))

	// 4 KiB write + fsync: reach the loopback with passthrough.
	fw := "fsync-write"
	rfw := r.ratio(kMmapfsURing, kLoopback, fw)
	p("| 4 KiB write + fsync: uring reaches go-fuse loopback with passthrough | %s (%s of native); %s (%s of native); spread %s | %s | %s |\n",
		cell(kMmapfsURing, fw), fmtRatio(r.ratio(kMmapfsURing, kNative, fw)), cell(kLoopback, fw), fmtRatio(r.ratio(kLoopback, kNative, fw)),
		spreadWord(r.fig(kMmapfsURing, fw), r.fig(kLoopback, fw)), fmtRatio(rfw), met(rfw >= 1, rfw > 0))

	// Daemon-served 4 KiB random reads, 1 job: at least 1.5x dev.
	dr := "randread-daemon"
	rdr := r.ratio(kMmapfsURing, kMmapfs, dr)
	p("| 4 KiB random reads served by the daemon, 1 job: uring ≥ 1.5× dev | %s; %s IOPS | %s | %s |\n", cell(kMmapfsURing, dr), cell(kMmapfs, dr), fmtRatio(rdr), met(rdr >= 1.5, rdr > 0))

	// Every workload: uring not slower than dev beyond the spread.
	// With a single run (-quick) there is no spread: the medians are
	// compared, and the answer is left open.
	var slower []string
	n, single := 0, false
	worst, worstW := 0.0, ""
	for _, w := range r.Workloads {
		d, x := r.fig(kMmapfs, w), r.fig(kMmapfsURing, w)
		if d == nil || x == nil {
			continue
		}
		n++
		q := x.Median / d.Median
		if worstW == "" || q < worst {
			worst, worstW = q, w
		}
		if len(x.Runs) < 2 || len(d.Runs) < 2 {
			single = true
		}
		if overlap(x, d) < 0 {
			wl, _ := workloadByName(w)
			slower = append(slower, fmt.Sprintf("%s: uring %s, dev %s", wl.Title, fmtRange(x), fmtRange(d)))
		}
	}
	fig := "–"
	if n > 0 {
		wl, _ := workloadByName(worstW)
		fig = fmt.Sprintf("%d workloads; none slower beyond the spread; the lowest uring/dev: %s", n, wl.Title)
		if len(slower) > 0 {
			fig = fmt.Sprintf("%d of %d slower beyond the spread: %s", len(slower), n, strings.Join(slower, "; "))
		}
		if single {
			fig = "one run, no spread to tell noise by; by the medians alone: " + fig
		}
	}
	p("| every workload: uring not slower than dev beyond the run's spread | %s | %s (the lowest) | %s |\n", fig, fmtRatio(worst), met(len(slower) == 0, n > 0 && !single))
	p("\n")
	var served []string
	for _, k := range []string{kMmapfs, kMmapfsURing} {
		if s := readsServed(r.fig(k, dr)); s != "" {
			served = append(served, k+": "+s)
		}
	}
	if len(served) > 0 {
		p("Served by the daemon: READ requests mmapfs served in the last run of the daemon-served reads, against the reads fio made: %s.\n\n", strings.Join(served, "; "))
	}
}

// readsServed says how many READs the daemon served for how many client
// reads in f's last run; "" when f lacks either.
func readsServed(f *figure) string {
	if f == nil || len(f.Extra) == 0 || f.Ops == nil {
		return ""
	}
	ios := f.Extra[len(f.Extra)-1]["ios"]
	rd, ok := f.Ops["read"]
	if ios <= 0 || !ok {
		return ""
	}
	return fmt.Sprintf("%.0f READs for %.0f reads (%.2f a read)", rd.Count, ios, rd.Count/ios)
}

// costTable says what each configuration's rounds took, so that a run
// can be sized (scripts/bench/README.md).
func (r *report) costTable(p func(string, ...any)) {
	if len(r.Costs) == 0 {
		return
	}
	p("\n### What each part of the run cost (all its rounds: mounts, layouts, workloads)\n\n| configuration | workloads | time |\n|---|---:|---:|\n")
	var total float64
	for _, c := range r.Configs {
		s, ok := r.Costs[c.Name]
		if !ok {
			continue
		}
		total += s
		p("| %s | %d | %s |\n", c.Name, len(c.Workloads), fmtSeconds(s))
	}
	p("| all | | %s |\n", fmtSeconds(total))
}

func fmtSeconds(s float64) string {
	return time.Duration(s * float64(time.Second)).Round(time.Second).String()
}

// costTable says what each curve group, and each filesystem in it, took.
func (r *curveReport) costTable(p func(string, ...any)) {
	if len(r.Costs) == 0 {
		return
	}
	p("\n### What each part of the curves cost\n\n| group | filesystem | time |\n|---|---|---:|\n")
	var keys []string
	for k := range r.Costs {
		keys = append(keys, k)
	}
	order := func(k string) (int, int) {
		g, fs, _ := strings.Cut(k, " ")
		gi, fi := len(curveGroups), len(r.Configs)
		for i, x := range curveGroups {
			if x == g {
				gi = i
			}
		}
		if fs == "" {
			fi = -1
		}
		for i, c := range r.Configs {
			if c.Name == fs {
				fi = i
			}
		}
		return gi, fi
	}
	sort.Slice(keys, func(i, j int) bool {
		a, b := keys[i], keys[j]
		ga, fa := order(a)
		gb, fb := order(b)
		if ga != gb {
			return ga < gb
		}
		if fa != fb {
			return fa < fb
		}
		return a < b
	})
	for _, k := range keys {
		g, fs, _ := strings.Cut(k, " ")
		if fs == "" {
			fs = "**all** (with the layouts)"
		}
		p("| %s | %s | %s |\n", g, fs, fmtSeconds(r.Costs[k]))
	}
}
