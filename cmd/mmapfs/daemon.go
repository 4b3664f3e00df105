package main

import (
	"github.com/spf13/pflag"

	"bufio"
	"errors"
	"fmt"
	"io"
	"log/syslog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// The fstab way: mount(8) runs mount.fuse3, which runs
// `mmapfs STORE MOUNTPOINT -o OPTIONS` and waits for it. So that form of the
// command (without -f) mounts in the background: it re-executes itself
// detached (a new session, stdin, stdout and stderr /dev/null, working
// directory /), waits on a pipe until the daemon says the mount is ready or
// why it failed, and exits 0 or 1 with that error. The daemon logs to
// -o log=FILE, else to syslog (the journal under systemd), else, with no
// syslog to talk to, to a file it names on the parent's stderr.

// daemonEnv carries the descriptor of the pipe to the parent into the
// background daemon; it also tells the daemon that it is the daemon.
const daemonEnv = "MMAPFS_DAEMON_READY_FD"

// The lines the daemon writes to its parent.
const (
	readyLine = "ready"
	errorLine = "error: "
	logLine   = "log: "
)

// startBackground runs the daemon for store and mnt in the background and
// returns once its mount is ready (nil) or it has failed (its error).
// opts are the -o arguments, given to the daemon as they are; c.logFile is
// already absolute.
func startBackground(stderr io.Writer, store, mnt string, c *mountConfig, flags []string) error {
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("starting the daemon: %w", err)
	}
	// Absolute paths: the daemon runs in /, so that it holds no
	// directory busy.
	absStore, err := filepath.Abs(store)
	if err != nil {
		return fmt.Errorf("store %s: %w", store, err)
	}
	absMnt, err := filepath.Abs(mnt)
	if err != nil {
		return fmt.Errorf("mountpoint %s: %w", mnt, err)
	}
	// The flags given (--writeback periodic:1s) as they were, then the
	// options.
	args := append(append([]string{}, flags...), absStore, absMnt)
	for _, o := range c.o {
		args = append(args, "-o", o)
	}
	if c.logFile != "" {
		// Last, so that it wins over a relative log= given before.
		args = append(args, "-o", "log="+strings.ReplaceAll(strings.ReplaceAll(c.logFile, `\`, `\\`), ",", `\,`))
	}
	r, w, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("starting the daemon: %w", err)
	}
	defer r.Close()
	cmd := exec.Command(exe, args...)
	cmd.Dir = "/"
	cmd.Env = append(os.Environ(), daemonEnv+"=3")
	cmd.ExtraFiles = []*os.File{w}
	if c.logFile != "" {
		// What the daemon cannot log itself (a Go panic) goes to its
		// log file too.
		f, err := os.OpenFile(c.logFile, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
		if err != nil {
			return errors.Join(fmt.Errorf("-o log=%s: %w", c.logFile, err), w.Close())
		}
		defer f.Close()
		cmd.Stderr = f
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	err = cmd.Start()
	if cerr := w.Close(); err == nil && cerr != nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("starting the daemon %s: %w", exe, err)
	}
	sc := bufio.NewScanner(r)
	var daemonErr []string
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == readyLine:
			// The daemon lives on, a child of init once we exit.
			return cmd.Process.Release()
		case strings.HasPrefix(line, logLine):
			fmt.Fprintf(stderr, "mmapfs: %s\n", strings.TrimPrefix(line, logLine))
		case strings.HasPrefix(line, errorLine):
			daemonErr = append(daemonErr, strings.TrimPrefix(line, errorLine))
		default:
			daemonErr = append(daemonErr, line)
		}
	}
	werr := cmd.Wait()
	if len(daemonErr) > 0 {
		return errors.New(strings.Join(daemonErr, "; "))
	}
	return fmt.Errorf("the daemon (pid %d) ended before the mount was ready (%v)", cmd.Process.Pid, errors.Join(werr, sc.Err()))
}

// daemonPipe returns the pipe to the parent if this process is a
// background daemon, and forgets the variable so that what the daemon runs
// does not inherit it.
func daemonPipe() *os.File {
	v, ok := os.LookupEnv(daemonEnv)
	if !ok {
		return nil
	}
	os.Unsetenv(daemonEnv)
	fd, err := strconv.Atoi(v)
	if err != nil || fd < 3 {
		return nil
	}
	syscall.CloseOnExec(fd)
	return os.NewFile(uintptr(fd), "daemon-ready-pipe")
}

// runBackgroundDaemon is the daemon side of startBackground: it opens its
// log, mounts, says "ready" (or the error) on the pipe, and serves.
func runBackgroundDaemon(pipe *os.File, store, mnt string, c *mountConfig, run func(io.Writer, func()) error) error {
	tell := func(format string, a ...any) {
		// The parent may be gone (killed): the daemon goes on.
		fmt.Fprintf(pipe, format+"\n", a...)
	}
	out, where, err := daemonLog(c.logFile, mnt)
	if err != nil {
		tell("%s%v", errorLine, err)
		pipe.Close()
		return err
	}
	defer out.Close()
	if where != "" {
		tell("%s%s", logLine, where)
	}
	told := false
	err = run(out, func() {
		tell(readyLine)
		pipe.Close()
		told = true
	})
	if !told {
		if err != nil {
			tell("%s%v", errorLine, err)
		}
		pipe.Close()
	}
	if err != nil {
		fmt.Fprintf(out, "mmapfs: %v\n", err)
	}
	return err
}

// syslogWriter is the daemon's log when it goes to syslog.
type syslogWriter struct{ *syslog.Writer }

// daemonLog opens the background daemon's log: logFile if given, else
// syslog, else a file named after the mountpoint. where says where the log
// goes when that is not where the user asked (empty otherwise).
func daemonLog(logFile, mnt string) (io.WriteCloser, string, error) {
	if logFile != "" {
		f, err := os.OpenFile(logFile, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
		if err != nil {
			return nil, "", fmt.Errorf("-o log=%s: %w", logFile, err)
		}
		return f, "", nil
	}
	sw, serr := syslog.New(syslog.LOG_DAEMON|syslog.LOG_INFO, "mmapfs")
	if serr == nil {
		return syslogWriter{sw}, "", nil
	}
	path := fallbackLogPath(mnt)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, "", fmt.Errorf("no syslog (%v), and no log directory: %w; give -o log=FILE", serr, err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return nil, "", fmt.Errorf("no syslog (%v), and no log file: %w; give -o log=FILE", serr, err)
	}
	return f, fmt.Sprintf("no syslog to log to (%v); the daemon logs to %s (or give -o log=FILE)", serr, path), nil
}

// fallbackLogPath is where a background daemon logs without syslog and
// without -o log=FILE: /var/log/mmapfs/ as root, else the user's XDG
// state directory, in a file named after the mountpoint as systemd names
// mount units (/srv/data: srv-data.log).
func fallbackLogPath(mnt string) string {
	name := strings.ReplaceAll(strings.Trim(filepath.Clean(mnt), "/"), "/", "-")
	if name == "" {
		name = "root"
	}
	dir := "/var/log/mmapfs"
	if os.Geteuid() != 0 {
		state := os.Getenv("XDG_STATE_HOME")
		if state == "" {
			home, err := os.UserHomeDir()
			if err != nil {
				home = os.TempDir()
			}
			state = filepath.Join(home, ".local", "state")
		}
		dir = filepath.Join(state, "mmapfs")
	}
	return filepath.Join(dir, name+".log")
}

// givenFlags returns the flags of f set on the command line, but -o and
// -f, as arguments that set them again (--name=value; a flag given more
// than once, such as --inject, once per value), for the background
// daemon's command line.
func givenFlags(f *pflag.FlagSet) []string {
	var args []string
	f.Visit(func(fl *pflag.Flag) {
		switch fl.Name {
		case "options", "foreground":
			return
		}
		if sv, ok := fl.Value.(pflag.SliceValue); ok {
			for _, v := range sv.GetSlice() {
				args = append(args, "--"+fl.Name+"="+v)
			}
			return
		}
		args = append(args, "--"+fl.Name+"="+fl.Value.String())
	})
	return args
}
