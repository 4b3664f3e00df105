// Package testproc starts the helper processes tests run beside
// themselves (the test binary again, as another user of something the
// test holds): with a pipe to the helper's stdin, whose end tells it to
// finish, and one from its stdout, where it says how far it has come.
// Its stderr is the test's, so that what it complains of is seen.
//
// What it must never do: leave a helper behind. Every helper it starts
// is killed and reaped at the end of the test that started it, however
// that test ends.
package testproc

import (
	"io"
	"os"
	"os/exec"
	"testing"
)

// Start starts cmd with its stdin and stdout piped to the caller and its
// stderr the test process's, and kills and reaps it when t ends; it
// fails t if the pipes or the start fail. The caller may Wait for cmd
// itself before then (the cleanup's Wait then just fails).
func Start(t testing.TB, cmd *exec.Cmd) (stdin io.WriteCloser, stdout io.ReadCloser) {
	t.Helper()
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatalf("%s: %v", cmd, err)
	}
	stdout, err = cmd.StdoutPipe()
	if err != nil {
		t.Fatalf("%s: %v", cmd, err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("%s: %v", cmd, err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return stdin, stdout
}
