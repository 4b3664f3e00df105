package backing

import (
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"
)

func unsynced(b *Blob) int64 {
	n, _ := b.Unsynced()
	return n
}

func storeUnsynced(s *Store) int64 {
	n, _ := s.Unsynced()
	return n
}

// TestDirtyTracking writes at scattered pages and checks the bookkeeping
// and what Sync msyncs.
func TestDirtyTracking(t *testing.T) {
	s := newStore(t)
	b := openBlob(t, s, "d")
	defer release(t, s, b)
	ps := pagesz()
	// Lay the blob down and make it clean.
	mustWrite(t, b, make([]byte, 40*ps), 0)
	if got := unsynced(b); got != 40*ps {
		t.Fatalf("after the first write: Unsynced %d, want %d", got, 40*ps)
	}
	if err := b.Sync(); err != nil {
		t.Fatal(err)
	}
	if got, since := b.Unsynced(); got != 0 {
		t.Fatalf("after Sync: Unsynced %d (since %v), want 0", got, since)
	}

	start := time.Now()
	writes := []struct {
		off int64
		n   int
	}{
		{0, 1},               // page 0
		{ps - 1, 2},          // pages 0, 1
		{5 * ps, int(ps)},    // page 5 exactly
		{7*ps + 100, 1},      // page 7
		{7*ps + 200, 10},     // page 7 again
		{10*ps - 1, 1},       // page 9
		{20*ps + 1, int(ps)}, // pages 20, 21
		{30 * ps, 3 * int(ps)},
	}
	want := map[int64]bool{}
	for _, w := range writes {
		mustWrite(t, b, pattern(1, w.off, w.n), w.off)
		for p := w.off / ps; p*ps < w.off+int64(w.n); p++ {
			want[p] = true
		}
	}
	got, since := b.Unsynced()
	if got != int64(len(want))*ps {
		t.Fatalf("Unsynced = %d, want %d pages = %d", got, len(want), int64(len(want))*ps)
	}
	if since.Before(start) || since.After(time.Now()) {
		t.Errorf("Unsynced since %v, want after %v", since, start)
	}
	if sg := storeUnsynced(s); sg != got {
		t.Errorf("Store.Unsynced %d, Blob.Unsynced %d", sg, got)
	}
	before := mustStats(t, s)
	if err := b.Sync(); err != nil {
		t.Fatal(err)
	}
	after := mustStats(t, s)
	if got := unsynced(b); got != 0 {
		t.Fatalf("after Sync: Unsynced %d", got)
	}
	if d := after.SyncBytes - before.SyncBytes; d != int64(len(want))*ps {
		t.Errorf("Sync covered %d bytes, want exactly the %d dirty pages = %d", d, len(want), int64(len(want))*ps)
	}
	// Runs: {0,1}, {5}, {7}, {9}, {20,21}, {30,31,32}: six msyncs.
	if d := after.SyncCalls - before.SyncCalls; d != 6 {
		t.Errorf("Sync made %d calls, want 6 (one per run of pages)", d)
	}
	// A clean Sync does nothing.
	if err := b.Sync(); err != nil {
		t.Fatal(err)
	}
	if again := mustStats(t, s); again.SyncBytes != after.SyncBytes || again.SyncCalls != after.SyncCalls {
		t.Errorf("a clean Sync synced %d bytes in %d calls", again.SyncBytes-after.SyncBytes, again.SyncCalls-after.SyncCalls)
	}
}

func TestDirtyTruncateForgetsPages(t *testing.T) {
	s := newStore(t)
	b := openBlob(t, s, "d")
	defer release(t, s, b)
	ps := pagesz()
	mustWrite(t, b, pattern(1, 0, int(10*ps)), 0)
	if got := unsynced(b); got != 10*ps {
		t.Fatalf("Unsynced %d", got)
	}
	truncate(t, b, 3*ps+1) // pages 0..3 stay
	if got := unsynced(b); got != 4*ps {
		t.Fatalf("after Truncate(3 pages + 1): Unsynced %d, want %d", got, 4*ps)
	}
	truncate(t, b, 0)
	if got := unsynced(b); got != 0 {
		t.Fatalf("after Truncate(0): Unsynced %d", got)
	}
	if err := b.Sync(); err != nil {
		t.Fatal(err)
	}
}

