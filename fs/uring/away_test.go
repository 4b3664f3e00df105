package uring

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

const opLookup = 1 // FUSE_LOOKUP

// servedOn records the CPU the entry's thread ran on while each request
// was served: the large READs' and the LOOKUPs' (by name).
type servedOn struct {
	Handler
	mu         sync.Mutex
	largeReads []int
	readSizes  []uint32
	lookups    map[string]int
}

func (h *servedOn) HandleRequest(in, out [][]byte) (int, fuse.Status) {
	op := binary.LittleEndian.Uint32(in[0][4:])
	if op == opRead && len(in[1]) >= 20 {
		h.mu.Lock()
		h.readSizes = append(h.readSizes, binary.LittleEndian.Uint32(in[1][16:]))
		h.mu.Unlock()
	}
	switch {
	case op == opRead && len(in[1]) >= 20 && binary.LittleEndian.Uint32(in[1][16:]) >= awayRead:
		cpu := currentCPU()
		h.mu.Lock()
		h.largeReads = append(h.largeReads, cpu)
		h.mu.Unlock()
	case op == opLookup:
		name := string(bytes.TrimRight(in[2], "\x00"))
		cpu := currentCPU()
		h.mu.Lock()
		h.lookups[name] = cpu
		h.mu.Unlock()
	}
	return h.Handler.HandleRequest(in, out)
}

// currentCPU is the CPU the calling thread runs on: field 39 of
// /proc/thread-self/stat, the CPU it last ran on, which is the one it
// runs on while it reads it; -1 if it cannot be read.
func currentCPU() int {
	b, err := os.ReadFile("/proc/thread-self/stat")
	if err != nil {
		return -1
	}
	// The command name, in parentheses, may hold spaces: count from
	// after it (field 3 on).
	i := bytes.LastIndexByte(b, ')')
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 37 {
		return -1
	}
	cpu, err := strconv.Atoi(f[36])
	if err != nil {
		return -1
	}
	return cpu
}

// TestLargeReadsServedAway reads a file from a thread pinned to CPU 0:
// its readahead READs (128 KiB here) are served off CPU 0, where the
// reader goes on copying, while its LOOKUPs, before the reads and after
// them, are served on CPU 0 by the same entries, pinned back (awayRead).
func TestLargeReadsServedAway(t *testing.T) {
	withURing(t)
	if runtime.NumCPU() < 2 {
		t.Skip("needs two CPUs")
	}
	var allowed unix.CPUSet
	if err := unix.SchedGetaffinity(0, &allowed); err != nil {
		t.Fatal(err)
	}
	if !allowed.IsSet(0) || allowed.Count() < 2 {
		t.Skipf("needs CPU 0 and another among the CPUs this test may use (%d)", allowed.Count())
	}
	h := &servedOn{lookups: map[string]int{}}
	m, err := mountLoopbackWith(t, 2, 0, func(ps Handler) Handler { h.Handler = ps; return h })
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	defer m.unmount(t)
	want := bytes.Repeat([]byte("away from the reader "), 100000) // 2 MB
	// Written below the mount: the mount's page cache has none of it.
	if err := os.WriteFile(filepath.Join(m.dir, "big"), want, 0o644); err != nil {
		t.Fatal(err)
	}
	type result struct {
		got []byte
		err error
	}
	done := make(chan result)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		var all, zero unix.CPUSet
		if err := unix.SchedGetaffinity(0, &all); err != nil {
			done <- result{err: err}
			return
		}
		zero.Set(0)
		if err := unix.SchedSetaffinity(0, &zero); err != nil {
			done <- result{err: err}
			return
		}
		defer unix.SchedSetaffinity(0, &all)
		got, err := os.ReadFile(filepath.Join(m.mnt, "big"))
		for i := 1; i <= 4 && err == nil; i++ {
			_, err = os.Stat(filepath.Join(m.mnt, "after"+strconv.Itoa(i)))
			if os.IsNotExist(err) {
				err = nil
			}
		}
		done <- result{got, err}
	}()
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	if !bytes.Equal(r.got, want) {
		t.Fatalf("read %d bytes, not the %d written", len(r.got), len(want))
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.largeReads) == 0 {
		t.Fatalf("no READ of 64 KiB or more reached the daemon; READs of %v bytes", h.readSizes)
	}
	for i, cpu := range h.largeReads {
		if cpu == 0 || cpu < 0 {
			t.Errorf("large READ %d of %d served on CPU %d, want off CPU 0, the reader's", i+1, len(h.largeReads), cpu)
		}
	}
	// Each of the queue's two entries serves at most one small request
	// where its last large READ left it, then pins back: from the third
	// LOOKUP on, all are on CPU 0.
	for _, name := range []string{"big", "after3", "after4"} {
		if cpu, ok := h.lookups[name]; !ok || cpu != 0 {
			t.Errorf("LOOKUP %s served on CPU %d (seen %v), want CPU 0, the caller's", name, cpu, ok)
		}
	}
	q0 := m.tr.Stats()[0]
	if q0.Away != uint64(len(h.largeReads)) {
		t.Errorf("queue 0: %+v, want the %d large READs counted away", q0, len(h.largeReads))
	}
	t.Logf("%d large READs on CPUs %v; queues %+v", len(h.largeReads), h.largeReads, m.tr.Stats())
}
