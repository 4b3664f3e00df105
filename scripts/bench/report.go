package main

// The outputs: Markdown, CSV, JSON and the chart.

import (
	"bufio"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"

	"golang.org/x/sys/unix"
)

type machine struct {
	CPUs     int    `json:"nproc"`
	CPU      string `json:"cpu"`
	MemGiB   string `json:"memory"`
	Kernel   string `json:"kernel"`
	StoreFS  string `json:"store_filesystem"`
	Fio      string `json:"fio"`
	GoFuse   string `json:"go_fuse"`
	Mmapfs   string `json:"mmapfs"`
	Hostname string `json:"hostname"`
}

type report struct {
	Date      string                        `json:"date"`
	Machine   machine                       `json:"machine"`
	Settings  string                        `json:"settings"`
	Elapsed   string                        `json:"elapsed"`
	Quick     bool                          `json:"quick"`
	Notes     []string                      `json:"notes,omitempty"`
	Workloads []string                      `json:"workloads"`
	Configs   []fsConfig                    `json:"configs"`
	Figures   map[string]map[string]*figure `json:"figures"`
	// Best: per workload, the mmapfs configuration with the best median
	// (default mmapfs or one of the candidate switch sets).
	Best map[string]string `json:"best"`
	// BestKeeping: per workload, the best of the defaults and the
	// candidates that keep the defaults' promises (candidate.Keeps).
	BestKeeping map[string]string `json:"best_keeping"`
	// BestURing: per workload, the best of mmapfs's defaults and its
	// candidates under --transport uring.
	BestURing map[string]string `json:"best_uring,omitempty"`
	// URingWhy says why the uring rows were not measured; "" when they
	// were (or when the run is older than them: then they are missing).
	URingWhy string `json:"uring_not_measured,omitempty"`
	// Costs: per configuration, the seconds its rounds took in all.
	Costs map[string]float64 `json:"costs_s,omitempty"`
}

func machineInfo(base, fio string) machine {
	m := machine{CPUs: runtime.NumCPU()}
	m.Hostname, _ = os.Hostname()
	var u unix.Utsname
	if unix.Uname(&u) == nil {
		m.Kernel = unix.ByteSliceToString(u.Release[:])
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		var kb int64
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "MemTotal:") {
				fmt.Sscanf(strings.TrimPrefix(l, "MemTotal:"), "%d", &kb)
			}
		}
		m.MemGiB = fmt.Sprintf("%.1f GiB", float64(kb)/(1<<20))
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "model name") {
				m.CPU = strings.TrimSpace(strings.SplitN(l, ":", 2)[1])
				break
			}
		}
	}
	// The store filesystem: the mount in /proc/mounts that holds base.
	if f, err := os.Open("/proc/mounts"); err == nil {
		best := ""
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			fl := strings.Fields(sc.Text())
			if len(fl) < 3 {
				continue
			}
			mp := fl[1]
			if (base == mp || strings.HasPrefix(base, strings.TrimSuffix(mp, "/")+"/")) && len(mp) >= len(best) {
				best = mp
				m.StoreFS = fmt.Sprintf("%s on %s (%s, mounted at %s)", fl[2], fl[0], base, mp)
			}
		}
		f.Close()
	}
	if o, err := exec.Command(fio, "--version").Output(); err == nil {
		m.Fio = strings.TrimSpace(string(o))
	}
	if o, err := exec.Command("go", "list", "-m", "-f", "{{.Version}}", "github.com/hanwen/go-fuse/v2").Output(); err == nil {
		m.GoFuse = strings.TrimSpace(string(o))
	}
	if o, err := exec.Command("git", "rev-parse", "--short", "HEAD").Output(); err == nil {
		m.Mmapfs = strings.TrimSpace(string(o))
		if o, err := exec.Command("git", "status", "--porcelain", "--untracked-files=no").Output(); err == nil && len(o) > 0 {
			m.Mmapfs += " (with uncommitted changes)"
		}
	}
	return m
}

