package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/mmapfs/mmapfs/backing"
	"github.com/mmapfs/mmapfs/fs"
	"github.com/mmapfs/mmapfs/fs/inject"
	"github.com/mmapfs/mmapfs/fs/wire"
)

// An experiment runs each workload under each fault set, switch set and
// writeback policy, each run on a fresh store and a fresh mount with
// --powercut-sim served by a child process (this binary's mount
// command): it samples the stats every sampleEvery while the workload
// runs, cuts the power (the control file's request, as mmapfs powercut
// sends it), mounts the store again and has the workload judge what
// survived. The files: experiment.go (the command and one run),
// experiment_child.go (the mount child), experiment_workload.go (the
// built-in workloads and their checks), experiment_output.go (table, CSV,
// JSON, plots).

// defaultPolicies are the policies an experiment compares without
// --policy: all six.
var defaultPolicies = []string{"fsync", "write-through", "close", "periodic:1s", "async", "none"}

// sampleEvery is how often a run reads the mount's stats.
const sampleEvery = 100 * time.Millisecond

// experimentFlags are the flags of mmapfs experiment.
type experimentFlags struct {
	policies string
	switches []string
	faults   []string
	inject   []string
	runs     int
	cutAt    string
	duration time.Duration
	out      string
	check    string
}

// faultSet is one --faults set: the inject rules of a run's mount.
type faultSet struct {
	rules []string // none: no rule
}

// noFaults names the set of no rules.
const noFaults = "none"

// String is the set as the table shows it: its rules separated by ';',
// or none.
func (f faultSet) String() string {
	if len(f.rules) == 0 {
		return noFaults
	}
	return strings.Join(f.rules, ";")
}

// experimentPlan is a checked experiment command line.
type experimentPlan struct {
	works    []workload // in the order given
	faults   []faultSet // each set's rules, besides inject
	policies []string
	switches [][]string // each set's mount flags
	inject   []string   // --inject rules, passed to every run's first mount
	runs     int
	cutAt    time.Duration // 0: at the end of the workload
	duration time.Duration
	out      string
}

// total is the number of runs of the plan.
func (p *experimentPlan) total() int {
	return len(p.works) * len(p.faults) * len(p.switches) * len(p.policies) * p.runs
}

func newExperimentCommand() *cobra.Command {
	return experimentCommand(func(cmd *cobra.Command, plan *experimentPlan) error {
		return runExperiment(cmd.OutOrStdout(), cmd.ErrOrStderr(), plan)
	})
}

