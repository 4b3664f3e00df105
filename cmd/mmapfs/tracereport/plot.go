package tracereport

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// plotBin is the resolution the Plot keeps requests at, ns.
const plotBin = int64(100e6)

// Bounds of what a Plot keeps.
const (
	maxPlotLabels = 8      // op and cause lines; the rest are "other"
	maxPlotPoints = 200000 // samples, throttle pauses, bins each
	plotTimeout   = 2 * time.Minute
)

// Plot is the Sink of --plot: it keeps the requests per 100 ms by op and
// cause, the samples of the mount's dirty and writeback bytes and the
// throttle pauses, and WritePNG draws them with gnuplot. Bounded: past
// maxPlotPoints of a kind it keeps no more (and says so in the title).
type Plot struct {
	bins      map[int64]map[string]uint64
	labels    map[string]uint64
	samples   []Sample
	pauses    [][2]int64 // Rel, pause ns
	truncated bool
	last      int64
}

// NewPlot returns an empty Plot.
func NewPlot() *Plot {
	return &Plot{bins: make(map[int64]map[string]uint64), labels: make(map[string]uint64)}
}

// Request implements Sink.
func (p *Plot) Request(r *Request) {
	b := r.Rel / plotBin
	m := p.bins[b]
	if m == nil {
		if len(p.bins) >= maxPlotPoints {
			p.truncated = true
			return
		}
		m = make(map[string]uint64)
		p.bins[b] = m
	}
	l := r.Op + " " + r.CauseLabel()
	m[l]++
	p.labels[l]++
	p.last = max(p.last, r.Rel)
}

// Event implements Sink: throttle pauses on the mount's BDI.
func (p *Plot) Event(e *Event) {
	if e.Type != EventThrottle || e.K.Pause <= 0 || e.Layer != layerMount {
		return
	}
	if len(p.pauses) >= maxPlotPoints {
		p.truncated = true
		return
	}
	p.pauses = append(p.pauses, [2]int64{e.Rel, e.K.Pause})
	p.last = max(p.last, e.Rel)
}

// Sample implements Sink.
func (p *Plot) Sample(s *Sample) {
	if len(p.samples) >= maxPlotPoints {
		p.truncated = true
		return
	}
	p.samples = append(p.samples, *s)
	p.last = max(p.last, s.Rel)
}

// Flush implements Sink.
func (p *Plot) Flush() {}

// ErrNoGnuplot is returned (wrapped) by WritePNG when gnuplot is not
// installed.
var ErrNoGnuplot = errors.New("gnuplot not found (install the gnuplot-nox package)")

// WritePNG draws the plot into the PNG file path: requests per second by
// op and cause (in bins of at least 100 ms, at most about 600 bins), the
// mount's dirty and writeback MiB, and the throttle pauses (ms, points).
// It writes the data and the script to a temporary directory, runs
// gnuplot there and removes the directory.
func (p *Plot) WritePNG(path string) error {
	gp, err := exec.LookPath("gnuplot")
	if err != nil {
		return fmt.Errorf("plot %s: %w", path, ErrNoGnuplot)
	}
	out, err := filepath.Abs(path)
	if err != nil {
		return fmt.Errorf("plot %s: %w", path, err)
	}
	dir, err := os.MkdirTemp("", "mmapfs-plot-")
	if err != nil {
		return fmt.Errorf("plot %s: %w", path, err)
	}
	defer os.RemoveAll(dir)
	if err := p.writeData(dir, out); err != nil {
		return fmt.Errorf("plot %s: %w", path, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), plotTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, gp, "plot.gp")
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("plot %s: gnuplot: %w: %s", path, err, strings.TrimSpace(stderr.String()))
	}
	return nil
}

