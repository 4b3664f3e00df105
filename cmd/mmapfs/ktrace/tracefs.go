package ktrace

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/mmapfs/mmapfs/internal/procstat"
)

// The places tracefs is found, in order: its own mount point, and the
// one debugfs automounts it under.
const (
	tracefsDir = "/sys/kernel/tracing"
	debugfsDir = "/sys/kernel/debug/tracing"
)

// instancePrefix begins the name of every instance this package makes;
// RemoveStale looks at no other instance.
const instancePrefix = "mmapfs-trace-"

// isTracefs reports whether dir is the root of a tracefs mount.
func isTracefs(dir string) bool {
	var st unix.Statfs_t
	if unix.Statfs(dir, &st) != nil || st.Type != unix.TRACEFS_MAGIC {
		return false
	}
	fi, err := os.Stat(filepath.Join(dir, "instances"))
	return err == nil && fi.IsDir()
}

// findRoot returns the tracefs mount point: root if given (it must be
// tracefs), else /sys/kernel/tracing or /sys/kernel/debug/tracing, else
// (when mount is set) /sys/kernel/tracing after mounting tracefs there,
// as perf does; note then says so.
func findRoot(root string, mount bool) (dir, note string, err error) {
	if root != "" {
		if !isTracefs(root) {
			return "", "", errorf(ErrNoTracefs, nil, "give the directory tracefs is mounted on, or none to use /sys/kernel/tracing",
				"%s is not a tracefs mount with an instances directory", root)
		}
		return root, "", nil
	}
	for _, d := range []string{tracefsDir, debugfsDir} {
		if isTracefs(d) {
			return d, "", nil
		}
	}
	if !mount {
		return "", "", nil
	}
	if err := unix.Mount("nodev", tracefsDir, "tracefs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return "", "", errorf(ErrNoTracefs, &fs.PathError{Op: "mount tracefs", Path: tracefsDir, Err: err},
			"the kernel needs CONFIG_TRACING (CONFIG_FTRACE); mount it with: mount -t tracefs nodev "+tracefsDir,
			"tracefs is not mounted at %s or %s and cannot be mounted", tracefsDir, debugfsDir)
	}
	if !isTracefs(tracefsDir) {
		return "", "", errorf(ErrNoTracefs, nil, "the kernel needs CONFIG_TRACING",
			"mounted tracefs at %s but it has no instances directory", tracefsDir)
	}
	return tracefsDir, fmt.Sprintf("mounted tracefs at %s (it stays mounted, as perf leaves it)", tracefsDir), nil
}

// startTime returns field 22 of /proc/PID/stat (the task's start time in
// clock ticks since boot), which with the pid names a process for good:
// a reused pid has another start time.
func startTime(procStat string) (uint64, error) {
	st, err := procstat.Read(procStat)
	return st.StartTime, err
}

// parseInstanceName parses "mmapfs-trace-PID-START" or
// "mmapfs-trace-PID-START-N" (the Nth instance of that process).
func parseInstanceName(name string) (pid int, start uint64, ok bool) {
	rest, ok := strings.CutPrefix(name, instancePrefix)
	if !ok {
		return 0, 0, false
	}
	f := strings.Split(rest, "-")
	if len(f) != 2 && len(f) != 3 {
		return 0, 0, false
	}
	for _, s := range f {
		if _, err := strconv.ParseUint(s, 10, 64); err != nil {
			return 0, 0, false
		}
	}
	p, err := strconv.Atoi(f[0])
	if err != nil || p <= 0 {
		return 0, 0, false
	}
	start, _ = strconv.ParseUint(f[1], 10, 64)
	return p, start, true
}

// RemoveStale removes the instances left in the tracefs at root ("" =
// find it; nothing is mounted) by traces whose process is gone: one
// named mmapfs-trace-PID-START whose PID does not exist, or exists with
// another start time (the pid was reused). An instance of a live trace,
// and every instance not named so, is left alone. It returns a note per
// instance removed; errors name the instances it could not remove.
func RemoveStale(root string) ([]string, error) {
	root, _, err := findRoot(root, false)
	if err != nil || root == "" {
		return nil, err
	}
	dir := filepath.Join(root, "instances")
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("list trace instances: %w", err)
	}
	var notes []string
	var errs []error
	for _, e := range ents {
		pid, start, ok := parseInstanceName(e.Name())
		if !ok || !e.IsDir() {
			continue
		}
		now, serr := startTime("/proc/" + strconv.Itoa(pid) + "/stat")
		switch {
		case serr == nil && now == start:
			continue // a live trace
		case serr != nil && !errors.Is(serr, fs.ErrNotExist) && !errors.Is(serr, unix.ESRCH):
			errs = append(errs, fmt.Errorf("trace instance %s: is pid %d alive: %w", e.Name(), pid, serr))
			continue
		}
		path := filepath.Join(dir, e.Name())
		if err := unix.Rmdir(path); err != nil && err != unix.ENOENT {
			errs = append(errs, &fs.PathError{Op: "remove stale trace instance", Path: path, Err: err})
			continue
		}
		why := "is gone"
		if serr == nil {
			why = "was reused"
		}
		notes = append(notes, fmt.Sprintf("removed stale trace instance %s left by a killed trace (pid %d %s)", e.Name(), pid, why))
	}
	return notes, errors.Join(errs...)
}
