package integration

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The tests of mmapfs experiment run the binary with TMPDIR set to a
// directory of the test, so that every store and mountpoint an
// experiment makes is there: each test then checks that none is left.

// experimentRun is one finished run of mmapfs experiment.
type experimentRun struct {
	exitCode       int
	stdout, stderr string
}

// experimentTmp returns a TMPDIR for experiments whose cleanup (run
// before the directory's removal) fails the test if a mount, a process
// or a file is left in it, and detaches what is left mounted.
func experimentTmp(t *testing.T) string {
	t.Helper()
	tmp := t.TempDir()
	t.Cleanup(func() {
		for _, m := range mountsUnder(tmp) {
			t.Errorf("an experiment left %s mounted", m)
			if err := forceUnmount(m); err != nil {
				t.Error(err)
			}
		}
		if pids := processesNaming(tmp); len(pids) > 0 {
			t.Errorf("an experiment left processes behind: %v", pids)
			for _, p := range pids {
				syscall.Kill(p, syscall.SIGKILL)
			}
		}
		if left, _ := os.ReadDir(tmp); len(left) > 0 {
			var names []string
			for _, e := range left {
				names = append(names, e.Name())
			}
			t.Errorf("an experiment left %v in its TMPDIR", names)
		}
	})
	return tmp
}

// mountsUnder returns the mountpoints under dir.
func mountsUnder(dir string) []string {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		panic(err)
	}
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 {
			if mp := unescapeMountField(f[4]); strings.HasPrefix(mp, dir+"/") {
				out = append(out, mp)
			}
		}
	}
	return out
}

// processesNaming returns the processes whose command line names a path
// under dir (the experiment's mounts and workloads do).
func processesNaming(dir string) []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		panic(err)
	}
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && bytes.Contains(cmdline, []byte(dir+"/")) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// startExperiment starts mmapfs experiment args with TMPDIR tmp.
func startExperiment(t *testing.T, tmp string, args ...string) (*daemon, *syncBuffer, *syncBuffer) {
	t.Helper()
	cmd := daemonCommand(append([]string{"experiment"}, args...)...)
	cmd.Env = append(cmd.Env, "TMPDIR="+tmp)
	var stdout, stderr syncBuffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	return startDaemon(t, cmd), &stdout, &stderr
}

// runExperiment runs mmapfs experiment args to its end (at most
// timeout) with TMPDIR tmp.
func runExperiment(t *testing.T, tmp string, timeout time.Duration, args ...string) experimentRun {
	t.Helper()
	d, stdout, stderr := startExperiment(t, tmp, args...)
	if !d.waitExit(timeout) {
		d.cmd.Process.Signal(syscall.SIGINT)
		if !d.waitExit(stopTimeout * 3) {
			d.cmd.Process.Kill()
			d.waitExit(killTimeout)
		}
		t.Fatalf("mmapfs experiment %s did not end in %v:\n%s\n%s", strings.Join(args, " "), timeout, stdout.String(), stderr.String())
	}
	r := experimentRun{stdout: stdout.String(), stderr: stderr.String()}
	var ee *exec.ExitError
	if errors.As(d.err, &ee) {
		r.exitCode = ee.ExitCode()
	} else if d.err != nil {
		t.Fatalf("mmapfs experiment: %v", d.err)
	}
	return r
}

// experimentRow is the part of a row of results.csv the tests check.
type experimentRow map[string]string

func (r experimentRow) int(t *testing.T, col string) int64 {
	t.Helper()
	n, err := strconv.ParseInt(r[col], 10, 64)
	if err != nil {
		t.Fatalf("results.csv: %s of %s is %q: %v", col, r["policy"], r[col], err)
	}
	return n
}

func (r experimentRow) float(t *testing.T, col string) float64 {
	t.Helper()
	v, err := strconv.ParseFloat(r[col], 64)
	if err != nil {
		t.Fatalf("results.csv: %s of %s is %q: %v", col, r["policy"], r[col], err)
	}
	return v
}

