package backing

import (
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"
)

// holdMapping makes the first open of the file called name stop just
// before it maps the file (outside the store's lock) until the returned
// release is called; entered is closed once it is there. Tests that use
// it do not run in parallel: the hook is package-wide.
func holdMapping(t *testing.T, name string) (entered <-chan struct{}, release func()) {
	t.Helper()
	in, out := make(chan struct{}), make(chan struct{})
	var once, onceOut sync.Once
	hook := func(n string) {
		if n != name {
			return
		}
		once.Do(func() { close(in) })
		<-out
	}
	testHookMapping.Store(&hook)
	release = func() { onceOut.Do(func() { close(out) }) }
	t.Cleanup(func() {
		release()
		testHookMapping.Store(nil)
	})
	return in, release
}

// within fails the test unless fn returns within d.
func within(t *testing.T, d time.Duration, what string, fn func() error) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- fn() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("%s: %v", what, err)
		}
	case <-time.After(d):
		t.Fatalf("%s did not return within %v: it waits for another file's open", what, d)
	}
}

// TestOpenMapsOutsideStoreLock: while one file's first open is mapping
// it (with Populate, reading all of it in), opens, releases, finds and
// stats of other files go on.
func TestOpenMapsOutsideStoreLock(t *testing.T) {
	s := newStoreWith(t, t.TempDir(), Options{Populate: true})
	for _, name := range []string{"held-slow", "other", "held"} {
		if err := os.WriteFile(filepath.Join(s.Root(), name), pattern(1, 0, 3*pageSize), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	held := openBlob(t, s, "held")
	entered, release := holdMapping(t, "held-slow")
	slow := make(chan error, 1)
	go func() {
		b, err := s.Open("held-slow", rw, 0)
		if err == nil {
			err = s.Release(b)
		}
		slow <- err
	}()
	<-entered
	within(t, 10*time.Second, "Open and Release of another file", func() error {
		b, err := s.Open("other", rw, 0)
		if err != nil {
			return err
		}
		return s.Release(b)
	})
	within(t, 10*time.Second, "Stats", func() error {
		_, err := s.Stats()
		return err
	})
	within(t, 10*time.Second, "Release of an open file", func() error {
		return s.Release(held)
	})
	release()
	if err := <-slow; err != nil {
		t.Fatalf("the held open: %v", err)
	}
}

// TestOpenWaitsForSameFile: a second open of a file whose first open is
// still mapping it waits for that blob and shares it, instead of making a
// second one.
func TestOpenWaitsForSameFile(t *testing.T) {
	s := newStore(t)
	if err := os.WriteFile(filepath.Join(s.Root(), "held-f"), pattern(2, 0, 2*pageSize), 0o644); err != nil {
		t.Fatal(err)
	}
	entered, release := holdMapping(t, "held-f")
	type result struct {
		b   *Blob
		err error
	}
	first, second := make(chan result, 1), make(chan result, 1)
	go func() {
		b, err := s.Open("held-f", rw, 0)
		first <- result{b, err}
	}()
	<-entered
	go func() {
		b, err := s.Open("held-f", rw, 0)
		second <- result{b, err}
	}()
	select {
	case r := <-second:
		t.Fatalf("second open returned (%v) before the first had mapped the file", r.err)
	case <-time.After(100 * time.Millisecond):
	}
	release()
	r1, r2 := <-first, <-second
	if r1.err != nil || r2.err != nil {
		t.Fatalf("opens: %v, %v", r1.err, r2.err)
	}
	if r1.b != r2.b {
		t.Errorf("two blobs for one file")
	}
	checkBytes(t, "the shared blob", mustRead(t, r2.b, 0, 2*pageSize, 2*pageSize), pattern(2, 0, 2*pageSize))
	s.mu.Lock()
	blobs, refs := len(s.blobs), r1.b.refs
	s.mu.Unlock()
	if blobs != 1 || refs != 2 {
		t.Errorf("%d blobs, %d references; want 1 blob with 2", blobs, refs)
	}
	release1 := func(b *Blob) {
		if err := s.Release(b); err != nil {
			t.Error(err)
		}
	}
	release1(r1.b)
	release1(r2.b)
}

// TestFindWaitsForOpen: Find of a file whose first open is still mapping
// it waits for that open and returns its blob, instead of reporting the
// file as not open (a truncate by name would then go around the blob).
func TestFindWaitsForOpen(t *testing.T) {
	s := newStore(t)
	path := filepath.Join(s.Root(), "held-find")
	if err := os.WriteFile(path, pattern(3, 0, 2*pageSize), 0o644); err != nil {
		t.Fatal(err)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	entered, release := holdMapping(t, "held-find")
	opened := make(chan *Blob, 1)
	go func() {
		b, err := s.Open("held-find", rw, 0)
		if err != nil {
			t.Error(err)
		}
		opened <- b
	}()
	<-entered
	found := make(chan *Blob, 1)
	go func() { found <- s.Find(&st) }()
	select {
	case b := <-found:
		t.Fatalf("Find returned %v while the first open was still mapping the file", b)
	case <-time.After(100 * time.Millisecond):
	}
	release()
	b1, b2 := <-opened, <-found
	if b1 == nil || b2 != b1 {
		t.Fatalf("Find returned %p, the open %p; want the open's blob", b2, b1)
	}
	for _, b := range []*Blob{b1, b2} {
		if err := s.Release(b); err != nil {
			t.Error(err)
		}
	}
}
