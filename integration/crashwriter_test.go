package integration

// What the crash tests (crash_test.go, powercut_test.go) share: building
// and running the writer (crashwriter/) and reading its output. The model
// that says what a file tree may hold after a crash is package crashmodel.

import (
	"bytes"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mmapfs/mmapfs/integration/crashmodel"
)

const crashwriterPkg = "github.com/mmapfs/mmapfs/integration/crashwriter"

var crashwriter struct {
	once sync.Once
	path string
	err  error
}

// crashwriterBin builds the writer once per run, next to the daemon (the
// directory TestMain removes at the end). It is built without -race: it
// is the client, not the code under test, and it should be quick.
func crashwriterBin(t testing.TB) string {
	t.Helper()
	crashwriter.once.Do(func() {
		goTool, err := exec.LookPath("go")
		if err != nil {
			crashwriter.err = err
			return
		}
		root, err := repoRoot(goTool)
		if err != nil {
			crashwriter.err = err
			return
		}
		out := filepath.Join(filepath.Dir(binPath), "crashwriter")
		cmd := exec.Command(goTool, "build", "-o", out, crashwriterPkg)
		cmd.Dir = root
		if b, err := cmd.CombinedOutput(); err != nil {
			crashwriter.err = fmt.Errorf("go build %s: %v\n%s", crashwriterPkg, err, b)
			return
		}
		crashwriter.path = out
	})
	if crashwriter.err != nil {
		t.Fatal(crashwriter.err)
	}
	return crashwriter.path
}

// writerProc is a running crashwriter.
type writerProc struct {
	cmd   *exec.Cmd
	out   syncBuffer
	errb  syncBuffer
	stdin io.WriteCloser
	done  chan struct{}
	err   error
}

// startWriter runs the writer in dir with seed. It goes through the
// trampoline like the daemon, so that it inherits no descriptor of another
// test's mount.
func startWriter(t testing.TB, dir string, seed uint64, args ...string) *writerProc {
	t.Helper()
	bin := crashwriterBin(t)
	w := &writerProc{done: make(chan struct{})}
	w.cmd = trampolineCommand(bin, append([]string{"-dir", dir, "-seed", strconv.FormatUint(seed, 10)}, args...)...)
	w.cmd.Stdout = &w.out
	w.cmd.Stderr = &w.errb
	w.cmd.WaitDelay = time.Second
	var err error
	if w.stdin, err = w.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	if err := w.cmd.Start(); err != nil {
		t.Fatalf("start crashwriter: %v", err)
	}
	go func() {
		w.err = w.cmd.Wait()
		close(w.done)
	}()
	t.Cleanup(func() { // in case the test failed half way
		w.stdin.Close()
		select {
		case <-w.done:
		case <-time.After(killTimeout):
			w.cmd.Process.Kill()
			<-w.done
		}
	})
	return w
}

// waitFor waits up to timeout for a line of output.
func (w *writerProc) waitFor(line string, timeout time.Duration) bool {
	has := func() bool {
		out := w.out.String()
		return strings.HasPrefix(out, line+"\n") || strings.Contains(out, "\n"+line+"\n")
	}
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if has() {
			return true
		}
		select {
		case <-w.done:
			return has()
		case <-time.After(time.Millisecond):
		}
	}
	return false
}

// started waits until the writer runs, so that the crash comes after a
// delay from then, not from the start of its process.
func (w *writerProc) started(t testing.TB) {
	t.Helper()
	if !w.waitFor("START", 10*time.Second) {
		t.Fatalf("the writer did not start: %s%s", w.out.String(), w.errb.String())
	}
}

// finish closes the writer's stdin and waits up to timeout for it to exit.
// A writer that does not is stuck on the mount: it is killed, and the
// error says where it was.
func (w *writerProc) finish(timeout time.Duration) error {
	w.stdin.Close()
	select {
	case <-w.done:
	case <-time.After(timeout):
		stacks := threadStacks(w.cmd.Process.Pid)
		w.cmd.Process.Kill()
		<-w.done
		return fmt.Errorf("the writer did not exit within %v of the crash; its threads were:\n%s", timeout, stacks)
	}
	if w.err != nil {
		return fmt.Errorf("writer: %v\n%s", w.err, w.errb.String())
	}
	return nil
}

// diffTrees describes how two trees differ ("" if they do not).
func diffTrees(a, b crashmodel.Tree) string {
	var out []string
	for name, ea := range a {
		eb, ok := b[name]
		switch {
		case !ok:
			out = append(out, name+": missing")
		case ea.Dir != eb.Dir:
			out = append(out, name+": a directory in one and a file in the other")
		case !bytes.Equal(ea.Data, eb.Data):
			out = append(out, name+": "+diffBytes(eb.Data, ea.Data))
		}
	}
	for name := range b {
		if _, ok := a[name]; !ok {
			out = append(out, name+": extra")
		}
	}
	sort.Strings(out)
	return strings.Join(out, "\n")
}

// tailLog returns the last n lines of the writer's output.
func tailLog(out string, n int) string {
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
