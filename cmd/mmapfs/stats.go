package main

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/mmapfs/mmapfs/fs"
	"github.com/mmapfs/mmapfs/fs/wire"
)

func newStatsCommand() *cobra.Command {
	return statsCommand(runStats)
}

// statsCommand is the stats command, with run called on the mountpoint,
// the --watch interval (0: print once) and --json.
func statsCommand(run func(cmd *cobra.Command, mnt string, every time.Duration, asJSON bool) error) *cobra.Command {
	var watch time.Duration
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "stats [--watch [INTERVAL]] [--json] MOUNTPOINT",
		Short: "Print the live figures of an mmapfs mount",
		Long: `Print the figures of the mmapfs mount at MOUNTPOINT, read from its stats
file (MOUNTPOINT/` + fs.StatsName + `): once as a table, or with --watch one line per
interval with the rates since the last one, as vmstat prints them.

--watch takes the interval as --watch 2s, --watch=2s or -w 2s; bare, it is 1s.
Sizes are in binary units (KiB, MiB: 1 MiB = 1048576 bytes). Latency
quantiles are upper bounds ("<128µs"): the edge of the power-of-two bucket
they fall in. The FUSE request counts include the requests of reading the
stats file itself. In the --watch lines, faults counts the faults turned
into errors during the interval; every other column is a rate per second
or a level at the end of the interval.`,
		Args: func(cmd *cobra.Command, args []string) error {
			_, _, err := watchArgs(cmd, watch, args)
			return err
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			mnt, every, err := watchArgs(cmd, watch, args)
			if err != nil {
				return err
			}
			return run(cmd, mnt, every, asJSON)
		},
	}
	cmd.Flags().DurationVarP(&watch, "watch", "w", 0, "print a line every `INTERVAL` (--watch 2s, --watch=2s, -w 2s; bare: 1s) until interrupted")
	cmd.Flags().Lookup("watch").NoOptDefVal = bareWatch.String()
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the raw JSON (with --watch: one document per interval)")
	return cmd
}

// runStats prints the figures of the mount at mnt: once, or every
// interval until interrupted.
func runStats(cmd *cobra.Command, mnt string, every time.Duration, asJSON bool) error {
	path := filepath.Join(mnt, fs.StatsName)
	if every > 0 {
		return watchStats(cmd.OutOrStdout(), path, every, asJSON, nil)
	}
	s, raw, err := readStats(path)
	if err != nil {
		return err
	}
	if asJSON {
		_, err := cmd.OutOrStdout().Write(raw)
		return err
	}
	return printStats(cmd.OutOrStdout(), s)
}

// bareWatch is the interval of a --watch given without one.
const bareWatch = time.Second

// watchArgs returns the mountpoint and the --watch interval (0: print
// once) of a stats command line. The flag's value is optional, so pflag
// leaves the word after a bare --watch (or -w) to the arguments: with two
// arguments and --watch given bare, the one that parses as a duration is
// the interval ("--watch 2s MNT", "MNT -w 2s").
func watchArgs(cmd *cobra.Command, watch time.Duration, args []string) (mnt string, every time.Duration, err error) {
	given := cmd.Flags().Changed("watch")
	switch {
	case len(args) == 1:
		mnt = args[0]
	case len(args) == 2 && given && watch == bareWatch:
		if d, perr := time.ParseDuration(args[0]); perr == nil {
			watch, mnt = d, args[1]
		} else if d, perr := time.ParseDuration(args[1]); perr == nil {
			watch, mnt = d, args[0]
		} else {
			return "", 0, fmt.Errorf("accepts 1 MOUNTPOINT, received 2 (%q, %q), neither of them an interval for --watch", args[0], args[1])
		}
	case len(args) == 2:
		err := fmt.Errorf("accepts 1 MOUNTPOINT, received 2 (%q, %q)", args[0], args[1])
		if _, perr := time.ParseDuration(args[0]); perr == nil && !given {
			err = fmt.Errorf("%w; to watch every %s, write --watch %s", err, args[0], args[0])
		}
		return "", 0, err
	default:
		return "", 0, fmt.Errorf("accepts 1 MOUNTPOINT, received %d", len(args))
	}
	if given && watch <= 0 {
		return "", 0, fmt.Errorf("--watch %v: out of range: the interval must be more than 0 (e.g. 1s or 500ms); leave --watch out to print once", watch)
	}
	return mnt, watch, nil
}

