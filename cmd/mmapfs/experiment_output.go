package main

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/mmapfs/mmapfs/fs/wire"
)

// experimentResult is what an experiment found: results.json.
type experimentResult struct {
	Workload     string       `json:"workload"`  // the workloads' names, separated by ", "
	Workloads    []string     `json:"workloads"` // in the order run
	Faults       []string     `json:"faults"`    // each fault set's rules (with --inject's) separated by ';', or none
	CutAt        string       `json:"cut_at"`    // "end" or a duration
	DurationSecs float64      `json:"duration_seconds"`
	Interrupted  bool         `json:"interrupted"` // stopped by a signal: Runs are the runs done
	Runs         []*runResult `json:"runs"`
}

// newExperimentResult is plan's result before its first run.
func newExperimentResult(plan *experimentPlan) *experimentResult {
	res := &experimentResult{CutAt: "end", DurationSecs: plan.duration.Seconds()}
	if plan.cutAt > 0 {
		res.CutAt = plan.cutAt.String()
	}
	for _, w := range plan.works {
		res.Workloads = append(res.Workloads, w.Name())
	}
	res.Workload = strings.Join(res.Workloads, ", ")
	for _, set := range plan.faults {
		res.Faults = append(res.Faults, runSpec{plan: plan, faults: set}.faultsLabel())
	}
	return res
}

// sample is one reading of a run's stats.
type sample struct {
	T        float64 `json:"t"` // seconds since the workload began
	Unsynced int64   `json:"unsynced_bytes"`
	Oldest   float64 `json:"oldest_unsynced_seconds"`
	// Cut marks the last sample: the state at the power cut, from the
	// cut's own report (what it put back or cut off; it has no age).
	Cut bool `json:"cut,omitempty"`
}

// runResult is one run of an experiment: a row of the table.
type runResult struct {
	Policy   string `json:"policy"`
	Switches string `json:"switches"`
	Run      int    `json:"run"`
	Workload string `json:"workload"`
	Faults   string `json:"faults"` // the mount's inject rules separated by ';', or none
	// Seconds is the time from the workload's start to where it stopped
	// (its end, or the moment it was frozen for the cut); CutEarly says
	// the cut came at --cut-at, before the workload ended.
	Seconds  float64 `json:"seconds"`
	CutEarly bool    `json:"cut_before_end"`
	// Unit is what Done counts (records, rows, B written); Acked the
	// part acknowledged (synced records, committed rows).
	Unit       string  `json:"unit"`
	Done       int64   `json:"done"`
	Acked      int64   `json:"acknowledged"`
	Throughput float64 `json:"throughput_per_second"` // Done per second

	FsyncCount int64   `json:"fsync_count"` // FUSE fsync requests
	FsyncP50Us float64 `json:"fsync_p50_us"`
	FsyncP99Us float64 `json:"fsync_p99_us"`
	MsyncCount int64   `json:"msync_count"` // the daemon's msync(MS_SYNC) and fdatasync calls
	MsyncP50Us float64 `json:"msync_p50_us"`
	MsyncP99Us float64 `json:"msync_p99_us"`

	MeanAtRisk int64   `json:"mean_at_risk_bytes"` // unsynced bytes, mean of the samples (the cut's the last)
	PeakAtRisk int64   `json:"peak_at_risk_bytes"`
	OldestSecs float64 `json:"oldest_unsynced_seconds"` // the oldest unsynced write any sample saw

	LostBytes    int64 `json:"lost_bytes"`     // what the cut put back or cut off
	PutBackBytes int64 `json:"put_back_bytes"` // put back to their last synced content
	CutOffBytes  int64 `json:"cut_off_bytes"`  // past the last synced size

	Kept          int64  `json:"kept"` // acknowledged units found after the remount
	AckedLost     int64  `json:"acknowledged_lost"`
	Torn          int64  `json:"torn"` // damaged records after the last intact one (loggers)
	Check         string `json:"check"`
	OK            bool   `json:"ok"`                       // what the workload promises held
	WorkloadError string `json:"workload_error,omitempty"` // the error the workload stopped at, before the cut
	// InjectHits counts the calls the mount's inject rules acted on
	// before the cut; nil for a run without rules.
	InjectHits *int64 `json:"inject_hits,omitempty"`
	// Retried counts the failed syncs the workload tried again and went
	// on after (the loggers' retry=); RetriedError is the first error.
	Retried      int64  `json:"retried_syncs,omitempty"`
	RetriedError string `json:"retried_error,omitempty"`
	// TxFailed counts the transactions that failed, which the workload
	// reported and went on after; TxFirstError is the first one's error,
	// TxAfter the commits after it.
	TxFailed     int64  `json:"failed_transactions,omitempty"`
	TxFirstError string `json:"first_transaction_error,omitempty"`
	TxLastError  string `json:"last_transaction_error,omitempty"`
	TxAfter      int64  `json:"committed_after_failure,omitempty"`

	Samples []sample `json:"samples"`
}

