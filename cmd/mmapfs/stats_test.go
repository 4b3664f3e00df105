package main

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/spf13/cobra"

	"github.com/mmapfs/mmapfs/fs"
	"github.com/mmapfs/mmapfs/fs/wire"
)

// figures returns the figures of set, the others 0.
func figures(set map[wire.ID]int64) wire.Values {
	var v wire.Values
	for id, n := range set {
		v.Set(id, n)
	}
	return v
}

// TestStatsWatchForms: the interval of --watch is taken in every usual
// form, bare --watch is 1s, and intervals out of range are refused with
// the flag's name, the value and the range.
func TestStatsWatchForms(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args  []string
		mnt   string
		every time.Duration
		err   []string // substrings of the error; nil: none
	}{
		{args: []string{"M"}, mnt: "M"},
		{args: []string{"--watch", "M"}, mnt: "M", every: time.Second},
		{args: []string{"--watch", "2s", "M"}, mnt: "M", every: 2 * time.Second},
		{args: []string{"--watch=2s", "M"}, mnt: "M", every: 2 * time.Second},
		{args: []string{"-w", "2s", "M"}, mnt: "M", every: 2 * time.Second},
		{args: []string{"-w=250ms", "M"}, mnt: "M", every: 250 * time.Millisecond},
		{args: []string{"M", "--watch", "3s"}, mnt: "M", every: 3 * time.Second},
		{args: []string{"--json", "--watch", "2s", "M"}, mnt: "M", every: 2 * time.Second},
		{args: []string{"--watch=-1s", "M"}, err: []string{"--watch", "-1s", "more than 0"}},
		{args: []string{"--watch=0", "M"}, err: []string{"--watch", "0s", "more than 0"}},
		{args: []string{"--watch", "M", "N"}, err: []string{"received 2", `"M"`, `"N"`}},
		{args: []string{"2s", "M"}, err: []string{"received 2", "--watch 2s"}},
		{args: []string{"--watch=3s", "2s", "M"}, err: []string{"received 2"}},
		{args: []string{}, err: []string{"received 0"}},
		{args: []string{"-w", "2s", "M", "N"}, err: []string{"received 3"}},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			var gotMnt string
			gotEvery := time.Duration(-1)
			cmd := statsCommand(func(_ *cobra.Command, mnt string, every time.Duration, _ bool) error {
				gotMnt, gotEvery = mnt, every
				return nil
			})
			cmd.SetArgs(tc.args)
			var out bytes.Buffer
			cmd.SetOut(&out)
			cmd.SetErr(&out)
			cmd.SilenceUsage = true
			err := cmd.Execute()
			if tc.err == nil {
				if err != nil || gotMnt != tc.mnt || gotEvery != tc.every {
					t.Errorf("stats %q: mount %q every %v, %v; want %q every %v", tc.args, gotMnt, gotEvery, err, tc.mnt, tc.every)
				}
				return
			}
			if err == nil {
				t.Fatalf("stats %q succeeded (mount %q every %v), want an error", tc.args, gotMnt, gotEvery)
			}
			for _, want := range tc.err {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("stats %q: %q lacks %q", tc.args, err, want)
				}
			}
		})
	}
}

func TestDurations(t *testing.T) {
	t.Parallel()
	for us, want := range map[float64]string{0.4: "0.4µs", 1: "1µs", 88.63: "88.6µs", 999.7: "1ms", 1234: "1.23ms", 2097152: "2.1s", 90e6: "90s"} {
		if got := durStr(us); got != want {
			t.Errorf("durStr(%v) = %q, want %q", us, got, want)
		}
	}
	// Bucket edges: rounded up, so that "<" stays true.
	for us, want := range map[float64]string{0: "-", 1: "<1µs", 128: "<128µs", 512: "<512µs", 1024: "<1.03ms", 4096: "<4.1ms", 131072: "<132ms", 524288: "<525ms", 1048576: "<1.05s", 2097152: "<2.1s", 67108864: "<67.2s"} {
		if got := boundStr(us); got != want {
			t.Errorf("boundStr(%v) = %q, want %q", us, got, want)
		}
	}
}

