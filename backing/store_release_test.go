package backing

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// TestReleaseSyncRace: under the periodic policy a last release that
// must sync (too many idle dirty blobs kept already) syncs outside the
// store's lock. If the file is opened and let go again meanwhile, that
// second release finishes the blob, and a third open makes a new blob of
// the file. The first release must then leave the new blob alone: before
// the fix it deleted the new blob's entry and closed the old blob again.
func TestReleaseSyncRace(t *testing.T) {
	dir := t.TempDir()
	s := newStoreWith(t, dir, Options{Policy: Policy{Kind: PolicyPeriodic, Period: time.Hour}})
	b := openBlob(t, s, "f")
	mustWrite(t, b, pattern(1, 0, 100), 0)
	s.mu.Lock()
	s.idle = maxIdleDirty // the next dirty last release syncs instead of idling
	s.mu.Unlock()

	var third *Blob
	once := false
	hook := func(old *Blob) {
		if once {
			return
		}
		once = true
		second := openBlob(t, s, "f") // the same blob, refs 0 -> 1
		release(t, s, second)         // syncs (the hook is spent) and finishes it
		third = openBlob(t, s, "f")   // a new blob of the same file
	}
	testHookReleaseSync.Store(&hook)
	t.Cleanup(func() { testHookReleaseSync.Store(nil) })

	if err := s.Release(b); err != nil {
		t.Fatalf("the first release: %v", err)
	}
	s.mu.Lock()
	idle := s.idle
	s.mu.Unlock()
	if idle != maxIdleDirty {
		t.Errorf("idle blobs counted: %d, want %d (none was released to idle meanwhile)", idle, maxIdleDirty)
	}
	if third == nil {
		t.Fatal("the hook did not run: the release did not take the sync path")
	}
	if third == b {
		t.Fatal("the third open got the finished blob back")
	}
	var st syscall.Stat_t
	if err := syscall.Stat(filepath.Join(dir, "f"), &st); err != nil {
		t.Fatal(err)
	}
	found := s.Find(&st)
	if found != third {
		t.Fatalf("after the first release, the store finds %p for the file, want the third open's blob %p", found, third)
	}
	release(t, s, found)
	mustWrite(t, third, pattern(2, 0, 100), 0)
	mustRead(t, third, 0, 100, 100)
	release(t, s, third)
	if _, err := os.Stat(filepath.Join(dir, "f")); err != nil {
		t.Fatal(err)
	}
}
