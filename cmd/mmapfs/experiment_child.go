package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// How long an experiment waits for a mount child.
const (
	childReadyWait = 30 * time.Second // for its "serving" line
	childStopWait  = 15 * time.Second // after each SIGINT
)

// mountChild is one 'mmapfs mount' an experiment runs: the mount of one
// run, or the mount again after the cut.
type mountChild struct {
	cmd    *exec.Cmd
	pid    int
	mnt    string
	exited chan struct{} // closed once the process has exited and been waited for

	mu  sync.Mutex // guards log and err
	log []string   // the last lines of its stderr
	err error      // what Wait returned
}

// childLogLines bounds the lines of a child's log an experiment keeps.
const childLogLines = 40

// servingRE matches the line the mount command logs once the mount is
// ready: "serving STORE at MNT (writeback policy P, pid N)".
var servingRE = regexp.MustCompile(`serving .* at (.*) \(.*pid (\d+)\)`)

// startMountChild runs exe with args (a mount command whose mountpoint is
// mnt) and returns once it says it serves mnt. It runs in its own process
// group, so that a Ctrl-C on the terminal reaches the experiment only,
// which unmounts in order; and it gets SIGTERM (and unmounts) should the
// experiment die.
func startMountChild(ctx context.Context, exe string, args []string, mnt string) (*mountChild, error) {
	c := &mountChild{mnt: mnt, exited: make(chan struct{})}
	c.cmd = exec.Command(exe, args...)
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	stderr, err := c.cmd.StderrPipe()
	if err != nil {
		return nil, fmt.Errorf("mounting %s: %w", mnt, err)
	}
	if err := c.cmd.Start(); err != nil {
		return nil, fmt.Errorf("mounting %s: starting %s: %w", mnt, exe, err)
	}
	c.pid = c.cmd.Process.Pid
	serving := make(chan int, 1)
	scanned := make(chan struct{})
	go func() {
		defer close(scanned)
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		told := false
		for sc.Scan() {
			line := sc.Text()
			c.mu.Lock()
			c.log = append(c.log, line)
			if len(c.log) > childLogLines {
				c.log = c.log[len(c.log)-childLogLines:]
			}
			c.mu.Unlock()
			if m := servingRE.FindStringSubmatch(line); !told && m != nil && filepath.Clean(m[1]) == filepath.Clean(mnt) {
				pid, _ := strconv.Atoi(m[2])
				serving <- pid
				told = true
			}
		}
	}()
	go func() {
		<-scanned // Wait closes the pipe: read it all first
		err := c.cmd.Wait()
		c.mu.Lock()
		c.err = err
		c.mu.Unlock()
		close(c.exited)
	}()
	timeout := time.NewTimer(childReadyWait)
	defer timeout.Stop()
	select {
	case <-serving:
		return c, nil
	case <-c.exited:
		return nil, fmt.Errorf("mmapfs %s: %s", strings.Join(args, " "), c.tail())
	case <-ctx.Done():
		return nil, errors.Join(errInterrupted, c.stop())
	case <-timeout.C:
		return nil, errors.Join(fmt.Errorf("mmapfs %s: no \"serving\" line in %v: %s", strings.Join(args, " "), childReadyWait, c.tail()), c.stop())
	}
}

// tail is the end of the child's log, and how it ended if it did.
func (c *mountChild) tail() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	lines := c.log
	if len(lines) > 5 {
		lines = lines[len(lines)-5:]
	}
	s := strings.Join(lines, "; ")
	if s == "" {
		s = "nothing logged"
	}
	select {
	case <-c.exited:
		if c.err != nil {
			s += fmt.Sprintf(" (%v)", c.err)
		} else {
			s += " (exited)"
		}
	default:
	}
	return s
}

// wait waits up to limit for the child to exit and says whether it did.
func (c *mountChild) wait(limit time.Duration) bool {
	select {
	case <-c.exited:
		return true
	default:
	}
	t := time.NewTimer(limit)
	defer t.Stop()
	select {
	case <-c.exited:
		return true
	case <-t.C:
		return false
	}
}

// stop ends the child as a user would: SIGINT (it unmounts and syncs),
// again if the mount is busy (it detaches lazily), then SIGKILL; and
// detaches the mountpoint if it is still mounted (a dead mount). It is a
// no-op for a child that has exited and left nothing mounted.
func (c *mountChild) stop() error {
	return c.end(syscall.SIGINT, syscall.SIGINT, syscall.SIGKILL)
}

// kill ends the child at once (SIGKILL) and detaches its mountpoint: for
// a mount a stuck workload holds busy, which no unmount can end.
func (c *mountChild) kill() error {
	return c.end(syscall.SIGKILL)
}

// end sends the child each of sigs in turn until it exits, then detaches
// the mountpoint if it is still mounted.
func (c *mountChild) end(sigs ...syscall.Signal) error {
	var errs []error
	for _, sig := range sigs {
		select {
		case <-c.exited:
		default:
			if err := c.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
				errs = append(errs, fmt.Errorf("signalling the mount of %s (pid %d): %w", c.mnt, c.pid, err))
			}
			if !c.wait(childStopWait) {
				continue
			}
		}
		break
	}
	if !c.wait(0) {
		errs = append(errs, fmt.Errorf("the mount of %s (pid %d) did not exit", c.mnt, c.pid))
	}
	if isMounted(c.mnt) {
		if err := unix.Unmount(c.mnt, unix.MNT_DETACH); err != nil {
			if out, ferr := exec.Command("fusermount3", "-u", "-z", c.mnt).CombinedOutput(); ferr != nil {
				errs = append(errs, fmt.Errorf("detaching %s: %w; fusermount3: %v: %s", c.mnt, err, ferr, strings.TrimSpace(string(out))))
			}
		}
	}
	return errors.Join(errs...)
}

// isMounted reports whether dir is the mountpoint of an mmapfs mount
// (live or dead).
func isMounted(dir string) bool {
	at, exact, ok := mountAt(dir)
	return ok && exact && at.fsType == mmapfsType
}
