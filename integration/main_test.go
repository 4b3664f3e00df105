package integration

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mmapfs/mmapfs/internal/enableuring"
	"github.com/mmapfs/mmapfs/internal/testproc"
)

const (
	mmapfsPkg   = "github.com/mmapfs/mmapfs/cmd/mmapfs"
	loopbackPkg = "github.com/hanwen/go-fuse/v2/example/loopback"
)

var (
	// binPath is the daemon under test, built by TestMain.
	binPath string
	// loopbackMode is set by MMAPFS_INTEGRATION_FS=loopback: the suite then
	// runs against go-fuse's example loopback filesystem (see the package
	// doc).
	loopbackMode bool
)

func TestMain(m *testing.M) {
	if role, ok := os.LookupEnv(roleEnv); ok {
		os.Exit(runRole(role, os.Args[1:]))
	}
	flag.Parse()
	os.Exit(runMain(m))
}

// Helper processes. Some tests need a process of their own: the daemon's
// close-on-exec trampoline, the watchdog, clients that run as another
// user or hold tens of thousands of files open, several clients of one
// mount at once. Each is this test binary run again in a role: roleCommand
// builds the command, with the role's name in roleEnv, and TestMain plays
// the role before anything else (no flag parsing, no daemon build, no
// watchdog) and exits with its status. The crash writer (crashwriter/) is
// a program of its own instead: it is built without -race, so that it
// makes many calls before the crash, and its log is a format of its own
// that crashmodel reads.

// roleEnv names the role a run of the test binary plays (see roles).
const roleEnv = "MMAPFS_INTEGRATION_ROLE"

// The roles, by the name roleCommand is given.
const (
	roleTrampoline      = "trampoline"       // exec a command with no inherited descriptor (trampoline)
	roleWatchdog        = "watchdog"         // detach the run's mounts once it dies (runWatchdog)
	roleFsxClient       = "fsx-client"       // one client of TestFsx's multi-client run (fsxClient)
	roleManyFilesClient = "manyfiles-client" // hold a share of TestManyFilesOpen's files (manyFilesClient)
	roleModesClient     = "modes-client"     // the client of the modes tests (modesClient)
	roleTraceClient     = "trace-client"     // the command mmapfs trace runs in the trace tests (traceClient)
	roleURingUser       = "uring-user"       // a user of a switch file until killed (uringUser)
)

// roles maps every role to what plays it: a function of the process's
// arguments that returns its exit status.
var roles = map[string]func(args []string) int{
	roleTrampoline:      trampoline,
	roleWatchdog:        runWatchdog,
	roleFsxClient:       fsxClient,
	roleManyFilesClient: manyFilesClient,
	roleModesClient:     modesClient,
	roleTraceClient:     traceClient,
	roleURingUser:       uringUser,
}

// runRole plays role with args and returns the exit status.
func runRole(role string, args []string) int {
	os.Unsetenv(roleEnv) // what the role runs is not a helper itself
	play := roles[role]
	if play == nil {
		fmt.Fprintf(os.Stderr, "%s=%q: no such role\n", roleEnv, role)
		return 2
	}
	return play(args)
}

// testBinary is this test binary, set by TestMain before any test runs.
var testBinary string

// roleCommand returns a command that runs bin (testBinary, or a link to
// it) in role with args. It dies with the test process (Pdeathsig; a role
// that must outlive it sets SysProcAttr anew).
func roleCommand(bin, role string, args ...string) *exec.Cmd {
	if roles[role] == nil {
		panic("roleCommand: no role " + role)
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), roleEnv+"="+role)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	return cmd
}