// summarize fills r's figures from its samples and last, the snapshot
// read at the moment of the cut.
func (r *runResult) summarize(last *wire.Snapshot, unit string) {
	var sum int64
	for _, s := range r.Samples {
		sum += s.Unsynced
		r.PeakAtRisk = max(r.PeakAtRisk, s.Unsynced)
		r.OldestSecs = max(r.OldestSecs, s.Oldest)
	}
	if len(r.Samples) > 0 {
		r.MeanAtRisk = sum / int64(len(r.Samples))
	}
	if last == nil {
		return
	}
	if o, ok := last.Ops["fsync"]; ok {
		r.FsyncCount, r.FsyncP50Us, r.FsyncP99Us = o.Count, o.P50Us, o.P99Us
	}
	r.MsyncCount = last.Figures.Get(wire.MsyncCalls)
	r.MsyncP50Us, r.MsyncP99Us = last.MsyncLatency.P50Us, last.MsyncLatency.P99Us
	if unit == unitBytes {
		// For fio and commands the work done is the bytes written.
		r.Done = last.Figures.Get(wire.BytesWritten)
	}
	if r.Seconds > 0 {
		r.Throughput = float64(r.Done) / r.Seconds
	}
}

// programText is what the run's program did about errors: the faults
// injected (with rules), the error it reported and whether it went on.
func (r *runResult) programText() string {
	var parts []string
	if r.InjectHits != nil {
		switch n := *r.InjectHits; n {
		case 0:
			parts = append(parts, "no fault hit")
		default:
			parts = append(parts, wire.Plural(int(n), "fault", "faults")+" hit")
		}
	}
	switch {
	case r.TxFailed > 0:
		failed := wire.Plural(int(r.TxFailed), "transaction failed", "transactions failed")
		if r.TxLastError != r.TxFirstError {
			failed += fmt.Sprintf(", the last with %q", r.TxLastError)
		}
		went := fmt.Sprintf("reported %q (%s), went on: %d committed after it", r.TxFirstError, failed, r.TxAfter)
		if r.WorkloadError != "" {
			went += fmt.Sprintf(", then stopped: %q", r.WorkloadError)
		}
		parts = append(parts, went)
	case r.WorkloadError != "":
		parts = append(parts, fmt.Sprintf("reported %q, stopped", r.WorkloadError))
	case r.Retried > 0:
		parts = append(parts, fmt.Sprintf("reported %q, tried again (%s), went on", r.RetriedError, wire.Plural(int(r.Retried), "time", "times")))
	case r.InjectHits != nil && *r.InjectHits > 0:
		parts = append(parts, "no error reported, went on")
	default:
		parts = append(parts, "no error")
	}
	return strings.Join(parts, ", ")
}

// throughputStr renders a throughput with its unit.
func throughputStr(v float64, unit string) string {
	if unit == unitBytes {
		return wire.BinarySize(int64(v)) + "/s"
	}
	return fmt.Sprintf("%.0f %s/s", v, unit)
}

// secondsStr renders an age: in ms below a second, "0" for none.
func secondsStr(s float64) string {
	switch {
	case s == 0:
		return "0"
	case s < 1:
		return fmt.Sprintf("%.0fms", s*1000)
	}
	return fmt.Sprintf("%.1fs", s)
}

// varies reports whether the runs differ in what key gives.
func varies(runs []*runResult, key func(*runResult) string) bool {
	for _, r := range runs {
		if key(r) != key(runs[0]) {
			return true
		}
	}
	return false
}

// title is the table's first line: the workloads, the one fault set if
// all runs have it (and it is not none), and when the power was cut.
func (res *experimentResult) title() string { return res.titled(false) }

// titled is the title; short (for the plots, whose keys name each run's
// workload and faults) counts several workloads and fault sets instead
// of naming them.
func (res *experimentResult) titled(short bool) string {
	var t strings.Builder
	switch {
	case len(res.Workloads) == 1:
		fmt.Fprintf(&t, "workload %s", res.Workloads[0])
	case short:
		fmt.Fprintf(&t, "%d workloads", len(res.Workloads))
	default:
		fmt.Fprintf(&t, "workloads %s", res.Workload)
	}
	switch {
	case len(res.Faults) == 1 && res.Faults[0] != noFaults:
		fmt.Fprintf(&t, ", faults %s", res.Faults[0])
	case len(res.Faults) > 1 && short:
		fmt.Fprintf(&t, ", %d fault sets", len(res.Faults))
	}
	if res.CutAt == "end" {
		t.WriteString(", power cut at the end of the workload")
	} else {
		fmt.Fprintf(&t, ", power cut %s after the workload began", res.CutAt)
	}
	return t.String()
}

