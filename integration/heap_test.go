package integration

import (
	"encoding/json"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// TestHeapWithLargeFile: the daemon's own heap stays under 64 MiB while it
// serves a 10 GiB file (sparse, written and read in 1 MiB pieces all over,
// read through a client mapping, synced): the data lives in the blob's
// page cache, not in the daemon.
func TestHeapWithLargeFile(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("not in -short")
	}
	m := startMount(t)
	const size = 10 << 30
	p := filepath.Join(m.mnt, "big")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(1, 2))
	chunk := pattern(1<<20, 9)
	got := make([]byte, len(chunk))
	offs := make([]int64, 256)
	for i := range offs {
		offs[i] = r.Int64N(size/(1<<20)) << 20
		if _, err := f.WriteAt(chunk, offs[i]); err != nil {
			t.Fatal(err)
		}
	}
	for _, off := range offs {
		if _, err := f.ReadAt(got, off); err != nil {
			t.Fatal(err)
		}
	}
	// A client mapping of the whole 10 GiB, touched here and there.
	b, err := unix.Mmap(int(f.Fd()), 0, size, unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	var sum byte
	for i := 0; i < 4096; i++ {
		sum += b[r.Int64N(size)]
	}
	if err := unix.Munmap(b); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(filepath.Join(m.mnt, statsFile))
	if err != nil {
		t.Fatal(err)
	}
	var s struct {
		HeapAlloc int64 `json:"heap_alloc_bytes"`
		HeapSys   int64 `json:"heap_sys_bytes"`
		Mapped    int64 `json:"mapped_bytes"`
	}
	if err := json.Unmarshal(raw, &s); err != nil {
		t.Fatal(err)
	}
	t.Logf("serving a 10 GiB file: heap %d MiB in use, %d MiB from the OS; %d GiB mapped", s.HeapAlloc>>20, s.HeapSys>>20, s.Mapped>>30)
	if s.HeapSys >= 64<<20 {
		t.Errorf("daemon heap %d MiB, want under 64 MiB", s.HeapSys>>20)
	}
	if s.Mapped < size {
		t.Errorf("mapped %d bytes, want the 10 GiB file mapped", s.Mapped)
	}
}
