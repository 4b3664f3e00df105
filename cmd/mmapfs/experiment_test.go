package main

import (
	"bytes"
	"encoding/csv"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"

	"github.com/mmapfs/mmapfs/fs/wire"
)

// parseExperiment parses an experiment command line as the command does
// and returns the plan it would run.
func parseExperiment(args ...string) (*experimentPlan, error) {
	var plan *experimentPlan
	cmd := experimentCommand(func(_ *cobra.Command, p *experimentPlan) error {
		plan = p
		return nil
	})
	cmd.SetArgs(args)
	cmd.SetOut(&bytes.Buffer{})
	cmd.SetErr(&bytes.Buffer{})
	cmd.SilenceErrors, cmd.SilenceUsage = true, true
	err := cmd.Execute()
	return plan, err
}

func TestExperimentArgs(t *testing.T) {
	p, err := parseExperiment("logger-pwrite")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(p.policies, ",") != strings.Join(defaultPolicies, ",") || len(p.switches) != 1 || len(p.switches[0]) != 0 ||
		p.runs != 1 || p.cutAt != 0 || p.duration != 3*time.Second || p.works[0].Name() != "logger-pwrite:sync=16" || p.total() != 6 {
		t.Errorf("defaults: %+v (workload %s)", p, p.works[0].Name())
	}

	p, err = parseExperiment("--policy", "fsync, none", "--switches", "--writeback-cache --keep-cache", "--switches", "", "--runs", "3", "--cut-at", "2s", "--duration", "1s", "sqlite-wal:synchronous=normal")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(p.policies, ",") != "fsync,none" || len(p.switches) != 2 || strings.Join(p.switches[0], " ") != "--writeback-cache --keep-cache" ||
		p.runs != 3 || p.cutAt != 2*time.Second || p.duration != time.Second || p.works[0].Name() != "sqlite-wal:synchronous=NORMAL" || p.total() != 12 {
		t.Errorf("plan: %+v (workload %s)", p, p.works[0].Name())
	}

	// Several workloads and fault sets: every pair is run, in order.
	p, err = parseExperiment("--policy", "fsync", "--faults", "none", "--faults", " op=fsync,nth=20,errno=EIO,times=1 ; op=write,nth=3,delay=1ms ",
		"--inject", "op=read,delay=1ms", "sqlite-wal", "lmdb:writemap", "bbolt")
	if err != nil {
		t.Fatal(err)
	}
	var names, sets []string
	for _, w := range p.works {
		names = append(names, w.Name())
	}
	for _, f := range p.faults {
		sets = append(sets, f.String())
	}
	if strings.Join(names, " ") != "sqlite-wal:synchronous=FULL lmdb:writemap bbolt" || strings.Join(sets, " | ") != "none | op=fsync,nth=20,errno=EIO,times=1;op=write,nth=3,delay=1ms" || p.total() != 6 {
		t.Errorf("workloads %q, fault sets %q, %d runs", names, sets, p.total())
	}
	if _, ok := p.works[1].(*lmdbMapWorkload); !ok {
		t.Errorf("lmdb:writemap is %T", p.works[1])
	}
	spec := runSpec{plan: p, faults: p.faults[1]}
	if got := spec.faultsLabel(); got != "op=read,delay=1ms;op=fsync,nth=20,errno=EIO,times=1;op=write,nth=3,delay=1ms" {
		t.Errorf("a run's rules: --inject's then its set's: %q", got)
	}
	if got := (runSpec{plan: p, faults: p.faults[0]}).faultsLabel(); got != "op=read,delay=1ms" {
		t.Errorf("the none set with --inject: %q", got)
	}

	p, err = parseExperiment("--check", "test -s $MMAPFS_MNT/f", "--", "sh", "-c", "echo x > $MMAPFS_MNT/f")
	if err != nil {
		t.Fatal(err)
	}
	if c, ok := p.works[0].(*commandWorkload); !ok || strings.Join(c.argv, "|") != "sh|-c|echo x > $MMAPFS_MNT/f" || c.check != "test -s $MMAPFS_MNT/f" {
		t.Errorf("command workload: %#v", p.works)
	}
}

