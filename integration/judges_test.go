package integration

// Outside judges: programs written by others (fio, stress-ng, SQLite, LMDB,
// bbolt) run on the mount with their own checks, and the tests require
// what a user would: no errors, no verification failures, the data read
// back as written, before and after a remount.
//
// Each judge skips with the Debian package to install when its tool is
// missing, so that the suite passes on a bare machine; CI installs them:
//
//	apt-get install -y fio stress-ng sqlite3 lmdb-utils python3-lmdb
//
// Every external command runs with a timeout, in its own process group
// (killed whole at the timeout), and its output goes into the failure
// message.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mmapfs/mmapfs/internal/procstat"
)

// judgeSwitchSets are the mounts every judge runs on: the defaults, and
// the two switches that change the data path the most.
var judgeSwitchSets = [][]string{
	nil,
	{"--writeback-cache"},
	{"--direct-io"},
}

// forJudgeMounts runs fn in a parallel subtest per switch set of
// judgeSwitchSets, each on its own mount.
func forJudgeMounts(t *testing.T, fn func(t *testing.T, m *mount)) {
	t.Helper()
	for _, sw := range judgeSwitchSets {
		name := "defaults"
		if sw != nil {
			name = strings.TrimPrefix(strings.Join(sw, ""), "--")
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			if sw != nil && loopbackMode {
				t.Skip("mmapfs switches")
			}
			m := startMount(t, sw...)
			fn(t, m)
			checkNoFaults(t, m)
		})
	}
}

// needTool returns the path of the program name, or skips the test naming
// the Debian package that provides it.
func needTool(t testing.TB, name, debianPkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Skipf("%s not found (install the Debian package %s): %v", name, debianPkg, err)
	}
	return p
}

// toolRun is the outcome of an external command run by runTool.
type toolRun struct {
	cmdline        string
	stdout, stderr string
	code           int // exit status; -1 if it was killed or did not start
	err            error
	elapsed        time.Duration
	timedOut       bool
}

func (r toolRun) ok() bool { return r.err == nil && r.code == 0 }

// String renders the run for a failure message: the command line, how it
// ended and its output (the end of it, if long).
func (r toolRun) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "$ %s\n", r.cmdline)
	switch {
	case r.timedOut:
		fmt.Fprintf(&b, "(killed: still running after %v)\n", r.elapsed.Round(time.Millisecond))
	case r.err != nil && r.code < 0:
		fmt.Fprintf(&b, "(%v after %v)\n", r.err, r.elapsed.Round(time.Millisecond))
	default:
		fmt.Fprintf(&b, "(exit status %d after %v)\n", r.code, r.elapsed.Round(time.Millisecond))
	}
	if r.stdout != "" {
		fmt.Fprintf(&b, "--- stdout:\n%s\n", tailText(r.stdout, 6000))
	}
	if r.stderr != "" {
		fmt.Fprintf(&b, "--- stderr:\n%s\n", tailText(r.stderr, 6000))
	}
	return b.String()
}

// tailText returns the last n bytes of s, marked as cut if it was.
func tailText(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return fmt.Sprintf("[... %d bytes cut ...]\n%s", len(s)-n, s[len(s)-n:])
}

// runTool runs name with args in dir, with stdin (may be nil), and waits
// up to timeout. The command runs in a process group of its own, which is
// killed whole at the timeout (so that no child of it keeps a file of a
// mount open), and dies with the test binary.
func runTool(t testing.TB, timeout time.Duration, dir string, stdin io.Reader, name string, args ...string) toolRun {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Stdin = stdin
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	var atTimeout string
	cmd.Cancel = func() error {
		// What the group was doing when its time ran out: a tool
		// stuck on a request the daemon never answered shows its
		// FUSE wait here, one merely slow shows running threads.
		atTimeout = groupStacks(cmd.Process.Pid)
		// The group's leader is still running (not yet reaped), so the
		// group is ours.
		return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	cmd.WaitDelay = 5 * time.Second
	r := toolRun{cmdline: shellLine(name, args), code: -1}
	start := time.Now()
	r.err = cmd.Run()
	r.elapsed = time.Since(start)
	r.timedOut = ctx.Err() != nil
	r.stdout, r.stderr = stdout.String(), stderr.String()
	if atTimeout != "" {
		r.stderr += "\n--- at the timeout, the threads of its process group not sleeping interruptibly:\n" + atTimeout
	}
	var ee *exec.ExitError
	switch {
	case r.err == nil:
		r.code = 0
	case errors.As(r.err, &ee) && ee.Exited():
		r.code = ee.ExitCode()
	}
	if testing.Verbose() {
		t.Logf("%s: exit %d in %v", clipText(strings.ReplaceAll(r.cmdline, "\n", " "), 300), r.code, r.elapsed.Round(time.Millisecond))
	}
	return r
}

// groupStacks returns, for every process of the process group pgid, its
// command and the kernel stacks of its threads that are not sleeping
// interruptibly (threadStacks).
func groupStacks(pgid int) string {
	var b strings.Builder
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		st, err := procstat.OfPid(pid)
		if err != nil || st.Pgrp != pgid {
			continue // gone meanwhile, or another group's
		}
		fmt.Fprintf(&b, "pid %d (%s), state %c:\n%s", pid, st.Comm, st.State, threadStacks(pid))
	}
	return b.String()
}

// shellLine renders a command line to paste into a shell.
func shellLine(name string, args []string) string {
	parts := []string{filepath.Base(name)}
	for _, a := range args {
		if a == "" || strings.ContainsAny(a, " \t\n'\"$`\\|&;<>()*?[]#~") {
			a = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
		parts = append(parts, a)
	}
	return strings.Join(parts, " ")
}

// checkNoFaults fails the test if the daemon turned a fault on a mapping
// into an error: none of the judges' workloads should provoke one.
func checkNoFaults(t testing.TB, m *mount) {
	t.Helper()
	if loopbackMode || !mounted(m.mnt) {
		return
	}
	raw, err := os.ReadFile(filepath.Join(m.mnt, statsFile))
	if err != nil {
		t.Errorf("read stats: %v", err)
		return
	}
	var s struct {
		Faults *int64 `json:"faults"`
	}
	if err := json.Unmarshal(raw, &s); err != nil {
		t.Errorf("decode stats: %v\n%s", err, raw)
		return
	}
	if s.Faults != nil && *s.Faults != 0 {
		t.Errorf("the daemon counted %d fault(s) on its mappings (stats: %s); daemon output:\n%s", *s.Faults, raw, tailText(m.out.String(), 4000))
	}
}

// stopAndCopy stops the daemon (a clean unmount, which must sync the
// store), copies the files of the store that match the patterns (relative
// to the store, as filepath.Glob takes them) into a fresh directory,
// starts the daemon again on the same store and returns that directory: a
// judge then checks the blobs themselves, not through the mount.
func stopAndCopy(t testing.TB, m *mount, patterns ...string) string {
	t.Helper()
	m.stop(t)
	dir := t.TempDir()
	for _, pat := range patterns {
		srcs, err := filepath.Glob(filepath.Join(m.store, pat))
		if err != nil {
			t.Fatal(err)
		}
		for _, src := range srcs {
			b, err := os.ReadFile(src)
			if err != nil {
				t.Fatalf("copy the blob %s out of the store: %v", src, err)
			}
			if err := os.WriteFile(filepath.Join(dir, filepath.Base(src)), b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	m.start(t)
	return dir
}