// printResults prints the table: one row per run. The workload and
// faults columns are there when the runs differ in them.
func printResults(w io.Writer, res *experimentResult) error {
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintf(tw, "%s\n\n", res.title())
	byWork := len(res.Workloads) > 1 || varies(res.Runs, func(r *runResult) string { return r.Workload })
	byFaults := len(res.Faults) > 1 || varies(res.Runs, func(r *runResult) string { return r.Faults })
	var head []string
	if byWork {
		head = append(head, "workload")
	}
	if byFaults {
		head = append(head, "faults")
	}
	head = append(head, "policy", "switches", "run", "throughput", "fsyncs", "fsync p50/p99", "msyncs", "msync p50/p99", "at risk mean/peak", "oldest unsynced", "lost in cut", "check")
	fmt.Fprintln(tw, strings.Join(head, "\t"))
	for _, r := range res.Runs {
		sw := r.Switches
		if sw == "" {
			sw = "-"
		}
		var row []string
		if byWork {
			row = append(row, r.Workload)
		}
		if byFaults {
			row = append(row, r.Faults)
		}
		row = append(row, r.Policy, sw, strconv.Itoa(r.Run), throughputStr(r.Throughput, r.Unit),
			strconv.FormatInt(r.FsyncCount, 10), boundStr(r.FsyncP50Us)+"/"+boundStr(r.FsyncP99Us),
			strconv.FormatInt(r.MsyncCount, 10), boundStr(r.MsyncP50Us)+"/"+boundStr(r.MsyncP99Us),
			wire.BinarySize(r.MeanAtRisk)+"/"+wire.BinarySize(r.PeakAtRisk), secondsStr(r.OldestSecs),
			wire.BinarySize(r.LostBytes), r.Check)
		fmt.Fprintln(tw, strings.Join(row, "\t"))
	}
	if res.Interrupted {
		fmt.Fprintf(tw, "\n(interrupted: %s done)\n", wire.Plural(len(res.Runs), "run", "runs"))
	}
	return tw.Flush()
}

// csvHeader are the columns of results.csv.
var csvHeader = []string{"policy", "switches", "run", "workload", "faults", "seconds", "cut_before_end", "unit", "done", "acknowledged", "throughput_per_second",
	"fsync_count", "fsync_p50_us", "fsync_p99_us", "msync_count", "msync_p50_us", "msync_p99_us",
	"mean_at_risk_bytes", "peak_at_risk_bytes", "oldest_unsynced_seconds", "lost_bytes", "put_back_bytes", "cut_off_bytes",
	"kept", "acknowledged_lost", "torn", "ok", "check", "workload_error", "inject_hits", "retried_syncs", "retried_error",
	"failed_transactions", "first_transaction_error", "last_transaction_error", "committed_after_failure"}

// csvRow is r's row of results.csv, in csvHeader's order.
func (r *runResult) csvRow() []string {
	i := func(n int64) string { return strconv.FormatInt(n, 10) }
	f := func(v float64) string { return strconv.FormatFloat(v, 'f', -1, 64) }
	hits := "" // no rules
	if r.InjectHits != nil {
		hits = i(*r.InjectHits)
	}
	return []string{r.Policy, r.Switches, strconv.Itoa(r.Run), r.Workload, r.Faults, f(r.Seconds), strconv.FormatBool(r.CutEarly), r.Unit, i(r.Done), i(r.Acked), f(r.Throughput),
		i(r.FsyncCount), f(r.FsyncP50Us), f(r.FsyncP99Us), i(r.MsyncCount), f(r.MsyncP50Us), f(r.MsyncP99Us),
		i(r.MeanAtRisk), i(r.PeakAtRisk), f(r.OldestSecs), i(r.LostBytes), i(r.PutBackBytes), i(r.CutOffBytes),
		i(r.Kept), i(r.AckedLost), i(r.Torn), strconv.FormatBool(r.OK), r.Check, r.WorkloadError, hits, i(r.Retried), r.RetriedError,
		i(r.TxFailed), r.TxFirstError, r.TxLastError, i(r.TxAfter)}
}