func TestExperimentArgsRefused(t *testing.T) {
	job := filepath.Join(t.TempDir(), "job.fio")
	if err := os.WriteFile(job, []byte("[w]\nrw=write\nsize=1m\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if p, err := parseExperiment("fio:" + job); err != nil || p.works[0].Name() != "fio:"+job {
		t.Errorf("fio:%s: %v", job, err)
	}
	for _, c := range []struct {
		args []string
		want string // in the error
	}{
		{nil, "name a workload; valid workloads: logger-pwrite[:sync=N,retry=N]"},
		{[]string{"nosuch"}, `unknown workload "nosuch"; valid workloads:`},
		{[]string{"logger-pwrite:sync=0"}, "sync=0: want a number of records, 1 or more"},
		{[]string{"logger-mmap:every=3"}, `unknown parameter "every=3" (logger-mmap takes retry=VALUE,sync=VALUE)`},
		{[]string{"sqlite-rollback:synchronous=EXTRA"}, "synchronous=EXTRA: want FULL, NORMAL or OFF"},
		{[]string{"bbolt:x=1"}, "bbolt takes no parameters"},
		{[]string{"lmdb:writemap=1"}, `workload lmdb:writemap=1: unknown parameter "writemap=1": lmdb takes one, writemap (lmdb:writemap: MDB_WRITEMAP, through python3-lmdb`},
		{[]string{"lmdb:nosync"}, `unknown parameter "nosync": lmdb takes one, writemap`},
		{[]string{"fio"}, "name the fio job file (fio:JOBFILE)"},
		{[]string{"fio:/nonexistent/job.fio"}, "the fio job file: stat /nonexistent/job.fio: no such file or directory"},
		{[]string{"fio:" + filepath.Dir(job)}, "is not a regular file"},
		{[]string{"logger-pwrite", "bbolt", "nosuch:x=1"}, `unknown workload "nosuch:x=1"; valid workloads:`},
		{[]string{"bbolt", "sqlite-wal:synchronous=LAZY"}, "workload sqlite-wal:synchronous=LAZY: synchronous=LAZY: want FULL, NORMAL or OFF"},
		{[]string{"bbolt", "lmdb", "bbolt"}, "workload bbolt is named twice (as workload 1, bbolt, and 3): for more runs of it, give --runs"},
		{[]string{"sqlite-wal", "sqlite-wal:synchronous=full"}, "workload sqlite-wal:synchronous=FULL is named twice (as workload 1, sqlite-wal, and 2)"},
		{[]string{"logger-pwrite", "--", "true"}, "a command after -- runs alone, not beside the workloads logger-pwrite"},
		{[]string{"--faults", "", "bbolt"}, `--faults "": empty: a set is one or more fault-injection rules separated by ';'`},
		{[]string{"--faults", "op=fsync,errno=EIO;;op=write,errno=EIO", "bbolt"}, `--faults "op=fsync,errno=EIO;;op=write,errno=EIO": rule 2 of 3 is empty`},
		{[]string{"--faults", "op=fsync,errno=EIO;op=frobnicate,errno=EIO", "bbolt"}, `--faults "op=fsync,errno=EIO;op=frobnicate,errno=EIO": rule 2 of 2 "op=frobnicate,errno=EIO": op "frobnicate": want one of read, write`},
		{[]string{"--faults", "op=fsync,errno=EBOGUS", "bbolt"}, `rule 1 of 1 "op=fsync,errno=EBOGUS": errno=EBOGUS`},
		{[]string{"--faults", "op=fsync,errno=EBOGUS", "bbolt"}, "(valid rules: op=OP (required)"},
		{[]string{"--faults", "op=fsync,nth=2", "bbolt"}, `rule 1 of 1 "op=fsync,nth=2"`},
		{[]string{"--faults", "none;op=fsync,errno=EIO", "bbolt"}, "rule 1 of 2: none is a set of its own, not a rule"},
		{[]string{"--faults", "none", "--faults", " none ", "bbolt"}, `--faults " none ": the same set as --faults 1`},
		{[]string{"--faults", "op=read,short=10", "--switches", "--writeback-cache", "bbolt"}, `--faults "op=read,short=10" with --switches "--writeback-cache": "op=read,short=10": short=10:`},
		{[]string{"--"}, "nothing after --"},
		{[]string{"--check", "true", "bbolt"}, "--check judges a command's run"},
		{[]string{"--runs", "0", "bbolt"}, "--runs 0: out of range"},
		{[]string{"--duration", "0s", "bbolt"}, "--duration 0s: must be more than 0"},
		{[]string{"--cut-at", "soon", "bbolt"}, "--cut-at soon: want a duration after the workload began (e.g. 2s, 500ms) or end"},
		{[]string{"--cut-at", "-1s", "bbolt"}, "--cut-at -1s"},
		{[]string{"--policy", "fsync,sometimes", "bbolt"}, "--policy fsync,sometimes:"},
		{[]string{"--switches", "--no-such-flag", "bbolt"}, `--switches "--no-such-flag": unknown flag: --no-such-flag`},
		{[]string{"--switches", "--writeback none", "bbolt"}, "--writeback is not a switch of an experiment (the policy is --policy's)"},
		{[]string{"--switches", "--powercut-sim", "bbolt"}, "--powercut-sim is not a switch of an experiment"},
		{[]string{"--switches", "--max-write 12", "bbolt"}, "--max-write 12: out of range"},
		{[]string{"--switches", "keep-cache", "bbolt"}, `"keep-cache" is not a flag`},
	} {
		_, err := parseExperiment(c.args...)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("experiment %q: error %v, want one with %q", c.args, err, c.want)
		}
	}
}