// experimentCommand is the experiment command, with run called on the
// checked command line.
func experimentCommand(run func(cmd *cobra.Command, plan *experimentPlan) error) *cobra.Command {
	var f experimentFlags
	cmd := &cobra.Command{
		Use:   "experiment [flags] {WORKLOAD... | -- COMMAND [ARGS...]}",
		Short: "Run workloads under each writeback policy and fault set, cut the power, and check what survived",
		Long: `Run each workload under each fault set (--faults, repeatable; default none),
each switch set (--switches, repeatable; default none) and each writeback
policy (--policy, default all six), --runs times each, in that order.
Every run gets a fresh store (a private temporary directory, removed after)
and a fresh mount with --powercut-sim, served by a child 'mmapfs mount'.
While the workload runs, the mount's stats are sampled every 100 ms (bytes
at risk, the oldest unsynced write, msync and fsync calls). The power is cut
--cut-at after the workload began, or at its end (the default: right after
it finished, before anything is closed or unmounted): what the daemon had
not synced gets its last synced content back, as 'mmapfs powercut' does;
what the cut found unsynced is the last at-risk sample. The store is then
mounted again and the workload's own check says what survived.

Workloads:
  logger-pwrite[:sync=N,retry=N]
                           512-byte records (sequence number, checksum)
                           appended with pwrite, fsync every N (default 16);
                           a failed fsync tried again up to retry times
                           (default 0), as PostgreSQL once did
  logger-mmap[:sync=N,retry=N]
                           the same records written through a MAP_SHARED
                           mapping of a pre-grown file, msync MS_SYNC every N
  sqlite-wal[:synchronous=FULL|NORMAL|OFF]
  sqlite-rollback[:synchronous=FULL|NORMAL|OFF]
                           one row per transaction, by the sqlite3 CLI
                           (default FULL); check: integrity_check, rows kept
                           of rows committed
  bbolt                    one key per transaction (go.etcd.io/bbolt);
                           check: bbolt's consistency check, keys kept
  lmdb                     one key per transaction, each a run of
                           lmdb-utils' mdb_load; check: mdb_dump reads the
                           database, keys kept
  lmdb:writemap            one key per transaction, with MDB_WRITEMAP (the
                           database written through a MAP_SHARED mapping,
                           msync at commit), by python3-lmdb; check: open
                           the database and read every key, keys kept
  fio:JOBFILE              fio runs JOBFILE in the mount (leave directory=
                           out of the job); check: fio's exit status (its
                           verify, if the job has one)
  -- COMMAND [ARGS...]     any command (alone: no workload beside it), run
                           with the mountpoint in $MMAPFS_MNT; --check
                           COMMAND (a shell command, $MMAPFS_MNT set) judges
                           what survived: its exit status and first line of
                           output are the check
The loggers, SQLite, bbolt and lmdb run for --duration (default 3s). The
loggers stop at the first error (with retry= they try a failed sync again
and go on). The database drivers go on after a failed transaction, as an
application would: the error is counted (and shown), the transaction
rolled back, and the next one begun.

Acknowledged means: records covered by a completed fsync/msync, committed
transactions. Every policy honours fsync, so no acknowledged record or
committed row of a synchronous=FULL database may be lost.

A fault set (--faults) is one or more fault-injection rules separated by
';' (as mmapfs mount --inject takes them), or none; e.g.
  --faults none --faults 'op=fsync,nth=20,errno=EIO,times=1'
--inject rules are given to every run, beside its fault set.

Output: a table, one row per run: the workload and the fault set (when
there are several), throughput, fsync and msync counts and latency
quantiles, mean and peak bytes at risk, the oldest unsynced write, the
bytes the cut put back or cut off, and the check: acknowledged units kept
of those acknowledged, the integrity check; the faults hit, the error the
program reported and whether it went on (and how many transactions
committed after it); ACKNOWLEDGED LOST if a promise broke. With --out DIR
also results.csv, results.json (with every sample), and, drawn with
gnuplot, at-risk.png (bytes at risk over time per run) and
throughput-lost.png (throughput against bytes lost). Ctrl-C stops the
current run cleanly (unmounted, store removed) and keeps the runs done.`,
		Args: func(cmd *cobra.Command, args []string) error {
			_, err := experimentArgs(cmd, &f, args)
			return err
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			plan, err := experimentArgs(cmd, &f, args)
			if err != nil {
				return err
			}
			return run(cmd, plan)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.policies, "policy", strings.Join(defaultPolicies, ","), "comma-separated writeback `POLICIES` to compare ("+backing.PolicyNames+")")
	fl.StringArrayVar(&f.switches, "switches", nil, "a `SET` of mount flags for every run, e.g. \"--writeback-cache --keep-cache\" (repeatable: each set is compared; default: one set, none)")
	fl.StringArrayVar(&f.faults, "faults", nil, "a `SET` of fault-injection rules separated by ';', or none (repeatable: each set is compared; default: one set, none)")
	fl.StringArrayVar(&f.inject, "inject", nil, "a fault injection `RULE` for every run's mount (repeatable; as mmapfs mount --inject)")
	fl.IntVar(&f.runs, "runs", 1, "runs of each workload, fault set, switch set and policy, 1 or more")
	fl.StringVar(&f.cutAt, "cut-at", "end", "when to cut the power: a `DURATION` after the workload began (e.g. 2s), or end (right after it finished)")
	fl.DurationVar(&f.duration, "duration", 3*time.Second, "how long the loggers, SQLite, bbolt and lmdb write")
	fl.StringVar(&f.out, "out", "", "write results.csv, results.json and the plots into `DIR` (created if missing)")
	fl.StringVar(&f.check, "check", "", "with -- COMMAND: a shell `COMMAND` that judges what survived, run after the remount with $MMAPFS_MNT set")
	return cmd
}

// experimentArgs checks an experiment command line.
func experimentArgs(cmd *cobra.Command, f *experimentFlags, args []string) (*experimentPlan, error) {
	usage := func(format string, a ...any) error {
		return &usageError{cmd: cmd, err: fmt.Errorf(format, a...)}
	}
	named, command := args, []string(nil)
	if at := cmd.ArgsLenAtDash(); at >= 0 {
		named, command = args[:at], args[at:]
		if len(command) == 0 {
			return nil, usage("nothing after --: name the command to run (mmapfs experiment -- COMMAND ARGS...)")
		}
	}
	p := &experimentPlan{runs: f.runs, duration: f.duration, out: f.out}
	switch {
	case len(named) == 0 && command == nil:
		return nil, usage("name a workload; %s", validWorkloads)
	case len(named) > 0 && command != nil:
		return nil, usage("a command after -- runs alone, not beside the workloads %s: run it in an experiment of its own", strings.Join(named, " "))
	case f.check != "" && command == nil:
		return nil, usage("--check judges a command's run (-- COMMAND); the built-in workloads have their own check")
	case f.runs < 1:
		return nil, usage("--runs %d: out of range: 1 or more", f.runs)
	case f.duration <= 0:
		return nil, usage("--duration %v: must be more than 0 (e.g. 3s)", f.duration)
	}
	if command != nil {
		p.works = []workload{&commandWorkload{argv: command, check: f.check}}
	}
	for i, s := range named {
		w, err := parseWorkload(s)
		if err != nil {
			return nil, usage("%v", err)
		}
		// The same workload by its full name (sqlite-wal is
		// sqlite-wal:synchronous=FULL).
		if j := slices.IndexFunc(p.works, func(o workload) bool { return o.Name() == w.Name() }); j >= 0 {
			return nil, usage("workload %s is named twice (as workload %d, %s, and %d): for more runs of it, give --runs", w.Name(), j+1, named[j], i+1)
		}
		p.works = append(p.works, w)
	}
	if f.cutAt != "end" {
		d, err := time.ParseDuration(f.cutAt)
		if err != nil || d <= 0 {
			return nil, usage("--cut-at %s: want a duration after the workload began (e.g. 2s, 500ms) or end", f.cutAt)
		}
		p.cutAt = d
	}
	for _, s := range strings.Split(f.policies, ",") {
		s = strings.TrimSpace(s)
		if _, err := backing.ParsePolicy(s); err != nil {
			return nil, usage("--policy %s: %v", f.policies, err)
		}
		p.policies = append(p.policies, s)
	}
	sets := f.switches
	if len(sets) == 0 {
		sets = []string{""}
	}
	for _, s := range sets {
		fields := strings.Fields(s)
		if err := checkMountFlags(fields, nil); err != nil {
			return nil, usage("--switches %q: %v", s, err)
		}
		p.switches = append(p.switches, fields)
	}
	for _, r := range f.inject {
		if err := checkMountFlags(nil, []string{r}); err != nil {
			if !strings.Contains(err.Error(), "--inject") {
				err = fmt.Errorf("--inject %q: %w", r, err)
			}
			return nil, usage("%v", err)
		}
		p.inject = append(p.inject, r)
	}
	if len(f.faults) == 0 {
		p.faults = []faultSet{{}}
	}
	for _, s := range f.faults {
		set, err := parseFaultSet(s)
		if err != nil {
			return nil, usage("%v", err)
		}
		if i := slices.IndexFunc(p.faults, func(o faultSet) bool { return o.String() == set.String() }); i >= 0 {
			return nil, usage("--faults %q: the same set as --faults %d: each set is run once per policy (for more runs, give --runs)", s, i+1)
		}
		p.faults = append(p.faults, set)
	}
	// A rule may not fit a switch set (short= with --writeback-cache):
	// each pair is checked as its runs will mount.
	for _, sw := range p.switches {
		for _, set := range p.faults {
			if len(set.rules) == 0 {
				continue
			}
			if err := checkMountFlags(sw, append(slices.Clone(p.inject), set.rules...)); err != nil {
				return nil, usage("--faults %q with --switches %q: %v", set.String(), strings.Join(sw, " "), strings.TrimPrefix(err.Error(), "--inject "))
			}
		}
	}
	return p, nil
}

// parseFaultSet parses a --faults set: none, or inject rules separated
// by ';'. A bad one names the set, the rule and the part that is wrong.
func parseFaultSet(s string) (faultSet, error) {
	const forms = "a set is one or more fault-injection rules separated by ';' (e.g. 'op=fsync,nth=20,errno=EIO,times=1;op=write,prob=0.01,delay=5ms'), or none"
	text := strings.TrimSpace(s)
	switch text {
	case noFaults:
		return faultSet{}, nil
	case "":
		return faultSet{}, fmt.Errorf("--faults %q: empty: %s", s, forms)
	}
	parts := strings.Split(text, ";")
	var set faultSet
	for i, r := range parts {
		r = strings.TrimSpace(r)
		switch {
		case r == "":
			return faultSet{}, fmt.Errorf("--faults %q: rule %d of %d is empty: %s", s, i+1, len(parts), forms)
		case r == noFaults:
			return faultSet{}, fmt.Errorf("--faults %q: rule %d of %d: none is a set of its own, not a rule: %s", s, i+1, len(parts), forms)
		}
		if _, err := inject.Parse(r); err != nil {
			var re *inject.RuleError
			if errors.As(err, &re) {
				return faultSet{}, fmt.Errorf("--faults %q: rule %d of %d %q: %s (valid rules: %s; %s)", s, i+1, len(parts), r, re.Detail(), inject.Forms, forms)
			}
			return faultSet{}, fmt.Errorf("--faults %q: rule %d of %d %q: %w", s, i+1, len(parts), r, err)
		}
		set.rules = append(set.rules, r)
	}
	return set, nil
}

// ownedFlags are the mount flags an experiment sets itself, which a switch
// set may not.
var ownedFlags = map[string]string{
	"writeback":    "the policy is --policy's",
	"powercut-sim": "every run has it",
	"options":      "give the flags themselves",
	"metrics":      "each run is its own mount",
	"debug":        "its log would fill the run's",
	"read-only":    "the workload writes",
}

// checkMountFlags checks a switch set (flags of mmapfs mount) and --inject
// rules as the mount command of a run would take them (with
// --powercut-sim), so that a wrong one is refused before the first run.
func checkMountFlags(flags, rules []string) error {
	var c mountConfig
	set := pflag.NewFlagSet("mount", pflag.ContinueOnError)
	set.SetOutput(io.Discard)
	addMountFlags(set, &c)
	addOptionFlag(set, &c)
	if len(rules) > 0 && set.Lookup("inject") == nil {
		return errors.New("this mmapfs mount has no --inject flag (no fault injection in this build)")
	}
	// Every run has --powercut-sim (rules may need it); marked as not
	// given, so that a switch set that gives it is told.
	if err := set.Set("powercut-sim", "true"); err != nil {
		return err
	}
	set.Lookup("powercut-sim").Changed = false
	args := append([]string(nil), flags...)
	for _, r := range rules {
		args = append(args, "--inject", r)
	}
	if err := set.Parse(args); err != nil {
		return err
	}
	if set.NArg() > 0 {
		return fmt.Errorf("%q is not a flag: a switch set is mount flags only, e.g. \"--writeback-cache --keep-cache\"", set.Arg(0))
	}
	var bad error
	set.VisitAll(func(fl *pflag.Flag) {
		if why, ok := ownedFlags[fl.Name]; ok && fl.Changed && bad == nil {
			bad = fmt.Errorf("--%s is not a switch of an experiment (%s)", fl.Name, why)
		}
	})
	if bad != nil {
		return bad
	}
	_, err := c.options(set)
	return err
}

// errInterrupted ends a run that a signal stopped.
var errInterrupted = errors.New("interrupted")

// withoutInterrupted returns err without errInterrupted: nil if that is
// all it is, else the other errors joined with it.
func withoutInterrupted(err error) error {
	if err == nil || err == errInterrupted {
		return nil
	}
	var rest []error
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		for _, e := range j.Unwrap() {
			if e := withoutInterrupted(e); e != nil {
				rest = append(rest, e)
			}
		}
		return errors.Join(rest...)
	}
	return err
}

