// Command bench measures mmapfs against the store directory itself (native)
// and go-fuse's loopback filesystem (with and without kernel FUSE
// passthrough), on the same machine, with the same file sizes, in one run,
// and writes a Markdown table, a CSV, a JSON file and a PNG chart of the
// ratios to native. mmapfs runs under both transports, --transport dev
// and --transport uring (FUSE over io_uring; uring.go), with issue 17's
// targets drawn from the same run. Run it as root from the repository:
//
//	go run ./scripts/bench -out /tmp/mmapfs-bench    # full run (3 runs of everything)
//	go run ./scripts/bench -quick -out /tmp/bq       # smoke run, about a minute
//	go run ./scripts/bench -only seqwrite,native,mmapfs
//	go run ./scripts/bench -only curves -out /tmp/mc  # only the scaling curves (curves.go)
//
// Every figure is the median of -runs runs; the runs are rounds: each round
// mounts every filesystem afresh (a new store, a new mountpoint), runs each
// of its workloads once and unmounts it, so that a slow minute of a shared
// machine is spread over all filesystems rather than landing on one. The
// bench refuses to report (exit status 1, naming the figure) when a
// workload's runs on native spread more than -max-spread:
// (max-min)/median. Then it draws the scaling curves (curves.go): how each
// filesystem's cost grows with client threads, files in a directory, file
// size and files held open, into curves.md, curves.csv, curves.json and a
// PNG per curve.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"
)

type binaries struct{ mmapfs, loopback string }

// benchBaseDir holds this run's stores and mountpoints; removed on every exit.
var benchBaseDir string

// figure is one workload on one filesystem, over the runs.
type figure struct {
	FS       string               `json:"filesystem"`
	Switches string               `json:"switches"`
	Workload string               `json:"workload"`
	Unit     string               `json:"unit"`
	Runs     []float64            `json:"runs"`
	Extra    []map[string]float64 `json:"extra,omitempty"`
	Errors   []string             `json:"errors,omitempty"`
	Median   float64              `json:"median"`
	Min      float64              `json:"min"`
	Max      float64              `json:"max"`
	Spread   float64              `json:"spread"`
	// Ops: FUSE requests the mmapfs daemon served during the last run
	// (from .mmapfs-stats): count and mean latency per op.
	Ops map[string]opDelta `json:"ops,omitempty"`
}

type opDelta struct {
	Count  float64 `json:"count"`
	Errors float64 `json:"errors"`
	MeanUs float64 `json:"mean_us"`
}

func (f *figure) finish() {
	if len(f.Runs) == 0 {
		return
	}
	v := append([]float64(nil), f.Runs...)
	sort.Float64s(v)
	f.Min, f.Max = v[0], v[len(v)-1]
	if len(v)%2 == 1 {
		f.Median = v[len(v)/2]
	} else {
		f.Median = (v[len(v)/2-1] + v[len(v)/2]) / 2
	}
	if f.Median > 0 {
		f.Spread = (f.Max - f.Min) / f.Median
	}
}

