package main

// The outputs of the curves: curves.md, curves.csv, curves.json and a PNG
// per curve (gnuplot).

import (
	"encoding/csv"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
)

// curveMetric is one figure of a curve's points.
type curveMetric struct {
	Key   string
	Title string
	Unit  string
	// Cost: a cost per operation (lower is better); else a rate or an
	// amount. The tables' last row compares the last point to the first.
	Cost bool
	LogY bool
}

// curveDef describes a curve: its x and the metrics shown of it.
type curveDef struct {
	Name    string
	Group   string
	Title   string
	XTitle  string
	XBytes  bool // x is a size in bytes
	Metrics []curveMetric
}

var curveDefs = []curveDef{
	{Name: "threads-randread", Group: cgThreads, Title: "4 KiB random reads of one file not in the page cache, against client threads", XTitle: "client threads",
		Metrics: []curveMetric{
			{Key: "iops", Title: "throughput", Unit: "IOPS", LogY: true},
			{Key: "lat_mean_us", Title: "mean latency", Unit: "µs", Cost: true, LogY: true},
			{Key: "cached_after_pct", Title: "store file in the page cache after the run", Unit: "%"},
			{Key: "read_amplification", Title: "bytes brought into the page cache per byte read", Unit: "×", LogY: true},
		}},
	{Name: "threads-createstat", Group: cgThreads, Title: "create+stat+unlink (a directory per thread), against client threads", XTitle: "client threads",
		Metrics: []curveMetric{
			{Key: "ops_per_s", Title: "throughput", Unit: "ops/s", LogY: true},
		}},
	{Name: "dirsize", Group: cgDirSize, Title: "per-operation cost against files in the directory", XTitle: "files in the directory",
		Metrics: []curveMetric{
			{Key: "create_us", Title: "create", Unit: "µs/op", Cost: true, LogY: true},
			{Key: "stat_us", Title: "stat (not cached by the kernel)", Unit: "µs/op", Cost: true, LogY: true},
			{Key: "readdir_us_per_entry", Title: "readdir", Unit: "µs/entry", Cost: true, LogY: true},
			{Key: "unlink_us", Title: "unlink", Unit: "µs/op", Cost: true, LogY: true},
			{Key: "rss_anon_mib", Title: "daemon's anonymous memory (RssAnon) after them", Unit: "MiB", LogY: true},
		}},
	{Name: "filesize", Group: cgFileSize, Title: "open + first 4 KiB read, and the daemon's memory, against file size (sparse files)", XTitle: "file size", XBytes: true,
		Metrics: []curveMetric{
			{Key: "open_read_p50_us", Title: "open + first read, median", Unit: "µs", Cost: true, LogY: true},
			{Key: "open_read_us", Title: "open + first read, mean", Unit: "µs", Cost: true, LogY: true},
			{Key: "rss_mib", Title: "daemon RSS (VmRSS), the files held open", Unit: "MiB", LogY: true},
			{Key: "rss_anon_mib", Title: "of which anonymous (RssAnon; the rest is mapped page cache)", Unit: "MiB", LogY: true},
			{Key: "mmapfs_mapped_bytes", Title: "mmapfs: bytes mapped", Unit: "B", LogY: true},
		}},
	{Name: "openfiles", Group: cgOpenFiles, Title: "open + first read, and the daemon's memory, against files held open", XTitle: "files held open",
		Metrics: []curveMetric{
			{Key: "open_read_us", Title: "open + first read, mean", Unit: "µs", Cost: true, LogY: true},
			{Key: "opened", Title: "files it could open", Unit: "files", LogY: true},
			{Key: "rss_mib", Title: "daemon RSS (VmRSS), the files held open", Unit: "MiB", LogY: true},
			{Key: "rss_anon_mib", Title: "of which anonymous (RssAnon; the rest is mapped page cache)", Unit: "MiB", LogY: true},
			{Key: "fds", Title: "daemon descriptors", Unit: "fds", LogY: true},
			{Key: "maps", Title: "daemon mappings (/proc/PID/maps)", Unit: "maps", LogY: true},
			{Key: "mmapfs_evictions", Title: "mmapfs: blobs unmapped while open (evictions)", Unit: "blobs"},
			{Key: "reread_us", Title: "then a read of every file held (a READ each)", Unit: "µs", Cost: true, LogY: true},
			{Key: "reread_mmapfs_reopens", Title: "mmapfs: blobs reopened by handle in that pass", Unit: "reopens"},
		}},
}