// wasInterrupted says whether a signal stopped the experiment before its
// end: a run ended by it (runErr), or a signal (signalled) with runs
// left to do. A signal after the last run interrupts nothing.
func wasInterrupted(runErr error, signalled bool, done, total int) bool {
	return errors.Is(runErr, errInterrupted) || (signalled && done < total)
}

// runExperiment runs plan's runs in order, prints the table to out and
// writes the files of --out. A signal stops the run under way (cleaned up
// as any run is) and keeps the runs done.
func runExperiment(out, errOut io.Writer, plan *experimentPlan) error {
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("experiment: finding this binary to mount with: %w", err)
	}
	for _, w := range plan.works {
		if err := w.Prepare(); err != nil {
			return fmt.Errorf("experiment: %w", err)
		}
	}
	if plan.out != "" {
		if _, err := exec.LookPath("gnuplot"); err != nil {
			return fmt.Errorf("experiment: --out %s draws its plots with gnuplot, which is not installed (apt-get install gnuplot-nox)", plan.out)
		}
		if err := os.MkdirAll(plan.out, 0o755); err != nil {
			return fmt.Errorf("experiment: --out: %w", err)
		}
	}
	// From here a signal ends the experiment, not the process, so that no
	// mount, process or store is left behind.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var sig os.Signal
	stopped := make(chan struct{})
	caught := make(chan struct{}) // closed once the goroutine has returned; sig is set if a signal came
	go func() {
		defer close(caught)
		select {
		case sig = <-sigs:
			cancel()
		case <-stopped:
		}
	}()

	prog := newProgress(errOut, plan)
	res := newExperimentResult(plan)
	var runErr error
	i := 0