func TestRecords(t *testing.T) {
	r := makeRecord(7)
	if len(r) != recordSize || string(r[:4]) != recordMagic || !validRecord(r, 7) {
		t.Fatalf("record 7 is not valid: %x", r[:16])
	}
	if validRecord(r, 8) {
		t.Errorf("record 7 passes as record 8")
	}
	for _, at := range []int{0, 5, 100, recordSize - 1} {
		bad := append([]byte(nil), r...)
		bad[at] ^= 1
		if validRecord(bad, 7) {
			t.Errorf("a record with byte %d flipped passes", at)
		}
	}
	if validRecord(r[:recordSize-1], 7) {
		t.Errorf("a short record passes")
	}

	var log []byte
	for i := uint64(0); i < 10; i++ {
		log = append(log, makeRecord(i)...)
	}
	if sc := scanLog(log); sc != (logScan{kept: 10}) {
		t.Errorf("10 whole records: %+v", sc)
	}
	// A pre-grown log: zeros after the records are no damage.
	if sc := scanLog(append(append([]byte(nil), log...), make([]byte, 4*recordSize)...)); sc != (logScan{kept: 10}) {
		t.Errorf("10 records and zeros: %+v", sc)
	}
	// Record 4 torn (its last half zero), the rest after it intact:
	// a reader stops at 4; 5 whole ones lie past the gap.
	torn4 := append([]byte(nil), log...)
	clear(torn4[4*recordSize+recordSize/2 : 5*recordSize])
	if sc := scanLog(torn4); sc != (logScan{kept: 4, torn: 1, after: 5}) {
		t.Errorf("record 4 torn: %+v; want 4 kept, 1 torn, 5 past the gap", sc)
	}
	// Record 6 missing (zeros), record 8 garbage.
	gap := append([]byte(nil), log...)
	clear(gap[6*recordSize : 7*recordSize])
	copy(gap[8*recordSize:], makeRecord(3))
	if sc := scanLog(gap); sc != (logScan{kept: 6, torn: 1, after: 2}) {
		t.Errorf("record 6 missing, 8 wrong: %+v; want 6 kept, 1 torn, 2 past the gap", sc)
	}
	// A partial record at the end.
	if sc := scanLog(log[:10*recordSize-100]); sc != (logScan{kept: 9, torn: 1}) {
		t.Errorf("a partial last record: %+v; want 9 kept and 1 torn", sc)
	}
	// Out of order: record 3 where 2 belongs.
	swapped := append([]byte(nil), log...)
	copy(swapped[2*recordSize:], makeRecord(3))
	if sc := scanLog(swapped); sc != (logScan{kept: 2, torn: 1, after: 7}) {
		t.Errorf("record 3 in slot 2: %+v, want 2 kept, 1 torn, 7 past the gap", sc)
	}
	if sc := scanLog(nil); sc != (logScan{}) {
		t.Errorf("empty log: %+v", sc)
	}
}

