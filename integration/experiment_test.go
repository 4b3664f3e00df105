package integration

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"errors"
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
	Workload    string `json:"workload"`
	Interrupted bool   `json:"interrupted"`
	Runs        []struct {
		Policy     string `json:"policy"`
		PeakAtRisk int64  `json:"peak_at_risk_bytes"`
		MeanAtRisk int64  `json:"mean_at_risk_bytes"`
		LostBytes  int64  `json:"lost_bytes"`
		Samples    []struct {
			T        float64 `json:"t"`
			Unsynced int64   `json:"unsynced_bytes"`
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
// logger under three policies, the power cut at its end. Its table, CSV,
// JSON and plots must agree with each other and with what the policies
// promise: nothing acknowledged is lost, write-through loses nothing at
// all, and no cut loses more than was at risk.
func TestExperimentPolicies(t *testing.T) {
	t.Parallel()
	tmp := experimentTmp(t)
	out := t.TempDir()
	r := runExperiment(t, tmp, 60*time.Second, "--policy", "fsync,write-through,none", "--runs", "1", "--duration", "1s", "--out", out, "logger-pwrite")
	if r.exitCode != 0 {
		t.Fatalf("exit %d:\n%s\n%s", r.exitCode, r.stdout, r.stderr)
	}
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(lines) != 6 || !strings.HasPrefix(lines[0], "workload logger-pwrite:sync=16, power cut at the end of the workload") {
		t.Fatalf("table: want a title, a blank line, a header and 3 rows:\n%s", r.stdout)
	}
	for _, col := range []string{"policy", "switches", "run", "throughput", "fsyncs", "fsync p50/p99", "msyncs", "msync p50/p99", "at risk mean/peak", "oldest unsynced", "lost in cut", "check"} {
		if !strings.Contains(lines[2], col) {
			t.Errorf("table header lacks %q: %s", col, lines[2])
		}
	}
	for i, pol := range []string{"fsync", "write-through", "none"} {
		if f := strings.Fields(lines[3+i]); len(f) < 3 || f[0] != pol || f[1] != "-" || f[2] != "1" || !strings.Contains(lines[3+i], "records/s") || !strings.Contains(lines[3+i], "acked kept") {
			t.Errorf("table row %d: want policy %s, no switches, run 1: %s", i, pol, lines[3+i])
		}
	}

	header, rows := readResultsCSV(t, out)
	for _, col := range []string{"policy", "throughput_per_second", "fsync_count", "fsync_p50_us", "fsync_p99_us", "msync_count", "msync_p50_us", "msync_p99_us",
		"mean_at_risk_bytes", "peak_at_risk_bytes", "oldest_unsynced_seconds", "lost_bytes", "acknowledged", "kept", "acknowledged_lost", "torn", "check", "ok"} {
		if !strings.Contains(","+strings.Join(header, ",")+",", ","+col+",") {
			t.Errorf("results.csv lacks the column %s: %v", col, header)
		}
	}
	if len(rows) != 3 {
		t.Fatalf("results.csv: %d runs, want 3", len(rows))
	}
	res := readResultsJSON(t, out)
	if res.Workload != "logger-pwrite:sync=16" || res.Interrupted || len(res.Runs) != 3 {
		t.Fatalf("results.json: %+v", res)
	}
	for i, row := range rows {
		pol := row["policy"]
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
		if pol == "write-through" && (lost != 0 || peak > int64(os.Getpagesize())) {
			t.Errorf("write-through: %d bytes lost, %d at risk at the peak; want 0, and at most the page of the write in flight", lost, peak)
		}
		// The JSON's samples are where the CSV's figures come from.
		j := res.Runs[i]
		var max int64
		for _, s := range j.Samples {
			max = maxInt64(max, s.Unsynced)
		}
		if j.Policy != pol || len(j.Samples) < 3 || max != peak || j.LostBytes != lost {
			t.Errorf("results.json run %d (%s, %d samples): peak of the samples %d, CSV peak %d; lost %d vs %d", i, j.Policy, len(j.Samples), max, peak, j.LostBytes, lost)
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
		{"logger-mmap:sync=8", "", []string{"--cut-at", "300ms", "--duration", "5s"}, "records "},
		{"sqlite-wal", "sqlite3", []string{"--cut-at", "1s", "--duration", "5s"}, "rows "},
		{"sqlite-rollback:synchronous=NORMAL", "sqlite3", nil, "rows "},
		{"bbolt", "", []string{"--switches", "--writeback-cache --keep-cache"}, "keys "},
		{"lmdb", "mdb_load", nil, "keys "},
		{"fio:" + job, "fio", nil, "fio ok"},
	} {
		name := strings.SplitN(c.workload, ":", 2)[0]
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			if c.tool != "" {
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
			if row["ok"] != "true" || !strings.HasPrefix(row["check"], c.check) || row["workload_error"] != "" || row.int(t, "acknowledged_lost") != 0 {
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
			case strings.HasPrefix(c.workload, "logger") && row.int(t, "lost_bytes") > row.int(t, "peak_at_risk_bytes"):
				// (Only for the loggers: a program of its own may have a
				// write under way when it is stopped, which the last
				// sample can miss.)
				t.Errorf("the cut lost more than was at risk: %v", row)
			case len(c.args) > 0 && c.args[0] == "--switches" && row["switches"] != c.args[1]:
				t.Errorf("switches %q, want %q", row["switches"], c.args[1])
			}
			if strings.HasPrefix(c.workload, "sqlite") && !strings.Contains(row["check"], "integrity ok") {
				t.Errorf("integrity: %s", row["check"])
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
	if !strings.HasSuffix(lines[3], "exit 0: 5 lines") {
		t.Errorf("fsync: the cut should leave the 5 synced lines: %s", lines[3])
	}
	if !strings.HasSuffix(lines[4], "exit 0: 10 lines") {
		t.Errorf("write-through: every line should survive: %s", lines[4])
	}

	// A judge that fails is the check column, not the experiment's failure.
	r = runExperiment(t, tmp, 60*time.Second, "--policy", "none", "--check", `echo "no such thing"; exit 3`, "--", "true")
	if r.exitCode != 0 || !strings.Contains(r.stdout, "exit 3: no such thing") {
		t.Errorf("failing judge: exit %d:\n%s\n%s", r.exitCode, r.stdout, r.stderr)
	}
	// A command that fails says so.
	r = runExperiment(t, tmp, 60*time.Second, "--policy", "none", "--", "sh", "-c", "echo broken pipe dream; exit 4")
	if r.exitCode != 0 || !strings.Contains(r.stdout, "workload failed: sh: exit status 4: broken pipe dream") {
		t.Errorf("failing command: exit %d:\n%s\n%s", r.exitCode, r.stdout, r.stderr)
	}
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
	if !strings.Contains(r.stdout, "workload failed: fsync after record 47") {
		t.Errorf("the table does not say the workload failed:\n%s", r.stdout)
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
		{"op=msync,nth=20,errno=EIO,times=1", false},
		{"op=msync,nth=20,errno=EIO,fsyncgate,times=1", true},
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
		if !strings.Contains(row["check"], "1 failed syncs tried again") {
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
