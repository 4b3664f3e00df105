package backing

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
)

// hookOf is an Options.Inject hook that fails op with err (nil: never)
// and records the calls.
type hookOf struct {
	mu    sync.Mutex
	op    string
	err   error
	calls []string
}

func (h *hookOf) hook(op, name string, n int64) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.calls = append(h.calls, op+" "+name)
	if op == h.op {
		return h.err
	}
	return nil
}

func (h *hookOf) set(op string, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.op, h.err = op, err
}

// TestInjectFaultHook: a "fault" error fails the copy before it happens:
// a read copies nothing, a write changes nothing in the file.
func TestInjectFaultHook(t *testing.T) {
	t.Parallel()
	h := &hookOf{}
	dir := t.TempDir()
	s := newStoreWith(t, dir, Options{Inject: h.hook})
	b := openBlob(t, s, "f")
	defer release(t, s, b)
	mustWrite(t, b, pattern(1, 0, 100), 0)
	h.set("fault", syscall.EIO)
	if _, err := b.ReadAt(make([]byte, 10), 0); !isErrno(err, syscall.EIO) {
		t.Fatalf("ReadAt under the fault hook: %v", err)
	}
	if _, err := b.WriteAt(pattern(2, 0, 100), 0); !isErrno(err, syscall.EIO) {
		t.Fatalf("WriteAt under the fault hook: %v", err)
	}
	h.set("", nil)
	checkBytes(t, "after the failed write", mustRead(t, b, 0, 100, 100), pattern(1, 0, 100))
	got, err := os.ReadFile(filepath.Join(dir, "f"))
	if err != nil || !bytes.Equal(got, pattern(1, 0, 100)) {
		t.Fatalf("the file after the failed write: %v", err)
	}
}

// TestInjectMsyncHook: a failed "msync" leaves the pages owed; the next
// sync (the hook quiet) syncs them.
func TestInjectMsyncHook(t *testing.T) {
	t.Parallel()
	h := &hookOf{}
	s := newStoreWith(t, t.TempDir(), Options{Inject: h.hook})
	b := openBlob(t, s, "f")
	defer release(t, s, b)
	mustWrite(t, b, pattern(1, 0, 5000), 0)
	h.set("msync", syscall.EIO)
	if err := b.Sync(); !isErrno(err, syscall.EIO) {
		t.Fatalf("Sync under the msync hook: %v", err)
	}
	if n, _ := s.Unsynced(); n == 0 {
		t.Fatal("after the failed sync nothing is owed")
	}
	h.set("", nil)
	if err := b.Sync(); err != nil {
		t.Fatal(err)
	}
	if n, _ := s.Unsynced(); n != 0 {
		t.Fatalf("after the second sync %d bytes are owed", n)
	}
}

// TestInjectWritebackLost: a *WritebackLost from "msync" under the
// simulation puts the pages back to their last synced content (zeros past
// the synced size), writes that to the file, and forgets them: the next
// sync succeeds and syncs nothing of them.
func TestInjectWritebackLost(t *testing.T) {
	t.Parallel()
	h := &hookOf{}
	dir := t.TempDir()
	s := newStoreWith(t, dir, Options{Inject: h.hook, PowerCutSim: true})
	b := openBlob(t, s, "f")
	defer release(t, s, b)
	ps := pagesz()
	synced := pattern(1, 0, int(2*ps))
	mustWrite(t, b, synced, 0)
	if err := b.Sync(); err != nil {
		t.Fatal(err)
	}
	mustWrite(t, b, pattern(2, ps, int(ps)), ps)     // rewrite page 1
	mustWrite(t, b, pattern(3, 2*ps, int(ps)), 2*ps) // extend by page 2
	h.set("msync", &WritebackLost{Err: syscall.EIO})
	if err := b.Sync(); !isErrno(err, syscall.EIO) {
		t.Fatalf("Sync under WritebackLost: %v", err)
	}
	h.set("", nil)
	want := append(append([]byte{}, synced...), make([]byte, ps)...)
	checkBytes(t, "the mapping after the lost writeback", mustRead(t, b, 0, int(3*ps), int(3*ps)), want)
	got, err := os.ReadFile(filepath.Join(dir, "f"))
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("the file after the lost writeback: %d bytes, %v", len(got), err)
	}
	if st := mustStats(t, s); st.SimBytes != 0 {
		t.Fatalf("the journal still keeps %d bytes", st.SimBytes)
	}
	if err := b.Sync(); err != nil {
		t.Fatalf("the sync after the lost writeback: %v", err)
	}
	if n, _ := s.Unsynced(); n != 0 {
		t.Fatalf("%d bytes owed after it", n)
	}
	// Without the simulation a WritebackLost only fails the sync.
	h2 := &hookOf{}
	s2 := newStoreWith(t, t.TempDir(), Options{Inject: h2.hook})
	b2 := openBlob(t, s2, "f")
	defer release(t, s2, b2)
	mustWrite(t, b2, pattern(4, 0, 100), 0)
	h2.set("msync", &WritebackLost{Err: syscall.EIO})
	if err := b2.Sync(); !isErrno(err, syscall.EIO) {
		t.Fatalf("Sync: %v", err)
	}
	checkBytes(t, "without the simulation", mustRead(t, b2, 0, 100, 100), pattern(4, 0, 100))
}