// writeResults writes results.csv, results.json and the plots into dir.
func writeResults(dir string, res *experimentResult) error {
	var c bytes.Buffer
	cw := csv.NewWriter(&c)
	if err := cw.Write(csvHeader); err != nil {
		return err
	}
	for _, r := range res.Runs {
		if err := cw.Write(r.csvRow()); err != nil {
			return err
		}
	}
	cw.Flush()
	if err := cw.Error(); err != nil {
		return err
	}
	if res.Runs == nil {
		res.Runs = []*runResult{}
	}
	j, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return err
	}
	for name, data := range map[string][]byte{"results.csv": c.Bytes(), "results.json": append(j, '\n')} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			return fmt.Errorf("--out: %w", err)
		}
	}
	if len(res.Runs) == 0 {
		return nil
	}
	return plotResults(dir, res)
}

// plotWait bounds gnuplot.
const plotWait = time.Minute

// plotResults draws at-risk.png and throughput-lost.png into dir with
// gnuplot, from data files it writes into a temporary directory.
func plotResults(dir string, res *experimentResult) error {
	gp, err := exec.LookPath("gnuplot")
	if err != nil {
		return fmt.Errorf("--out: the plots need gnuplot (Debian: apt-get install gnuplot-nox): %w", err)
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	tmp, err := os.MkdirTemp("", "mmapfs-experiment-plot-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)

	// A run's label names what sets it apart from the others.
	byWork := varies(res.Runs, func(r *runResult) string { return r.Workload })
	byFaults := varies(res.Runs, func(r *runResult) string { return r.Faults })
	byPolicy := varies(res.Runs, func(r *runResult) string { return r.Policy })
	bySwitches := varies(res.Runs, func(r *runResult) string { return r.Switches })
	byRun := varies(res.Runs, func(r *runResult) string { return strconv.Itoa(r.Run) })
	label := func(r *runResult) string {
		var l []string
		if byWork {
			l = append(l, r.Workload)
		}
		if byFaults {
			l = append(l, "faults "+r.Faults)
		}
		if byPolicy || len(l) == 0 {
			l = append(l, r.Policy)
		}
		if bySwitches && r.Switches != "" {
			l = append(l, r.Switches)
		}
		if byRun {
			l = append(l, fmt.Sprintf("#%d", r.Run))
		}
		return strings.Join(l, " ")
	}
	// With several workloads or fault sets, or many runs, the labels are
	// long: each run is numbered in the order of the table, its point in
	// the second plot labelled with its number, and the keys say which
	// run a number is.
	numbered := byWork || byFaults || len(res.Runs) > 8
	key := func(i int, r *runResult) string {
		if numbered {
			return fmt.Sprintf("%d: %s", i+1, label(r))
		}
		return label(r)
	}
	pointLabel := func(i int, r *runResult) string {
		if numbered {
			return strconv.Itoa(i + 1)
		}
		return label(r)
	}
	var risk, points strings.Builder
	for i, r := range res.Runs {
		if i > 0 {
			risk.WriteString("\n\n") // a gnuplot data block per run
			points.WriteString("\n\n")
		}
		for _, s := range r.Samples {
			fmt.Fprintf(&risk, "%.3f %.3f\n", s.T, float64(s.Unsynced)/1024)
		}
		// A string in a gnuplot data file is in double quotes.
		fmt.Fprintf(&points, "%.3f %.3f \"%s\"\n", float64(r.LostBytes)/1024, r.Throughput, strings.ReplaceAll(pointLabel(i, r), `"`, "'"))
	}
	for name, data := range map[string]string{"risk.dat": risk.String(), "points.dat": points.String()} {
		if err := os.WriteFile(filepath.Join(tmp, name), []byte(data), 0o600); err != nil {
			return err
		}
	}
	var units []string
	for _, r := range res.Runs {
		u := r.Unit
		if u == unitBytes {
			u = "bytes written"
		}
		if !slices.Contains(units, u) {
			units = append(units, u)
		}
	}
	unit := strings.Join(units, " or ")
	var s strings.Builder
	title := res.titled(true)
	// The key grows with the runs (and the plot with it), below the plot.
	fmt.Fprintf(&s, "set terminal pngcairo size %d,%d noenhanced\nset grid\nset key below left Left reverse maxcols 1\n", 1200, 600+20*len(res.Runs))
	fmt.Fprintf(&s, "set output %s\nset title %s\nset xlabel 'time since the workload began (s)'\nset ylabel 'bytes at risk (KiB)'\nset yrange [0:*]\n",
		gpQuote(filepath.Join(abs, "at-risk.png")), gpQuote("bytes at risk: "+title))
	s.WriteString("plot ")
	for i, r := range res.Runs {
		if i > 0 {
			s.WriteString(", ")
		}
		// gnuplot has 8 line colours: past them, the dashes differ.
		fmt.Fprintf(&s, "'risk.dat' index %d using 1:2 with steps lw 2 lc %d dt %d title %s", i, i%8+1, i/8+1, gpQuote(key(i, r)))
	}
	s.WriteString("\n")
	fmt.Fprintf(&s, "set output %s\nset title %s\nset xlabel 'bytes lost in the cut (KiB)'\nset ylabel %s\nset xrange [0:*]\nset yrange [0:*]\nset offsets graph 0.02, graph 0.3, graph 0.1, 0\n",
		gpQuote(filepath.Join(abs, "throughput-lost.png")), gpQuote("throughput against bytes lost: "+title), gpQuote(unit+" per second"))
	if byWork && !slices.ContainsFunc(res.Runs, func(r *runResult) bool { return r.Throughput <= 0 }) {
		// Records and rows per second differ by orders of magnitude (a
		// log scale has no room for a run that did nothing).
		s.WriteString("set logscale y\nset yrange [*:*]\n")
	}
	if numbered {
		s.WriteString("plot ")
		for i, r := range res.Runs {
			fmt.Fprintf(&s, "'points.dat' index %d using 1:2 with points pt 7 ps 1.5 lc %d title %s, ", i, i%8+1, gpQuote(key(i, r)))
		}
		s.WriteString("'points.dat' using 1:2:3 with labels offset char 1,1 left notitle\n")
	} else {
		s.WriteString("plot 'points.dat' using 1:2 with points pt 7 ps 1.5 notitle, '' using 1:2:3 with labels offset char 1,1 left notitle\n")
	}
	if err := os.WriteFile(filepath.Join(tmp, "plot.gp"), []byte(s.String()), 0o600); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), plotWait)
	defer cancel()
	cmd := exec.CommandContext(ctx, gp, "plot.gp")
	cmd.Dir = tmp
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("--out: gnuplot: %w: %s", err, strings.TrimSpace(stderr.String()))
	}
	return nil
}