func runMain(m *testing.M) (code int) {
	if os.Geteuid() != 0 {
		fmt.Println("SKIP: the integration tests mount FUSE filesystems and need root")
		return 0
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		fmt.Printf("SKIP: no /dev/fuse: %v\n", err)
		return 0
	}
	self, err := os.Executable()
	if err != nil {
		fmt.Println(err)
		return 1
	}
	testBinary = self
	switch fsName := os.Getenv("MMAPFS_INTEGRATION_FS"); fsName {
	case "", "mmapfs":
	case "loopback":
		loopbackMode = true
	default:
		fmt.Printf("MMAPFS_INTEGRATION_FS=%q: want mmapfs or loopback\n", fsName)
		return 2
	}

	// The watchdog first: it detaches the run's mounts, and puts
	// enable_uring back, if this process dies however it dies.
	if err := startWatchdog(); err != nil {
		fmt.Println(err)
		return 1
	}
	defer stopWatchdog()

	// MMAPFS_INTEGRATION_TRANSPORT=uring: enable_uring on for the run.
	release, skip, err := suiteURing()
	if err != nil {
		fmt.Println(err)
		return 2
	}
	if skip != "" {
		fmt.Println("SKIP: " + skip)
		return 0
	}
	defer func() {
		if err := release(); err != nil {
			fmt.Printf("FAIL: %v\n", err)
			code = 1
		}
	}()

	// Every store, mountpoint and binary of this run lives under one
	// directory of its own, so that a mount a killed run left behind is
	// found by its path (.ci/run detaches those, and only those) and no
	// other mount under /tmp is ever touched.
	runDir, err := makeRunDir()
	if err != nil {
		fmt.Println(err)
		return 1
	}
	defer removeRunDir(runDir)
	dir := filepath.Join(runDir, "bin")
	if err := os.Mkdir(dir, 0o755); err != nil {
		fmt.Println(err)
		return 1
	}
	binPath = filepath.Join(dir, "mmapfs")
	pkg := mmapfsPkg
	if loopbackMode {
		pkg = loopbackPkg
	}
	if err := buildBinary(binPath, pkg); err != nil {
		fmt.Println(err)
		return 1
	}

	code = m.Run()
	if n := sweepDaemons(); n > 0 {
		fmt.Printf("FAIL: %d daemon(s) or mount(s) were left behind by the tests and have been removed\n", n)
		if code == 0 {
			code = 1
		}
	}
	return code
}

// runDirPrefix names the directory under os.TempDir that holds a run's
// stores and mountpoints (t.TempDir makes them there: TestMain points
// TMPDIR at it). .ci/run detaches stale mounts below such directories.
const runDirPrefix = "mmapfs-integration-"

// makeRunDir makes the run's directory, open to other users (the tests
// that act as nobody need to reach their directories inside it), and
// makes it the temporary directory of the run.
func makeRunDir() (string, error) {
	d, err := os.MkdirTemp("", runDirPrefix)
	if err != nil {
		return "", err
	}
	if err := os.Chmod(d, 0o755); err != nil {
		return "", errors.Join(err, os.Remove(d))
	}
	if err := os.Setenv("TMPDIR", d); err != nil {
		return "", errors.Join(err, os.Remove(d))
	}
	return d, nil
}

// removeRunDir removes the run's directory unless something is still
// mounted below it: removing it then would remove files through the mount.
func removeRunDir(d string) {
	if m := mountsBelow(d); len(m) > 0 {
		fmt.Printf("leaving %s: still mounted below it: %s\n", d, strings.Join(m, ", "))
		return
	}
	if err := os.RemoveAll(d); err != nil {
		fmt.Printf("removing %s: %v\n", d, err)
	}
}

// mountsBelow lists the mountpoints strictly below dir.
func mountsBelow(dir string) []string {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return []string{"(cannot read /proc/self/mountinfo: " + err.Error() + ")"}
	}
	var below []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && strings.HasPrefix(unescapeMountField(f[4]), dir+"/") {
			below = append(below, unescapeMountField(f[4]))
		}
	}
	return below
}

// daemonCommand returns a command that runs the binary under test with
// args, through the trampoline.
func daemonCommand(args ...string) *exec.Cmd {
	return trampolineCommand(binPath, args...)
}

// trampolineCommand returns a command that runs prog with args through
// this test binary in roleTrampoline.
//
// Some tests (posixtest's among them) open files on a mount without
// O_CLOEXEC. A daemon (or a mount(8), a writer) started by another test
// meanwhile would inherit such a descriptor and hold that mount busy for
// its whole life, so that it cannot be unmounted. So prog is not started
// directly but through the trampoline, which marks every descriptor above
// 2 close-on-exec before it execs prog (same pid, and Pdeathsig carries
// over: if the test binary dies, prog is killed).
func trampolineCommand(prog string, args ...string) *exec.Cmd {
	cmd := roleCommand(testBinary, roleTrampoline, append([]string{prog}, args...)...)
	if raceEnabled && os.Getenv("GORACE") == "" {
		// A -race binary sleeps 1s at exit by default, for goroutines
		// still running to report; a tenth of that is enough here.
		cmd.Env = append(cmd.Env, "GORACE=atexit_sleep_ms=100")
	}
	// A helper such as fusermount3 may keep the output pipes open.
	cmd.WaitDelay = 2 * time.Second
	return cmd
}

// trampoline execs args with every descriptor above 2 closed on exec. It
// returns only if it cannot.
func trampoline(args []string) int {
	if err := unix.CloseRange(3, math.MaxUint32, unix.CLOSE_RANGE_CLOEXEC); err != nil {
		fmt.Fprintf(os.Stderr, "trampoline: close_range: %v\n", err)
		return 127
	}
	if len(args) < 1 {
		fmt.Fprintln(os.Stderr, "trampoline: no command")
		return 127
	}
	err := syscall.Exec(args[0], args, os.Environ())
	fmt.Fprintf(os.Stderr, "trampoline: exec %s: %v\n", args[0], err)
	return 127
}