func curveDefByName(n string) (curveDef, bool) {
	for _, d := range curveDefs {
		if d.Name == n {
			return d, true
		}
	}
	return curveDef{}, false
}

func (d curveDef) fmtX(x float64) string {
	if d.XBytes {
		return fmtBytes(x)
	}
	return fmt.Sprintf("%g", x)
}

// curveReport is curves.json.
type curveReport struct {
	Date     string       `json:"date"`
	Machine  machine      `json:"machine"`
	Settings string       `json:"settings"`
	Sizes    curveSizes   `json:"sizes"`
	Quick    bool         `json:"quick"`
	Elapsed  string       `json:"elapsed"`
	Configs  []fsConfig   `json:"configs"`
	Notes    []string     `json:"notes,omitempty"`
	Points   []curvePoint `json:"points"`
	// Costs: seconds per "GROUP FILESYSTEM" and per "GROUP" (curveRun).
	Costs map[string]float64 `json:"costs_s,omitempty"`
}

// xs is the sorted set of x of curve c.
func (r *curveReport) xs(c string) []float64 {
	seen := map[float64]bool{}
	var o []float64
	for _, p := range r.Points {
		if p.Curve == c && !seen[p.X] {
			seen[p.X] = true
			o = append(o, p.X)
		}
	}
	sort.Float64s(o)
	return o
}

// fss are the filesystems with points on curve c, in the order of Configs.
func (r *curveReport) fss(c string) []string {
	var o []string
	for _, cfg := range r.Configs {
		for _, p := range r.Points {
			if p.Curve == c && p.FS == cfg.Name {
				o = append(o, cfg.Name)
				break
			}
		}
	}
	return o
}

func (r *curveReport) at(c, fs string, x float64) *curvePoint {
	for i := range r.Points {
		p := &r.Points[i]
		if p.Curve == c && p.FS == fs && p.X == x {
			return p
		}
	}
	return nil
}

func (r *curveReport) value(c, fs string, x float64, key string) (float64, bool) {
	p := r.at(c, fs, x)
	if p == nil {
		return 0, false
	}
	v, ok := p.Values[key]
	return v, ok
}

