package integration

import (
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
	return runBinaryUntil(t, timeout, nil, n, args...)
}