runs:
	for _, w := range plan.works {
		for _, set := range plan.faults {
			for _, sw := range plan.switches {
				for _, pol := range plan.policies {
					for k := 1; k <= plan.runs; k++ {
						i++
						spec := runSpec{exe: exe, work: w, faults: set, policy: pol, switches: sw, run: k, plan: plan}
						prog.start(i, spec)
						r, err := runOne(ctx, spec)
						prog.done()
						if err != nil {
							runErr = err
							break runs
						}
						res.Runs = append(res.Runs, r)
					}
				}
			}
		}
	}
	close(stopped)
	<-caught
	prog.finish()
	if wasInterrupted(runErr, sig != nil, len(res.Runs), plan.total()) {
		res.Interrupted = true
		// What the interrupted run's cleanup could not do (a mount
		// left, a store not removed) is still said.
		runErr = withoutInterrupted(runErr)
	}
	if err := printResults(out, res); err != nil {
		return err
	}
	if plan.out != "" {
		if err := writeResults(plan.out, res); err != nil {
			runErr = errors.Join(runErr, err)
		}
	}
	if runErr != nil {
		return fmt.Errorf("experiment: run %d of %d: %w (the %d runs before it are kept)", i, plan.total(), runErr, len(res.Runs))
	}
	if res.Interrupted {
		fmt.Fprintf(errOut, "mmapfs experiment: %v: stopped during run %d of %d; the %d runs done are kept\n", sig, i, plan.total(), len(res.Runs))
		return &exitStatus{code: 130}
	}
	return nil
}