func (r *curveReport) markdown() string {
	var b strings.Builder
	p := func(f string, a ...any) { fmt.Fprintf(&b, f, a...) }
	p("## How the cost grows: mmapfs scaling curves, %s\n\n", r.Date)
	p("Machine: %d CPUs (%s), %s memory, kernel %s; store filesystem %s; %s; go-fuse %s; mmapfs %s.\n\n",
		r.Machine.CPUs, r.Machine.CPU, r.Machine.MemGiB, r.Machine.Kernel, r.Machine.StoreFS, r.Machine.Fio, r.Machine.GoFuse, r.Machine.Mmapfs)
	p("Settings: %s. Whole run of the curves: %s.\n\n", r.Settings, r.Elapsed)
	p("One run per point, each on a fresh mount (a new daemon, a new FUSE superblock) of one store laid out natively beforehand. Filesystems:\n\n")
	for _, c := range r.Configs {
		sw := strings.Join(c.Flags, " ")
		switch c.Kind {
		case kNative:
			sw = "the store directory itself"
		case kLoopbackNP:
			sw = "go-fuse's loopback, CAP_PASSTHROUGH disabled"
		case kMmapfs, kMmapfsURing:
			if sw == "" {
				sw = "defaults"
			}
		}
		if c.Transport != "" {
			sw += ", --transport " + c.Transport
		}
		p("- `%s`: %s\n", c.Name, sw)
	}
	p("\n")
	for _, d := range curveDefs {
		xs := r.xs(d.Name)
		fss := r.fss(d.Name)
		if len(xs) == 0 {
			continue
		}
		p("### %s\n\n", d.Title)
		for _, m := range d.Metrics {
			any := false
			for _, fs := range fss {
				for _, x := range xs {
					if _, ok := r.value(d.Name, fs, x, m.Key); ok {
						any = true
					}
				}
			}
			if !any {
				continue
			}
			p("%s (%s):\n\n| %s |", m.Title, m.Unit, d.XTitle)
			for _, fs := range fss {
				p(" %s |", fs)
			}
			p("\n|---:|")
			for range fss {
				p("---:|")
			}
			p("\n")
			for _, x := range xs {
				p("| %s |", d.fmtX(x))
				for _, fs := range fss {
					pt := r.at(d.Name, fs, x)
					v, ok := r.value(d.Name, fs, x, m.Key)
					switch {
					case ok && pt.Error != "":
						p(" %s ! |", fmtMetric(v, m))
					case ok:
						p(" %s |", fmtMetric(v, m))
					case pt != nil && pt.Error != "":
						p(" failed |")
					default:
						p(" – |")
					}
				}
				p("\n")
			}
			if len(xs) > 1 && m.Unit != "%" {
				x0, x1 := xs[0], xs[len(xs)-1]
				p("| ×%s/%s |", d.fmtX(x1), d.fmtX(x0))
				for _, fs := range fss {
					a, ok0 := r.value(d.Name, fs, x0, m.Key)
					z, ok1 := r.value(d.Name, fs, x1, m.Key)
					if ok0 && ok1 && a > 0 {
						p(" ×%s |", fmtNum(z/a))
					} else {
						p(" – |")
					}
				}
				p("\n")
			}
			p("\n")
		}
		// The errors of this curve.
		var errs []string
		for _, pt := range r.Points {
			if pt.Curve == d.Name && pt.Error != "" {
				errs = append(errs, fmt.Sprintf("%s at %s: %s", pt.FS, d.fmtX(pt.X), pt.Error))
			}
		}
		if len(errs) > 0 {
			p("`!`/failed: the point ended in an error:\n\n")
			for _, e := range errs {
				p("- %s\n", e)
			}
			p("\n")
		}
	}
	p("(In each table, the last row is the last point's figure over the first's: for a cost per operation, more than ×1 means it grows with the size.)\n")
	r.costTable(p)
	if len(r.Notes) > 0 {
		p("\n### Notes\n\n")
		for _, n := range r.Notes {
			p("- %s\n", n)
		}
	}
	return b.String()
}

func fmtMetric(v float64, m curveMetric) string {
	if m.Unit == "B" {
		return fmtBytes(v)
	}
	return fmtNum(v)
}

func (r *curveReport) writeJSON(path string) error { return writeJSONFile(path, r) }