func main() {
	if len(os.Args) > 2 && os.Args[1] == "-worker" {
		workerMain(os.Args[1:])
		return
	}
	out := flag.String("out", filepath.Join(os.TempDir(), "mmapfs-bench"), "directory for results.md, results.csv, results.json, ratios.png and the daemons' logs")
	runs := flag.Int("runs", 3, "runs per figure (the figure is their median); at least 3 unless -quick")
	sizeMiB := flag.Int64("size-mib", 256, "file size per fio job, MiB")
	runtimeF := flag.Duration("runtime", 3*time.Second, "runtime of each time-based fio job")
	files := flag.Int("files", 10000, "files of the create+stat+unlink workload")
	fileBytes := flag.Int64("file-bytes", 1024, "bytes written to each of those files")
	records := flag.Int("records", 1000000, "records of the logger workloads (each ends after these or -runtime, whichever comes first)")
	recordSize := flag.Int64("record-bytes", 512, "bytes per logger record")
	region := flag.Int64("region-bytes", 150*1024, "the logger's region of the file, bytes")
	maxSpread := flag.Float64("max-spread", 0.30, "refuse to report when a workload's runs on native spread more than this: (max-min)/median")
	quick := flag.Bool("quick", false, "smoke run: 16 MiB files, 1 s jobs, 1,000 files, 100,000 records, 1 run, one candidate switch set per workload, no refusal; the curves at a few small points")
	only := flag.String("only", "", "comma-separated workloads, curves and/or filesystems to run (curves: curves for all, or curve-threads, curve-dirsize, curve-filesize, curve-openfiles; filesystems: native, loopback, loopback-nopt, mmapfs, mmapfs-best, mmapfs-uring, mmapfs-uring-best); default all")
	base := flag.String("dir", os.TempDir(), "directory under which stores and mountpoints are made (its filesystem is the store filesystem)")
	mmapfsBin := flag.String("mmapfs-bin", "", "use this mmapfs binary instead of building ./cmd/mmapfs")
	loopbackBin := flag.String("loopback-bin", "", "use this loopback binary instead of building ./scripts/loopback")
	flag.StringVar(&enableURingParam, "enable-uring-param", enableURingParam, "the fuse module's enable_uring switch, turned on for the run if it is off and put back at its end (another file: to try that path without touching the machine's)")
	raw := flag.String("rerender", "", "do not measure: write the outputs from this results-raw.json of an earlier run (the refusal applies, with -max-spread)")
	flag.Usage = func() {
		fmt.Fprintf(os.Stderr, "usage: go run ./scripts/bench [flags]\n\nworkloads:")
		for _, w := range workloads {
			fmt.Fprintf(os.Stderr, " %s", w.Name)
		}
		fmt.Fprintf(os.Stderr, "\n\ncurves: %s (or %s: all)\n\nflags:\n", strings.Join(curveGroups, " "), cgAll)
		flag.PrintDefaults()
	}
	flag.Parse()

	if *raw != "" {
		os.Exit(rerender(*raw, *out, *maxSpread))
	}
	if *quick {
		set := map[string]bool{}
		flag.Visit(func(f *flag.Flag) { set[f.Name] = true })
		if !set["size-mib"] {
			*sizeMiB = 16
		}
		if !set["runtime"] {
			*runtimeF = time.Second
		}
		if !set["files"] {
			*files = 1000
		}
		if !set["records"] {
			*records = 100000
		}
		if !set["runs"] {
			*runs = 1
		}
	} else if *runs < 3 {
		fatalf("-runs %d: every figure is the median of at least 3 runs (use -quick for a smoke run)", *runs)
	}
	if os.Geteuid() != 0 {
		fatalf("run as root: the bench mounts filesystems and drops caches")
	}
	fioBin, err := exec.LookPath("fio")
	if err != nil {
		fatalf("fio not found: apt-get install -y fio")
	}

	selW, selFS, selC, err := parseOnly(*only)
	if err != nil {
		fatalf("%v", err)
	}
	// Workloads and curves: all of both unless -only names one of them.
	if selW == nil && selC != nil {
		selW = map[string]bool{}
	}
	if selC == nil {
		selC = map[string]bool{}
		if len(selW) == 0 {
			for _, g := range curveGroups {
				selC[g] = true
			}
		}
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	defer restoreURing()
	defer unmountAll()
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP) // SIGHUP: the terminal went
	go func() {
		s := <-sigs
		fmt.Fprintf(os.Stderr, "\nbench: %v: stopping, unmounting\n", s)
		cancel()
		select {
		case <-sigs:
		case <-time.After(60 * time.Second):
		}
		unmountAll()
		restoreURing()
		if benchBaseDir != "" {
			_ = os.RemoveAll(benchBaseDir)
		}
		os.Exit(130)
	}()

	if err := os.MkdirAll(filepath.Join(*out, "logs"), 0o755); err != nil {
		fatalf("%v", err)
	}
	bins, err := build(*out, *mmapfsBin, *loopbackBin)
	if err != nil {
		fatalf("%v", err)
	}
	self, err := os.Executable()
	if err != nil {
		fatalf("%v", err)
	}
	s := settings{
		size: *sizeMiB << 20, runtime: *runtimeF, files: *files, fileBytes: *fileBytes,
		records: *records, recordSize: *recordSize, region: *region, self: self, fio: fioBin,
	}
	if *base, err = filepath.Abs(*base); err != nil {
		fatalf("%v", err)
	}
	benchBase, err := os.MkdirTemp(*base, "mmapfs-bench-")
	if err != nil {
		fatalf("%v", err)
	}
	benchBaseDir = benchBase
	spreadDir(benchBase)
	defer os.RemoveAll(benchBase)

	// The filesystems, each with the workloads it runs.
	var wls []string
	for _, w := range workloads {
		if selW == nil || selW[w.Name] {
			wls = append(wls, w.Name)
		}
	}
	var cfgs []fsConfig
	for _, k := range []string{kNative, kLoopback, kLoopbackNP, kMmapfs, kMmapfsURing} {
		if len(wls) == 0 {
			break
		}
		if selFS == nil || selFS[k] {
			c := fsConfig{Name: k, Kind: k, Workloads: wls}
			if k == kMmapfsURing {
				c.Transport = "uring"
			}
			cfgs = append(cfgs, c)
		}
	}
	var notes []string
	have := mmapfsFlags(bins.mmapfs)
	if len(wls) > 0 && (selFS == nil || selFS[kMmapfsBest]) {
		byCand := map[string][]string{}
		for _, w := range wls {
			n := 0
			for _, cn := range bestFor[w] {
				if *quick && n == 1 {
					break
				}
				c, _ := candidateByName(cn)
				if ok, missing := supported(c, have); !ok {
					notes = append(notes, fmt.Sprintf("candidate %s skipped: this mmapfs has no %s", cn, missing))
					continue
				}
				byCand[cn] = append(byCand[cn], w)
				n++
			}
		}
		for _, c := range candidates {
			if len(byCand[c.Name]) > 0 {
				cfgs = append(cfgs, fsConfig{Name: "mmapfs+" + c.Name, Kind: kMmapfsBest, Flags: c.Flags, Workloads: byCand[c.Name]})
			}
		}
	}
	if len(wls) > 0 && (selFS == nil || selFS[kMmapfsBestURing]) {
		cfgs = append(cfgs, uringCandidates(wls, have)...)
	}
	ccfgs, cextra, cnotes := curveConfigs(selFS, have)
	pinTransport(cfgs, have)
	pinTransport(ccfgs, have)
	for _, g := range curveGroups {
		pinTransport(cextra[g], have)
	}
	// The uring rows need enable_uring: on for the run if it is off (and
	// put back on every exit path), or the rows say why they are missing.
	uringWhy := ""
	if wantsURing(cfgs, ccfgs, cextra, selC) {
		if !have["transport"] {
			uringWhy = "this mmapfs has no --transport"
		} else if err := benchURing.enable(enableURingParam); err != nil {
			uringWhy = err.Error()
		}
		if uringWhy != "" {
			notes = append(notes, "uring rows not measured: "+uringWhy)
			cfgs = dropURing(cfgs)
			ccfgs = dropURing(ccfgs)
			for g := range cextra {
				cextra[g] = dropURing(cextra[g])
			}
			cnotes = append(cnotes, "uring curves not measured: "+uringWhy)
		}
	}
	notes = dedup(notes)
	for _, n := range notes {
		fmt.Println("note:", n)
	}
	for _, n := range cnotes {
		fmt.Println("note:", n)
	}

	figs := map[string]map[string]*figure{}
	for _, c := range cfgs {
		figs[c.Name] = map[string]*figure{}
		for _, w := range c.Workloads {
			wl, _ := workloadByName(w)
			figs[c.Name][w] = &figure{FS: c.Name, Switches: strings.Join(c.Flags, " "), Workload: w, Unit: wl.Unit}
		}
	}

	start := time.Now()
	costs := map[string]float64{}
	for r := 1; r <= *runs; r++ {
		for _, c := range cfgs {
			if ctx.Err() != nil {
				break
			}
			t0 := time.Now()
			runRound(ctx, s, c, r, *runs, benchBase, bins, filepath.Join(*out, "logs"), figs[c.Name])
			costs[c.Name] += time.Since(t0).Seconds()
		}
	}
	if ctx.Err() != nil {
		fatalf("interrupted")
	}
	elapsed := time.Since(start)
	for _, m := range figs {
		for _, f := range m {
			f.finish()
		}
	}

	rep := &report{
		Date:      time.Now().UTC().Format("2006-01-02 15:04 UTC"),
		Machine:   machineInfo(*base, fioBin),
		Settings:  s.describe(*runs, *maxSpread, *quick),
		Elapsed:   elapsed.Round(time.Second).String(),
		Notes:     notes,
		Workloads: wls,
		Configs:   cfgs,
		Figures:   figs,
		Quick:     *quick,
		Costs:     costs,
		URingWhy:  uringWhy,
	}
	rep.pickBest()
	status := 0
	if len(wls) > 0 {
		status = emit(rep, *out, *maxSpread)
	}

	if len(selC) > 0 && len(ccfgs) > 0 {
		z := curveSizesFor(*quick, *runtimeF)
		cr := &curveRun{ctx: ctx, s: s, z: z, base: benchBase, bins: bins, logDir: filepath.Join(*out, "logs"), notes: cnotes, costs: map[string]float64{}}
		cstart := time.Now()
		var cs []fsConfig
		cs = append(cs, ccfgs...)
		for _, g := range curveGroups {
			if selC[g] {
				cs = append(cs, cextra[g]...)
			}
		}
		fmt.Printf("\ncurves (%s) on %s\n", strings.Join(sortedKeys(selC), ", "), strings.Join(names(cs), ", "))
		cr.run(selC, ccfgs, cextra)
		if ctx.Err() != nil {
			fatalf("interrupted")
		}
		q := ""
		if *quick {
			q = "QUICK smoke run (not figures to quote); "
		}
		crep := &curveReport{
			Date:     time.Now().UTC().Format("2006-01-02 15:04 UTC"),
			Machine:  machineInfo(*base, fioBin),
			Settings: q + z.describe(),
			Sizes:    z,
			Quick:    *quick,
			Elapsed:  time.Since(cstart).Round(time.Second).String(),
			Configs:  cs,
			Notes:    dedup(cr.notes),
			Points:   cr.points,
			Costs:    cr.costs,
		}
		status |= emitCurves(crep, *out)
	}

	unmountAll()
	restoreURing()
	_ = os.RemoveAll(benchBase)
	os.Exit(status)
}