// TestPrintStatsFresh: the table of a mount that has done nothing says
// nothing untrue: no latency of calls never made, no age of unsynced
// writes there are none of, no bound of 0 blobs.
func TestPrintStatsFresh(t *testing.T) {
	t.Parallel()
	s := &wire.Snapshot{
		Policy: "fsync", Store: "/s", Figures: figures(map[wire.ID]int64{wire.Uptime: int64(time.Second)}),
		Ops: map[string]wire.OpStats{"lookup": {Count: 1, Latency: wire.Latency{Count: 1, MeanUs: 88.6, P50Us: 128, P90Us: 128, P99Us: 128}}},
	}
	var out bytes.Buffer
	if err := printStats(&out, s); err != nil {
		t.Fatal(err)
	}
	text := out.String()
	for _, bad := range []string{"<0", "0µs", "oldest", "at most 0", "µs\t", " MB"} {
		if strings.Contains(text, bad) {
			t.Errorf("fresh table has %q:\n%s", bad, text)
		}
	}
	for _, want := range []string{"msync               0 calls, 0 B\n", "unsynced            0 B\n", "resident blobs      0, no bound", "lookup   1      0       88.6µs  <128µs  <128µs  <128µs"} {
		if !strings.Contains(text, want) {
			t.Errorf("fresh table lacks %q:\n%s", want, text)
		}
	}
	s.Figures.Set(wire.UnsyncedBytes, 3<<20)
	s.Figures.Set(wire.OldestUnsynced, int64(2500*time.Millisecond))
	s.Figures.Set(wire.MsyncCalls, 2)
	s.MsyncLatency = wire.Latency{Count: 2, MeanUs: 1500, P99Us: 2097152}
	s.Figures.Set(wire.MaxResident, 8192)
	out.Reset()
	if err := printStats(&out, s); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"3.0 MiB, the oldest written 2.5s ago", "2 calls, 0 B, mean 1.5ms, p99 <2.1s", "0 of at most 8192"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, out.String())
		}
	}
}

// TestStatsBDIRows: a bdi row says where its figures came from: the
// device and debugfs, or why there are none (no debugfs, no bdi).
func TestStatsBDIRows(t *testing.T) {
	t.Parallel()
	s := &wire.Snapshot{Figures: figures(map[wire.ID]int64{wire.MountBDIThresh: 48 << 20, wire.DirtyThresh: 4 << 30, wire.BackgroundThresh: 2 << 30}),
		BDISources: &wire.BDISources{
			Mount: wire.BDISource{Device: "0:41", Source: wire.SourceVmstat, Note: "debugfs is not mounted (mount -t debugfs none /sys/kernel/debug)"},
			Store: wire.BDISource{Source: wire.SourceNone, Note: "the store's filesystem has no backing device (tmpfs, overlayfs...)"},
		}}
	var out bytes.Buffer
	if err := printStats(&out, s); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"\nmount bdi           0:41: not measured: debugfs is not mounted (mount -t debugfs none /sys/kernel/debug)\n",
		"\nstore bdi           no backing device: the store's filesystem has no backing device (tmpfs, overlayfs...)\n",
		"\ndirty thresholds    background 2.0 GiB, throttling 4.0 GiB\n",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, out.String())
		}
	}
	s.BDISources.Mount = wire.BDISource{Device: "0:41", Source: wire.SourceDebugfs}
	out.Reset()
	if err := printStats(&out, s); err != nil {
		t.Fatal(err)
	}
	if want := "\nmount bdi           0 B dirty, 0 B under writeback, threshold 48.0 MiB; 0 B dirtied, 0 B written, at 0 B/s (0:41, from debugfs)\n"; !strings.Contains(out.String(), want) {
		t.Errorf("table lacks %q:\n%s", want, out.String())
	}
}