func TestExperimentResults(t *testing.T) {
	r := &runResult{Policy: "periodic:1s", Switches: "--keep-cache", Run: 1, Workload: "bbolt", Unit: unitRows, Seconds: 2, Done: 100, Acked: 100,
		Samples: []sample{{T: 0, Unsynced: 0}, {T: 0.1, Unsynced: 8192, Oldest: 0.05}, {T: 0.2, Unsynced: 4096, Oldest: 0.25}, {T: 0.3, Unsynced: 3 * 4096, Cut: true}}}
	last := &wire.Snapshot{Ops: map[string]wire.OpStats{"fsync": {Count: 200, Latency: wire.Latency{P50Us: 512, P99Us: 4096}}}, MsyncLatency: wire.Latency{P50Us: 256, P99Us: 1024}}
	last.Figures.Set(wire.MsyncCalls, 300)
	r.summarize(last, unitRows)
	// The cut's sample (what it found unsynced) counts: the peak is its.
	if r.MeanAtRisk != 6144 || r.PeakAtRisk != 12288 || r.OldestSecs != 0.25 || r.Throughput != 50 ||
		r.FsyncCount != 200 || r.FsyncP99Us != 4096 || r.MsyncCount != 300 || r.MsyncP50Us != 256 {
		t.Errorf("summarize: %+v", r)
	}
	r.Check, r.OK, r.Kept = "keys 100/100 kept, check ok", true, 100
	res := &experimentResult{Workload: "bbolt", CutAt: "end", Runs: []*runResult{r}}
	var out bytes.Buffer
	if err := printResults(&out, res); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"policy", "throughput", "fsync p50/p99", "msync p50/p99", "at risk mean/peak", "oldest unsynced", "lost in cut", "check",
		"periodic:1s", "--keep-cache", "50 rows/s", "<512µs/<4.1ms", "6.0 KiB/12.0 KiB", "250ms", "keys 100/100 kept, check ok"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, out.String())
		}
	}
	dir := t.TempDir()
	if err := writeResults(dir, res); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(filepath.Join(dir, "results.csv"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rows, err := csv.NewReader(f).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 2 || len(rows[0]) != len(csvHeader) || len(rows[1]) != len(csvHeader) || rows[1][0] != "periodic:1s" {
		t.Errorf("results.csv: %q", rows)
	}
	for _, name := range []string{"results.json", "at-risk.png", "throughput-lost.png"} {
		if st, err := os.Stat(filepath.Join(dir, name)); err != nil || st.Size() == 0 {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// TestExperimentInterrupted: a signal interrupts the runs left to do; one
// after the last run (all done) interrupts nothing.
func TestExperimentInterrupted(t *testing.T) {
	for _, c := range []struct {
		err         error
		signalled   bool
		done, total int
		want        bool
	}{
		{nil, false, 3, 3, false},
		{nil, true, 3, 3, false}, // after the last run
		{nil, true, 2, 3, true},  // between runs
		{errInterrupted, true, 1, 3, true},
		{errors.Join(errInterrupted, errors.New("left mounted")), true, 0, 3, true},
		{errors.New("the daemon ended"), false, 1, 3, false},
	} {
		if got := wasInterrupted(c.err, c.signalled, c.done, c.total); got != c.want {
			t.Errorf("wasInterrupted(%v, signalled %v, %d of %d runs done) = %v, want %v", c.err, c.signalled, c.done, c.total, got, c.want)
		}
	}
}

// TestExperimentProgramText: the check column's end says the faults hit,
// the error the program reported and whether it went on.
func TestExperimentProgramText(t *testing.T) {
	zero, one, two := int64(0), int64(1), int64(2)
	for _, c := range []struct {
		r    runResult
		want string
	}{
		{runResult{}, "no error"},
		{runResult{InjectHits: &zero}, "no fault hit, no error"},
		{runResult{InjectHits: &one}, "1 fault hit, no error reported, went on"},
		{runResult{InjectHits: &two, WorkloadError: "bbolt: transaction 8: input/output error"}, `2 faults hit, reported "bbolt: transaction 8: input/output error", stopped`},
		{runResult{InjectHits: &one, Retried: 1, RetriedError: "fsync after record 47: input/output error"}, `1 fault hit, reported "fsync after record 47: input/output error", tried again (1 time), went on`},
		{runResult{WorkloadError: "sh: exit status 4: x"}, `reported "sh: exit status 4: x", stopped`},
		{runResult{InjectHits: &one, TxFailed: 1, TxFirstError: "bbolt: transaction 8: input/output error", TxLastError: "bbolt: transaction 8: input/output error", TxAfter: 391},
			`1 fault hit, reported "bbolt: transaction 8: input/output error" (1 transaction failed), went on: 391 committed after it`},
		{runResult{InjectHits: &one, TxFailed: 3, TxFirstError: "t 10: EIO", TxLastError: "t 12: MDB_PANIC"},
			`1 fault hit, reported "t 10: EIO" (3 transactions failed, the last with "t 12: MDB_PANIC"), went on: 0 committed after it`},
		{runResult{TxFailed: 1, TxFirstError: "sqlite3: disk I/O error (10)", TxLastError: "sqlite3: disk I/O error (10)", TxAfter: 2, WorkloadError: "sqlite3: it ended"},
			`reported "sqlite3: disk I/O error (10)" (1 transaction failed), went on: 2 committed after it, then stopped: "sqlite3: it ended"`},
	} {
		if got := c.r.programText(); got != c.want {
			t.Errorf("%+v: %q, want %q", c.r, got, c.want)
		}
	}
}

// TestExperimentTableColumns: several workloads and fault sets get their
// columns and a title naming them; one of each gets neither (a fault set
// other than none is in the title).
func TestExperimentTableColumns(t *testing.T) {
	run := func(work, faults string) *runResult {
		return &runResult{Policy: "fsync", Run: 1, Workload: work, Faults: faults, Unit: unitRows, Throughput: 100, LostBytes: 4096, Check: "keys 1/1 acked kept, Tx.Check ok; no error",
			Samples: []sample{{T: 0.1, Unsynced: 4096}, {T: 0.2, Unsynced: 8192, Cut: true}}}
	}
	res := &experimentResult{Workloads: []string{"bbolt", "lmdb:writemap"}, Workload: "bbolt, lmdb:writemap", Faults: []string{"none", "op=fsync,nth=10,errno=EIO,times=1"}, CutAt: "end",
		Runs: []*runResult{run("bbolt", "none"), run("bbolt", "op=fsync,nth=10,errno=EIO,times=1"), run("lmdb:writemap", "none"), run("lmdb:writemap", "op=fsync,nth=10,errno=EIO,times=1")}}
	var out bytes.Buffer
	if err := printResults(&out, res); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 7 || lines[0] != "workloads bbolt, lmdb:writemap, power cut at the end of the workload" ||
		!strings.HasPrefix(lines[2], "workload       faults                             policy") || !strings.HasPrefix(lines[6], "lmdb:writemap  op=fsync,nth=10,errno=EIO,times=1  fsync") {
		t.Errorf("table:\n%s", out.String())
	}
	dir := t.TempDir()
	if err := writeResults(dir, res); err != nil {
		t.Fatal(err)
	}
	csvText, err := os.ReadFile(filepath.Join(dir, "results.csv"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(csvText), "fsync,,1,lmdb:writemap,\"op=fsync,nth=10,errno=EIO,times=1\",0,") {
		t.Errorf("results.csv lacks the workload and faults of the last run:\n%s", csvText)
	}

	res = &experimentResult{Workloads: []string{"bbolt"}, Workload: "bbolt", Faults: []string{"op=fsync,nth=10,errno=EIO,times=1"}, CutAt: "2s",
		Runs: []*runResult{run("bbolt", "op=fsync,nth=10,errno=EIO,times=1")}}
	out.Reset()
	if err := printResults(&out, res); err != nil {
		t.Fatal(err)
	}
	lines = strings.Split(strings.TrimSpace(out.String()), "\n")
	if lines[0] != "workload bbolt, faults op=fsync,nth=10,errno=EIO,times=1, power cut 2s after the workload began" || !strings.HasPrefix(lines[2], "policy  ") {
		t.Errorf("one workload, one fault set:\n%s", out.String())
	}
}

// TestExperimentTxLog: the transactions acknowledged are those that
// committed, up to the last that finished; a failed one is not, and the
// commits after the first failure are counted.
func TestExperimentTxLog(t *testing.T) {
	var l txLog
	l.commit()         // 1
	l.commit()         // 2
	l.fail(3, "eio")   // 3
	l.commit()         // 4
	l.fail(5, "panic") // 5
	s := l.summary()
	if s.committed != 3 || s.nFailed != 2 || s.last() != 5 || s.firstErr != "eio" || s.lastErr != "panic" || s.after != 1 {
		t.Errorf("summary: %+v", s)
	}
	for i, want := range []bool{false, true, true, false, true, false, false} {
		if got := s.acked(int64(i)); got != want {
			t.Errorf("transaction %d acknowledged: %v, want %v", i, got, want)
		}
	}
}

// TestExperimentFreezeTime: Freeze returns where the workload stopped,
// not when Freeze is done: a running process at the call (not after the
// 50 ms it waits for its last acknowledgements), one that had ended at
// its exit, a loop at its return. The throughput divides by that.
func TestExperimentFreezeTime(t *testing.T) {
	p, err := startProc(exec.Command("sleep", "10"))
	if err != nil {
		t.Fatal(err)
	}
	before := time.Now()
	at := p.Freeze()
	after := time.Now()
	if err := p.Kill(); err != nil {
		t.Errorf("Kill: %v", err)
	}
	// 40 ms: one preemption can pass 10, and Freeze's own 50 ms wait,
	// which the bound tells apart, is more.
	if at.Before(before) || at.Sub(before) > 40*time.Millisecond || after.Sub(before) < 50*time.Millisecond {
		t.Errorf("a running process: Freeze took %v and said it stopped %v after the call; want the call's time", after.Sub(before), at.Sub(before))
	}

	p, err = startProc(exec.Command("true"))
	if err != nil {
		t.Fatal(err)
	}
	<-p.Done()
	ended := time.Now()
	time.Sleep(100 * time.Millisecond)
	at = p.Freeze()
	if err := p.Kill(); err != nil {
		t.Errorf("Kill: %v", err)
	}
	if at.After(ended) {
		t.Errorf("an ended process: Freeze says it stopped %v after it had ended", at.Sub(ended))
	}

	g := startGo(func(g *goRun) error { return nil }, nil)
	<-g.Done()
	ended = time.Now()
	time.Sleep(100 * time.Millisecond)
	if at := g.Freeze(); at.After(ended) {
		t.Errorf("an ended loop: Freeze says it stopped %v after it had ended", at.Sub(ended))
	}
	if err := g.Kill(); err != nil {
		t.Errorf("Kill: %v", err)
	}
}