func readStats(path string) (*wire.Snapshot, []byte, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, mountError("stats", filepath.Dir(path), err)
	}
	var s wire.Snapshot
	if err := json.Unmarshal(raw, &s); err != nil {
		return nil, nil, fmt.Errorf("decoding %s: %w", path, err)
	}
	return &s, raw, nil
}

// deadMount reports whether err is what the kernel answers on a FUSE
// mount whose daemon is gone: ENOTCONN once the connection is aborted;
// ECONNABORTED for a request the abort ended; and, on a mount served over
// io_uring (--transport uring), in the milliseconds before the abort,
// while the kernel tears the dead daemon's rings down, ECANCELED for a
// request it had handed to a ring entry whose task was exiting
// (fs/fuse/dev_uring.c, fuse_uring_send_in_task).
func deadMount(err error) bool {
	return errors.Is(err, syscall.ENOTCONN) || errors.Is(err, syscall.ECONNABORTED) || errors.Is(err, syscall.ECANCELED)
}

// mountError explains why cmd (stats, powercut) could not use the mount
// at mnt: for a dead mount, what to do; otherwise what mnt is (missing,
// not a mount point, a mount of another filesystem, not the caller's). It
// wraps err.
func mountError(cmd, mnt string, err error) error {
	switch {
	case deadMount(err):
		return fmt.Errorf("%s: %s is a dead mount: the mmapfs daemon that served it is gone (%w); detach it with `fusermount3 -u %s` (or `umount %s`), then mount the store again", cmd, mnt, err, mnt, mnt)
	case (errors.Is(err, syscall.EACCES) || errors.Is(err, syscall.EPERM)) && cmd == "stats":
		return fmt.Errorf("%s: no permission to read the figures of %s (%w): only the user running its daemon may, and other users only if it was mounted with --allow-other", cmd, mnt, err)
	case errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EPERM):
		return fmt.Errorf("%s: no permission to use the control file of %s (%w): only the user running its daemon may, and root only if it was mounted with --allow-other", cmd, mnt, err)
	}
	if _, serr := os.Stat(mnt); serr != nil {
		return fmt.Errorf("%s: %w", cmd, serr)
	}
	at, exact, ok := mountAt(mnt)
	switch {
	case !ok:
	case exact && at.fsType == mmapfsType:
		return fmt.Errorf("%s: %w", cmd, err)
	case exact:
		return fmt.Errorf("%s: %s is not an mmapfs mount: it is a %s mount of %s", cmd, mnt, at.fsType, at.source)
	case at.fsType == mmapfsType:
		return fmt.Errorf("%s: %s is not an mmapfs mount but a directory inside the one at %s: name its mountpoint", cmd, mnt, at.mountPoint)
	}
	return fmt.Errorf("%s: %s is not an mmapfs mount: nothing is mounted there (mount a store with `mmapfs mount STORE %s`)", cmd, mnt, mnt)
}

// mmapfsType is the filesystem type of an mmapfs mount in
// /proc/self/mountinfo.
const mmapfsType = "fuse.mmapfs"

// mountEntry is the mount that holds a path.
type mountEntry struct {
	mountPoint, fsType, source string
}