// TestClosedDirty releases a dirty blob and reopens it: the store keeps
// its unsynced pages, and a Sync of the reopened blob makes exactly those
// durable.
func TestClosedDirty(t *testing.T) {
	s := newStore(t)
	ps := pagesz()
	b := openBlob(t, s, "c")
	mustWrite(t, b, make([]byte, 16*ps), 0)
	if err := b.Sync(); err != nil {
		t.Fatal(err)
	}
	mustWrite(t, b, []byte{1}, 3*ps)
	mustWrite(t, b, []byte{2}, 9*ps+5)
	release(t, s, b)
	if got := storeUnsynced(s); got != 2*ps {
		t.Fatalf("Store.Unsynced after closing dirty = %d, want %d", got, 2*ps)
	}
	if st := mustStats(t, s); st.Mappings != 0 {
		t.Fatalf("Mappings %d after release", st.Mappings)
	}
	b = openBlob(t, s, "c")
	if got := unsynced(b); got != 2*ps {
		t.Fatalf("reopened blob: Unsynced %d, want %d", got, 2*ps)
	}
	if got := storeUnsynced(s); got != 2*ps {
		t.Fatalf("Store.Unsynced with blob reopened = %d, want %d (counted once)", got, 2*ps)
	}
	before := mustStats(t, s).SyncBytes
	if err := b.Sync(); err != nil {
		t.Fatal(err)
	}
	if d := mustStats(t, s).SyncBytes - before; d != 2*ps {
		t.Errorf("Sync of reopened blob covered %d bytes, want %d", d, 2*ps)
	}
	if got := storeUnsynced(s); got != 0 {
		t.Fatalf("Store.Unsynced after Sync = %d", got)
	}
	release(t, s, b)
}

func TestStoreSync(t *testing.T) {
	s := newStore(t)
	ps := pagesz()
	open := openBlob(t, s, "open")
	defer release(t, s, open)
	mustWrite(t, open, make([]byte, 3*ps), 0)
	closed := openBlob(t, s, "closed")
	mustWrite(t, closed, make([]byte, 5*ps), 0)
	release(t, s, closed)
	if got := storeUnsynced(s); got != 8*ps {
		t.Fatalf("Store.Unsynced = %d, want %d", got, 8*ps)
	}
	if err := s.Sync(); err != nil {
		t.Fatal(err)
	}
	if got, since := s.Unsynced(); got != 0 || !since.IsZero() {
		t.Fatalf("after Store.Sync: Unsynced %d since %v, want 0", got, since)
	}
	// The closed blob comes back clean and not owing a whole sync.
	c := openBlob(t, s, "closed")
	if got := unsynced(c); got != 0 {
		t.Fatalf("reopened after Store.Sync: Unsynced %d", got)
	}
	before := mustStats(t, s)
	if err := c.Sync(); err != nil {
		t.Fatal(err)
	}
	if after := mustStats(t, s); after.SyncBytes != before.SyncBytes {
		t.Errorf("Sync of a clean reopened blob synced %d bytes", after.SyncBytes-before.SyncBytes)
	}
	release(t, s, c)
}

// TestClosedDirtyOverflow closes more dirty blobs than the store remembers.
// Past maxClosedDirty the store forgets which pages they owe, so every blob
// reopened before the next Store.Sync syncs whole.
func TestClosedDirtyOverflow(t *testing.T) {
	s := newStore(t)
	ps := pagesz()
	// Stand-ins for maxClosedDirty blobs closed dirty (opening thousands
	// of real files would be slow): fake keys, one page each.
	s.mu.Lock()
	for i := 0; i < maxClosedDirty; i++ {
		cd := &closedDirty{since: time.Now()}
		cd.pages.addRange(0, 1)
		s.closed[fileKey{dev: ^uint64(0), ino: uint64(i)}] = cd
	}
	s.mu.Unlock()
	b := openBlob(t, s, "x")
	mustWrite(t, b, make([]byte, 2*ps), 0)
	release(t, s, b)
	s.mu.Lock()
	lost := s.closedLost
	s.mu.Unlock()
	if !lost {
		t.Fatalf("closedLost not set after overflowing the closed-dirty table")
	}
	b = openBlob(t, s, "x")
	before := mustStats(t, s)
	if err := b.Sync(); err != nil {
		t.Fatal(err)
	}
	after := mustStats(t, s)
	if after.SyncCalls == before.SyncCalls || after.SyncBytes-before.SyncBytes != b.Size() {
		t.Errorf("blob reopened after overflow: Sync covered %d bytes in %d calls, want a whole sync of %d bytes",
			after.SyncBytes-before.SyncBytes, after.SyncCalls-before.SyncCalls, b.Size())
	}
	release(t, s, b)
	if err := s.Sync(); err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	lost, n := s.closedLost, len(s.closed)
	s.mu.Unlock()
	if lost || n != 0 {
		t.Fatalf("after Store.Sync: closedLost %v, %d closed entries", lost, n)
	}
}

