package integration

import (
	"errors"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Waiting for a condition instead of sleeping for a guess: on a loaded
// machine (a -race start, a CI run beside the suite) any fixed sleep is
// too short once in a while.

// pollTimeout is how long a test polls for something that takes
// milliseconds on an idle machine.
const pollTimeout = 5 * time.Second

// runUntilLines runs the binary with args until its stdout holds n whole
// lines, then stops it as runBinary stops a run that does not exit in
// time (SIGTERM, then SIGKILL). A run that has not printed n lines by
// timeout is stopped the same way, with what it printed so far, so that
// the caller's check of the lines fails. exitCode is -1 for a run that
// was stopped and the exit status for one that exited by itself (an
// error, or a command that should have kept running).
func runUntilLines(t testing.TB, timeout time.Duration, n int, args ...string) runResult {
	t.Helper()
	var stdout, stderr syncBuffer
	cmd := daemonCommand(args...)
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	start := time.Now()
	d := startDaemon(t, cmd)
	res := runResult{exitCode: -1}
	deadline := start.Add(timeout)
	for !d.exited() && strings.Count(stdout.String(), "\n") < n && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	res.elapsed = time.Since(start)
	if d.exited() {
		res.exitCode = 0
		var ee *exec.ExitError
		if errors.As(d.err, &ee) {
			res.exitCode = ee.ExitCode()
		} else if d.err != nil {
			t.Errorf("%s %s: %v", binPath, strings.Join(args, " "), d.err)
		}
	} else {
		cmd.Process.Signal(syscall.SIGTERM)
		if !d.waitExit(stopTimeout) {
			cmd.Process.Kill()
			d.waitExit(killTimeout)
		}
	}
	res.stdout, res.stderr = stdout.String(), stderr.String()
	return res
}