// gpQuote quotes s as a gnuplot single-quoted string.
func gpQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// writeData writes the data files and the script plot.gp, which draws
// into out, into dir.
func (p *Plot) writeData(dir, out string) error {
	span := p.last + plotBin
	bin := plotBin
	if n := span / 600; n > bin {
		bin = (n + plotBin - 1) / plotBin * plotBin
	}
	// The labels with most requests get lines of their own.
	labels := make([]string, 0, len(p.labels))
	for l := range p.labels {
		labels = append(labels, l)
	}
	sort.Slice(labels, func(i, j int) bool {
		if p.labels[labels[i]] != p.labels[labels[j]] {
			return p.labels[labels[i]] > p.labels[labels[j]]
		}
		return labels[i] < labels[j]
	})
	col := make(map[string]int)
	cols := []string{}
	for _, l := range labels {
		if len(cols) < maxPlotLabels || len(labels) == maxPlotLabels+1 {
			col[l] = len(cols)
			cols = append(cols, l)
		} else {
			col[l] = maxPlotLabels
		}
	}
	if len(labels) > len(cols) {
		cols = append(cols, "other")
	}
	var req strings.Builder
	req.WriteString("time")
	for _, c := range cols {
		fmt.Fprintf(&req, " %q", c)
	}
	req.WriteString("\n")
	if len(cols) > 0 {
		rows := span/bin + 1
		for i := int64(0); i < rows; i++ {
			counts := make([]uint64, len(cols))
			for b := i * bin / plotBin; b < (i+1)*bin/plotBin; b++ {
				for l, n := range p.bins[b] {
					counts[col[l]] += n
				}
			}
			fmt.Fprintf(&req, "%.3f", float64(i*bin)/1e9)
			for _, n := range counts {
				fmt.Fprintf(&req, " %g", float64(n)/(float64(bin)/1e9))
			}
			req.WriteString("\n")
		}
	}
	var dirty strings.Builder
	for _, s := range p.samples {
		fmt.Fprintf(&dirty, "%.6f %.3f %.3f\n", float64(s.Rel)/1e9, float64(s.Dirty)/(1<<20), float64(s.Writeback)/(1<<20))
	}
	var pauses strings.Builder
	for _, x := range p.pauses {
		fmt.Fprintf(&pauses, "%.6f %.3f\n", float64(x[0])/1e9, float64(x[1])/1e6)
	}
	for name, data := range map[string]string{"requests.dat": req.String(), "dirty.dat": dirty.String(), "throttle.dat": pauses.String()} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o600); err != nil {
			return err
		}
	}

	title := "mmapfs trace"
	if p.truncated {
		title += " (truncated: too many points)"
	}
	var s strings.Builder
	fmt.Fprintf(&s, "set terminal pngcairo size 1200,900 noenhanced\nset output %s\n", gpQuote(out))
	fmt.Fprintf(&s, "set multiplot layout 3,1 title %s\n", gpQuote(title))
	fmt.Fprintf(&s, "set xrange [0:%.3f]\nset key outside right\nset grid\nset xlabel 'time (s)'\n"+
		"set lmargin at screen 0.08\nset rmargin at screen 0.72\nset yrange [0:*]\n", float64(span)/1e9)
	fmt.Fprintf(&s, "set ylabel %s\n", gpQuote(fmt.Sprintf("requests/s (%s bins)", Duration(bin))))
	switch {
	case len(cols) > 0 && cols[len(cols)-1] == "other":
		// The palette has 8 colours: "other" is grey.
		fmt.Fprintf(&s, "plot for [i=2:%d] 'requests.dat' using 1:i with lines lw 2 title columnhead(i), '' using 1:%d with lines lw 2 lc rgb 'gray50' title 'other'\n", len(cols), len(cols)+1)
	case len(cols) > 0:
		fmt.Fprintf(&s, "plot for [i=2:%d] 'requests.dat' using 1:i with lines lw 2 title columnhead(i)\n", len(cols)+1)
	default:
		s.WriteString("set label 1 'no requests' at graph 0.5,0.5 center\nset yrange [0:1]\nplot -1 notitle\nunset label 1\nset yrange [0:*]\n")
	}
	s.WriteString("set ylabel 'MiB'\n")
	if len(p.samples) > 0 {
		s.WriteString("plot 'dirty.dat' using 1:2 with lines lw 2 title 'mount dirty', '' using 1:3 with lines lw 2 title 'mount writeback'\n")
	} else {
		s.WriteString("set label 1 'no samples of the dirty bytes' at graph 0.5,0.5 center\nset yrange [0:1]\nplot -1 notitle\nunset label 1\nset yrange [0:*]\n")
	}
	s.WriteString("set ylabel 'throttle pause (ms)'\n")
	if len(p.pauses) > 0 {
		s.WriteString("plot 'throttle.dat' using 1:2 with points pt 7 ps 0.6 title 'balance_dirty_pages pause'\n")
	} else {
		s.WriteString("set label 1 'no throttle pauses' at graph 0.5,0.5 center\nset yrange [0:1]\nplot -1 notitle\nunset label 1\nset yrange [0:*]\n")
	}
	s.WriteString("unset multiplot\n")
	return os.WriteFile(filepath.Join(dir, "plot.gp"), []byte(s.String()), 0o600)
}