// runSpec is one run of an experiment.
type runSpec struct {
	exe      string
	work     workload
	faults   faultSet
	policy   string
	switches []string
	run      int
	plan     *experimentPlan
}

// rules are the inject rules of the run's mount: --inject's, then its
// fault set's.
func (s runSpec) rules() []string { return append(slices.Clone(s.plan.inject), s.faults.rules...) }

// faultsLabel is the run's rules as the table shows them, none for none.
func (s runSpec) faultsLabel() string { return faultSet{rules: s.rules()}.String() }

// runOne runs spec: a fresh store and mount, the workload, the samples,
// the cut, the remount and the check. Whatever happens, the mounts are
// unmounted, the processes ended and the store removed when it returns.
func runOne(ctx context.Context, spec runSpec) (r *runResult, err error) {
	dir, err := os.MkdirTemp("", "mmapfs-experiment-")
	if err != nil {
		return nil, fmt.Errorf("making the run's store: %w", err)
	}
	store, mnt := filepath.Join(dir, "store"), filepath.Join(dir, "mnt")
	for _, d := range []string{store, mnt} {
		if err := os.Mkdir(d, 0o755); err != nil {
			return nil, errors.Join(fmt.Errorf("making the run's directories: %w", err), os.RemoveAll(dir))
		}
	}
	var children []*mountChild
	stuck := false // the workload did not stop: its mount cannot be unmounted cleanly
	defer func() {
		// The last first: the mount at mnt now is the last child's, and
		// an earlier child's cleanup would detach it as its own.
		for i := len(children) - 1; i >= 0; i-- {
			c := children[i]
			end := c.stop
			if stuck {
				end = c.kill
			}
			if cerr := end(); cerr != nil {
				err = errors.Join(err, cerr)
			}
		}
		if isMounted(mnt) {
			err = errors.Join(err, fmt.Errorf("%s is still mounted: the store %s is left for you to look at", mnt, store))
			return
		}
		if rerr := os.RemoveAll(dir); rerr != nil {
			err = errors.Join(err, fmt.Errorf("removing the run's store: %w", rerr))
		}
	}()

	args := []string{"mount", "--powercut-sim", "--writeback", spec.policy}
	args = append(args, spec.switches...)
	rules := spec.rules()
	for _, rule := range rules {
		args = append(args, "--inject", rule)
	}
	first, err := startMountChild(ctx, spec.exe, append(args, store, mnt), mnt)
	if err != nil {
		return nil, err
	}
	children = append(children, first)

	work := spec.work
	r = &runResult{Policy: spec.policy, Switches: strings.Join(spec.switches, " "), Run: spec.run, Workload: work.Name(), Faults: spec.faultsLabel(), Unit: work.Unit()}
	t0 := time.Now()
	w, err := work.Start(mnt, dir, spec.plan.duration)
	if err != nil {
		return nil, fmt.Errorf("starting %s: %w", work.Name(), err)
	}
	killed := false
	defer func() {
		if !killed {
			stuck = errors.Is(w.Kill(), errStuck)
		}
	}()
	// The samples are taken beside the wait, so that a slow read of the
	// stats does not delay the cut.
	smp := startSampler(filepath.Join(mnt, fs.StatsName), t0)
	defer smp.finish()
	var cut <-chan time.Time
	if spec.plan.cutAt > 0 {
		t := time.NewTimer(spec.plan.cutAt - time.Since(t0))
		defer t.Stop()
		cut = t.C
	}
wait:
	for {
		select {
		case <-ctx.Done():
			return nil, errInterrupted
		case <-first.exited:
			return nil, fmt.Errorf("the mount's daemon ended during the workload: %s", first.tail())
		case <-smp.failed:
			_, _, err := smp.finish()
			return nil, err
		case <-w.Done():
			break wait
		case <-cut:
			r.CutEarly = true
			break wait
		}
	}
	// The moment of the cut: the workload makes no more progress (but
	// closes nothing: a crash closes nothing), the last sample, the cut.
	// The workload's time is its own, up to where it stopped, not the
	// time Freeze took.
	r.Seconds = w.Freeze().Sub(t0).Seconds()
	samples, last, err := smp.finish()
	if err != nil {
		return nil, err
	}
	r.Done, r.Acked = w.Progress()
	cutT := time.Since(t0).Seconds()
	reply, err := cutPower(mnt)
	if err != nil {
		return nil, err
	}
	r.PutBackBytes, r.CutOffBytes = reply.Report.Restored, reply.Report.Cutoff
	r.LostBytes = r.PutBackBytes + r.CutOffBytes
	// What the cut found unsynced is the state at the cut: the last
	// sample. The stats read before it can miss writes that reached the
	// daemon after them (the kernel's writeback of a client's mapping or
	// of the writeback cache) and syncs the daemon made on its own.
	r.Samples = append(samples, sample{T: cutT, Unsynced: r.LostBytes, Cut: true})
	r.WorkloadError = errString(w.Kill())
	killed = true
	if !first.wait(dropWait) {
		return nil, fmt.Errorf("the power was cut, but the mount's daemon (pid %d) did not exit in %v", first.pid, dropWait)
	}
	r.summarize(last, work.Unit())
	if last != nil && len(rules) > 0 {
		hits := int64(0)
		for _, ir := range last.Inject {
			hits += ir.Hits
		}
		r.InjectHits = &hits
	}

	second, err := startMountChild(ctx, spec.exe, []string{"mount", store, mnt}, mnt)
	if err != nil {
		return nil, fmt.Errorf("mounting the store again after the cut: %w", err)
	}
	children = append(children, second)
	if ctx.Err() != nil {
		return nil, errInterrupted
	}
	c, err := work.Check(ctx, mnt, w, r.Acked)
	if err != nil {
		if ctx.Err() != nil {
			return nil, errInterrupted
		}
		return nil, fmt.Errorf("checking what survived: %w", err)
	}
	r.Kept, r.AckedLost, r.Torn, r.OK = c.kept, c.ackedLost, c.torn, c.ok
	r.Retried, r.RetriedError = c.retried, c.retryErr
	r.TxFailed, r.TxFirstError, r.TxLastError, r.TxAfter = c.txFailed, c.txFirstErr, c.txLastErr, c.txAfter
	r.Check = c.text + "; " + r.programText()
	if c.promised && c.ackedLost > 0 {
		r.Check += fmt.Sprintf("; %d ACKNOWLEDGED LOST", c.ackedLost)
	}
	if ctx.Err() != nil {
		return nil, errInterrupted
	}
	return r, nil
}