// gpQuote quotes s as a gnuplot single-quoted string.
func gpQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// progress shows the run under way and an estimate of the time left on
// a terminal (and nothing elsewhere).
type progress struct {
	tty      *os.File // nil: not a terminal
	total    int
	runs     int           // runs done
	spent    time.Duration // by the runs done
	runBegan time.Time     // of the run under way
	current  string
	stop     chan struct{} // closed by done: the line's goroutine ends
	stopped  chan struct{}
	guess    time.Duration // a run's length before one is done
}

func newProgress(w io.Writer, plan *experimentPlan) *progress {
	p := &progress{total: plan.total(), guess: plan.duration + 2*time.Second}
	if plan.cutAt > 0 {
		p.guess = plan.cutAt + 2*time.Second
	}
	if f, ok := w.(*os.File); ok && isTerminal(f) {
		p.tty = f
	}
	return p
}

// start shows run i of the plan as under way.
func (p *progress) start(i int, spec runSpec) {
	if p.tty == nil {
		return
	}
	what := []string{spec.work.Name()}
	if f := spec.faultsLabel(); f != noFaults {
		what = append(what, "faults "+f)
	}
	what = append(what, spec.policy)
	if sw := strings.Join(spec.switches, " "); sw != "" {
		what = append(what, sw)
	}
	p.current = fmt.Sprintf("run %d/%d: %s #%d", i, p.total, strings.Join(what, " "), spec.run)
	p.stop, p.stopped = make(chan struct{}), make(chan struct{})
	p.runBegan = time.Now()
	runBegan := p.runBegan
	go func() {
		defer close(p.stopped)
		t := time.NewTicker(500 * time.Millisecond)
		defer t.Stop()
		for {
			per := p.guess
			if p.runs > 0 {
				per = p.spent / time.Duration(p.runs)
			}
			left := time.Duration(p.total-p.runs)*per - time.Since(runBegan)
			fmt.Fprintf(p.tty, "\r\033[K%s, about %v left", p.current, max(left, 0).Round(time.Second))
			select {
			case <-p.stop:
				return
			case <-t.C:
			}
		}
	}()
}

// done ends the line of the run under way.
func (p *progress) done() {
	if p.tty == nil || p.stop == nil {
		return
	}
	close(p.stop)
	<-p.stopped
	p.stop = nil
	p.runs++
	p.spent += time.Since(p.runBegan)
}

// finish clears the progress line.
func (p *progress) finish() {
	if p.tty != nil {
		fmt.Fprint(p.tty, "\r\033[K")
	}
}
