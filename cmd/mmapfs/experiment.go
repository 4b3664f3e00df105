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
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/mmapfs/mmapfs/backing"
	"github.com/mmapfs/mmapfs/fs"
	"github.com/mmapfs/mmapfs/fs/wire"
)

// An experiment runs one workload under each writeback policy and switch
// set, each run on a fresh store and a fresh mount with --powercut-sim
// served by a child process (this binary's mount command): it samples the
// stats every sampleEvery while the workload runs, cuts the power (the
// control file's request, as mmapfs powercut sends it), mounts the store
// again and has the workload judge what survived. The files:
// experiment.go (the command and one run), experiment_child.go (the mount
// child), experiment_workload.go (the built-in workloads and their
// checks), experiment_output.go (table, CSV, JSON, plots).

// defaultPolicies are the policies an experiment compares without
// --policy: all six.
var defaultPolicies = []string{"fsync", "write-through", "close", "periodic:1s", "async", "none"}

// sampleEvery is how often a run reads the mount's stats.
const sampleEvery = 100 * time.Millisecond

// experimentFlags are the flags of mmapfs experiment.
type experimentFlags struct {
	policies string
	switches []string
	inject   []string
	runs     int
	cutAt    string
	duration time.Duration
	out      string
	check    string
}

// experimentPlan is a checked experiment command line.
type experimentPlan struct {
	policies []string
	switches [][]string // each set's mount flags
	inject   []string   // --inject rules, passed to each run's first mount
	runs     int
	cutAt    time.Duration // 0: at the end of the workload
	duration time.Duration
	out      string
	work     workload
}

