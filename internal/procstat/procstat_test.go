package procstat

import (
	"os"
	"runtime"
	"testing"
)

func TestParse(t *testing.T) {
	// A comm with spaces and parentheses, as a process may name itself.
	line := "4242 (a (b) c) S 1 4240 4240 0 -1 4194560 100 0 7 0 11 12 0 0 20 0 3 0 987654 1000 10 18446744073709551615\n"
	s, err := Parse([]byte(line))
	if err != nil {
		t.Fatal(err)
	}
	want := Stat{Comm: "a (b) c", State: 'S', PPid: 1, Pgrp: 4240, MajFlt: 7, UTime: 11, STime: 12, StartTime: 987654}
	if s != want {
		t.Errorf("Parse = %+v, want %+v", s, want)
	}
	if s.Gone() {
		t.Error("a sleeping task is Gone")
	}
	for _, bad := range []string{"", "4242 no comm S 1", "4242 (x) S 1 2", "4242 (x) S one 4240 4240 0 -1 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0"} {
		if _, err := Parse([]byte(bad)); err == nil {
			t.Errorf("Parse(%q) succeeded", bad)
		}
	}
}

func TestOfPidSelf(t *testing.T) {
	// The calling thread's own line: the process's (its main thread's)
	// state is S whenever another thread is the one running.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	s, err := Read("/proc/thread-self/stat")
	if err != nil {
		t.Fatal(err)
	}
	if s.State != 'R' || s.PPid != os.Getppid() || s.Pgrp <= 0 || s.StartTime == 0 {
		t.Errorf("own stat %+v: want running, ppid %d, a group and a start time", s, os.Getppid())
	}
	if p, err := OfPid(os.Getpid()); err != nil || p.PPid != os.Getppid() || p.StartTime == 0 {
		t.Errorf("OfPid(own pid) = %+v, %v: want ppid %d and a start time", p, err, os.Getppid())
	}
	if _, err := OfPid(1 << 30); err == nil {
		t.Error("stat of a pid that cannot exist succeeded")
	}
}
