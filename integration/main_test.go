package integration

import (
	"errors"
	"flag"
	"fmt"
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
	if os.Getenv(trampolineEnv) != "" {
		trampoline() // does not return
	}
	if os.Getenv(watchdogEnv) != "" {
		runWatchdog() // does not return
	}
	flag.Parse()
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	if os.Geteuid() != 0 {
		fmt.Println("SKIP: the integration tests mount FUSE filesystems and need root")
		return 0
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		fmt.Printf("SKIP: no /dev/fuse: %v\n", err)
		return 0
	}
	switch fsName := os.Getenv("MMAPFS_INTEGRATION_FS"); fsName {
	case "", "mmapfs":
	case "loopback":
		loopbackMode = true
	default:
		fmt.Printf("MMAPFS_INTEGRATION_FS=%q: want mmapfs or loopback\n", fsName)
		return 2
	}

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

	if err := startWatchdog(); err != nil {
		fmt.Println(err)
		return 1
	}
	defer stopWatchdog()

	code := m.Run()
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

// trampolineEnv makes the test binary a trampoline that execs its
// arguments with no descriptors but 0, 1 and 2 (see daemonCommand).
const trampolineEnv = "MMAPFS_INTEGRATION_TRAMPOLINE"

// daemonCommand returns a command that runs the binary under test with args.
//
// Some tests (posixtest's among them) open files on a mount without
// O_CLOEXEC. A daemon started by another test meanwhile would inherit such
// a descriptor and hold that mount busy for its whole life, so that it
// cannot be unmounted. So the binary is not started directly but through
// this test binary, which marks every descriptor above 2 close-on-exec
// before it execs the daemon (same pid, and Pdeathsig carries over).
func daemonCommand(args ...string) *exec.Cmd {
	self, err := os.Executable()
	if err != nil {
		panic(err)
	}
	cmd := exec.Command(self, append([]string{binPath}, args...)...)
	cmd.Env = append(os.Environ(), trampolineEnv+"=1")
	if raceEnabled && os.Getenv("GORACE") == "" {
		// A -race binary sleeps 1s at exit by default, for goroutines
		// still running to report; a tenth of that is enough here.
		cmd.Env = append(cmd.Env, "GORACE=atexit_sleep_ms=100")
	}
	// If the test binary dies, do not leave a daemon behind.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	// A helper such as fusermount3 may keep the output pipes open.
	cmd.WaitDelay = 2 * time.Second
	return cmd
}

// trampoline execs os.Args[1:] with every descriptor above 2 closed.
func trampoline() {
	os.Unsetenv(trampolineEnv)
	if err := unix.CloseRange(3, math.MaxUint32, unix.CLOSE_RANGE_CLOEXEC); err != nil {
		fmt.Fprintf(os.Stderr, "trampoline: close_range: %v\n", err)
		os.Exit(127)
	}
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "trampoline: no command")
		os.Exit(127)
	}
	err := syscall.Exec(os.Args[1], os.Args[1:], os.Environ())
	fmt.Fprintf(os.Stderr, "trampoline: exec %s: %v\n", os.Args[1], err)
	os.Exit(127)
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