// mountAt returns the mount that holds the directory dir (symlinks
// resolved, as the kernel lists mountpoints), and whether dir is its
// mountpoint.
func mountAt(dir string) (e mountEntry, exact, ok bool) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return e, false, false
	}
	if r, err := filepath.EvalSymlinks(abs); err == nil {
		abs = r
	}
	m, ok, err := fs.MountHolding(abs)
	if err != nil || !ok {
		return e, false, false
	}
	e = mountEntry{mountPoint: m.Mountpoint, fsType: m.FSType, source: m.Source}
	return e, e.mountPoint == abs, true
}

// within reports whether path is dir or beneath it.
func within(path, dir string) bool {
	return path == dir || dir == "/" || strings.HasPrefix(path, dir+"/")
}

// printStats prints one snapshot as a table: the settings; a row for
// each Row of wire's figures, in the list's order; the bdi and the
// power-cut simulation; the rows of quiet figures (error counts), only
// when they are not 0; the files at risk; the FUSE ops.
func printStats(w io.Writer, s *wire.Snapshot) error {
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	sw := s.Switches
	rows := [][2]string{
		{"store", s.Store},
		{"policy", s.Policy},
		{"profile", cmp.Or(sw.Profile, "-")},
		{"switches", fmt.Sprintf("keep-cache=%v auto-cache=%v auto-inval-data=%v direct-io=%v writeback-cache=%v madvise=%s populate=%v attr-timeout=%gs entry-timeout=%gs max-write=%d read-only=%v allow-other=%v unsafe-ignore-fsync=%v",
			sw.KeepCache, sw.AutoCache, sw.AutoInvalData, sw.DirectIO, sw.WritebackCache, sw.Madvise, sw.Populate, sw.AttrTimeoutSecs, sw.EntryTimeoutSecs, sw.MaxWrite, sw.ReadOnly, sw.AllowOther, sw.UnsafeIgnoreFsync)},
	}
	if t := s.Transport; t != nil {
		rows = append(rows, [2]string{"transport", transportText(t)})
	}
	figures, quiet := figureRows(s)
	rows = append(rows, figures...)
	if b := s.BDI; b != nil {
		rows = append(rows, [2]string{"bdi " + b.Device, fmt.Sprintf("max_ratio=%d%% strict_limit=%d read_ahead_kb=%d max_bytes=%s", b.MaxRatio, b.StrictLimit, b.ReadaheadKB, wire.BinarySize(b.MaxBytes))})
	}
	if p := s.PowerCut; p != nil {
		v := fmt.Sprintf("on: %s of last synced content kept, %s a cut would change", wire.BinarySize(p.SavedBytes), wire.Plural(p.Files, "file", "files"))
		if p.Cut {
			v = "the power was cut: files can no longer change"
		}
		if p.RecordErrors > 0 {
			v += fmt.Sprintf("; %d record errors, last: %s", p.RecordErrors, p.LastRecordErr)
		}
		rows = append(rows, [2]string{"power-cut sim", v})
	}
	rows = append(rows, quiet...)
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\n", r[0], r[1])
	}
	if len(s.AtRisk) > 0 {
		fmt.Fprintln(tw)
		printAtRisk(tw, s.AtRisk, 10)
	}
	fmt.Fprintf(tw, "\nFUSE op\tcount\terrors\tmean\tp50\tp90\tp99\n")
	for _, op := range slices.Sorted(maps.Keys(s.Ops)) {
		o := s.Ops[op]
		if o.Count == 0 {
			fmt.Fprintf(tw, "%s\t0\t%d\t-\t-\t-\t-\n", op, o.Errors)
			continue
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t%s\t%s\t%s\n", op, o.Count, o.Errors, durStr(o.MeanUs), boundStr(o.P50Us), boundStr(o.P90Us), boundStr(o.P99Us))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(s.Inject) > 0 {
		fmt.Fprintf(w, "\nfault injection\n")
	}
	return printInjectRules(w, s.Inject, false)
}