func isErrno(err error, e syscall.Errno) bool { return errors.Is(err, e) }

// TestInjectWritebackLostBackground: pages lost by a sync no client asked
// for (the periodic pass: Sync) are reported by the next fsync, once.
func TestInjectWritebackLostBackground(t *testing.T) {
	t.Parallel()
	h := &hookOf{}
	s := newStoreWith(t, t.TempDir(), Options{Inject: h.hook, PowerCutSim: true})
	b := openBlob(t, s, "f")
	defer release(t, s, b)
	mustWrite(t, b, pattern(1, 0, 100), 0)
	if err := b.Fsync(); err != nil {
		t.Fatal(err)
	}
	mustWrite(t, b, pattern(2, 0, 100), 0)
	h.set("msync", &WritebackLost{Err: syscall.EIO})
	if err := b.Sync(); !isErrno(err, syscall.EIO) {
		t.Fatalf("the background sync: %v", err)
	}
	h.set("", nil)
	checkBytes(t, "after the lost writeback", mustRead(t, b, 0, 100, 100), pattern(1, 0, 100))
	if err := b.Fsync(); !isErrno(err, syscall.EIO) {
		t.Fatalf("the fsync after a lost background writeback: %v, want EIO", err)
	}
	if err := b.Fsync(); err != nil {
		t.Fatalf("the fsync after that: %v, want success (reported once)", err)
	}
}

// TestInjectWritebackLostAfterRelease: a writeback lost by a sync the
// daemon made on its own, on a file then closed (its blob dropped), is
// reported by the first fsync of the file opened again, once: Linux
// reports it to a descriptor opened after the error.
func TestInjectWritebackLostAfterRelease(t *testing.T) {
	t.Parallel()
	h := &hookOf{}
	s := newStoreWith(t, t.TempDir(), Options{Inject: h.hook, PowerCutSim: true})
	b := openBlob(t, s, "f")
	mustWrite(t, b, pattern(1, 0, 100), 0)
	if err := b.Fsync(); err != nil {
		t.Fatal(err)
	}
	mustWrite(t, b, pattern(2, 0, 100), 0)
	h.set("msync", &WritebackLost{Err: syscall.EIO})
	if err := b.Sync(); !isErrno(err, syscall.EIO) {
		t.Fatalf("the background sync: %v", err)
	}
	h.set("", nil)
	release(t, s, b)
	b = openBlob(t, s, "f")
	defer release(t, s, b)
	checkBytes(t, "reopened after the lost writeback", mustRead(t, b, 0, 100, 100), pattern(1, 0, 100))
	if err := b.Fsync(); !isErrno(err, syscall.EIO) {
		t.Fatalf("the first fsync of the file opened again: %v, want EIO", err)
	}
	if err := b.Fsync(); err != nil {
		t.Fatalf("the fsync after that: %v, want success (reported once)", err)
	}
}
