package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// tracefsInstances are where tracefs keeps its instances, in the order
// mmapfs trace looks for tracefs: its own mount point, then debugfs's
// automount of it (a machine may have only that one). Both show the same
// instances when both are mounted.
var tracefsInstances = []string{"/sys/kernel/tracing/instances", "/sys/kernel/debug/tracing/instances"}

// traceInstances returns the tracefs instances of trace process pid.
func traceInstances(pid int) []string {
	for _, d := range tracefsInstances {
		if m, _ := filepath.Glob(filepath.Join(d, fmt.Sprintf("mmapfs-trace-%d-*", pid))); len(m) > 0 {
			return m
		}
	}
	return nil
}

// bgTrace is an mmapfs trace running in the background.
type bgTrace struct {
	cmd            *exec.Cmd
	d              *daemon
	stdout, stderr syncBuffer
}

// startTrace starts mmapfs trace with args and waits until it traces:
// its instance exists and the daemon of m has connected to it (its log
// says so one more time than before).
func startTrace(t *testing.T, m *mount, args ...string) *bgTrace {
	t.Helper()
	before := strings.Count(m.out.String(), "trace: recording every request for the tracer")
	tr := &bgTrace{}
	tr.cmd = daemonCommand(append([]string{"trace"}, args...)...)
	tr.cmd.Stdout, tr.cmd.Stderr = &tr.stdout, &tr.stderr
	tr.d = startDaemon(t, tr.cmd)
	t.Cleanup(func() {
		if !tr.d.exited() {
			tr.cmd.Process.Kill()
			tr.d.waitExit(killTimeout)
		}
	})
	// Tracing: its instance is there, the daemon has connected to it,
	// and it has removed its socket's name (as soon as the daemon
	// connected).
	tracing := func() bool {
		if len(traceInstances(tr.cmd.Process.Pid)) == 0 || strings.Count(m.out.String(), "trace: recording every request for the tracer") <= before {
			return false
		}
		_, err := os.Stat(filepath.Dir(lastTracer(t, m)))
		return os.IsNotExist(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		if tracing() {
			return tr
		}
		if tr.d.exited() || time.Now().After(deadline) {
			t.Fatalf("mmapfs trace %s did not start tracing; stderr:\n%s", strings.Join(args, " "), tr.stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stop sends sig and waits for the trace to exit; it returns the exit
// status.
func (tr *bgTrace) stop(t *testing.T, sig syscall.Signal) int {
	t.Helper()
	tr.cmd.Process.Signal(sig)
	if !tr.d.waitExit(30 * time.Second) {
		t.Fatalf("mmapfs trace did not exit within 30s of %v; stderr:\n%s", sig, tr.stderr.String())
	}
	if tr.d.err == nil {
		return 0
	}
	if ee, ok := tr.d.err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	t.Fatalf("mmapfs trace: %v", tr.d.err)
	return -1
}

// readAll reads the file at path through the mount and fails the test
// if it cannot.
func readAll(t *testing.T, path string) {
	t.Helper()
	if _, err := os.ReadFile(path); err != nil {
		t.Fatal(err)
	}
}

// TestTraceInterrupted: a trace without a command runs until SIGINT, then
// prints what it saw and leaves nothing behind: no tracefs instance, no
// socket, and the daemon stops recording for it (and goes on serving).
func TestTraceInterrupted(t *testing.T) {
	t.Parallel()
	m := startMount(t)
	defer m.stop(t)
	path := filepath.Join(m.mnt, "f")
	if err := os.WriteFile(path, make([]byte, 256<<10), 0o644); err != nil {
		t.Fatal(err)
	}
	tr := startTrace(t, m, m.mnt, "--summary")
	pid := tr.cmd.Process.Pid
	readAll(t, path)
	if code := tr.stop(t, syscall.SIGINT); code != 0 {
		t.Fatalf("mmapfs trace after SIGINT: exit %d, want 0; stderr:\n%s", code, tr.stderr.String())
	}
	if left := traceInstances(pid); len(left) > 0 {
		t.Errorf("the trace left its tracefs instance %v", left)
	}
	if !regexp.MustCompile(`(?m)^\s*(OPEN|READ|LOOKUP)\b`).MatchString(tr.stdout.String()) {
		t.Errorf("the summary shows none of the requests of the read made while tracing:\n%s", tr.stdout.String())
	}
	sock := lastTracer(t, m)
	if _, err := os.Stat(filepath.Dir(sock)); !os.IsNotExist(err) {
		t.Errorf("the trace left its socket directory %s (stat: %v)", filepath.Dir(sock), err)
	}
	waitTracerGone(t, m, sock)
	readAll(t, path) // still serving
}

// TestTraceKilled: a trace killed with SIGKILL cannot remove its instance;
// the next trace removes it and says so, and the daemon drops the dead
// tracer. Two traces at once each see the requests, and neither takes
// the other's instance for a stale one.
//
// Not parallel: every mmapfs trace removes the stale instances it finds
// when it starts, so another test's trace starting between the kill and
// the two new traces would remove the killed one's instance itself, and
// its note would be in that trace's output, not in these.
func TestTraceKilled(t *testing.T) {
	m := startMount(t)
	defer m.stop(t)
	path := filepath.Join(m.mnt, "f")
	if err := os.WriteFile(path, make([]byte, 64<<10), 0o644); err != nil {
		t.Fatal(err)
	}
	killed := startTrace(t, m, m.mnt)
	kpid := killed.cmd.Process.Pid
	inst := traceInstances(kpid)
	sock := lastTracer(t, m)
	killed.stop(t, syscall.SIGKILL)
	if got := traceInstances(kpid); len(got) != 1 || got[0] != inst[0] {
		t.Fatalf("after SIGKILL the instance of the killed trace is %v, want %v still there", got, inst)
	}
	if _, err := os.Stat(filepath.Dir(sock)); !os.IsNotExist(err) {
		t.Errorf("the killed trace left its socket directory %s (stat: %v)", filepath.Dir(sock), err)
	}
	waitTracerGone(t, m, sock)

	// Two at once; the first of them removes the killed one's instance.
	a := startTrace(t, m, m.mnt, "--json")
	b := startTrace(t, m, m.mnt, "--json")
	if left := traceInstances(kpid); len(left) != 0 {
		t.Errorf("the stale instance %v of the killed trace is still there", left)
	}
	note := fmt.Sprintf("(pid %d", kpid)
	if !strings.Contains(a.stderr.String()+b.stderr.String(), note) {
		t.Errorf("neither new trace said it removed the killed trace's instance (want a note naming pid %d); stderr:\n%s\n%s", kpid, a.stderr.String(), b.stderr.String())
	}
	readAll(t, path)
	for name, tr := range map[string]*bgTrace{"first": a, "second": b} {
		if code := tr.stop(t, syscall.SIGINT); code != 0 {
			t.Errorf("%s trace: exit %d; stderr:\n%s", name, code, tr.stderr.String())
		}
		if !strings.Contains(tr.stdout.String(), `"op":"READ"`) || !strings.Contains(tr.stdout.String(), `"file":"f"`) {
			t.Errorf("%s trace of two at once did not see the READ of f:\n%s", name, tr.stdout.String())
		}
		if left := traceInstances(tr.cmd.Process.Pid); len(left) > 0 {
			t.Errorf("%s trace left its instance %v", name, left)
		}
	}
}

// TestTraceErrors: what mmapfs trace refuses, and how it says so; and that
// a traced command's exit status is the trace's.
func TestTraceErrors(t *testing.T) {
	t.Parallel()
	m := startMount(t)
	defer m.stop(t)
	plain := t.TempDir()
	for _, tc := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"not a mount", []string{"trace", plain}, 1, plain + " is not an mmapfs mount"},
		{"json and summary", []string{"trace", "--json", "--summary", m.mnt}, 1, "choose one"},
		{"plot not png", []string{"trace", "--plot", "x.txt", m.mnt}, 1, "the plot is a PNG"},
		{"nothing after --", []string{"trace", m.mnt, "--"}, 1, "nothing after --"},
		{"two mountpoints", []string{"trace", m.mnt, plain}, 1, "a command to run goes after --"},
		{"no such command", []string{"trace", m.mnt, "--", filepath.Join(plain, "missing")}, 1, "running " + filepath.Join(plain, "missing")},
		{"command fails", []string{"trace", "--summary", m.mnt, "--", "sh", "-c", "exit 3"}, 3, ""},
	} {
		r := runBinary(t, cliTimeout, nil, tc.args...)
		if r.exitCode != tc.code || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("%s: mmapfs %s: exit %d, stderr %q; want exit %d and %q", tc.name, strings.Join(tc.args, " "), r.exitCode, r.stderr, tc.code, tc.want)
		}
	}
	if code, stderr := runAsNobody(t, nil, "trace", m.mnt); code == 0 || !strings.Contains(stderr, "mmapfs trace needs root") {
		t.Errorf("mmapfs trace as nobody: exit %d, stderr %q; want it refused as needing root", code, stderr)
	}
	// No gnuplot on the PATH: --plot is refused before tracing.
	cmd := exec.Command(binPath, "trace", "--plot", filepath.Join(plain, "p.png"), m.mnt, "--", "true")
	cmd.Env = append(os.Environ(), "PATH="+plain)
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "needs gnuplot") {
		t.Errorf("mmapfs trace --plot without gnuplot: err %v, output %q; want it refused naming gnuplot", err, out)
	}
}

// waitFor polls cond until it holds, failing the test after timeout.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(timeout); !cond(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting %v for %s", timeout, what)
		}
	}
}

// lastTracer returns the socket of the tracer the daemon of m connected to
// last, from its log.
func lastTracer(t *testing.T, m *mount) string {
	t.Helper()
	socks := regexp.MustCompile(`recording every request for the tracer at (\S+)`).FindAllStringSubmatch(m.out.String(), -1)
	if len(socks) == 0 {
		t.Fatalf("the daemon did not log a tracer's socket:\n%s", m.out.String())
	}
	return socks[len(socks)-1][1]
}

// waitTracerGone waits for the daemon of m to log that it dropped the
// tracer at sock.
func waitTracerGone(t *testing.T, m *mount, sock string) {
	t.Helper()
	waitFor(t, 10*time.Second, "the daemon to drop the tracer at "+sock, func() bool {
		return strings.Contains(m.out.String(), "trace: tracer at "+sock+" gone")
	})
}