// transportText is the table's transport row: the transport, and under
// uring the requests each queue served and its depth in use (entries
// busy now, the most at once) of its entries, the large READs its
// entries served off its CPU, and the entries whose thread could not be
// pinned to the queue's CPU.
func transportText(t *wire.Transport) string {
	if len(t.Queues) == 0 {
		return t.Name
	}
	var total uint64
	var qs []string
	for _, q := range t.Queues {
		total += q.Requests
		v := fmt.Sprintf("queue %d: %d, %d of %d entries busy (most %d)", q.Queue, q.Requests, q.Busy, q.Entries, q.MaxBusy)
		if q.Away > 0 {
			v += fmt.Sprintf(", %d large READs served off its CPU", q.Away)
		}
		if q.Pinned < q.Entries {
			v += fmt.Sprintf(", %d unpinned", q.Entries-q.Pinned)
		}
		qs = append(qs, v)
	}
	return fmt.Sprintf("%s, %d queues: %d requests; %s", t.Name, len(t.Queues), total, strings.Join(qs, "; "))
}

// figureRows returns the table's rows of wire's figures, in the order in
// which the list first names each Row: the rows with a figure that is not
// quiet, and the rows of quiet figures only, which are left out when all
// of their figures are 0.
func figureRows(s *wire.Snapshot) (rows, quiet [][2]string) {
	type row struct {
		label string
		text  strings.Builder
		quiet bool // every figure of it is quiet
	}
	var order []*row
	byLabel := map[string]*row{}
	for i, f := range wire.Figures() {
		if f.Row == "" {
			continue
		}
		r := byLabel[f.Row]
		if r == nil {
			r = &row{label: f.Row, quiet: true}
			byLabel[f.Row] = r
			order = append(order, r)
		}
		r.quiet = r.quiet && f.Quiet
		id := wire.ID(i)
		if f.Quiet && s.Figures.Get(id) == 0 {
			continue
		}
		r.text.WriteString(part(&f, s.Figures, id))
	}
	for _, r := range order {
		text := r.text.String()
		if whole := rowText[r.label]; whole != nil {
			text = whole(s, text)
		}
		switch {
		case !r.quiet:
			rows = append(rows, [2]string{r.label, text})
		case text != "":
			quiet = append(quiet, [2]string{r.label, text})
		}
	}
	return rows, quiet
}

// part is figure f's text in its row: its Part (or its value alone) with
// the value id has in v, and the last error's message if f has one.
func part(f *wire.Figure, v wire.Values, id wire.ID) string {
	n := v.Get(id)
	var arg any
	format := f.Part
	switch f.Unit {
	case wire.Bytes:
		arg = wire.BinarySize(n)
		format = cmp.Or(format, "%s")
	case wire.Seconds:
		if format == "" {
			return time.Duration(n).Round(time.Second).String()
		}
		arg = v.Float(id)
	default:
		arg = n
		format = cmp.Or(format, "%d")
	}
	text := fmt.Sprintf(format, arg)
	if f.Last != "" {
		text += ", last: " + v.LastError(id)
	}
	return text
}

// rowText renders the rows whose text is more than their figures' parts
// in the list's order; each gets the snapshot and those parts.
var rowText = map[string]func(s *wire.Snapshot, parts string) string{
	"msync": func(s *wire.Snapshot, parts string) string {
		if l := s.MsyncLatency; l.Count > 0 {
			parts += fmt.Sprintf(", mean %s, p99 %s", durStr(l.MeanUs), boundStr(l.P99Us))
		}
		return parts
	},
	"mappings": func(s *wire.Snapshot, _ string) string {
		f := s.Figures
		return fmt.Sprintf("%d (%d blobs open), %s mapped, %s resident", f.Get(wire.Mappings), f.Get(wire.OpenBlobs), wire.BinarySize(f.Get(wire.MappedBytes)), wire.BinarySize(f.Get(wire.ResidentBytes)))
	},
	"mount bdi": func(s *wire.Snapshot, parts string) string {
		if s.BDISources == nil {
			return parts
		}
		return bdiText(s.BDISources.Mount, parts)
	},
	"store bdi": func(s *wire.Snapshot, parts string) string {
		if s.BDISources == nil {
			return parts
		}
		return bdiText(s.BDISources.Store, parts)
	},
	"resident blobs": func(s *wire.Snapshot, _ string) string {
		f := s.Figures
		if f.Get(wire.MaxResident) == 0 {
			return fmt.Sprintf("%d, no bound", f.Get(wire.ResidentBlobs))
		}
		return fmt.Sprintf("%d of at most %d; %d dropped, %d reopened", f.Get(wire.ResidentBlobs), f.Get(wire.MaxResident), f.Get(wire.Evictions), f.Get(wire.Reopens))
	},
}