// sampler reads a mount's stats every sampleEvery until finish.
type sampler struct {
	path   string
	t0     time.Time     // the samples' time 0: the workload's start
	stop   chan struct{} // closed by finish
	done   chan struct{} // closed when the goroutine has returned
	failed chan struct{} // closed when a read failed (the goroutine returns)

	mu      sync.Mutex // guards samples, last, err
	samples []sample
	last    *wire.Snapshot
	err     error
	once    sync.Once // closes stop
}

// startSampler takes a first sample now and one every sampleEvery after.
func startSampler(path string, t0 time.Time) *sampler {
	s := &sampler{path: path, t0: t0, stop: make(chan struct{}), done: make(chan struct{}), failed: make(chan struct{})}
	go func() {
		defer close(s.done)
		t := time.NewTicker(sampleEvery)
		defer t.Stop()
		for {
			if err := s.take(); err != nil {
				close(s.failed)
				return
			}
			select {
			case <-s.stop:
				return
			case <-t.C:
			}
		}
	}()
	return s
}

// take reads the stats once and keeps the sample.
func (s *sampler) take() error {
	snap, _, err := readStats(s.path)
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		s.err = err
		return err
	}
	s.last = snap
	s.samples = append(s.samples, sample{T: time.Since(s.t0).Seconds(), Unsynced: snap.Figures.Get(wire.UnsyncedBytes), Oldest: snap.Figures.Float(wire.OldestUnsynced)})
	return nil
}