// writeCSV writes every value of every point, one a row.
func (r *curveReport) writeCSV(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := csv.NewWriter(f)
	_ = w.Write([]string{"date", "curve", "filesystem", "switches", "x", "metric", "value", "error"})
	for _, p := range r.Points {
		keys := make([]string, 0, len(p.Values))
		for k := range p.Values {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		if len(keys) == 0 {
			_ = w.Write([]string{r.Date, p.Curve, p.FS, p.Switches, fmt.Sprintf("%g", p.X), "", "", p.Error})
		}
		for _, k := range keys {
			_ = w.Write([]string{r.Date, p.Curve, p.FS, p.Switches, fmt.Sprintf("%g", p.X), k, fmt.Sprintf("%.6g", p.Values[k]), p.Error})
		}
	}
	w.Flush()
	if err := w.Error(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// charts draws curve-NAME.png per curve: a panel per metric, a line per
// filesystem, log scales (base 2 for threads).
func (r *curveReport) charts(out string) ([]string, error) {
	gp, err := exec.LookPath("gnuplot")
	if err != nil {
		return nil, fmt.Errorf("gnuplot not found (apt-get install -y gnuplot-nox)")
	}
	var made []string
	for _, d := range curveDefs {
		xs := r.xs(d.Name)
		fss := r.fss(d.Name)
		if len(xs) == 0 {
			continue
		}
		var metrics []curveMetric
		for _, m := range d.Metrics {
			for _, fs := range fss {
				for _, x := range xs {
					if _, ok := r.value(d.Name, fs, x, m.Key); ok {
						goto have
					}
				}
			}
			continue
		have:
			metrics = append(metrics, m)
		}
		if len(metrics) == 0 {
			continue
		}
		var script strings.Builder
		png := filepath.Join(out, "curve-"+d.Name+".png")
		cols := 1
		if len(metrics) > 1 {
			cols = 2
		}
		rows := (len(metrics) + cols - 1) / cols
		title := fmt.Sprintf("%s\n%s, %d CPUs, kernel %s", d.Title, r.Date, r.Machine.CPUs, r.Machine.Kernel)
		if r.Quick {
			title += " (QUICK)"
		}
		fmt.Fprintf(&script, "set terminal pngcairo size %d,%d font \"sans,10\"\nset output %q\n", 700*cols, 120+380*rows, png)
		fmt.Fprintf(&script, "set multiplot layout %d,%d title %q\nset grid\nset key below font \",9\"\nset style data linespoints\n", rows, cols, title)
		if d.XBytes {
			script.WriteString("set logscale x 2\nset format x \"%.0b%B\"\n")
		} else if d.Group == cgThreads {
			script.WriteString("set logscale x 2\n")
		} else {
			script.WriteString("set logscale x 10\n")
		}
		fmt.Fprintf(&script, "set xlabel %q\n", d.XTitle)
		for i, m := range metrics {
			var dat strings.Builder
			dat.WriteString("x")
			for _, fs := range fss {
				fmt.Fprintf(&dat, "\t%q", fs)
			}
			dat.WriteString("\n")
			for _, x := range xs {
				fmt.Fprintf(&dat, "%g", x)
				for _, fs := range fss {
					if v, ok := r.value(d.Name, fs, x, m.Key); ok && (!m.LogY || v > 0) {
						fmt.Fprintf(&dat, "\t%g", v)
					} else {
						dat.WriteString("\tNaN")
					}
				}
				dat.WriteString("\n")
			}
			datPath := filepath.Join(out, fmt.Sprintf("curve-%s-%d.dat", d.Name, i))
			if err := os.WriteFile(datPath, []byte(dat.String()), 0o644); err != nil {
				return made, err
			}
			if m.LogY {
				script.WriteString("set logscale y\n")
			} else {
				script.WriteString("unset logscale y\n")
			}
			fmt.Fprintf(&script, "set title %q\nset ylabel %q\n", m.Title, m.Unit)
			fmt.Fprintf(&script, "plot for [i=2:%d] %q using 1:i title columnheader(i) lw 2 pt 7\n", len(fss)+1, datPath)
		}
		script.WriteString("unset multiplot\n")
		gpPath := filepath.Join(out, "curve-"+d.Name+".gp")
		if err := os.WriteFile(gpPath, []byte(script.String()), 0o644); err != nil {
			return made, err
		}
		if o, err := exec.Command(gp, gpPath).CombinedOutput(); err != nil {
			return made, fmt.Errorf("gnuplot %s: %v: %s", gpPath, err, o)
		}
		made = append(made, filepath.Base(png))
	}
	return made, nil
}

// emitCurves writes and prints the curves' outputs.
func emitCurves(r *curveReport, out string) int {
	md := r.markdown()
	fmt.Println()
	fmt.Print(md)
	for _, err := range []error{
		os.WriteFile(filepath.Join(out, "curves.md"), []byte(md), 0o644),
		r.writeCSV(filepath.Join(out, "curves.csv")),
		r.writeJSON(filepath.Join(out, "curves.json")),
	} {
		if err != nil {
			fmt.Fprintf(os.Stderr, "bench: %v\n", err)
			return 1
		}
	}
	pngs, err := r.charts(out)
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench: curve charts: %v\n", err)
	}
	outAbs, _ := filepath.Abs(out)
	fmt.Printf("\nwrote %s/{curves.md,curves.csv,curves.json,%s}; curves %s\n", outAbs, strings.Join(pngs, ","), r.Elapsed)
	return 0
}