func (r *report) fig(fs, w string) *figure {
	if m := r.Figures[fs]; m != nil {
		if f := m[w]; f != nil && len(f.Runs) > 0 {
			return f
		}
	}
	return nil
}

func (r *report) pickBest() {
	r.Best = map[string]string{}
	r.BestKeeping = map[string]string{}
	r.BestURing = map[string]string{}
	for _, w := range r.Workloads {
		best, bv := "", -1.0
		keep, kv := "", -1.0
		ub, uv := "", -1.0
		for _, c := range r.Configs {
			f := r.fig(c.Name, w)
			if f == nil {
				continue
			}
			switch c.Kind {
			case kMmapfs, kMmapfsBest:
				if f.Median > bv {
					best, bv = c.Name, f.Median
				}
				if keeps(c.Name) && f.Median > kv {
					keep, kv = c.Name, f.Median
				}
			case kMmapfsURing, kMmapfsBestURing:
				if f.Median > uv {
					ub, uv = c.Name, f.Median
				}
			}
		}
		if best != "" {
			r.Best[w] = best
		}
		if keep != "" {
			r.BestKeeping[w] = keep
		}
		if ub != "" {
			r.BestURing[w] = ub
		}
	}
}

// candName is the candidate a configuration name ("mmapfs+SET",
// "mmapfs-uring+SET") runs; "" for the defaults.
func candName(name string) string {
	_, c, _ := strings.Cut(name, "+")
	return c
}

// keeps says the mmapfs configuration name keeps the defaults' promises:
// the defaults themselves, or a candidate marked so.
func keeps(name string) bool {
	if name == kMmapfs || name == kMmapfsURing {
		return true
	}
	c, ok := candidateByName(candName(name))
	return ok && c.Keeps
}

// ratio of fs's figure for w to ref's; 0 when either is missing.
func (r *report) ratio(fs, ref, w string) float64 {
	a, b := r.fig(fs, w), r.fig(ref, w)
	if a == nil || b == nil || b.Median == 0 {
		return 0
	}
	return a.Median / b.Median
}

