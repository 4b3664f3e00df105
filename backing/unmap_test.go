package backing

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/mmapfs/mmapfs/fs/wire"
)

// mapsOf returns how many lines of /proc/self/maps map a file of dir.
func mapsOf(t *testing.T, dir string) int {
	t.Helper()
	raw, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		t.Fatal(err)
	}
	return strings.Count(string(raw), dir+"/")
}

// TestUnmapBatch: the mappings of released blobs are unmapped together,
// when the batch fills, or batchDelay after the first of them, and no
// mapping is lost or unmapped twice on the way.
func TestUnmapBatch(t *testing.T) {
	s := newStore(t)
	dir := s.Root()
	release1 := func(name string, size int) {
		b := openBlob(t, s, name)
		mustWrite(t, b, pattern(1, 0, size), 0)
		release(t, s, b)
	}
	// Fewer than a batch: still mapped until the delay has passed
	// (checked only if releasing them took well under the delay).
	start := time.Now()
	for i := range 10 {
		release1(fmt.Sprint("a", i), 1000)
	}
	if n := mapsOf(t, dir); n != 10 && time.Since(start) < batchDelay/2 {
		t.Fatalf("%d mappings of released blobs right after release, want 10 waiting", n)
	}
	deadline := time.Now().Add(10 * batchDelay)
	for mapsOf(t, dir) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d mappings still there %v after release", mapsOf(t, dir), 10*batchDelay)
		}
		time.Sleep(batchDelay / 4)
	}
	if n := s.stats.figures.Load(wire.Mappings); n != 0 {
		t.Errorf("mappings counter %d after the batch went, want 0", n)
	}
	// A full batch goes at once, whatever the delay; a large mapping
	// is not batched. (Checked only if releasing them took well under
	// the delay: else its timer may have taken part of the batch
	// already, leaving the rest waiting.)
	start = time.Now()
	for i := range batchCount {
		release1(fmt.Sprint("b", i), 3*pageSize)
	}
	release1("big", batchMaxLen+1)
	if time.Since(start) < batchDelay/2 {
		if n := mapsOf(t, dir); n != 0 {
			t.Errorf("%d mappings after a full batch and a large one were released, want 0", n)
		}
		if n, b := s.stats.figures.Load(wire.Mappings), s.stats.figures.Load(wire.MappedBytes); n != 0 || b != 0 {
			t.Errorf("mappings %d, mapped bytes %d after everything was unmapped", n, b)
		}
	}
	// Stats unmaps what waits, so that its figures are exact.
	release1("c", 1000)
	if st := mustStats(t, s); st.Mappings != 0 || mapsOf(t, dir) != 0 {
		t.Errorf("Stats: %d mappings, %d in /proc/self/maps; want 0, 0", st.Mappings, mapsOf(t, dir))
	}
}
