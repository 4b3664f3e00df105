package fs

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

	"golang.org/x/sys/unix"
)

// testDirs makes directories to cache: opener(i) opens the i-th O_PATH
// and counts the opens; isOpen(fd, i) reports whether fd is still a
// descriptor of the i-th (a closed number may be reused, by another file).
type testDirs struct {
	t     *testing.T
	paths []string
	inos  []uint64
	opens atomic.Int64
}

func newTestDirs(t *testing.T, n int) *testDirs {
	t.Helper()
	d := &testDirs{t: t}
	base := t.TempDir()
	for i := range n {
		p := filepath.Join(base, fmt.Sprint(i))
		if err := os.Mkdir(p, 0o755); err != nil {
			t.Fatal(err)
		}
		var st unix.Stat_t
		if err := unix.Stat(p, &st); err != nil {
			t.Fatal(err)
		}
		d.paths = append(d.paths, p)
		d.inos = append(d.inos, st.Ino)
	}
	return d
}

func (d *testDirs) opener(i int) func() (int, error) {
	return func() (int, error) {
		d.opens.Add(1)
		return unix.Open(d.paths[i], unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	}
}

func (d *testDirs) isOpen(fd, i int) bool {
	var st unix.Stat_t
	return unix.Fstat(fd, &st) == nil && st.Ino == d.inos[i]
}

// get is dirCache.get that fails the test on an error.
func (d *testDirs) get(c *dirCache, n *Node, i int) (int, func()) {
	d.t.Helper()
	fd, done, err := c.get(n, d.opener(i))
	if err != nil {
		d.t.Fatalf("get %d: %v", i, err)
	}
	return fd, func() {
		d.t.Helper()
		if err := done(); err != nil {
			d.t.Fatalf("put %d: %v", i, err)
		}
	}
}

// TestDirCacheHitAndBound: a hit opens nothing; past the bound the least
// recently used entry is closed, a recently used one kept.
func TestDirCacheHitAndBound(t *testing.T) {
	d := newTestDirs(t, 3)
	c := newDirCache(2)
	nodes := []*Node{{}, {}, {}}

	fd0, put := d.get(c, nodes[0], 0)
	put()
	again, put := d.get(c, nodes[0], 0)
	put()
	if again != fd0 || d.opens.Load() != 1 {
		t.Fatalf("second get: fd %d (first %d), %d opens; want the cached descriptor and one open", again, fd0, d.opens.Load())
	}
	fd1, put := d.get(c, nodes[1], 1)
	put()
	// Use 0 again, so that 1 is the least recently used.
	_, put = d.get(c, nodes[0], 0)
	put()
	fd2, put := d.get(c, nodes[2], 2)
	put()
	if len(c.m) != 2 || c.lru.Len() != 2 {
		t.Fatalf("%d entries (%d in the list), want the bound, 2", len(c.m), c.lru.Len())
	}
	if d.isOpen(fd1, 1) {
		t.Errorf("the least recently used descriptor is still open")
	}
	if !d.isOpen(fd0, 0) || !d.isOpen(fd2, 2) {
		t.Errorf("a recently used descriptor was closed")
	}
	if c.m[nodes[1]] != nil {
		t.Errorf("the dropped entry is still in the map")
	}
	// Dropped, 1 is opened again on the next get.
	_, put = d.get(c, nodes[1], 1)
	put()
	if d.opens.Load() != 4 {
		t.Errorf("%d opens, want 4", d.opens.Load())
	}
	if err := c.close(); err != nil {
		t.Fatal(err)
	}
	if len(c.m) != 0 || c.lru.Len() != 0 {
		t.Errorf("after close: %d entries, %d in the list", len(c.m), c.lru.Len())
	}
}

// TestDirCacheInUse: an entry pushed out, forgotten or closed while in
// use stays open for its users and is closed by the last put.
func TestDirCacheInUse(t *testing.T) {
	d := newTestDirs(t, 3)
	c := newDirCache(1)
	a, b := &Node{}, &Node{}

	// Pushed out past the bound while two requests hold it.
	fdA, putA1 := d.get(c, a, 0)
	_, putA2 := d.get(c, a, 0)
	_, putB := d.get(c, b, 1)
	if c.m[a] != nil || !d.isOpen(fdA, 0) {
		t.Fatalf("pushed out in use: in the cache %v, open %v; want out of the cache and open", c.m[a] != nil, d.isOpen(fdA, 0))
	}
	putA1()
	if !d.isOpen(fdA, 0) {
		t.Fatal("closed while a user still holds it")
	}
	putA2()
	if d.isOpen(fdA, 0) {
		t.Error("not closed by the last put")
	}
	putB()

	// Forgotten while in use.
	fdB, putB := d.get(c, b, 1)
	if err := c.forget(b); err != nil {
		t.Fatal(err)
	}
	if c.m[b] != nil || !d.isOpen(fdB, 1) {
		t.Fatalf("forgotten in use: in the cache %v, open %v", c.m[b] != nil, d.isOpen(fdB, 1))
	}
	if err := c.forget(b); err != nil { // twice, and with nothing cached
		t.Fatal(err)
	}
	putB()
	if d.isOpen(fdB, 1) {
		t.Error("a forgotten descriptor not closed by its last put")
	}
	// A forgotten node is opened anew.
	before := d.opens.Load()
	fdB, putB = d.get(c, b, 1)
	putB()
	if d.opens.Load() != before+1 || !d.isOpen(fdB, 1) {
		t.Errorf("get after forget: %d opens (%d before), open %v", d.opens.Load(), before, d.isOpen(fdB, 1))
	}
	// Forgotten while unused: closed at once.
	if err := c.forget(b); err != nil {
		t.Fatal(err)
	}
	if d.isOpen(fdB, 1) {
		t.Error("forgotten while unused, still open")
	}

	// Closed (unmount) while in use.
	fdC, putC := d.get(c, b, 2)
	if err := c.close(); err != nil {
		t.Fatal(err)
	}
	if !d.isOpen(fdC, 2) {
		t.Fatal("close closed a descriptor in use")
	}
	putC()
	if d.isOpen(fdC, 2) {
		t.Error("not closed by the last put after close")
	}
}

// TestDirCacheOpenError: a failed open is returned and caches nothing.
func TestDirCacheOpenError(t *testing.T) {
	c := newDirCache(4)
	n := &Node{}
	_, _, err := c.get(n, func() (int, error) { return -1, pathErr("openat2", "x", unix.ELOOP) })
	if err == nil || len(c.m) != 0 {
		t.Fatalf("get with a failing open: %v, %d entries", err, len(c.m))
	}
}

// TestDirCacheConcurrent: many requests at once on a few directories,
// with forgets and a cache smaller than the set, under -race: every
// descriptor handed out is of the right directory while held, and once
// everything is given back and the cache closed, none is left open.
func TestDirCacheConcurrent(t *testing.T) {
	const dirs, workers, rounds = 6, 8, 300
	d := newTestDirs(t, dirs)
	c := newDirCache(3)
	nodes := make([]*Node, dirs)
	for i := range nodes {
		nodes[i] = &Node{}
	}
	before := openFds(t)
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := range rounds {
				i := (w*7 + r*3) % dirs
				fd, done, err := c.get(nodes[i], d.opener(i))
				if err != nil {
					errs <- err
					return
				}
				if !d.isOpen(fd, i) {
					errs <- fmt.Errorf("worker %d round %d: descriptor %d is not of directory %d while held", w, r, fd, i)
				}
				if r%17 == 0 {
					if err := c.forget(nodes[(i+1)%dirs]); err != nil {
						errs <- err
					}
				}
				if err := done(); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if len(c.m) > 3 {
		t.Errorf("%d entries, past the bound 3", len(c.m))
	}
	if err := c.close(); err != nil {
		t.Fatal(err)
	}
	if after := openFds(t); after != before {
		t.Errorf("%d descriptors open after, %d before: the cache leaked or closed one twice", after, before)
	}
}

func openFds(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}
