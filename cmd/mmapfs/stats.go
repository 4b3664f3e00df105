package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/mmapfs/mmapfs/backing"
	"github.com/mmapfs/mmapfs/fs"
)

func newStatsCommand() *cobra.Command {
	var watch time.Duration
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "stats [flags] MOUNTPOINT",
		Short: "Print the live figures of an mmapfs mount",
		Long: `Print the figures of the mmapfs mount at MOUNTPOINT, read from its stats
file (MOUNTPOINT/` + fs.StatsName + `): once as a table, or with --watch one line per
interval with the rates since the last one, as vmstat prints them.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			path := filepath.Join(args[0], fs.StatsName)
			if watch > 0 {
				return watchStats(cmd.OutOrStdout(), path, watch, asJSON, nil)
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
		},
	}
	cmd.Flags().DurationVarP(&watch, "watch", "w", 0, "print a line every interval (e.g. 1s) until interrupted")
	cmd.Flags().Lookup("watch").NoOptDefVal = "1s"
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the raw JSON (with --watch: one document per interval)")
	return cmd
}

func readStats(path string) (*fs.Snapshot, []byte, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("reading stats (is %s an mmapfs mount?): %w", filepath.Dir(path), err)
	}
	var s fs.Snapshot
	if err := json.Unmarshal(raw, &s); err != nil {
		return nil, nil, fmt.Errorf("decoding %s: %w", path, err)
	}
	return &s, raw, nil
}

// printStats prints one snapshot as a table.
func printStats(w io.Writer, s *fs.Snapshot) error {
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	sw := s.Switches
	rows := [][2]string{
		{"store", s.Store},
		{"policy", s.Policy},
		{"switches", fmt.Sprintf("keep-cache=%v auto-inval-data=%v direct-io=%v writeback-cache=%v madvise=%s populate=%v attr-timeout=%gs entry-timeout=%gs max-write=%d read-only=%v allow-other=%v unsafe-ignore-fsync=%v",
			sw.KeepCache, sw.AutoInvalData, sw.DirectIO, sw.WritebackCache, sw.Madvise, sw.Populate, sw.AttrTimeoutSecs, sw.EntryTimeoutSecs, sw.MaxWrite, sw.ReadOnly, sw.AllowOther, sw.UnsafeIgnoreFsync)},
		{"uptime", (time.Duration(s.UptimeSeconds * float64(time.Second))).Round(time.Second).String()},
		{"unsynced", fmt.Sprintf("%s, oldest %.1fs", bytesStr(s.UnsyncedBytes), s.OldestUnsyncedSeconds)},
		{"msync", fmt.Sprintf("%d calls, %s, mean %.0fµs, p99 <%.0fµs", s.MsyncCalls, bytesStr(s.MsyncBytes), s.MsyncLatency.MeanUs, s.MsyncLatency.P99Us)},
		{"async writeback", fmt.Sprintf("%d calls, %s", s.AsyncWritebackCalls, bytesStr(s.AsyncWritebackBytes))},
		{"ignored fsyncs", fmt.Sprint(s.IgnoredFsyncs)},
		{"mappings", fmt.Sprintf("%d (%d blobs open), %s mapped, %s resident", s.Mappings, s.OpenBlobs, bytesStr(s.MappedBytes), bytesStr(s.ResidentBytes))},
		{"resident blobs", fmt.Sprintf("%d of at most %d; %d dropped, %d reopened", s.ResidentBlobs, s.MaxResident, s.Evictions, s.Reopens)},
		{"remaps", fmt.Sprint(s.Remaps)},
		{"faults to errors", fmt.Sprint(s.Faults)},
		{"read / written", fmt.Sprintf("%s / %s", bytesStr(s.BytesRead), bytesStr(s.BytesWritten))},
		{"daemon page faults", fmt.Sprintf("%d minor, %d major", s.DaemonPageFaults.Minor, s.DaemonPageFaults.Major)},
		{"daemon heap", fmt.Sprintf("%s in use, %s from the OS", bytesStr(s.HeapAllocBytes), bytesStr(s.HeapSysBytes))},
	}
	if b := s.BDI; b != nil {
		rows = append(rows, [2]string{"bdi " + b.Device, fmt.Sprintf("max_ratio=%d%% strict_limit=%d read_ahead_kb=%d max_bytes=%s", b.MaxRatio, b.StrictLimit, b.ReadaheadKB, bytesStr(b.MaxBytes))})
	}
	if p := s.PowerCut; p != nil {
		v := fmt.Sprintf("on: %s of last synced content kept, %d files a cut would change", bytesStr(p.SavedBytes), p.Files)
		if p.Cut {
			v = "the power was cut: files can no longer change"
		}
		if p.RecordErrors > 0 {
			v += fmt.Sprintf("; %d record errors, last: %s", p.RecordErrors, p.LastRecordErr)
		}
		rows = append(rows, [2]string{"power-cut sim", v})
	}
	if s.PeriodicPassErrors > 0 {
		rows = append(rows, [2]string{"periodic pass errors", fmt.Sprintf("%d, last: %s", s.PeriodicPassErrors, s.LastPassError)})
	}
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\n", r[0], r[1])
	}
	if len(s.AtRisk) > 0 {
		fmt.Fprintln(tw)
		printAtRisk(tw, s.AtRisk, 10)
	}
	fmt.Fprintf(tw, "\nop\tcount\terrors\tmean µs\tp50 µs\tp90 µs\tp99 µs\n")
	ops := make([]string, 0, len(s.Ops))
	for op := range s.Ops {
		ops = append(ops, op)
	}
	sort.Strings(ops)
	for _, op := range ops {
		o := s.Ops[op]
		fmt.Fprintf(tw, "%s\t%d\t%d\t%.1f\t<%.0f\t<%.0f\t<%.0f\n", op, o.Count, o.Errors, o.MeanUs, o.P50Us, o.P90Us, o.P99Us)
	}
	return tw.Flush()
}

// watchStats prints a header and then a line every interval with the rates
// since the previous one, until stop is closed (never, from the CLI: the
// user interrupts it).
func watchStats(w io.Writer, path string, every time.Duration, asJSON bool, stop <-chan struct{}) error {
	const header = "  ops/s   rd MB/s   wr MB/s  msync/s  msync MB/s  unsynced MB  oldest s  mapped MB  resident MB  faults"
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
			if _, err := fmt.Fprintln(w, header); err != nil {
				return err
			}
		}
		dt := cur.UptimeSeconds - prev.UptimeSeconds
		if dt <= 0 {
			dt = every.Seconds()
		}
		rate := func(a, b int64) float64 { return float64(a-b) / dt }
		mb := float64(1 << 20)
		_, err = fmt.Fprintf(w, "%7.0f %9.1f %9.1f %8.0f %11.1f %12.1f %9.1f %10.1f %12.1f %7d\n",
			rate(totalOps(cur), totalOps(prev)),
			rate(cur.BytesRead, prev.BytesRead)/mb,
			rate(cur.BytesWritten, prev.BytesWritten)/mb,
			rate(cur.MsyncCalls, prev.MsyncCalls),
			rate(cur.MsyncBytes, prev.MsyncBytes)/mb,
			float64(cur.UnsyncedBytes)/mb,
			cur.OldestUnsyncedSeconds,
			float64(cur.MappedBytes)/mb,
			float64(cur.ResidentBytes)/mb,
			cur.Faults-prev.Faults)
		if err != nil {
			return err
		}
		prev = cur
	}
}

func totalOps(s *fs.Snapshot) int64 {
	var n int64
	for _, o := range s.Ops {
		n += o.Count
	}
	return n
}

func bytesStr(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// printAtRisk prints up to limit files with unsynced writes as a table.
func printAtRisk(tw io.Writer, files []backing.RiskFile, limit int) {
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
		fmt.Fprintf(tw, "%s%s\t%s\t%s\t%s\n", f.Name, state, bytesStr(f.Bytes), age, rangesStr(f.Ranges, f.More))
	}
}

// rangesStr renders byte ranges as OFF+LEN.
func rangesStr(ranges []backing.RiskRange, more int) string {
	var rs []string
	for _, r := range ranges {
		rs = append(rs, fmt.Sprintf("%d+%d", r.Off, r.Len))
	}
	if more > 0 {
		rs = append(rs, fmt.Sprintf("... %d more", more))
	}
	return strings.Join(rs, " ")
}