func sortedKeys(m map[string]bool) []string {
	var o []string
	for _, g := range curveGroups {
		if m[g] {
			o = append(o, g)
		}
	}
	return o
}

// emit refuses (status 1) when native is too noisy to trust, and otherwise
// writes and prints the report; results-raw.json is written either way.
func emit(rep *report, out string, maxSpread float64) int {
	outAbs, _ := filepath.Abs(out)
	var refusals []string
	if nat := rep.Figures[kNative]; nat != nil && !rep.Quick {
		for _, w := range rep.Workloads {
			f := nat[w]
			switch {
			case f == nil:
			case len(f.Errors) > 0:
				refusals = append(refusals, fmt.Sprintf("native %s failed: %s", w, f.Errors[0]))
			case f.Spread > maxSpread:
				refusals = append(refusals, fmt.Sprintf("native %s: runs %s spread %.2f > -max-spread %.2f", w, fmtRuns(f.Runs), f.Spread, maxSpread))
			}
		}
	}
	if err := rep.writeJSON(filepath.Join(out, "results-raw.json")); err != nil {
		fmt.Fprintf(os.Stderr, "bench: %v\n", err)
		return 1
	}
	if len(refusals) > 0 {
		fmt.Fprintf(os.Stderr, "bench: REFUSING TO REPORT: the machine is too noisy to trust (raw runs in %s):\n", filepath.Join(outAbs, "results-raw.json"))
		for _, r := range refusals {
			fmt.Fprintln(os.Stderr, "  "+r)
		}
		return 1
	}
	md := rep.markdown()
	fmt.Println()
	fmt.Print(md)
	for _, err := range []error{
		os.WriteFile(filepath.Join(out, "results.md"), []byte(md), 0o644),
		rep.writeCSV(filepath.Join(out, "results.csv")),
		rep.writeJSON(filepath.Join(out, "results.json")),
	} {
		if err != nil {
			fmt.Fprintf(os.Stderr, "bench: %v\n", err)
			return 1
		}
	}
	if err := rep.chart(out); err != nil {
		fmt.Fprintf(os.Stderr, "bench: no chart: %v\n", err)
	}
	fmt.Printf("\nwrote %s/{results.md,results.csv,results.json,ratios.png}; whole run %s\n", outAbs, rep.Elapsed)
	return 0
}