// TestWatchUnits: the --watch columns are in the units their headers
// name, one value under each header.
func TestWatchUnits(t *testing.T) {
	t.Parallel()
	if strings.Contains(watchHeader, "MB") {
		t.Errorf("header %q says MB; the values are MiB", watchHeader)
	}
	prev := &wire.Snapshot{Figures: figures(map[wire.ID]int64{wire.Uptime: int64(10 * time.Second)}), Ops: map[string]wire.OpStats{"write": {Count: 5}}}
	cur := &wire.Snapshot{Figures: figures(map[wire.ID]int64{wire.Uptime: int64(12 * time.Second), wire.BytesRead: 4 << 20, wire.BytesWritten: 2 << 20,
		wire.MsyncCalls: 6, wire.MsyncBytes: 1 << 20, wire.UnsyncedBytes: 3 << 20, wire.OldestUnsynced: int64(1500 * time.Millisecond),
		wire.MappedBytes: 5 << 20, wire.ResidentBytes: 7 << 20, wire.Faults: 2,
		wire.MountBDIDirty: 1 << 20, wire.MountBDIThresh: 48 << 20, wire.MountBDIWritten: 6 << 20, wire.StoreBDIDirty: 2 << 20, wire.StoreBDIWritten: 8 << 20}),
		Ops: map[string]wire.OpStats{"write": {Count: 25}}}
	line := watchLine(prev, cur, 2*time.Second)
	names := strings.Split(strings.TrimSpace(watchHeader), "  ")
	for i := range names {
		names[i] = strings.TrimSpace(names[i])
	}
	values := strings.Fields(line)
	want := map[string]string{"ops/s": "10", "rd MiB/s": "2.0", "wr MiB/s": "1.0", "msync/s": "3", "msync MiB/s": "0.5",
		"unsynced MiB": "3.0", "oldest s": "1.5", "mapped MiB": "5.0", "resident MiB": "7.0", "faults": "2",
		"bdi dirty MiB": "1.0", "bdi thresh MiB": "48.0", "bdi wr MiB/s": "3.0", "store dirty MiB": "2.0", "store wr MiB/s": "4.0"}
	if len(names) != len(want) || len(values) != len(names) {
		t.Fatalf("header %q (%d columns), line %q (%d values), want %d", watchHeader, len(names), line, len(values), len(want))
	}
	for i, n := range names {
		if values[i] != want[n] {
			t.Errorf("column %q = %s, want %s", n, values[i], want[n])
		}
		// Right-aligned under its header.
		if end := strings.Index(watchHeader, n) + len(n); !strings.HasSuffix(line[:end], values[i]) {
			t.Errorf("column %q: value %q not aligned under it:\n%s\n%s", n, values[i], watchHeader, line)
		}
	}
}

// TestMountError: a failure on a dead mount says what to do; others say
// what the directory is.
func TestMountError(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	enotconn := &os.PathError{Op: "open", Path: dir + "/" + fs.StatsName, Err: syscall.ENOTCONN}
	for _, tc := range []struct {
		mnt  string
		err  error
		want []string
	}{
		{dir, enotconn, []string{"stats: " + dir + " is a dead mount", "transport endpoint is not connected", "fusermount3 -u " + dir, "umount " + dir, "mount the store again"}},
		{dir, syscall.ECONNABORTED, []string{"dead mount", "fusermount3 -u " + dir}},
		// Under --transport uring, the first milliseconds after the daemon died.
		{dir, &os.PathError{Op: "open", Path: dir + "/" + fs.StatsName, Err: syscall.ECANCELED}, []string{"stats: " + dir + " is a dead mount", "operation canceled", "fusermount3 -u " + dir}},
		{dir, &os.PathError{Op: "open", Path: dir, Err: syscall.EACCES}, []string{"stats: no permission to read the figures of " + dir, "permission denied", "--allow-other"}},
		{dir, syscall.ENOENT, []string{dir + " is not an mmapfs mount: nothing is mounted there"}},
		{filepath.Join(dir, "missing"), syscall.ENOENT, []string{"stat " + filepath.Join(dir, "missing") + ": no such file"}},
		{"/proc", syscall.ENOENT, []string{"/proc is not an mmapfs mount: it is a proc mount"}},
	} {
		err := mountError("stats", tc.mnt, tc.err)
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("mountError(%s, %v) = %q, lacks %q", tc.mnt, tc.err, err, w)
			}
		}
		if strings.Contains(err.Error(), "\n") {
			t.Errorf("mountError(%s, %v) = %q: not one line", tc.mnt, tc.err, err)
		}
	}
	if err := mountError("stats", dir, enotconn); !errors.Is(err, syscall.ENOTCONN) {
		t.Errorf("mountError does not wrap the cause: %v", err)
	}
}
