// Package procstat reads a task's /proc/PID/stat (or
// /proc/PID/task/TID/stat): the one parser of that line for the daemon's
// commands and the tests, which each need a few of its fields (the state,
// the process group, the CPU times, the major faults, the start time).
//
// What it must never do: guess. The command name (field 2) is in
// parentheses and may hold spaces and parentheses itself, so the fields
// are counted from its last ')'; a line that does not parse is an error,
// never a zero.
package procstat

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// Stat is the part of /proc/PID/stat this module uses (proc(5) names
// the fields; the numbers are the field's position in the line).
type Stat struct {
	// Comm is field 2, the command name, without its parentheses.
	Comm string
	// State is field 3: R, S, D, Z (a zombie), X (dead), T, t, ...
	State byte
	// PPid is field 4, the parent's pid.
	PPid int
	// Pgrp is field 5, the process group.
	Pgrp int
	// MajFlt is field 12, the major page faults of the task.
	MajFlt int64
	// UTime and STime are fields 14 and 15, the CPU time used in user
	// and kernel mode, in clock ticks (for a process: all its threads,
	// ended ones too).
	UTime, STime int64
	// StartTime is field 22, when the task started, in clock ticks since
	// boot: with the pid it names a process for good, a reused pid has
	// another start time.
	StartTime uint64
}

// Gone reports whether the task has ended: a zombie or a dead task.
func (s Stat) Gone() bool { return s.State == 'Z' || s.State == 'X' }

// Read reads and parses the stat file at path.
func Read(path string) (Stat, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Stat{}, err
	}
	s, err := Parse(b)
	if err != nil {
		return Stat{}, fmt.Errorf("%s: %w", path, err)
	}
	return s, nil
}

// OfPid reads /proc/PID/stat.
func OfPid(pid int) (Stat, error) {
	return Read("/proc/" + strconv.Itoa(pid) + "/stat")
}

// Parse parses one stat line.
func Parse(b []byte) (Stat, error) {
	open := bytes.IndexByte(b, '(')
	i := bytes.LastIndexByte(b, ')')
	if open < 0 || i < open {
		return Stat{}, fmt.Errorf("no (comm) in %q", clip(b))
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3; field 22 is f[19].
	if len(f) < 20 || len(f[0]) != 1 {
		return Stat{}, fmt.Errorf("%d fields after the comm, want at least 20: %q", len(f), clip(b))
	}
	s := Stat{Comm: string(b[open+1 : i]), State: f[0][0]}
	ints := []struct {
		field int
		dst   *int64
	}{{12, &s.MajFlt}, {14, &s.UTime}, {15, &s.STime}}
	for _, x := range ints {
		n, err := strconv.ParseInt(f[x.field-3], 10, 64)
		if err != nil {
			return Stat{}, fmt.Errorf("field %d: %w", x.field, err)
		}
		*x.dst = n
	}
	var err error
	if s.PPid, err = strconv.Atoi(f[4-3]); err != nil {
		return Stat{}, fmt.Errorf("field 4 (ppid): %w", err)
	}
	if s.Pgrp, err = strconv.Atoi(f[5-3]); err != nil {
		return Stat{}, fmt.Errorf("field 5 (pgrp): %w", err)
	}
	if s.StartTime, err = strconv.ParseUint(f[22-3], 10, 64); err != nil {
		return Stat{}, fmt.Errorf("field 22 (starttime): %w", err)
	}
	return s, nil
}

// clip shortens a line for an error message.
func clip(b []byte) []byte {
	if len(b) > 120 {
		return b[:120]
	}
	return b
}
