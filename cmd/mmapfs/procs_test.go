package main

import (
	"os"
	"runtime"
	"testing"
)

func TestDaemonProcs(t *testing.T) {
	for _, tc := range []struct{ cur, want int }{{1, minDaemonProcs}, {2, minDaemonProcs}, {minDaemonProcs, minDaemonProcs}, {64, 64}} {
		if got := daemonProcs(tc.cur); got != tc.want {
			t.Errorf("daemonProcs(%d) = %d, want %d", tc.cur, got, tc.want)
		}
	}
}

// TestSetDaemonProcsKeepsEnv: a GOMAXPROCS from the environment wins.
func TestSetDaemonProcsKeepsEnv(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(0))
	t.Setenv("GOMAXPROCS", "3")
	runtime.GOMAXPROCS(3)
	if got := setDaemonProcs(); got != 3 {
		t.Errorf("with GOMAXPROCS=3 in the environment: %d", got)
	}
	os.Unsetenv("GOMAXPROCS")
	if got := setDaemonProcs(); got != max(3, minDaemonProcs) {
		t.Errorf("without it: %d, want %d", got, max(3, minDaemonProcs))
	}
}