// readResultsCSV reads dir/results.csv as rows keyed by the header.
func readResultsCSV(t *testing.T, dir string) (header []string, rows []experimentRow) {
	t.Helper()
	f, err := os.Open(filepath.Join(dir, "results.csv"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	recs, err := csv.NewReader(f).ReadAll()
	if err != nil {
		t.Fatalf("results.csv: %v", err)
	}
	if len(recs) == 0 {
		t.Fatalf("results.csv is empty")
	}
	for _, rec := range recs[1:] {
		row := experimentRow{}
		for i, h := range recs[0] {
			row[h] = rec[i]
		}
		rows = append(rows, row)
	}
	return recs[0], rows
}

// experimentJSON is the part of results.json the tests check.
type experimentJSON struct {
	Workload    string   `json:"workload"`
	Workloads   []string `json:"workloads"`
	Faults      []string `json:"faults"`
	Interrupted bool     `json:"interrupted"`
	Runs        []struct {
		Policy     string `json:"policy"`
		PeakAtRisk int64  `json:"peak_at_risk_bytes"`
		MeanAtRisk int64  `json:"mean_at_risk_bytes"`
		LostBytes  int64  `json:"lost_bytes"`
		Samples    []struct {
			T        float64 `json:"t"`
			Unsynced int64   `json:"unsynced_bytes"`
			Cut      bool    `json:"cut"`
		} `json:"samples"`
	} `json:"runs"`
}

func readResultsJSON(t *testing.T, dir string) experimentJSON {
	t.Helper()
	var res experimentJSON
	if err := json.Unmarshal(readFile(t, filepath.Join(dir, "results.json")), &res); err != nil {
		t.Fatalf("results.json: %v", err)
	}
	return res
}

// TestExperimentPolicies is the short experiment CI runs: the pwrite
// logger under three policies, on the defaults and with the writeback
// cache, the power cut at its end. Its table, CSV, JSON and plots must
// agree with each other and with what the policies promise: nothing
// acknowledged is lost, write-through loses nothing at all, and no cut
// loses more than was at risk (with the writeback cache too, where the
// kernel sends writes after the last sample: the cut's own report is the
// last at-risk sample).
func TestExperimentPolicies(t *testing.T) {
	t.Parallel()
	tmp := experimentTmp(t)
	out := t.TempDir()
	r := runExperiment(t, tmp, 90*time.Second, "--policy", "fsync,write-through,none", "--switches", "", "--switches", "--writeback-cache", "--runs", "1", "--duration", "1s", "--out", out, "logger-pwrite")
	if r.exitCode != 0 {
		t.Fatalf("exit %d:\n%s\n%s", r.exitCode, r.stdout, r.stderr)
	}
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(lines) != 9 || lines[0] != "workload logger-pwrite:sync=16, power cut at the end of the workload" {
		t.Fatalf("table: want a title, a blank line, a header and 6 rows:\n%s", r.stdout)
	}
	if strings.HasPrefix(lines[2], "workload") || strings.Contains(lines[2], "faults") {
		t.Errorf("one workload, no fault set: no workload or faults column: %s", lines[2])
	}
	for _, col := range []string{"policy", "switches", "run", "throughput", "fsyncs", "fsync p50/p99", "msyncs", "msync p50/p99", "at risk mean/peak", "oldest unsynced", "lost in cut", "check"} {
		if !strings.Contains(lines[2], col) {
			t.Errorf("table header lacks %q: %s", col, lines[2])
		}
	}
	for i := range 6 {
		pol, sw := []string{"fsync", "write-through", "none"}[i%3], []string{"-", "--writeback-cache"}[i/3]
		if f := strings.Fields(lines[3+i]); len(f) < 3 || f[0] != pol || f[1] != sw || f[2] != "1" || !strings.Contains(lines[3+i], "records/s") ||
			!strings.Contains(lines[3+i], "acked kept") || !strings.HasSuffix(lines[3+i], "; no error") {
			t.Errorf("table row %d: want policy %s, switches %s, run 1, no error: %s", i, pol, sw, lines[3+i])
		}
	}

	header, rows := readResultsCSV(t, out)
	for _, col := range []string{"policy", "throughput_per_second", "fsync_count", "fsync_p50_us", "fsync_p99_us", "msync_count", "msync_p50_us", "msync_p99_us",
		"mean_at_risk_bytes", "peak_at_risk_bytes", "oldest_unsynced_seconds", "lost_bytes", "acknowledged", "kept", "acknowledged_lost", "torn", "check", "ok"} {
		if !strings.Contains(","+strings.Join(header, ",")+",", ","+col+",") {
			t.Errorf("results.csv lacks the column %s: %v", col, header)
		}
	}
	if len(rows) != 6 {
		t.Fatalf("results.csv: %d runs, want 6", len(rows))
	}
	res := readResultsJSON(t, out)
	if res.Workload != "logger-pwrite:sync=16" || res.Interrupted || len(res.Runs) != 6 {
		t.Fatalf("results.json: %+v", res)
	}
	for i, row := range rows {
		pol := row["policy"] + " " + row["switches"]
		if row["faults"] != "none" || row["workload"] != "logger-pwrite:sync=16" {
			t.Errorf("%s: workload %q, faults %q", pol, row["workload"], row["faults"])
		}
		acked, kept, lost, peak, mean := row.int(t, "acknowledged"), row.int(t, "kept"), row.int(t, "lost_bytes"), row.int(t, "peak_at_risk_bytes"), row.int(t, "mean_at_risk_bytes")
		switch {
		case row["ok"] != "true" || row.int(t, "acknowledged_lost") != 0 || kept != acked:
			t.Errorf("%s lost acknowledged records: %v", pol, row)
		case acked == 0 || row.int(t, "done") < acked:
			t.Errorf("%s: %d records written, %d acknowledged", pol, row.int(t, "done"), acked)
		case lost > peak:
			t.Errorf("%s: the cut lost %d bytes, more than the %d at risk at the peak", pol, lost, peak)
		case mean > peak:
			t.Errorf("%s: mean at risk %d > peak %d", pol, mean, peak)
		case row.int(t, "fsync_count") != acked/16:
			// The stats count the FUSE fsyncs; the logger did one per 16 records it acknowledged.
			t.Errorf("%s: the stats count %d fsyncs for %d records synced every 16", pol, row.int(t, "fsync_count"), acked)
		}
		// Under write-through nothing is lost, and a sample can catch at
		// most the one write in flight between its copy and its msync
		// (a record's page).
		if row["policy"] == "write-through" && row["switches"] == "" && (lost != 0 || peak > int64(os.Getpagesize())) {
			t.Errorf("write-through: %d bytes lost, %d at risk at the peak; want 0, and at most the page of the write in flight", lost, peak)
		}
		// The JSON's samples are where the CSV's figures come from.
		// The last is the cut's: what it found unsynced, its loss.
		j := res.Runs[i]
		var max int64
		for _, s := range j.Samples {
			max = maxInt64(max, s.Unsynced)
		}
		if j.Policy != row["policy"] || len(j.Samples) < 4 || max != peak || j.LostBytes != lost {
			t.Errorf("results.json run %d (%s, %d samples): peak of the samples %d, CSV peak %d; lost %d vs %d", i, j.Policy, len(j.Samples), max, peak, j.LostBytes, lost)
		}
		if n := len(j.Samples); n > 0 && (!j.Samples[n-1].Cut || j.Samples[n-1].Unsynced != lost || j.Samples[n-1].T < row.float(t, "seconds")) {
			t.Errorf("results.json run %d (%s): the last sample %+v is not the cut's (lost %d, the workload stopped at %ss)", i, pol, j.Samples[n-1], lost, row["seconds"])
		}
		var statsPeak int64 // of the stats' samples: the daemon's ledger
		for k, s := range j.Samples[:len(j.Samples)-1] {
			if s.Cut {
				t.Errorf("results.json run %d (%s): sample %d of %d is marked as the cut's", i, pol, k, len(j.Samples))
			}
			statsPeak = maxInt64(statsPeak, s.Unsynced)
		}
		// Without the writeback cache nothing reaches the daemon after
		// the workload is frozen, and these policies sync nothing on
		// their own: the ledger's last reading (after the freeze) holds
		// what the cut finds.
		if row["switches"] == "" && lost > statsPeak {
			t.Errorf("%s: the cut lost %d bytes, more than the stats ever counted at risk (%d)", pol, lost, statsPeak)
		}
	}
	for _, name := range []string{"at-risk.png", "throughput-lost.png"} {
		if b := readFile(t, filepath.Join(out, name)); !bytes.HasPrefix(b, []byte("\x89PNG")) {
			t.Errorf("%s is not a PNG", name)
		}
	}
}

func maxInt64(a, b int64) int64 {
	if a > b {
		return a
	}
	return b
}

// TestExperimentWorkloads runs each built-in workload once, under fsync,
// and requires its check to hold: what was acknowledged survived and the
// database is intact.
func TestExperimentWorkloads(t *testing.T) {
	t.Parallel()
	job := filepath.Join(t.TempDir(), "job.fio")
	if err := os.WriteFile(job, []byte("[w]\nrw=randwrite\nbs=4k\nsize=1m\nioengine=psync\nfsync=16\nverify=crc32c\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		workload, tool string
		args           []string
		check          string // the check column starts so
	}{
		{"logger-mmap:sync=8", "", []string{"--cut-at", "2s", "--duration", "5s"}, "records "},
		{"sqlite-wal", "sqlite3", []string{"--cut-at", "1s", "--duration", "5s"}, "rows "},
		{"sqlite-rollback:synchronous=NORMAL", "sqlite3", nil, "rows "},
		{"bbolt", "", []string{"--switches", "--writeback-cache --keep-cache"}, "keys "},
		{"lmdb", "mdb_load", nil, "keys "},
		{"lmdb:writemap", "python3-lmdb", nil, "keys "},
		{"fio:" + job, "fio", nil, "fio ok"},
	} {
		name := strings.SplitN(c.workload, ":", 2)[0]
		if c.workload == "lmdb:writemap" {
			name = "lmdb-writemap"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			if c.tool == "python3-lmdb" {
				if _, why := pythonWithLMDB(t, t.TempDir()); why != "" {
					t.Skip(why)
				}
			} else if c.tool != "" {
				pkg := map[string]string{"mdb_load": "lmdb-utils"}[c.tool]
				if pkg == "" {
					pkg = c.tool
				}
				needTool(t, c.tool, pkg)
			}
			tmp := experimentTmp(t)
			out := t.TempDir()
			args := append([]string{"--policy", "fsync", "--duration", "700ms", "--out", out}, c.args...)
			r := runExperiment(t, tmp, 60*time.Second, append(args, c.workload)...)
			if r.exitCode != 0 {
				t.Fatalf("exit %d:\n%s\n%s", r.exitCode, r.stdout, r.stderr)
			}
			_, rows := readResultsCSV(t, out)
			if len(rows) != 1 {
				t.Fatalf("%d runs, want 1", len(rows))
			}
			row := rows[0]
			if row["ok"] != "true" || !strings.HasPrefix(row["check"], c.check) || !strings.HasSuffix(row["check"], "; no error") || row["workload_error"] != "" || row.int(t, "acknowledged_lost") != 0 {
				t.Errorf("check: %v\n%s", row, r.stdout)
			}
			if strings.HasPrefix(c.workload, "fio") {
				if row.int(t, "done") < 1<<20 {
					t.Errorf("fio wrote %s bytes through the mount, want its 1 MiB at least", row["done"])
				}
			} else if row.int(t, "acknowledged") == 0 {
				t.Errorf("nothing acknowledged: %v", row)
			}
			switch {
			case len(c.args) > 0 && c.args[0] == "--cut-at" && row["cut_before_end"] != "true":
				t.Errorf("--cut-at %s with --duration 5s: the cut came at the end: %v", c.args[1], row)
			case len(c.args) > 0 && c.args[0] == "--switches" && row["switches"] != c.args[1]:
				t.Errorf("switches %q, want %q", row["switches"], c.args[1])
			}
			if strings.HasPrefix(c.workload, "sqlite") && !strings.Contains(row["check"], "integrity ok") {
				t.Errorf("integrity: %s", row["check"])
			}
			// The cut's at-risk sample is the last: no cut loses more
			// than the peak (for programs of their own too).
			if row.int(t, "lost_bytes") > row.int(t, "peak_at_risk_bytes") {
				t.Errorf("the cut lost more than the peak at risk: %v", row)
			}
			if c.workload == "lmdb:writemap" {
				// Written through a mapping: the daemon sees the
				// kernel's writeback of it, and the msyncs as fsyncs.
				if !strings.Contains(row["check"], "read ok (") || row.int(t, "fsync_count") < row.int(t, "acknowledged") {
					t.Errorf("lmdb:writemap: want every commit's msync as an fsync, and the database read: %v", row)
				}
			}
		})
	}
}

// TestExperimentCommand runs a command as the workload and --check as
// its judge: the check column is the judge's exit status and first line.
func TestExperimentCommand(t *testing.T) {
	t.Parallel()
	tmp := experimentTmp(t)
	// The writer syncs 5 lines, then writes 5 it does not sync: the cut
	// takes those, and the judge counts what is left.
	writer := `for i in 1 2 3 4 5; do echo synced >> "$MMAPFS_MNT/f"; done; sync "$MMAPFS_MNT/f"; for i in 1 2 3 4 5; do echo unsynced >> "$MMAPFS_MNT/f"; done`
	r := runExperiment(t, tmp, 60*time.Second, "--policy", "fsync,write-through",
		"--check", `n=$(wc -l < "$MMAPFS_MNT/f"); echo "$n lines"; test "$n" -ge 5`, "--", "sh", "-c", writer)
	if r.exitCode != 0 {
		t.Fatalf("exit %d:\n%s\n%s", r.exitCode, r.stdout, r.stderr)
	}
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(lines) != 5 {
		t.Fatalf("table:\n%s", r.stdout)
	}
	if !strings.HasSuffix(lines[3], "exit 0: 5 lines; no error") {
		t.Errorf("fsync: the cut should leave the 5 synced lines: %s", lines[3])
	}
	if !strings.HasSuffix(lines[4], "exit 0: 10 lines; no error") {
		t.Errorf("write-through: every line should survive: %s", lines[4])
	}

	// A judge that fails is the check column, not the experiment's failure.
	r = runExperiment(t, tmp, 60*time.Second, "--policy", "none", "--check", `echo "no such thing"; exit 3`, "--", "true")
	if r.exitCode != 0 || !strings.Contains(r.stdout, "exit 3: no such thing; no error") {
		t.Errorf("failing judge: exit %d:\n%s\n%s", r.exitCode, r.stdout, r.stderr)
	}
	// A command that fails says so.
	r = runExperiment(t, tmp, 60*time.Second, "--policy", "none", "--", "sh", "-c", "echo broken pipe dream; exit 4")
	if r.exitCode != 0 || !strings.Contains(r.stdout, `-; reported "sh: exit status 4: broken pipe dream", stopped`) {
		t.Errorf("failing command: exit %d:\n%s\n%s", r.exitCode, r.stdout, r.stderr)
	}
}

// TestExperimentCommandBackground: a command that ends at once, leaving
// a writer in the background (in its process group), has that writer
// stopped at the cut and killed after it: nothing it started outlives
// its run (experimentTmp's cleanup finds any process naming the run's
// directory, as the writer does), and it writes nothing after the cut.
func TestExperimentCommandBackground(t *testing.T) {
	t.Parallel()
	tmp := experimentTmp(t)
	// The inner shell's command line holds the mountpoint (the outer one
	// expands $MMAPFS_MNT in it).
	writer := `sh -c "while :; do echo x >> $MMAPFS_MNT/bg; sleep 0.02; done" & sleep 0.3; exit 0`
	r := runExperiment(t, tmp, 60*time.Second, "--policy", "write-through", "--check", `n=$(wc -l < "$MMAPFS_MNT/bg"); echo "$n lines"; sleep 0.5; test "$(wc -l < "$MMAPFS_MNT/bg")" -eq "$n"`, "--", "sh", "-c", writer)
	if r.exitCode != 0 {
		t.Fatalf("exit %d:\n%s\n%s", r.exitCode, r.stdout, r.stderr)
	}
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(lines) != 4 || !strings.Contains(lines[3], "exit 0: ") || !strings.HasSuffix(lines[3], " lines; no error") {
		t.Errorf("the background writer should be gone by the check (the file no longer grows):\n%s\n%s", r.stdout, r.stderr)
	}
	// experimentTmp's cleanup fails the test if the writer is left.
}

// TestExperimentRefused: bad workloads and flags are refused before
// anything is mounted, with the valid forms.
func TestExperimentRefused(t *testing.T) {
	t.Parallel()
	tmp := experimentTmp(t)
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"nosuch"}, `unknown workload "nosuch"; valid workloads: logger-pwrite[:sync=N,retry=N], logger-mmap[:sync=N,retry=N], sqlite-wal[:synchronous=FULL|NORMAL|OFF]`},
		{[]string{"logger-pwrite:sync=x"}, "workload logger-pwrite:sync=x: sync=x: want a number of records, 1 or more"},
		{[]string{"sqlite-wal:journal=wal"}, `unknown parameter "journal=wal" (sqlite-wal takes synchronous=VALUE)`},
		{[]string{"fio:" + filepath.Join(tmp, "missing.fio")}, "the fio job file: stat " + filepath.Join(tmp, "missing.fio") + ": no such file or directory"},
		{[]string{"--policy", "fsync,eventually", "bbolt"}, "--policy fsync,eventually:"},
		{[]string{"--switches", "--writeback-cache --bogus", "bbolt"}, `--switches "--writeback-cache --bogus": unknown flag: --bogus`},
		{[]string{"--cut-at", "later", "bbolt"}, "--cut-at later: want a duration after the workload began (e.g. 2s, 500ms) or end"},
		{[]string{"--runs", "-2", "bbolt"}, "--runs -2: out of range: 1 or more"},
		{[]string{"--check", "true", "bbolt"}, "--check judges a command's run (-- COMMAND)"},
		{[]string{"--nosuchflag", "bbolt"}, "unknown flag: --nosuchflag"},
		{[]string{"bbolt", "lmdb:mapwrite"}, `workload lmdb:mapwrite: unknown parameter "mapwrite": lmdb takes one, writemap`},
		{[]string{"bbolt", "--", "true"}, "a command after -- runs alone, not beside the workloads bbolt"},
		{[]string{"--faults", "op=fsync,errno=EIO;op=fsync,times=x,errno=EIO", "bbolt"}, `--faults "op=fsync,errno=EIO;op=fsync,times=x,errno=EIO": rule 2 of 2 "op=fsync,times=x,errno=EIO": times=x`},
		{[]string{"--faults", ";", "bbolt"}, `--faults ";": rule 1 of 2 is empty: a set is one or more fault-injection rules separated by ';'`},
		{[]string{"--faults", "op=msync,errno=EIO,fsyncgate;op=read,short=1", "--switches", "--writeback-cache", "bbolt"}, `--faults "op=msync,errno=EIO,fsyncgate;op=read,short=1" with --switches "--writeback-cache"`},
		{nil, "name a workload"},
	} {
		r := runExperiment(t, tmp, 30*time.Second, c.args...)
		if r.exitCode != 1 || !strings.Contains(r.stderr, c.want) || !strings.Contains(r.stderr, "Usage: mmapfs experiment") {
			t.Errorf("experiment %q: exit %d, stderr:\n%s\nwant exit 1, %q and the usage", c.args, r.exitCode, r.stderr, c.want)
		}
	}
}