// buildBinary builds pkg into out from the root of this module.
func buildBinary(out, pkg string) error {
	goTool, err := exec.LookPath("go")
	if err != nil {
		goTool = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	root, err := repoRoot(goTool)
	if err != nil {
		return err
	}
	args := []string{"build"}
	if raceEnabled {
		args = append(args, "-race")
	}
	args = append(args, "-o", out, pkg)
	cmd := exec.Command(goTool, args...)
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, b)
	}
	return nil
}

// repoRoot returns the directory of this module's go.mod.
func repoRoot(goTool string) (string, error) {
	b, err := exec.Command(goTool, "env", "GOMOD").Output()
	if err == nil {
		if gomod := strings.TrimSpace(string(b)); gomod != "" && gomod != os.DevNull {
			return filepath.Dir(gomod), nil
		}
	}
	root, err := filepath.Abs("..")
	if err != nil {
		return "", err
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		return "", fmt.Errorf("cannot find the module root: %v", err)
	}
	return root, nil
}

// uringUser acquires the enable_uring switch file args[0], says "held"
// and waits for its stdin to end, then releases it.
func uringUser(args []string) int {
	if len(args) != 1 {
		fmt.Fprintln(os.Stderr, "uring-user: want the switch file")
		return 2
	}
	u, err := enableuring.For(args[0]).Acquire()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Println("held")
	io.Copy(io.Discard, os.Stdin)
	if err := u.Release(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// TestWatchdogRestoresEnableURing: a run killed as the last user of
// enable_uring has it put back by its watchdog; one killed while another
// process still uses it leaves that to the other. On a switch file of
// the test's own (the real one is never written here).
func TestWatchdogRestoresEnableURing(t *testing.T) {
	t.Parallel()
	for _, other := range []bool{false, true} {
		t.Run(fmt.Sprintf("another user %v", other), func(t *testing.T) {
			t.Parallel()
			param := filepath.Join(t.TempDir(), "enable_uring")
			if err := os.WriteFile(param, []byte("N\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			read := func() string {
				b, err := os.ReadFile(param)
				if err != nil {
					t.Fatal(err)
				}
				return strings.TrimSpace(string(b))
			}
			// The watchdog of a run that dies: its stdin ends.
			wdIn, wdOut, err := os.Pipe()
			if err != nil {
				t.Fatal(err)
			}
			wd := roleCommand(testBinary, roleWatchdog, param)
			wd.Stdin = wdIn
			wd.Stderr = os.Stderr
			if err := wd.Start(); err != nil {
				t.Fatal(err)
			}
			wdIn.Close()
			defer func() { wdOut.Close(); wd.Wait() }()
			// The run itself, a user of the switch, to be killed.
			run := startURingUser(t, param)
			var second *uringUserProc
			if other {
				second = startURingUser(t, param)
			}
			if v := read(); v != "1" {
				t.Fatalf("the switch reads %q while used, want 1", v)
			}
			run.Process.Kill()
			run.Wait()
			wdOut.Close() // the run is dead: the watchdog sees EOF
			if err := wd.Wait(); err != nil {
				t.Fatalf("watchdog: %v", err)
			}
			if !other {
				if v := read(); v != "N" {
					t.Fatalf("after the killed run's watchdog: the switch reads %q, want N put back", v)
				}
				return
			}
			if v := read(); v != "1" {
				t.Fatalf("the watchdog turned the switch off under another user: it reads %q", v)
			}
			second.in.Close()
			if err := second.Wait(); err != nil {
				t.Fatal(err)
			}
			if v := read(); v != "N" {
				t.Fatalf("after the other user left: the switch reads %q, want N", v)
			}
		})
	}
}

// uringUserProc is a uring-user process; closing in makes it release.
type uringUserProc struct {
	*exec.Cmd
	in io.WriteCloser
}

// startURingUser starts a uring-user of param and waits (10s at most)
// until it holds it; it is killed at the end of the test.
func startURingUser(t *testing.T, param string) *uringUserProc {
	t.Helper()
	cmd := roleCommand(testBinary, roleURingUser, param)
	in, out := testproc.Start(t, cmd)
	held := make(chan string, 1)
	go func() {
		b := make([]byte, 5)
		n, _ := io.ReadFull(out, b)
		held <- string(b[:n])
	}()
	select {
	case l := <-held:
		if l != "held\n" {
			t.Fatalf("uring-user said %q, want held", l)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("uring-user did not hold the switch in 10s")
	}
	return &uringUserProc{cmd, in}
}