// finish stops the sampling, takes a last sample (unless one failed)
// and returns them all with the last snapshot, or the read that failed.
// Calls after the first return the same.
func (s *sampler) finish() ([]sample, *wire.Snapshot, error) {
	first := false
	s.once.Do(func() { first = true; close(s.stop) })
	<-s.done
	s.mu.Lock()
	failed := s.err != nil
	s.mu.Unlock()
	if first && !failed {
		s.take()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.samples, s.last, s.err
}

// cutPower cuts the power of the mount at mnt as mmapfs powercut does:
// the control file's request, then the wait until the mount is dropped.
func cutPower(mnt string) (*wire.ControlReply, error) {
	var before syscall.Stat_t
	if err := syscall.Stat(mnt, &before); err != nil {
		return nil, mountError("powercut", mnt, &os.PathError{Op: "stat", Path: mnt, Err: err})
	}
	reply, _, err := control(mnt, wire.ControlPowerCut)
	if err != nil {
		return nil, err
	}
	if reply.Report == nil {
		return nil, fmt.Errorf("powercut on %s: the daemon answered without a report", mnt)
	}
	if err := waitDropped(mnt, before.Dev, dropWait); err != nil {
		return nil, err
	}
	return reply, nil
}

// errString is err's message, "" for nil.
func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