// rerender re-applies the refusal and writes the outputs from a
// results-raw.json of an earlier run (e.g. with another -max-spread, which
// the report then states).
func rerender(raw, out string, maxSpread float64) int {
	b, err := os.ReadFile(raw)
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench: %v\n", err)
		return 1
	}
	var rep report
	if err := json.Unmarshal(b, &rep); err != nil {
		fmt.Fprintf(os.Stderr, "bench: %s: %v\n", raw, err)
		return 1
	}
	rep.Settings += fmt.Sprintf(" (re-rendered from %s with -max-spread %.2f)", filepath.Base(raw), maxSpread)
	rep.pickBest()
	if err := os.MkdirAll(out, 0o755); err != nil {
		fmt.Fprintf(os.Stderr, "bench: %v\n", err)
		return 1
	}
	return emit(&rep, out, maxSpread)
}

// runRound mounts c afresh, runs each of its workloads once, and unmounts.
func runRound(ctx context.Context, s settings, c fsConfig, r, runs int, benchBase string, bins binaries, logDir string, figs map[string]*figure) {
	fail := func(ws []string, err error) {
		for _, w := range ws {
			figs[w].Errors = append(figs[w].Errors, fmt.Sprintf("run %d: %v", r, err))
		}
		fmt.Printf("[%d/%d] %-24s %v\n", r, runs, c.Name, err)
	}
	m, err := mount(ctx, c, benchBase, bins, logDir)
	if err != nil {
		fail(c.Workloads, err)
		return
	}
	defer m.unmount()
	prepped := false
	for _, w := range c.Workloads {
		if ctx.Err() != nil {
			return
		}
		wl, _ := workloadByName(w)
		if !prepped && needsReadFiles(w) {
			jobs := 1
			for _, x := range c.Workloads {
				if x == "randread-2" {
					jobs = 2
				}
			}
			if _, _, err := runWorker(ctx, s, "prep", m.dir, "-files", fmt.Sprint(jobs), "-size", fmt.Sprint(s.size)); err != nil {
				fail([]string{w}, fmt.Errorf("laying out the read files: %v", err))
				continue
			}
			prepped = true
		}
		before := readOps(m)
		v, extra, err := runOnce(ctx, s, m, wl)
		if err != nil {
			fail([]string{w}, err)
			continue
		}
		f := figs[w]
		f.Runs = append(f.Runs, v)
		f.Extra = append(f.Extra, extra)
		if before != nil {
			f.Ops = opsDelta(before, readOps(m))
		}
		fmt.Printf("[%d/%d] %-24s %-15s %12s %s\n", r, runs, c.Name, w, fmtNum(v), wl.Unit)
	}
}