func fmtRatio(v float64) string {
	switch {
	case v == 0:
		return "–"
	case v < 0.1:
		return fmt.Sprintf("%.3f", v)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}

// configTitle names an mmapfs configuration in a table: "defaults", or
// the candidate's name and its flags.
func configTitle(name string) string {
	if name == kMmapfs || name == kMmapfsURing {
		return "defaults"
	}
	return fmt.Sprintf("%s: `%s`", candName(name), switchesOf(name))
}

func switchesOf(name string) string {
	if name == kMmapfs || name == kMmapfsURing {
		return "(defaults)"
	}
	c, ok := candidateByName(candName(name))
	if !ok {
		return name
	}
	return strings.Join(c.Flags, " ")
}

// columns of the main table: the filesystem keys (mmapfs-best is resolved
// per workload).
var columns = []struct{ key, title string }{
	{kNative, "native"},
	{kLoopback, "go-fuse loopback (passthrough)"},
	{kLoopbackNP, "go-fuse loopback (no passthrough)"},
	{kMmapfs, "mmapfs (defaults)"},
	{kMmapfsBest, "mmapfs (best switches)"},
	{kMmapfsURing, "mmapfs uring (defaults)"},
	{kMmapfsBestURing, "mmapfs uring (best switches)"},
}

func (r *report) resolve(key, w string) string {
	switch key {
	case kMmapfsBest:
		return r.Best[w]
	case kMmapfsBestURing:
		return r.BestURing[w]
	}
	return key
}

func (r *report) markdown() string {
	var b strings.Builder
	p := func(f string, a ...any) { fmt.Fprintf(&b, f, a...) }
	p("## mmapfs benchmark, %s\n\n", r.Date)
	p("Machine: %d CPUs (%s), %s memory, kernel %s; store filesystem %s; %s; go-fuse %s; mmapfs %s.\n\n",
		r.Machine.CPUs, r.Machine.CPU, r.Machine.MemGiB, r.Machine.Kernel, r.Machine.StoreFS, r.Machine.Fio, r.Machine.GoFuse, r.Machine.Mmapfs)
	p("Settings: %s. Whole run: %s.\n\n", r.Settings, r.Elapsed)
	p("Each cell: the figure (median), then (ratio to native / ratio to go-fuse loopback without passthrough), all from this run.\n\n")
	p("| workload | unit |")
	for _, c := range columns {
		p(" %s |", c.title)
	}
	p(" best switches |\n|---|---|")
	for range columns {
		p("---:|")
	}
	p("---|\n")
	for _, w := range r.Workloads {
		wl, _ := workloadByName(w)
		p("| %s | %s |", wl.Title, wl.Unit)
		for _, c := range columns {
			fs := r.resolve(c.key, w)
			f := r.fig(fs, w)
			if f == nil {
				p(" – |")
				continue
			}
			noisy := ""
			if len(f.Runs) > 1 && f.Spread > 0.25 {
				noisy = "~"
			}
			p(" %s%s (%s / %s) |", noisy, fmtNum(f.Median), fmtRatio(r.ratio(fs, kNative, w)), fmtRatio(r.ratio(fs, kLoopbackNP, w)))
		}
		if bn := r.Best[w]; bn == kMmapfs {
			p(" defaults |\n")
		} else if bn != "" {
			p(" %s: `%s` |\n", candName(bn), switchesOf(bn))
		} else {
			p(" – |\n")
		}
	}
	p("\n`~`: that figure's runs spread more than 0.25 ((max-min)/median); on native, more than -max-spread makes the bench refuse to report. The mmapfs columns are `--transport dev` unless they say uring.\n\n")
	r.transportTable(p)
	r.targets17(p)

	p("### The defaults against the best switch set that keeps their promises (issue 16: at least 0.8)\n\n")
	p("The defaults promise the durability contract, that a SIGKILL of the daemon loses nothing that reached it, and that a change made in the store behind the mount is seen; sets that give one up (`--keep-cache`, `--auto-inval-data=false`, long timeouts, the writeback cache) are left out here.\n\n")
	p("| workload | defaults | best keeping the promises | defaults / it | ≥ 0.8 | best of all | defaults / best of all |\n|---|---:|---|---:|:---:|---|---:|\n")
	for _, w := range r.Workloads {
		wl, _ := workloadByName(w)
		d := r.fig(kMmapfs, w)
		kn, bn := r.BestKeeping[w], r.Best[w]
		if d == nil || kn == "" {
			continue
		}
		kr := r.ratio(kMmapfs, kn, w)
		p("| %s | %s | %s | %s | %s | %s | %s |\n", wl.Title, fmtNum(d.Median), configTitle(kn), fmtRatio(kr), yesNo(kr >= 0.8), configTitle(bn), fmtRatio(r.ratio(kMmapfs, bn, w)))
	}
	p("\n")

	p("### Ratios to native, against issue 5's targets\n\n")
	p("| workload | loopback (passthrough) | loopback (no passthrough) | (issue's loopback, no pt) | mmapfs (defaults) | mmapfs (best) | target | best meets target | best beats loopback (no pt) |\n")
	p("|---|---:|---:|---:|---:|---:|---:|:---:|:---:|\n")
	for _, w := range r.Workloads {
		wl, _ := workloadByName(w)
		bn := r.Best[w]
		bestR := r.ratio(bn, kNative, w)
		tgt, meets := "–", "–"
		if wl.Target > 0 {
			tgt = fmt.Sprintf("≥ %.2f", wl.Target)
			if bestR > 0 {
				meets = yesNo(bestR >= wl.Target)
			}
		}
		beats := "–"
		if lr := r.ratio(bn, kLoopbackNP, w); lr > 0 {
			beats = yesNo(lr > 1)
		}
		iss := "–"
		if v := issueLoopback[w]; v > 0 {
			iss = fmtRatio(v)
		}
		p("| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", wl.Title,
			fmtRatio(r.ratio(kLoopback, kNative, w)), fmtRatio(r.ratio(kLoopbackNP, kNative, w)), iss,
			fmtRatio(r.ratio(kMmapfs, kNative, w)), fmtRatio(bestR), tgt, meets, beats)
	}

	// The candidates, each workload's figure under each.
	var cands []fsConfig
	for _, c := range r.Configs {
		if c.Kind == kMmapfsBest {
			cands = append(cands, c)
		}
	}
	if len(cands) > 0 {
		p("\n### mmapfs switch sets tried (median; the best per workload is in the table above)\n\n| workload | defaults |")
		for _, c := range cands {
			p(" %s |", candName(c.Name))
		}
		p("\n|---|---:|")
		for range cands {
			p("---:|")
		}
		p("\n")
		for _, w := range r.Workloads {
			wl, _ := workloadByName(w)
			p("| %s |", wl.Title)
			for _, fs := range append([]string{kMmapfs}, names(cands)...) {
				if f := r.fig(fs, w); f != nil {
					p(" %s |", fmtNum(f.Median))
				} else {
					p(" |")
				}
			}
			p("\n")
		}
		p("\n")
		for _, c := range cands {
			kept := ""
			if keeps(c.Name) {
				kept = " (keeps the defaults' promises)"
			}
			p("- %s: `%s`%s\n", candName(c.Name), strings.Join(c.Flags, " "), kept)
		}
	}

	// What the daemon served, per workload (last run, default switches).
	p("\n### FUSE requests mmapfs (defaults) served per workload run (.mmapfs-stats, last run: count, mean µs)\n\n")
	p("| workload | requests |\n|---|---|\n")
	for _, w := range r.Workloads {
		wl, _ := workloadByName(w)
		f := r.fig(kMmapfs, w)
		if f == nil || len(f.Ops) == 0 {
			continue
		}
		p("| %s | %s |\n", wl.Title, opsSummary(f.Ops, 7))
	}
	r.costTable(p)
	var errs []string
	for _, c := range r.Configs {
		for _, w := range c.Workloads {
			if f := r.Figures[c.Name][w]; f != nil {
				for _, e := range f.Errors {
					errs = append(errs, fmt.Sprintf("%s %s: %s", c.Name, w, e))
				}
			}
		}
	}
	if len(errs)+len(r.Notes) > 0 {
		p("\n### Errors and notes\n\n")
		for _, e := range append(append([]string(nil), r.Notes...), errs...) {
			p("- %s\n", e)
		}
	}
	return b.String()
}

func names(c []fsConfig) []string {
	var n []string
	for _, x := range c {
		n = append(n, x.Name)
	}
	return n
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "**no**"
}

func opsSummary(ops map[string]opDelta, n int) string {
	type kv struct {
		k string
		v opDelta
	}
	var l []kv
	for k, v := range ops {
		l = append(l, kv{k, v})
	}
	sort.Slice(l, func(i, j int) bool { return l[i].v.Count > l[j].v.Count })
	var s []string
	for i, x := range l {
		if i == n {
			break
		}
		e := ""
		if x.v.Errors > 0 {
			e = fmt.Sprintf(", %.0f err", x.v.Errors)
		}
		s = append(s, fmt.Sprintf("%s %.0f (%.0f µs%s)", x.k, x.v.Count, x.v.MeanUs, e))
	}
	return strings.Join(s, ", ")
}

func (r *report) writeJSON(path string) error { return writeJSONFile(path, r) }

// writeJSONFile writes v to path as indented JSON.
func writeJSONFile(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

func (r *report) writeCSV(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := csv.NewWriter(f)
	_ = w.Write([]string{"date", "workload", "title", "unit", "filesystem", "switches", "best_for_workload", "median", "min", "max", "spread", "runs", "ratio_native", "ratio_loopback_nopt", "transport"})
	for _, wn := range r.Workloads {
		wl, _ := workloadByName(wn)
		for _, c := range r.Configs {
			f := r.fig(c.Name, wn)
			if f == nil {
				continue
			}
			var runs []string
			for _, v := range f.Runs {
				runs = append(runs, fmt.Sprintf("%g", v))
			}
			best := ""
			if r.Best[wn] == c.Name {
				best = "yes"
			}
			_ = w.Write([]string{r.Date, wn, wl.Title, wl.Unit, c.Name, strings.Join(c.Flags, " "), best,
				fmt.Sprintf("%.6g", f.Median), fmt.Sprintf("%.6g", f.Min), fmt.Sprintf("%.6g", f.Max), fmt.Sprintf("%.3f", f.Spread),
				strings.Join(runs, ";"), fmt.Sprintf("%.4f", r.ratio(c.Name, kNative, wn)), fmt.Sprintf("%.4f", r.ratio(c.Name, kLoopbackNP, wn)), c.Transport})
		}
	}
	w.Flush()
	if err := w.Error(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// chart draws ratios.png with gnuplot (Debian: gnuplot-nox): per workload,
// a bar per filesystem, its ratio to native, on a log scale.
func (r *report) chart(out string) error {
	gp, err := exec.LookPath("gnuplot")
	if err != nil {
		return fmt.Errorf("gnuplot not found (apt-get install -y gnuplot-nox)")
	}
	if r.Figures[kNative] == nil {
		return fmt.Errorf("no native figures to take ratios to")
	}
	var dat strings.Builder
	dat.WriteString("workload")
	cols := columns[1:]
	for _, c := range cols {
		fmt.Fprintf(&dat, "\t%q", c.title)
	}
	dat.WriteString("\n")
	for _, w := range r.Workloads {
		wl, _ := workloadByName(w)
		fmt.Fprintf(&dat, "%q", wl.Title)
		for _, c := range cols {
			v := r.ratio(r.resolve(c.key, w), kNative, w)
			if v == 0 {
				fmt.Fprintf(&dat, "\tNaN")
			} else {
				fmt.Fprintf(&dat, "\t%.4f", v)
			}
		}
		dat.WriteString("\n")
	}
	datPath := filepath.Join(out, "ratios.dat")
	if err := os.WriteFile(datPath, []byte(dat.String()), 0o644); err != nil {
		return err
	}
	title := fmt.Sprintf("mmapfs benchmark: ratio to native (log scale), %s, %d CPUs, kernel %s", r.Date, r.Machine.CPUs, r.Machine.Kernel)
	if r.Quick {
		title += " (QUICK)"
	}
	script := fmt.Sprintf(`set terminal pngcairo size 1400,700 font "sans,10"
set output %q
set title %q
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set logscale y
set yrange [0.001:4]
set ytics (0.001, 0.01, 0.1, 0.2, 0.5, 1, 2)
set grid ytics
set key top left horizontal
set xtics rotate by -30 scale 0
set ylabel "ratio to native"
set arrow from graph 0, first 1 to graph 1, first 1 nohead lw 2 lc rgb "black"
plot for [i=2:%d] %q using i:xtic(1) title columnheader(i)
`, filepath.Join(out, "ratios.png"), title, len(cols)+1, datPath)
	gpPath := filepath.Join(out, "ratios.gp")
	if err := os.WriteFile(gpPath, []byte(script), 0o644); err != nil {
		return err
	}
	if o, err := exec.Command(gp, gpPath).CombinedOutput(); err != nil {
		return fmt.Errorf("gnuplot: %v: %s", err, o)
	}
	return nil
}
