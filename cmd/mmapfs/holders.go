package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// maxHolders bounds the processes describeHolders names.
const maxHolders = 10

// busyLine is the one log line for an unmount of mnt that failed with
// err, as it fails when files are still open on the mount: the error on
// one line, then who holds the mount and what to do.
func busyLine(mnt string, err error) string {
	return fmt.Sprintf("%s: files are still open on it%s: close them, or send the signal again to detach it lazily", oneLine(err), describeHolders(mnt))
}

// oneLine is err's message with every run of white space, line breaks
// included (fusermount3's message ends in one), made a single space.
func oneLine(err error) string {
	return strings.Join(strings.Fields(err.Error()), " ")
}

// describeHolders names the processes, other than this one, that keep
// something under the directory mnt in use, as fuser -m finds them: an
// open file descriptor, their working or root directory, their
// executable, a mapped file. It returns " by pid 1234 (cat), pid 99
// (bash, cwd)" (at most maxHolders of them, then how many more), or ""
// when it finds none. It reads only /proc: nothing on mnt itself, so
// that a daemon can call it about its own mount without a request to
// itself. It sees only the processes the caller may inspect (all of them
// as root), by the paths they have in the caller's mount namespace.
func describeHolders(mnt string) string {
	dir, err := filepath.Abs(mnt)
	if err != nil {
		return fmt.Sprintf(" (the processes holding it could not be found: %v)", err)
	}
	// /proc shows paths with symlinks resolved; mnt's parent is not on
	// the mount, so resolving it asks nothing of the mount.
	if parent, err := filepath.EvalSymlinks(filepath.Dir(dir)); err == nil {
		dir = filepath.Join(parent, filepath.Base(dir))
	}
	procs, err := os.ReadDir("/proc")
	if err != nil {
		return fmt.Sprintf(" (the processes holding it could not be listed: %v)", err)
	}
	self := os.Getpid()
	var found []string
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil || pid == self {
			continue
		}
		if what, ok := holds(pid, dir); ok {
			found = append(found, what)
		}
	}
	if len(found) == 0 {
		return ""
	}
	more := ""
	if len(found) > maxHolders {
		more = fmt.Sprintf(" and %d more", len(found)-maxHolders)
		found = found[:maxHolders]
	}
	return " by " + strings.Join(found, ", ") + more
}

// holds reports whether process pid keeps something under dir in use,
// and describes it as "pid 1234 (cat)" or, for other uses than open
// files, "pid 99 (bash, cwd)". A process that exits meanwhile, or that
// the caller may not inspect, holds nothing.
func holds(pid int, dir string) (string, bool) {
	proc := filepath.Join("/proc", strconv.Itoa(pid))
	var uses []string
	files := false
	if fds, err := os.ReadDir(filepath.Join(proc, "fd")); err == nil {
		for _, fd := range fds {
			if t, err := os.Readlink(filepath.Join(proc, "fd", fd.Name())); err == nil && within(t, dir) {
				files = true
				break
			}
		}
	}
	exe := ""
	for _, link := range []string{"cwd", "root", "exe"} {
		if t, err := os.Readlink(filepath.Join(proc, link)); err == nil && within(t, dir) {
			uses = append(uses, link)
			if link == "exe" {
				exe = t
			}
		}
	}
	if mapped(filepath.Join(proc, "maps"), dir, exe) {
		uses = append(uses, "mapped")
	}
	if !files && len(uses) == 0 {
		return "", false
	}
	comm := "?"
	if b, err := os.ReadFile(filepath.Join(proc, "comm")); err == nil {
		comm = strings.TrimSpace(string(b))
	}
	return fmt.Sprintf("pid %d (%s)", pid, strings.Join(append([]string{comm}, uses...), ", ")), true
}

// mapped reports whether the maps file of a process lists a file under
// dir other than its executable exe (which is mapped too).
func mapped(maps, dir, exe string) bool {
	b, err := os.ReadFile(maps)
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		// 7f6c...-7f6c... r--p 00000000 00:28 1234    /mnt/file
		// Nothing before the path holds a '/'.
		i := strings.IndexByte(line, '/')
		if i < 0 {
			continue
		}
		if path := line[i:]; path != exe && within(path, dir) {
			return true
		}
	}
	return false
}