func needsReadFiles(w string) bool {
	switch w {
	case "seqread-warm", "seqread-cold", "randread-1", "randread-2", "mmap-randread", "randread-daemon":
		return true
	}
	return false
}

type statsOps struct {
	Ops map[string]struct {
		Count  float64 `json:"count"`
		Errors float64 `json:"errors"`
		MeanUs float64 `json:"mean_us"`
	} `json:"ops"`
}

// readOps reads the ops of an mmapfs mount's .mmapfs-stats; nil elsewhere.
func readOps(m *mountedFS) *statsOps {
	if !isMmapfsKind(m.cfg.Kind) {
		return nil
	}
	b, err := os.ReadFile(filepath.Join(m.mnt, ".mmapfs-stats"))
	if err != nil {
		return nil
	}
	var s statsOps
	if json.Unmarshal(b, &s) != nil {
		return nil
	}
	return &s
}

func opsDelta(a, b *statsOps) map[string]opDelta {
	if a == nil || b == nil {
		return nil
	}
	d := map[string]opDelta{}
	for op, y := range b.Ops {
		x := a.Ops[op]
		n := y.Count - x.Count
		if n <= 0 {
			continue
		}
		mean := (y.Count*y.MeanUs - x.Count*x.MeanUs) / n
		if mean < 0 {
			mean = 0 // rounding of the daemon's means
		}
		d[op] = opDelta{Count: n, Errors: y.Errors - x.Errors, MeanUs: mean}
	}
	return d
}

