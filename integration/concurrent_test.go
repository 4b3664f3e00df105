package integration

import (
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mmapfs/mmapfs/integration/mapfault"
)

// TestConcurrentOneFile: readers, writers, client mappers and truncaters
// on one file at once, for a bounded time (the daemon is built with -race
// when the tests are). Nothing can be modelled byte for byte, but every
// byte read must be 0 or a byte some writer wrote (never garbage), no
// operation may fail but for the faults a shrinking file gives a mapping,
// and the daemon must keep serving.
func TestConcurrentOneFile(t *testing.T) {
	t.Parallel()
	for _, sw := range [][]string{nil, {"--writeback-cache"}, {"--writeback", "write-through"}} {
		name := "defaults"
		if sw != nil {
			name = sw[len(sw)-1]
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			if sw != nil && loopbackMode {
				t.Skip("mmapfs switches")
			}
			concurrentOneFile(t, startMount(t, sw...))
		})
	}
}

const (
	concMaxSize  = 1 << 20
	concDuration = 2 * time.Second
)

// written says whether b is a byte the writers write: 0 or 'A'..'H'.
func written(b byte) bool { return b == 0 || (b >= 'A' && b <= 'H') }

func concurrentOneFile(t *testing.T, m *mount) {
	p := filepath.Join(m.mnt, "shared")
	if err := os.WriteFile(p, make([]byte, concMaxSize/2), 0o644); err != nil {
		t.Fatal(err)
	}
	stop := time.Now().Add(concDuration)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var problems []string
	fail := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		if len(problems) < 10 {
			problems = append(problems, fmt.Sprintf(format, args...))
		}
	}
	run := func(seed uint64, fn func(f *os.File, r *rand.Rand)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f, err := os.OpenFile(p, os.O_RDWR, 0)
			if err != nil {
				fail("open: %v", err)
				return
			}
			defer f.Close()
			r := rand.New(rand.NewPCG(seed, 1))
			for time.Now().Before(stop) {
				fn(f, r)
			}
		}()
	}
	for w := 0; w < 3; w++ { // writers
		val := byte('A' + w)
		run(uint64(w), func(f *os.File, r *rand.Rand) {
			n := 1 + r.IntN(64<<10)
			buf := make([]byte, n)
			for i := range buf {
				buf[i] = val
			}
			if _, err := f.WriteAt(buf, r.Int64N(concMaxSize-int64(n))); err != nil {
				fail("write: %v", err)
			}
		})
	}
	for rd := 0; rd < 2; rd++ { // readers
		run(uint64(10+rd), func(f *os.File, r *rand.Rand) {
			buf := make([]byte, 1+r.IntN(128<<10))
			n, err := f.ReadAt(buf, r.Int64N(concMaxSize))
			if err != nil && !errors.Is(err, io.EOF) {
				fail("read: %v", err)
			}
			for i, b := range buf[:n] {
				if !written(b) {
					fail("read byte %#x at +%d: nobody wrote it", b, i)
					return
				}
			}
		})
	}
	run(20, func(f *os.File, r *rand.Rand) { // truncater
		if err := f.Truncate(r.Int64N(concMaxSize)); err != nil {
			fail("truncate: %v", err)
		}
		time.Sleep(time.Millisecond)
	})
	for mp := 0; mp < 2; mp++ { // client mappers: map, read and write, msync
		val := byte('F' + mp)
		run(uint64(30+mp), func(f *os.File, r *rand.Rand) {
			fi, err := f.Stat()
			if err != nil {
				fail("fstat: %v", err)
				return
			}
			size := int(fi.Size())
			if size == 0 {
				return
			}
			b, err := unix.Mmap(int(f.Fd()), 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
			if err != nil {
				fail("mmap: %v", err)
				return
			}
			// The file may shrink under the mapping at any moment: a
			// fault past the new end is what Linux promises then.
			mapfault.Catch(func() {
				off := r.IntN(size)
				end := min(size, off+1+r.IntN(16<<10))
				for i := off; i < end; i++ {
					if !written(b[i]) {
						fail("mapped byte %#x at %d: nobody wrote it", b[i], i)
						return
					}
				}
				for i := off; i < end; i++ {
					b[i] = val
				}
				if err := unix.Msync(b, unix.MS_SYNC); err != nil {
					fail("msync: %v", err)
				}
			})
			if err := unix.Munmap(b); err != nil {
				fail("munmap: %v", err)
			}
		})
	}
	wg.Wait()
	for _, p := range problems {
		t.Error(p)
	}
	// The daemon is alive and the blob holds only bytes somebody wrote.
	data := readFile(t, p)
	for i, b := range data {
		if !written(b) {
			t.Fatalf("final file: byte %#x at %d nobody wrote", b, i)
		}
	}
	readStats(t, m)
}
