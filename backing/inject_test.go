package backing

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"
)

// hookOf is an Options.Inject hook that fails op with err (nil: never),
// first waiting in wait (nil: not), and records the calls.
type hookOf struct {
	mu    sync.Mutex
	op    string
	err   error
	wait  func()
	calls []string
}

func (h *hookOf) hook(op string, b *Blob, n int64) (func(), error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.calls = append(h.calls, op+" "+b.Path())
	if op == h.op {
		return h.wait, h.err
	}
	return nil, nil
}

func (h *hookOf) set(op string, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.op, h.err, h.wait = op, err, nil
}

// setWait makes op wait in wait, then fail with err.
func (h *hookOf) setWait(op string, wait func(), err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.op, h.err, h.wait = op, err, wait
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

// TestInjectDelayWithoutLock: a delay the hook gives a sync or a fault is
// served with none of the blob's locks held: reads and writes of the
// file go on meanwhile, even under the simulation, whose syncs take the
// blob exclusively.
func TestInjectDelayWithoutLock(t *testing.T) {
	t.Parallel()
	for _, op := range []string{"msync", "fault"} {
		t.Run(op, func(t *testing.T) {
			t.Parallel()
			h := &hookOf{}
			s := newStoreWith(t, t.TempDir(), Options{Inject: h.hook, PowerCutSim: true})
			b := openBlob(t, s, "f")
			defer release(t, s, b)
			ps := pagesz()
			mustWrite(t, b, pattern(1, 0, int(2*ps)), 0)
			entered, leave := make(chan struct{}), make(chan struct{})
			var once sync.Once
			h.setWait(op, func() {
				once.Do(func() { close(entered) })
				<-leave
			}, nil)
			done := make(chan error, 1)
			go func() {
				if op == "msync" {
					done <- b.Sync()
					return
				}
				_, err := b.ReadAt(make([]byte, 10), 0)
				done <- err
			}()
			<-entered
			h.set("", nil) // the calls below are not delayed
			ok := make(chan error, 1)
			go func() {
				if _, err := b.ReadAt(make([]byte, 10), ps); err != nil {
					ok <- err
					return
				}
				_, err := b.WriteAt(pattern(2, ps, 10), ps)
				ok <- err
			}()
			select {
			case err := <-ok:
				if err != nil {
					t.Fatal(err)
				}
			case <-time.After(10 * time.Second):
				close(leave)
				t.Fatalf("a read and a write waited for the delayed %s", op)
			}
			close(leave)
			if err := <-done; err != nil {
				t.Fatalf("the delayed %s: %v", op, err)
			}
		})
	}
}

// TestInjectLostReportedOncePerOpen: a lost writeback is reported once to
// each open made before it (its ErrMark), however many of its fsyncs run
// at once, and not to an open made after one has reported it.
func TestInjectLostReportedOncePerOpen(t *testing.T) {
	t.Parallel()
	h := &hookOf{}
	s := newStoreWith(t, t.TempDir(), Options{Inject: h.hook, PowerCutSim: true})
	b := openBlob(t, s, "f")
	defer release(t, s, b)
	mustWrite(t, b, pattern(1, 0, 100), 0)
	if err := b.Fsync(); err != nil {
		t.Fatal(err)
	}
	const opens, each = 3, 8
	marks := make([]*ErrMark, opens)
	for i := range marks {
		marks[i] = b.Mark()
	}
	for round := 0; round < 20; round++ {
		mustWrite(t, b, pattern(byte(round+2), 0, 100), 0)
		h.set("msync", &WritebackLost{Err: syscall.EIO})
		if err := b.Sync(); !isErrno(err, syscall.EIO) {
			t.Fatalf("round %d: the losing sync: %v", round, err)
		}
		h.set("", nil)
		var wg sync.WaitGroup
		errs := make([][]error, opens)
		for i := range marks {
			errs[i] = make([]error, each)
			for j := 0; j < each; j++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					errs[i][j] = b.FsyncAs(marks[i])
				}()
			}
		}
		wg.Wait()
		for i := range marks {
			n := 0
			for _, err := range errs[i] {
				switch {
				case err == nil:
				case isErrno(err, syscall.EIO):
					n++
				default:
					t.Fatalf("round %d: open %d: %v", round, i, err)
				}
			}
			if n != 1 {
				t.Fatalf("round %d: open %d saw the lost writeback %d times in %d concurrent fsyncs, want once", round, i, n, each)
			}
		}
		if err := b.FsyncAs(b.Mark()); err != nil {
			t.Fatalf("round %d: an open made after the loss was reported: %v, want nothing", round, err)
		}
	}
}