// bdiText is the text of a bdi's row: its figures' parts and where
// they came from, or why they are not there.
func bdiText(src wire.BDISource, parts string) string {
	switch src.Source {
	case wire.SourceDebugfs:
		return fmt.Sprintf("%s (%s, from debugfs)", parts, src.Device)
	case wire.SourceNone:
		return "no backing device: " + src.Note
	}
	return fmt.Sprintf("%s: not measured: %s", src.Device, src.Note)
}

// watchColumns are the figures of the --watch columns after the first
// (FUSE requests per second), in order.
var watchColumns = func() []wire.ID {
	var ids []wire.ID
	for i, f := range wire.Figures() {
		if f.Watch.At > 0 {
			ids = append(ids, wire.ID(i))
		}
	}
	slices.SortFunc(ids, func(a, b wire.ID) int { return a.Figure().Watch.At - b.Figure().Watch.At })
	return ids
}()

// watchHeader names the columns of a --watch line, with their units: MiB
// are 2^20 bytes, as mib divides them. Each column is two spaces and its
// title wide, its value right-aligned under the title.
var watchHeader = func() string {
	h := "  ops/s"
	for _, id := range watchColumns {
		h += "  " + columnTitle(id.Figure())
	}
	return h
}()

// columnTitle is the title of f's --watch column, with its unit.
func columnTitle(f *wire.Figure) string {
	switch {
	case f.Unit == wire.Bytes && f.Kind == wire.Counter && !f.Watch.Delta:
		return f.Watch.Title + " MiB/s"
	case f.Unit == wire.Bytes:
		return f.Watch.Title + " MiB"
	case f.Unit == wire.Seconds && f.Kind == wire.Counter && !f.Watch.Delta:
		return f.Watch.Title + " s/s"
	case f.Unit == wire.Seconds:
		return f.Watch.Title + " s"
	case f.Kind == wire.Counter && !f.Watch.Delta:
		return f.Watch.Title + "/s"
	}
	return f.Watch.Title
}

