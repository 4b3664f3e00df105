package integration

import (
	"bufio"
	"fmt"
	"os"
	"strings"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/mmapfs/mmapfs/internal/enableuring"
)

// The watchdog is the last line of defence against mounts left behind when
// the test binary dies without running the cleanups of all tests: a panic
// runs only the cleanups of the panicking test, a -timeout or a SIGKILL
// none at all. It is this test binary run again as a separate process that
// outlives us. We tell it through a pipe which mountpoints are in use
// ("+MNT") and which are clean again ("-MNT"); when the pipe closes (we
// exited, however) it detaches whatever of those is still mounted. The
// daemons die with us (Pdeathsig), and a detached FUSE mount goes away with
// its last user. Its role is roleWatchdog.

var watchdog struct {
	mu sync.Mutex
	w  *os.File // nil if the watchdog could not be started
}

// startWatchdog starts the watchdog process.
func startWatchdog() error {
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	defer r.Close()
	cmd := roleCommand(testBinary, roleWatchdog)
	cmd.Stdin = r
	// Its own process group: a ^C to the test run must not kill it before
	// it has cleaned up. And no Pdeathsig: it outlives us.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		w.Close()
		return fmt.Errorf("start watchdog: %w", err)
	}
	go cmd.Wait()
	watchdog.w = w
	return nil
}

// stopWatchdog tells the watchdog that we are done.
func stopWatchdog() {
	watchdog.mu.Lock()
	defer watchdog.mu.Unlock()
	if watchdog.w != nil {
		watchdog.w.Close()
		watchdog.w = nil
	}
}

func watchdogSend(op byte, mnt string) {
	watchdog.mu.Lock()
	defer watchdog.mu.Unlock()
	if watchdog.w != nil && !strings.Contains(mnt, "\n") {
		fmt.Fprintf(watchdog.w, "%c%s\n", op, mnt)
	}
}

// watchdogWatch asks the watchdog to unmount mnt if we die.
func watchdogWatch(mnt string) { watchdogSend('+', mnt) }

// watchdogForget tells the watchdog that mnt is clean.
func watchdogForget(mnt string) { watchdogSend('-', mnt) }

// runWatchdog is the watchdog process: it reads the pipe (its stdin) until
// EOF and then detaches what is left, and puts enable_uring back if the
// run died as its last user; args[0], if given, is another switch file
// (TestWatchdogRestoresEnableURing).
func runWatchdog(args []string) int {
	watched := map[string]int{}
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		line := sc.Text()
		if len(line) < 2 {
			continue
		}
		switch mnt := line[1:]; line[0] {
		case '+':
			watched[mnt]++
		case '-':
			if watched[mnt]--; watched[mnt] <= 0 {
				delete(watched, mnt)
			}
		}
	}
	for mnt := range watched {
		for i := 0; i < 5 && mounted(mnt); i++ {
			unix.Unmount(mnt, unix.MNT_DETACH)
		}
	}
	// If the run died as the last user of enable_uring, put it back
	// (a no-op while another process uses it, or if nothing was changed).
	sw := uringSwitch
	if len(args) > 0 { // a test's own switch file
		sw = enableuring.For(args[0])
	}
	if err := sw.Recover(); err != nil {
		fmt.Fprintf(os.Stderr, "watchdog: %v\n", err)
		return 1
	}
	return 0
}