// TestInjectSizeOnlySync: a sync with only the size to make durable (a
// file grown by truncate, no page written) is asked about too, and fails.
func TestInjectSizeOnlySync(t *testing.T) {
	t.Parallel()
	h := &hookOf{}
	s := newStoreWith(t, t.TempDir(), Options{Inject: h.hook})
	b := openBlob(t, s, "f")
	defer release(t, s, b)
	if err := b.Truncate(3 * pagesz()); err != nil {
		t.Fatal(err)
	}
	h.set("msync", syscall.EIO)
	if err := b.Fsync(); !isErrno(err, syscall.EIO) {
		t.Fatalf("the fsync of a file only grown, under a failing msync: %v, want EIO", err)
	}
	h.set("", nil)
	if err := b.Fsync(); err != nil {
		t.Fatalf("the next fsync: %v (the size stays owed and is synced now)", err)
	}
}

// TestInjectPathOwner: the hook sees the blob's path as its owner says it
// is now (a rename), not the name it was first opened by.
func TestInjectPathOwner(t *testing.T) {
	t.Parallel()
	h := &hookOf{}
	s := newStoreWith(t, t.TempDir(), Options{Inject: h.hook})
	b := openBlob(t, s, "f")
	defer release(t, s, b)
	o := &fakeOwner{path: "f"}
	b.SetOwner(o)
	o.setPath("d/g")
	mustWrite(t, b, pattern(1, 0, 10), 0)
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.calls) == 0 || h.calls[len(h.calls)-1] != "fault d/g" {
		t.Fatalf("the hook's calls: %q, want the last to be %q", h.calls, "fault d/g")
	}
}

// fakeOwner is an Owner whose path the test sets.
type fakeOwner struct {
	mu    sync.Mutex
	path  string
	inval [][2]int64
}

func (o *fakeOwner) setPath(p string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.path = p
}

func (o *fakeOwner) Path() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.path
}

func (o *fakeOwner) Invalidate(off, n int64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.inval = append(o.inval, [2]int64{off, n})
}

// TestInjectPutBackInvalidates: the owner is told of the pages a lost
// writeback put back, after the sync lets go of the blob.
func TestInjectPutBackInvalidates(t *testing.T) {
	t.Parallel()
	h := &hookOf{}
	s := newStoreWith(t, t.TempDir(), Options{Inject: h.hook, PowerCutSim: true})
	b := openBlob(t, s, "f")
	defer release(t, s, b)
	o := &fakeOwner{path: "f"}
	b.SetOwner(o)
	ps := pagesz()
	mustWrite(t, b, pattern(1, 0, int(3*ps)), 0)
	if err := b.Fsync(); err != nil {
		t.Fatal(err)
	}
	mustWrite(t, b, pattern(2, ps, 10), ps)
	h.set("msync", &WritebackLost{Err: syscall.EIO})
	if err := b.Fsync(); !isErrno(err, syscall.EIO) {
		t.Fatalf("fsync: %v", err)
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(o.inval) != 1 || o.inval[0] != [2]int64{ps, ps} {
		t.Fatalf("invalidated %v, want page 1 only: [[%d %d]]", o.inval, ps, ps)
	}
}

// TestInjectLostNothingOwed: an fsyncgate decision made before the sync's
// lock, whose pages another sync took meanwhile, finds nothing owed: it
// loses nothing, and no fsync is told of a loss.
func TestInjectLostNothingOwed(t *testing.T) {
	t.Parallel()
	s := newStoreWith(t, t.TempDir(), Options{PowerCutSim: true})
	b := openBlob(t, s, "f")
	defer release(t, s, b)
	mustWrite(t, b, pattern(1, 0, 100), 0)
	if err := b.Fsync(); err != nil {
		t.Fatal(err)
	}
	mark := b.Mark()
	unlock, err := b.syncLock("fsync")
	if err != nil {
		t.Fatal(err)
	}
	err = b.syncTakenLocked(&pageSet{}, false, false, &WritebackLost{Err: syscall.EIO})
	unlock()
	if err != nil {
		t.Errorf("a lost writeback of nothing owed: %v, want nil", err)
	}
	if err := b.FsyncAs(mark); err != nil {
		t.Errorf("the next fsync after a loss of nothing: %v, want nil", err)
	}
}