// watchStats prints a header and then a line every interval with the rates
// since the previous one, until stop is closed (never, from the CLI: the
// user interrupts it).
func watchStats(w io.Writer, path string, every time.Duration, asJSON bool, stop <-chan struct{}) error {
	prev, _, err := readStats(path)
	if err != nil {
		return err
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for line := 0; ; line++ {
		select {
		case <-stop:
			return nil
		case <-t.C:
		}
		cur, raw, err := readStats(path)
		if err != nil {
			return err
		}
		if asJSON {
			if _, err := w.Write(raw); err != nil {
				return err
			}
			prev = cur
			continue
		}
		if line%20 == 0 {
			if _, err := fmt.Fprintln(w, watchHeader); err != nil {
				return err
			}
		}
		if _, err := fmt.Fprintln(w, watchLine(prev, cur, every)); err != nil {
			return err
		}
		prev = cur
	}
}

// watchLine is the --watch line for the interval from prev to cur,
// nominally every long, column for column as watchHeader names them: a
// counter's rate per second (or its increase, for a Delta column), a
// gauge's level at cur; bytes in MiB.
func watchLine(prev, cur *wire.Snapshot, every time.Duration) string {
	dt := cur.Figures.Float(wire.Uptime) - prev.Figures.Float(wire.Uptime)
	if dt <= 0 {
		dt = every.Seconds()
	}
	const mib = float64(1 << 20)
	line := fmt.Sprintf("%7.0f", float64(totalOps(cur)-totalOps(prev))/dt)
	for _, id := range watchColumns {
		f := id.Figure()
		v := cur.Figures.Float(id)
		if f.Kind == wire.Counter {
			v -= prev.Figures.Float(id)
			if !f.Watch.Delta {
				v /= dt
			}
		}
		var text string
		switch {
		case f.Unit == wire.Bytes:
			text = strconv.FormatFloat(v/mib, 'f', 1, 64)
		case f.Unit == wire.Seconds:
			text = strconv.FormatFloat(v, 'f', 1, 64)
		case f.Kind == wire.Counter && !f.Watch.Delta:
			text = strconv.FormatFloat(v, 'f', 0, 64)
		default:
			text = strconv.FormatInt(int64(v), 10)
		}
		line += fmt.Sprintf(" %*s", len(columnTitle(f))+1, text)
	}
	return line
}

func totalOps(s *wire.Snapshot) int64 {
	var n int64
	for _, o := range s.Ops {
		n += o.Count
	}
	return n
}

// durStr renders a duration in microseconds in the unit that fits (µs,
// ms, s), to 3 significant digits.
func durStr(us float64) string {
	return unitStr(sig3(us, false))
}

// boundStr renders an upper bound in microseconds (a histogram bucket's
// edge) as "<BOUND", rounded up to 3 significant digits so that it stays
// an upper bound; "-" for none (an op with no calls).
func boundStr(us float64) string {
	if us <= 0 {
		return "-"
	}
	return "<" + unitStr(sig3(us, true))
}

// sig3 rounds v to 3 significant digits: to nearest, or up.
func sig3(v float64, up bool) float64 {
	if v <= 0 {
		return 0
	}
	scale := math.Pow(10, 2-math.Floor(math.Log10(v)))
	if up {
		// The tolerance keeps an exact value (128) from rounding up
		// past itself through float error.
		return math.Ceil(v*scale-1e-9) / scale
	}
	return math.Round(v*scale) / scale
}

// unitStr renders us microseconds as µs below 1 ms, ms below 1 s, else s.
func unitStr(us float64) string {
	v, unit := us, "µs"
	switch {
	case us >= 1e6:
		v, unit = us/1e6, "s"
	case us >= 1e3:
		v, unit = us/1e3, "ms"
	}
	return strconv.FormatFloat(v, 'f', -1, 64) + unit
}

// printAtRisk prints up to limit files with unsynced writes as a table.
func printAtRisk(tw io.Writer, files []wire.RiskFile, limit int) {
	fmt.Fprintf(tw, "at risk (unsynced)\tbytes\tfor\tranges\n")
	for i, f := range files {
		if i == limit {
			fmt.Fprintf(tw, "... %d more files\t\t\t\n", len(files)-limit)
			break
		}
		state := ""
		if !f.Open {
			state = " (closed)"
		}
		if f.Size {
			state += " (size too)"
		}
		age := "-"
		if !f.Since.IsZero() {
			age = time.Since(f.Since).Round(100 * time.Millisecond).String()
		}
		fmt.Fprintf(tw, "%s%s\t%s\t%s\t%s\n", f.Name, state, wire.BinarySize(f.Bytes), age, rangesStr(f.Ranges, f.More))
	}
}

// rangesStr renders byte ranges as OFF+LEN.
func rangesStr(ranges []wire.RiskRange, more int) string {
	var rs []string
	for _, r := range ranges {
		rs = append(rs, fmt.Sprintf("%d+%d", r.Off, r.Len))
	}
	if more > 0 {
		rs = append(rs, fmt.Sprintf("... %d more", more))
	}
	return strings.Join(rs, " ")
}