// parseOnly splits -only into workloads, filesystems and curve groups;
// nil: none named.
func parseOnly(s string) (map[string]bool, map[string]bool, map[string]bool, error) {
	if s == "" {
		return nil, nil, nil, nil
	}
	var ws, fs, cs map[string]bool
	for _, n := range strings.Split(s, ",") {
		n = strings.TrimSpace(n)
		if n == "" {
			continue
		}
		if _, ok := workloadByName(n); ok {
			if ws == nil {
				ws = map[string]bool{}
			}
			ws[n] = true
			continue
		}
		switch n {
		case cgAll, cgThreads, cgDirSize, cgFileSize, cgOpenFiles:
			if cs == nil {
				cs = map[string]bool{}
			}
			if n == cgAll {
				for _, g := range curveGroups {
					cs[g] = true
				}
			} else {
				cs[n] = true
			}
		case kNative, kLoopback, kLoopbackNP, kMmapfs, kMmapfsBest, kMmapfsURing, kMmapfsBestURing:
			if fs == nil {
				fs = map[string]bool{}
			}
			fs[n] = true
		default:
			return nil, nil, nil, fmt.Errorf("-only: %q is neither a workload, a curve nor a filesystem", n)
		}
	}
	return ws, fs, cs, nil
}

// build builds mmapfs and the loopback into out/bin, from the module this
// command is run in.
func build(out, mm, lb string) (binaries, error) {
	dir, _ := filepath.Abs(filepath.Join(out, "bin"))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return binaries{}, err
	}
	b := binaries{mmapfs: mm, loopback: lb}
	for _, t := range []struct {
		bin *string
		pkg string
	}{{&b.mmapfs, "./cmd/mmapfs"}, {&b.loopback, "./scripts/loopback"}} {
		if *t.bin != "" {
			continue
		}
		*t.bin = filepath.Join(dir, filepath.Base(t.pkg))
		cmd := exec.Command("go", "build", "-o", *t.bin, t.pkg)
		if o, err := cmd.CombinedOutput(); err != nil {
			return b, fmt.Errorf("go build %s (run from the repository root): %v\n%s", t.pkg, err, o)
		}
	}
	return b, nil
}

func (s settings) describe(runs int, maxSpread float64, quick bool) string {
	q := ""
	if quick {
		q = "QUICK smoke run (not figures to quote); "
	}
	return fmt.Sprintf("%smedian of %d runs; fio files %d MiB per job, time-based jobs %s; create+stat+unlink %d files of %d B; loggers %d records of %d B (or what they write in %s) in a %d B region; refuse when native spread > %.2f",
		q, runs, s.size>>20, s.runtime, s.files, s.fileBytes, s.records, s.recordSize, s.runtime, s.region, maxSpread)
}

func dedup(s []string) []string {
	seen := map[string]bool{}
	var o []string
	for _, x := range s {
		if !seen[x] {
			seen[x] = true
			o = append(o, x)
		}
	}
	return o
}

func fmtNum(v float64) string {
	switch {
	case v == 0:
		return "0"
	case math.Abs(v) >= 100:
		return fmt.Sprintf("%.0f", v)
	case math.Abs(v) >= 10:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}

func fmtRuns(v []float64) string {
	var s []string
	for _, x := range v {
		s = append(s, fmtNum(x))
	}
	return "[" + strings.Join(s, " ") + "]"
}

func fatalf(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "bench: "+format+"\n", a...)
	unmountAll()
	restoreURing()
	if benchBaseDir != "" {
		_ = os.RemoveAll(benchBaseDir)
	}
	os.Exit(1)
}
