package fs

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// holdStore takes the store lock of dir as another daemon would: an
// exclusive flock on a descriptor of its own (flock locks belong to the
// open file, so lockStore's own open is refused by it in this process
// too).
func holdStore(t *testing.T, dir string) *os.File {
	t.Helper()
	f, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// logLines collects what lockStore logs.
type logLines struct {
	mu    sync.Mutex
	lines []string
}

func (l *logLines) printf(format string, a ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, fmt.Sprintf(format, a...))
}

func (l *logLines) all() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "\n")
}

// TestLockStoreWaitsForEndingDaemon: a store held by a process with no
// mount of it (a daemon still ending after its unmount) is waited for,
// and taken once it lets go.
func TestLockStoreWaitsForEndingDaemon(t *testing.T) {
	dir := t.TempDir()
	held := holdStore(t, dir)
	go func() {
		time.Sleep(300 * time.Millisecond)
		held.Close()
	}()
	var log logLines
	start := time.Now()
	f, err := lockStore(dir, false, log.printf)
	if err != nil {
		t.Fatalf("lockStore of a store let go after 300 ms: %v", err)
	}
	defer f.Close()
	if d := time.Since(start); d < 250*time.Millisecond {
		t.Errorf("lockStore returned after %v, before the holder let go", d)
	}
	got := log.all()
	for _, want := range []string{"pid " + strconv.Itoa(os.Getpid()) + " holds it with no mount of it", "let go after"} {
		if !strings.Contains(got, want) {
			t.Errorf("log %q lacks %q", got, want)
		}
	}
	// Taken: another daemon is refused now (after a short wait: the
	// holder, this process, has no mount of it either).
	old := endingWait
	endingWait = 100 * time.Millisecond
	t.Cleanup(func() { endingWait = old })
	if g, err := lockStore(dir, false, log.printf); err == nil {
		g.Close()
		t.Error("a second lockStore took the store lockStore holds")
	}
}

// TestLockStoreGivesUp: a holder with no mount that does not let go is
// refused after endingWait, with how long it was waited for.
func TestLockStoreGivesUp(t *testing.T) {
	old := endingWait
	endingWait = 200 * time.Millisecond
	t.Cleanup(func() { endingWait = old })
	dir := t.TempDir()
	holdStore(t, dir)
	var log logLines
	_, err := lockStore(dir, false, log.printf)
	if !errors.Is(err, ErrStoreLocked) {
		t.Fatalf("lockStore of a store held throughout: %v, want ErrStoreLocked", err)
	}
	for _, want := range []string{dir, "pid " + strconv.Itoa(os.Getpid()), "with no mount of it, still holding it after"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
}
