package fs

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// TestRunAs: what runAs creates is the given user's and group's, even in
// a directory only root may enter (the permission checks stay the
// daemon's), and afterwards no thread of the process is left with another
// filesystem uid or gid or with fewer capabilities.
func TestRunAs(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to switch the filesystem uid")
	}
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	const uid, gid = 65534, 4242
	var wg sync.WaitGroup
	errs := make([]error, 16)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := filepath.Join(dir, fmt.Sprint(i))
			errs[i] = runAs(uid, gid, func() error { return os.Mkdir(p, 0o700) })
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("runAs %d: %v", i, err)
		}
		var st unix.Stat_t
		if err := unix.Lstat(filepath.Join(dir, fmt.Sprint(i)), &st); err != nil {
			t.Fatal(err)
		}
		if st.Uid != uid || st.Gid != gid {
			t.Errorf("made by runAs(%d, %d): owner %d:%d", uid, gid, st.Uid, st.Gid)
		}
	}
	// A failure inside is returned as it is.
	err := runAs(uid, gid, func() error { return os.Mkdir(filepath.Join(dir, "0"), 0o700) })
	if !os.IsExist(err) {
		t.Errorf("runAs of a failing mkdir: %v, want EEXIST", err)
	}
	self, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	wantCaps := statusLine(self, "CapEff")
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	for _, task := range tasks {
		st, err := os.ReadFile("/proc/self/task/" + task.Name() + "/status")
		if err != nil {
			continue // the thread ended
		}
		u, g := strings.Fields(statusLine(st, "Uid")), strings.Fields(statusLine(st, "Gid"))
		if len(u) != 4 || len(g) != 4 || u[3] != "0" || g[3] != "0" {
			t.Errorf("thread %s left with Uid %v Gid %v (the last is the filesystem id)", task.Name(), u, g)
		}
		if c := statusLine(st, "CapEff"); c != wantCaps {
			t.Errorf("thread %s left with CapEff %s, the process's main thread has %s", task.Name(), c, wantCaps)
		}
	}
}

func statusLine(status []byte, key string) string {
	for _, l := range bytes.Split(status, []byte("\n")) {
		if k, v, ok := bytes.Cut(l, []byte(":")); ok && string(k) == key {
			return strings.TrimSpace(string(v))
		}
	}
	return ""
}

// TestReadCallerCreds reads this process's own credentials.
func TestReadCallerCreds(t *testing.T) {
	c, err := readCallerCreds(uint32(os.Getpid()))
	if err != nil {
		t.Fatal(err)
	}
	if c.fsgid != uint32(os.Getegid()) || !c.inGroup(uint32(os.Getegid())) {
		t.Errorf("fsgid %d, want %d", c.fsgid, os.Getegid())
	}
	groups, _ := os.Getgroups()
	for _, g := range groups {
		if !c.inGroup(uint32(g)) {
			t.Errorf("not in supplementary group %d", g)
		}
	}
	if os.Geteuid() == 0 && !c.capable(unix.CAP_FSETID) {
		t.Errorf("root without CAP_FSETID: CapEff %x", c.capEff)
	}
	if _, err := readCallerCreds(0); err == nil || !strings.Contains(err.Error(), "pid 0") {
		t.Errorf("readCallerCreds(0): %v, want an error naming pid 0", err)
	}
	if _, err := readCallerCreds(1 << 30); !errors.Is(err, syscall.ENOENT) {
		t.Errorf("readCallerCreds of no process: %v, want ENOENT", err)
	}
}