// TestUnsyncedAfterOverflow: when the store forgets closed blobs' pages, the
// bytes it reports as unsynced ("bytes at risk") must not drop to zero while
// those bytes are still not durable.
func TestUnsyncedAfterOverflow(t *testing.T) {
	s := newStore(t)
	ps := pagesz()
	s.mu.Lock()
	for i := 0; i < maxClosedDirty; i++ {
		cd := &closedDirty{since: time.Now()}
		cd.pages.addRange(0, 1)
		s.closed[fileKey{dev: ^uint64(0), ino: uint64(i)}] = cd
	}
	s.mu.Unlock()
	if got := storeUnsynced(s); got != maxClosedDirty*ps {
		t.Fatalf("Store.Unsynced = %d, want %d", got, maxClosedDirty*ps)
	}
	b := openBlob(t, s, "x")
	mustWrite(t, b, make([]byte, ps), 0)
	release(t, s, b)
	// Nothing was synced, so at least what was reported before is still
	// at risk.
	if got := storeUnsynced(s); got < maxClosedDirty*ps {
		t.Errorf("BUG: Store.Unsynced dropped from %d to %d bytes when the closed-dirty table overflowed, though nothing was synced",
			maxClosedDirty*ps, got)
	}
}

// TestClosedDuringSyncfs closes a blob dirty while Store.Sync is in its
// syncfs. syncfs need not cover pages dirtied after it started, so the
// store must keep what that blob owes (syncfs's own comment: "only clear
// what was known before"). The close is made from testHookSyncfs, once
// syncfs has read the generation it forgets up to: after Store.Sync's sync
// of the open blob has let go of it, so that the test's release is the
// blob's last and records its page as the close of a dirty blob.
func TestClosedDuringSyncfs(t *testing.T) {
	s := newStore(t)
	ps := pagesz()
	b := openBlob(t, s, "b")
	mustWrite(t, b, make([]byte, 4*ps), 0)
	inSyncfs, resume := make(chan struct{}), make(chan struct{})
	var once, resumed sync.Once
	hook := func(hs *Store) {
		if hs != s {
			return // another test's store
		}
		once.Do(func() {
			close(inSyncfs)
			<-resume
		})
	}
	testHookSyncfs.Store(&hook)
	// Before the store's Close (cleanups run last first), and on every
	// path: a Fatal below must not leave Store.Sync waiting in the hook.
	t.Cleanup(func() {
		resumed.Do(func() { close(resume) })
		testHookSyncfs.Store(nil)
	})
	done := make(chan error, 1)
	go func() { done <- s.Sync() }()
	select {
	case <-inSyncfs:
	case err := <-done:
		t.Fatalf("Store.Sync returned (%v) without reaching its syncfs", err)
	case <-time.After(20 * time.Second):
		t.Fatal("Store.Sync did not reach its syncfs")
	}
	// Store.Sync has synced the open blob's 4 pages and released it; it
	// is about to syncfs. Dirty one page more and close the blob now.
	mustWrite(t, b, []byte{1}, ps)
	release(t, s, b)
	resumed.Do(func() { close(resume) })
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Store.Sync: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Store.Sync did not return")
	}
	if got := storeUnsynced(s); got != ps {
		t.Errorf("BUG: a blob closed dirty during syncfs: Store.Unsynced = %d after Store.Sync, want %d (its page was forgotten)", got, ps)
	}
}

// TestRemovedForgetsClosed removes files that owe the disk pages: one
// closed before its name goes, one still open when it goes. Neither is
// counted as unsynced afterwards; a third file, not removed, still is.
func TestRemovedForgetsClosed(t *testing.T) {
	s := newStore(t)
	ps := pagesz()
	remove := func(name string) {
		t.Helper()
		p := filepath.Join(s.Root(), name)
		var st syscall.Stat_t
		if err := syscall.Lstat(p, &st); err != nil {
			t.Fatal(err)
		}
		if err := os.Remove(p); err != nil {
			t.Fatal(err)
		}
		s.Removed(st.Dev, st.Ino)
	}

	closed := openBlob(t, s, "closed")
	mustWrite(t, closed, make([]byte, 2*ps), 0)
	release(t, s, closed)
	open := openBlob(t, s, "open")
	mustWrite(t, open, make([]byte, 3*ps), 0)
	kept := openBlob(t, s, "kept")
	mustWrite(t, kept, make([]byte, ps), 0)
	release(t, s, kept)
	if got := storeUnsynced(s); got != 6*ps {
		t.Fatalf("Store.Unsynced = %d, want %d", got, 6*ps)
	}

	remove("closed")
	if got := storeUnsynced(s); got != 4*ps {
		t.Fatalf("Store.Unsynced after the closed file is removed = %d, want %d", got, 4*ps)
	}
	if risk := s.AtRisk(10); len(risk) != 2 {
		t.Errorf("AtRisk lists %d files after one is removed, want 2: %+v", len(risk), risk)
	}

	remove("open")
	if got := storeUnsynced(s); got != 4*ps {
		t.Fatalf("Store.Unsynced with the removed file still open = %d, want %d", got, 4*ps)
	}
	release(t, s, open)
	if got := storeUnsynced(s); got != ps {
		t.Fatalf("Store.Unsynced after the removed file is closed = %d, want %d", got, ps)
	}
}