// TestExperimentInterrupt: SIGINT in the middle of a run (SQLite
// committing, through a process of its own) stops the experiment with
// 130, keeps what was done, and leaves no mount, process or store.
func TestExperimentInterrupt(t *testing.T) {
	t.Parallel()
	needTool(t, "sqlite3", "sqlite3")
	tmp := experimentTmp(t)
	out := t.TempDir()
	d, stdout, stderr := startExperiment(t, tmp, "--policy", "fsync,none", "--duration", "30s", "--out", out, "sqlite-wal")
	// Wait for the run's mount and its sqlite3.
	deadline := time.Now().Add(30 * time.Second)
	for len(mountsUnder(tmp)) == 0 || len(processesNaming(tmp)) < 2 {
		if time.Now().After(deadline) || d.exited() {
			d.cmd.Process.Kill()
			d.waitExit(killTimeout)
			t.Fatalf("no mount and workload under %s:\n%s\n%s", tmp, stdout.String(), stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond) // committing
	d.cmd.Process.Signal(syscall.SIGINT)
	if !d.waitExit(40 * time.Second) {
		d.cmd.Process.Kill()
		d.waitExit(killTimeout)
		t.Fatalf("the experiment did not end in 40s after SIGINT:\n%s", stderr.String())
	}
	var ee *exec.ExitError
	if !errors.As(d.err, &ee) || ee.ExitCode() != 130 {
		t.Errorf("exit: %v, want status 130", d.err)
	}
	if !strings.Contains(stderr.String(), "interrupt: stopped during run 1 of 2; the 0 runs done are kept") {
		t.Errorf("stderr:\n%s", stderr.String())
	}
	if !strings.Contains(stdout.String(), "(interrupted: 0 runs done)") {
		t.Errorf("stdout:\n%s", stdout.String())
	}
	if res := readResultsJSON(t, out); !res.Interrupted || len(res.Runs) != 0 {
		t.Errorf("results.json: %+v", res)
	}
	// experimentTmp's cleanup checks the mounts, processes and files.
}

// TestExperimentInject passes --inject rules to each run's mount: the
// third fsync fails with EIO, the logger stops there and says so, and
// what the two before it acknowledged survives the cut. A bad rule is
// refused before anything is mounted.
func TestExperimentInject(t *testing.T) {
	t.Parallel()
	if help := runBinary(t, 10*time.Second, nil, "mount", "--help"); !strings.Contains(help.stdout+help.stderr, "--inject") {
		t.Skip("this mmapfs mount has no --inject")
	}
	tmp := experimentTmp(t)
	out := t.TempDir()
	r := runExperiment(t, tmp, 60*time.Second, "--policy", "fsync", "--duration", "1s", "--out", out, "--inject", "op=fsync,nth=3,errno=EIO,times=1", "logger-pwrite")
	if r.exitCode != 0 {
		t.Fatalf("exit %d:\n%s\n%s", r.exitCode, r.stdout, r.stderr)
	}
	_, rows := readResultsCSV(t, out)
	if len(rows) != 1 {
		t.Fatalf("%d runs, want 1", len(rows))
	}
	row := rows[0]
	if e := row["workload_error"]; !strings.Contains(e, "fsync after record 47") || !strings.Contains(e, "input/output error") {
		t.Errorf("workload error %q: want the third fsync (after record 47) failed with EIO", e)
	}
	if row.int(t, "acknowledged") != 32 || row.int(t, "kept") != 32 || row["ok"] != "true" {
		t.Errorf("want the 32 records of the two fsyncs before acknowledged and kept: %v", row)
	}
	if !strings.Contains(r.stdout, `; 1 fault hit, reported "fsync after record 47: input/output error", stopped`) {
		t.Errorf("the table does not say the fault hit, and the error the logger stopped at:\n%s", r.stdout)
	}
	if row["faults"] != "op=fsync,nth=3,errno=EIO,times=1" || row["inject_hits"] != "1" || !strings.Contains(r.stdout, ", faults op=fsync,nth=3,errno=EIO,times=1, power cut") {
		t.Errorf("--inject's rule is the run's faults (%q, %s hits), said in the title:\n%s", row["faults"], row["inject_hits"], r.stdout)
	}

	// A torn write: the 100th WRITE puts only 200 of its 512 bytes in
	// the blob and returns the short count; the logger (one pwrite per
	// record) stops there, and a reader recovers the 96 records of the
	// last fsync, in order, with nothing torn left after the cut.
	out = t.TempDir()
	r = runExperiment(t, tmp, 60*time.Second, "--policy", "fsync", "--duration", "1s", "--out", out, "--inject", "op=write,nth=100,torn=200", "logger-pwrite")
	if r.exitCode != 0 {
		t.Fatalf("torn write: exit %d:\n%s\n%s", r.exitCode, r.stdout, r.stderr)
	}
	_, rows = readResultsCSV(t, out)
	if len(rows) != 1 {
		t.Fatalf("%d runs, want 1", len(rows))
	}
	row = rows[0]
	if e := row["workload_error"]; !strings.Contains(e, "pwrite of record 99: short write, 200 of 512 bytes") {
		t.Errorf("workload error %q: want the 100th pwrite short", e)
	}
	if row.int(t, "acknowledged") != 96 || row.int(t, "kept") != 96 || row.int(t, "torn") != 0 || row["ok"] != "true" {
		t.Errorf("torn write: want the 96 records of the last fsync kept and nothing torn: %v", row)
	}

	r = runExperiment(t, tmp, 30*time.Second, "--inject", "op=bogus", "logger-pwrite")
	if r.exitCode != 1 || !strings.Contains(r.stderr, `--inject "op=bogus"`) {
		t.Errorf("a bad rule: exit %d:\n%s", r.exitCode, r.stderr)
	}
}

// TestExperimentFsyncgateRetry: the PostgreSQL surprise, end to end. A
// logger that tries a failed fsync again (logger-pwrite:retry=1) loses
// nothing when the failed msync left its pages dirty (the retry syncs
// them), and loses acknowledged records under fsyncgate (the retry
// succeeds on pages put back to their old content).
func TestExperimentFsyncgateRetry(t *testing.T) {
	t.Parallel()
	if help := runBinary(t, 10*time.Second, nil, "mount", "--help"); !strings.Contains(help.stdout+help.stderr, "--inject") {
		t.Skip("this mmapfs mount has no --inject")
	}
	tmp := experimentTmp(t)
	for _, c := range []struct {
		rule string
		lost bool
	}{
		// An early msync (the logger's third fsync or so), which even a
		// loaded machine reaches in the second the logger writes.
		{"op=msync,nth=6,errno=EIO,times=1", false},
		{"op=msync,nth=6,errno=EIO,fsyncgate,times=1", true},
	} {
		out := t.TempDir()
		r := runExperiment(t, tmp, 60*time.Second, "--policy", "fsync", "--duration", "1s", "--out", out, "--inject", c.rule, "logger-pwrite:retry=1")
		if r.exitCode != 0 {
			t.Fatalf("--inject %s: exit %d:\n%s\n%s", c.rule, r.exitCode, r.stdout, r.stderr)
		}
		_, rows := readResultsCSV(t, out)
		if len(rows) != 1 {
			t.Fatalf("--inject %s: %d runs, want 1", c.rule, len(rows))
		}
		row := rows[0]
		if e := row["workload_error"]; e != "" {
			t.Errorf("--inject %s: the logger failed (%q): its retry should have succeeded", c.rule, e)
		}
		if !strings.Contains(row["check"], `; 1 fault hit, reported "fsync after record `) || !strings.Contains(row["check"], `: input/output error", tried again (1 time), went on`) {
			t.Errorf("--inject %s: check %q: want the one failed sync tried again", c.rule, row["check"])
		}
		lost := row.int(t, "acknowledged_lost")
		switch {
		case c.lost && (lost == 0 || row["ok"] != "false"):
			t.Errorf("--inject %s: %d acknowledged records lost: fsyncgate's retried fsync succeeds on pages put back, so some must be", c.rule, lost)
		case !c.lost && (lost != 0 || row["ok"] != "true"):
			t.Errorf("--inject %s: %d acknowledged records lost: a failed msync that leaves its pages dirty loses nothing once retried", c.rule, lost)
		}
	}
}

// TestExperimentFaultTable is the fault table's command on a small
// scale: four workloads (bbolt, LMDB written through its map and with
// mdb_load, SQLite in WAL mode; those whose tools are there) under
// two fault sets (none, and the 10th fsync failing with EIO), one
// command, one table with workload and faults columns. With no fault
// the programs run to the end and lose nothing; with the EIO each
// reports the failed transaction and goes on (bbolt commits again after
// it), and after the cut and the remount its database is intact with
// every acknowledged key.
func TestExperimentFaultTable(t *testing.T) {
	t.Parallel()
	if help := runBinary(t, 10*time.Second, nil, "mount", "--help"); !strings.Contains(help.stdout+help.stderr, "--inject") {
		t.Skip("this mmapfs mount has no --inject")
	}
	works := []string{"bbolt"}
	if _, why := pythonWithLMDB(t, t.TempDir()); why == "" {
		works = append(works, "lmdb:writemap")
	} else {
		t.Logf("lmdb:writemap left out: %s", why)
	}
	for tool, work := range map[string]string{"sqlite3": "sqlite-wal", "mdb_load": "lmdb"} {
		if _, err := exec.LookPath(tool); err == nil {
			works = append(works, work)
		} else {
			t.Logf("%s left out: %v", work, err)
		}
	}
	if len(works) < 2 {
		t.Skipf("one workload only (%s): the others' tools are missing", works[0])
	}
	tmp := experimentTmp(t)
	out := t.TempDir()
	const eio = "op=fsync,nth=10,errno=EIO,times=1"
	args := append([]string{"--policy", "fsync", "--duration", "1s", "--out", out, "--faults", "none", "--faults", eio}, works...)
	r := runExperiment(t, tmp, 120*time.Second, args...)
	if r.exitCode != 0 {
		t.Fatalf("exit %d:\n%s\n%s", r.exitCode, r.stdout, r.stderr)
	}
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(lines) != 3+2*len(works) || !strings.HasPrefix(lines[0], "workloads bbolt") || !strings.HasPrefix(lines[2], "workload  ") || !strings.Contains(lines[2], "  faults  ") {
		t.Fatalf("table: want a title naming the workloads, a header with workload and faults columns, and %d rows:\n%s", 2*len(works), r.stdout)
	}
	_, rows := readResultsCSV(t, out)
	if len(rows) != 2*len(works) {
		t.Fatalf("%d runs, want %d", len(rows), 2*len(works))
	}
	errnoText := map[string]string{"bbolt": "input/output error", "lmdb:writemap": "Input/output error", "sqlite-wal:synchronous=FULL": "disk I/O error", "lmdb": "Input/output error"}
	for i, row := range rows {
		work, faults := works[i/2], []string{"none", eio}[i%2]
		if work == "sqlite-wal" {
			work = "sqlite-wal:synchronous=FULL"
		}
		what := work + " under " + faults
		if row["workload"] != work || row["faults"] != faults || !strings.HasPrefix(lines[3+i], work+" ") || !strings.Contains(lines[3+i], " "+faults+" ") {
			t.Errorf("run %d: workload %q, faults %q, want %s:\n%s", i+1, row["workload"], row["faults"], what, lines[3+i])
			continue
		}
		acked, kept := row.int(t, "acknowledged"), row.int(t, "kept")
		if row["ok"] != "true" || acked == 0 || kept != acked || row.int(t, "acknowledged_lost") != 0 {
			t.Errorf("%s: want the database intact and every acknowledged key kept: %v", what, row)
		}
		unit, intact := "keys", map[string]string{"bbolt": "Tx.Check ok", "lmdb:writemap": "read ok (", "lmdb": "mdb_dump ok (", "sqlite-wal:synchronous=FULL": "integrity ok"}[work]
		if strings.HasPrefix(work, "sqlite") {
			unit = "rows"
		}
		if want := fmt.Sprintf("%s %d/%d acked kept, %s", unit, kept, acked, intact); !strings.HasPrefix(row["check"], want) {
			t.Errorf("%s: check %q, want it to start with %q", what, row["check"], want)
		}
		if faults == "none" {
			if row["inject_hits"] != "" || !strings.HasSuffix(row["check"], "; no error") || row["workload_error"] != "" {
				t.Errorf("%s: want no rule, no error: %v", what, row)
			}
			continue
		}
		e := row["first_transaction_error"]
		if row["inject_hits"] != "1" || !strings.Contains(e, errnoText[work]) || row.int(t, "failed_transactions") < 1 || row["workload_error"] != "" ||
			!strings.Contains(row["check"], fmt.Sprintf("; 1 fault hit, reported %q (", e)) || !strings.Contains(row["check"], "), went on: ") {
			t.Errorf("%s: want the one fault hit, the %s reported and the program gone on: %v", what, errnoText[work], row)
		}
		// bbolt, SQLite and LMDB through mdb_load roll the failed
		// transaction back and commit the next.
		if work != "lmdb:writemap" && (row.int(t, "failed_transactions") != 1 || row.int(t, "committed_after_failure") == 0 || row.int(t, "acknowledged") != row.int(t, "done")) {
			t.Errorf("%s: want one transaction failed and commits after it: %v", what, row)
		}
		t.Logf("%s: %s", what, row["check"])
	}
	res := readResultsJSON(t, out)
	var names []string
	for _, w := range works {
		if w == "sqlite-wal" {
			w = "sqlite-wal:synchronous=FULL" // as the experiment names it
		}
		names = append(names, w)
	}
	if strings.Join(res.Workloads, " ") != strings.Join(names, " ") || strings.Join(res.Faults, " ") != "none "+eio {
		t.Errorf("results.json: workloads %q, faults %q", res.Workloads, res.Faults)
	}
	for _, name := range []string{"at-risk.png", "throughput-lost.png"} {
		if b := readFile(t, filepath.Join(out, name)); !bytes.HasPrefix(b, []byte("\x89PNG")) {
			t.Errorf("%s is not a PNG", name)
		}
	}
}