// total is the number of runs of the plan.
func (p *experimentPlan) total() int { return len(p.policies) * len(p.switches) * p.runs }

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
		Use:   "experiment [flags] {WORKLOAD | -- COMMAND [ARGS...]}",
		Short: "Run a workload under each writeback policy, cut the power, and check what survived",
		Long: `Run one workload under each writeback policy (--policy, default all six) and
each switch set (--switches, repeatable; default none), --runs times each.
Every run gets a fresh store (a private temporary directory, removed after)
and a fresh mount with --powercut-sim, served by a child 'mmapfs mount'.
While the workload runs, the mount's stats are sampled every 100 ms (bytes
at risk, the oldest unsynced write, msync and fsync calls). The power is cut
--cut-at after the workload began, or at its end (the default: right after
it finished, before anything is closed or unmounted): what the daemon had
not synced gets its last synced content back, as 'mmapfs powercut' does.
The store is then mounted again and the workload's own check says what
survived.

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
  fio:JOBFILE              fio runs JOBFILE in the mount (leave directory=
                           out of the job); check: fio's exit status (its
                           verify, if the job has one)
  -- COMMAND [ARGS...]     any command, run with the mountpoint in
                           $MMAPFS_MNT; --check COMMAND (a shell command,
                           $MMAPFS_MNT set) judges what survived: its exit
                           status and first line of output are the check
The loggers, SQLite, bbolt and lmdb run for --duration (default 3s).

Acknowledged means: records covered by a completed fsync/msync, committed
transactions. Every policy honours fsync, so no acknowledged record or
committed row of a synchronous=FULL database may be lost.

Output: a table, one row per run (throughput, fsync and msync counts and
latency quantiles, mean and peak bytes at risk, the oldest unsynced write,
the bytes the cut put back or cut off, the check); with --out DIR also
results.csv, results.json (with every sample), and, drawn with gnuplot,
at-risk.png (bytes at risk over time per run) and throughput-lost.png
(throughput against bytes lost). Ctrl-C stops the current run cleanly
(unmounted, store removed) and keeps the runs done.`,
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
	fl.StringArrayVar(&f.inject, "inject", nil, "a fault injection `RULE` for each run's mount (repeatable; as mmapfs mount --inject)")
	fl.IntVar(&f.runs, "runs", 1, "runs of each policy and switch set, 1 or more")
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
	case len(named) > 1:
		return nil, usage("one workload, not %d (%s); a command to run goes after --", len(named), strings.Join(named, " "))
	case len(named) == 1 && command != nil:
		return nil, usage("a workload (%s) or a command after --, not both", named[0])
	case f.check != "" && command == nil:
		return nil, usage("--check judges a command's run (-- COMMAND); the built-in workload %s has its own check", named[0])
	case f.runs < 1:
		return nil, usage("--runs %d: out of range: 1 or more", f.runs)
	case f.duration <= 0:
		return nil, usage("--duration %v: must be more than 0 (e.g. 3s)", f.duration)
	}
	var err error
	if command != nil {
		p.work = &commandWorkload{argv: command, check: f.check}
	} else if p.work, err = parseWorkload(named[0]); err != nil {
		return nil, usage("%v", err)
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
	return p, nil
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

// runExperiment runs plan's runs in order, prints the table to out and
// writes the files of --out. A signal stops the run under way (cleaned up
// as any run is) and keeps the runs done.
func runExperiment(out, errOut io.Writer, plan *experimentPlan) error {
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("experiment: finding this binary to mount with: %w", err)
	}
	if err := plan.work.Prepare(); err != nil {
		return fmt.Errorf("experiment: %w", err)
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
	go func() {
		select {
		case sig = <-sigs:
			cancel()
		case <-stopped:
		}
	}()

	prog := newProgress(errOut, plan)
	res := &experimentResult{Workload: plan.work.Name(), CutAt: "end", DurationSecs: plan.duration.Seconds()}
	if plan.cutAt > 0 {
		res.CutAt = plan.cutAt.String()
	}
	var runErr error
	i := 0
runs:
	for _, sw := range plan.switches {
		for _, pol := range plan.policies {
			for k := 1; k <= plan.runs; k++ {
				i++
				spec := runSpec{exe: exe, policy: pol, switches: sw, inject: plan.inject, run: k, plan: plan}
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
	close(stopped)
	prog.finish()
	if errors.Is(runErr, errInterrupted) || ctx.Err() != nil {
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
	policy   string
	switches []string
	inject   []string
	run      int
	plan     *experimentPlan
}

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
	for _, rule := range spec.inject {
		args = append(args, "--inject", rule)
	}
	first, err := startMountChild(ctx, spec.exe, append(args, store, mnt), mnt)
	if err != nil {
		return nil, err
	}
	children = append(children, first)

	r = &runResult{Policy: spec.policy, Switches: strings.Join(spec.switches, " "), Run: spec.run, Workload: spec.plan.work.Name(), Unit: spec.plan.work.Unit()}
	t0 := time.Now()
	w, err := spec.plan.work.Start(mnt, dir, spec.plan.duration)
	if err != nil {
		return nil, fmt.Errorf("starting %s: %w", spec.plan.work.Name(), err)
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
	w.Freeze()
	r.Seconds = time.Since(t0).Seconds()
	samples, last, err := smp.finish()
	if err != nil {
		return nil, err
	}
	r.Samples = samples
	r.Done, r.Acked = w.Progress()
	reply, err := cutPower(mnt)
	if err != nil {
		return nil, err
	}
	r.PutBackBytes, r.CutOffBytes = reply.Report.Restored, reply.Report.Cutoff
	r.LostBytes = r.PutBackBytes + r.CutOffBytes
	r.WorkloadError = errString(w.Kill())
	killed = true
	if !first.wait(dropWait) {
		return nil, fmt.Errorf("the power was cut, but the mount's daemon (pid %d) did not exit in %v", first.pid, dropWait)
	}
	r.summarize(last, spec.plan.work.Unit())

	second, err := startMountChild(ctx, spec.exe, []string{"mount", store, mnt}, mnt)
	if err != nil {
		return nil, fmt.Errorf("mounting the store again after the cut: %w", err)
	}
	children = append(children, second)
	if ctx.Err() != nil {
		return nil, errInterrupted
	}
	c, err := spec.plan.work.Check(ctx, mnt, w, r.Acked)
	if err != nil {
		if ctx.Err() != nil {
			return nil, errInterrupted
		}
		return nil, fmt.Errorf("checking what survived: %w", err)
	}
	r.Kept, r.AckedLost, r.Torn, r.Check, r.OK = c.kept, c.ackedLost, c.torn, c.text, c.ok
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
