package backing

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestConcurrentReadWriteResize runs writers and readers on fixed regions
// of one blob while another goroutine shrinks, grows and appends past them,
// remapping the blob under their feet.
func TestConcurrentReadWriteResize(t *testing.T) {
	s := newStore(t)
	b := openBlob(t, s, "c")
	defer release(t, s, b)

	const writers = 4
	const region = 64 << 10
	const fixed = writers * region // [0, fixed) is never truncated away
	mustWrite(t, b, make([]byte, fixed), 0)
	remaps := mustStats(t, s).Remaps

	duration := 1500 * time.Millisecond
	if testing.Short() {
		duration = 300 * time.Millisecond
	}
	deadline := time.Now().Add(duration)
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	fail := func(format string, args ...any) {
		select {
		case errs <- fmt.Errorf(format, args...):
		default:
		}
	}
	models := make([][]byte, writers)

	for w := 0; w < writers; w++ {
		models[w] = make([]byte, region)
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(w), 1))
			model := models[w]
			base := int64(w * region)
			buf := make([]byte, region)
			for i := 0; time.Now().Before(deadline); i++ {
				off := r.Int64N(region)
				n := 1 + r.IntN(int(region-off))
				n = min(n, 3*4096+7)
				p := pattern(byte(i), base+off, n)
				if m, err := b.WriteAt(p, base+off); err != nil || m != n {
					fail("writer %d: WriteAt(%d, %d) = %d, %v", w, n, base+off, m, err)
					return
				}
				copy(model[off:], p)
				if m, err := b.ReadAt(buf, base); err != nil || m != region {
					fail("writer %d: ReadAt(%d) = %d, %v", w, base, m, err)
					return
				}
				for j := range buf {
					if buf[j] != model[j] {
						fail("writer %d, iteration %d: byte %d of its region is %#x, want %#x", w, i, j, buf[j], model[j])
						return
					}
				}
			}
		}(w)
	}

	// Readers over the whole blob, including the part that comes and goes:
	// they must never see an error, and their reads never run past the
	// size they find.
	for rd := 0; rd < 2; rd++ {
		wg.Add(1)
		go func(rd int) {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(rd), 2))
			buf := make([]byte, 256<<10)
			for time.Now().Before(deadline) {
				off := r.Int64N(4 << 20)
				n, err := b.ReadAt(buf[:1+r.IntN(len(buf))], off)
				if err != nil {
					fail("reader %d: ReadAt(%d) = %d, %v", rd, off, n, err)
					return
				}
			}
		}(rd)
	}

	// The resizer: only it changes the size, always keeping [0, fixed).
	wg.Add(1)
	go func() {
		defer wg.Done()
		r := rand.New(rand.NewPCG(9, 3))
		for i := 0; time.Now().Before(deadline); i++ {
			switch i % 4 {
			case 0: // shrink to the fixed part
				if err := b.Truncate(fixed + r.Int64N(3)); err != nil {
					fail("resizer: Truncate down: %v", err)
					return
				}
			case 1: // grow, sometimes far past the mapping
				to := fixed + r.Int64N(1<<20)
				if i%16 == 1 {
					// Ever further (sparse), so that the mapping
					// keeps growing: up to 64 MiB.
					to = fixed + int64(1+i/16%64)<<20 + r.Int64N(1<<20)
				}
				if err := b.Truncate(to); err != nil {
					fail("resizer: Truncate up: %v", err)
					return
				}
			default: // append and check
				off := b.Size()
				n := 1 + r.IntN(64<<10)
				p := pattern(byte(i), off, n)
				if m, err := b.WriteAt(p, off); err != nil || m != n {
					fail("resizer: append WriteAt(%d, %d) = %d, %v", n, off, m, err)
					return
				}
				got := make([]byte, n)
				if m, err := b.ReadAt(got, off); err != nil || m != n {
					fail("resizer: ReadAt(%d, %d) = %d, %v", n, off, m, err)
					return
				}
				for j := range got {
					if got[j] != p[j] {
						fail("resizer: appended byte %d at %d is %#x, want %#x", j, off, got[j], p[j])
						return
					}
				}
			}
		}
	}()

	// A second blob whose mapping comes and goes: one goroutine truncates
	// it to 0 (unmapping it) and back while two others write and read
	// their slots in it. Their reads see either their bytes or zeros (or
	// a short count), never an error.
	z := openBlob(t, s, "z")
	defer release(t, s, z)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; time.Now().Before(deadline); i++ {
			size := int64(0)
			if i%2 == 1 {
				size = int64(1+i%5) << 16
			}
			if err := z.Truncate(size); err != nil {
				fail("z: Truncate(%d): %v", size, err)
				return
			}
			time.Sleep(100 * time.Microsecond)
		}
	}()
	for zw := 0; zw < 2; zw++ {
		wg.Add(1)
		go func(zw int) {
			defer wg.Done()
			off := int64(zw)*(100<<10) + 3
			p := pattern(byte(zw), off, 40000)
			got := make([]byte, len(p))
			for i := 0; time.Now().Before(deadline); i++ {
				if i%2 == 0 {
					if n, err := z.WriteAt(p, off); err != nil || n != len(p) {
						fail("z writer %d: WriteAt = %d, %v", zw, n, err)
						return
					}
				}
				n, err := z.ReadAt(got, off)
				if err != nil {
					fail("z writer %d: ReadAt = %d, %v", zw, n, err)
					return
				}
				for j := 0; j < n; j++ {
					if got[j] != p[j] && got[j] != 0 {
						fail("z writer %d: byte %d is %#x, want %#x or 0", zw, j, got[j], p[j])
						return
					}
				}
			}
		}(zw)
	}

	// Bookkeeping readers: Sync, Unsynced, Stat, Seek.
	wg.Add(1)
	go func() {
		defer wg.Done()
		for time.Now().Before(deadline) {
			if err := b.Sync(); err != nil {
				fail("Sync: %v", err)
				return
			}
			b.Unsynced()
			s.Unsynced()
			if _, err := s.Stats(); err != nil {
				t.Error(err)
			}
			var st syscall.Stat_t
			if err := b.Fd(func(fd int) error { return syscall.Fstat(fd, &st) }); err != nil {
				fail("Stat: %v", err)
				return
			}
			if _, err := b.Seek(0, unix.SEEK_HOLE); err != nil {
				fail("Seek: %v", err)
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()

	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		return
	}
	if st := mustStats(t, s); st.Faults != 0 || st.Remaps == remaps {
		t.Errorf("%d faults, %d remaps; want 0 faults and some remaps", st.Faults, st.Remaps-remaps)
	} else {
		t.Logf("%d remaps", st.Remaps-remaps)
	}
	if b.Size() < fixed {
		t.Fatalf("Size %d < %d", b.Size(), fixed)
	}
	got := mustRead(t, b, 0, fixed, fixed)
	for w := 0; w < writers; w++ {
		checkBytes(t, fmt.Sprintf("region %d", w), got[w*region:(w+1)*region], models[w])
	}
	f, err := os.ReadFile(filepath.Join(s.Root(), "c"))
	if err != nil {
		t.Fatal(err)
	}
	if int64(len(f)) != b.Size() {
		t.Fatalf("file is %d bytes, blob says %d", len(f), b.Size())
	}
	checkBytes(t, "file", f[:fixed], got)
}

// TestConcurrentOpenRelease opens and releases one blob, by two names, from
// many goroutines, each writing its own slot.
func TestConcurrentOpenRelease(t *testing.T) {
	s := newStore(t)
	b := openBlob(t, s, "one")
	release(t, s, b)
	if err := os.Link(filepath.Join(s.Root(), "one"), filepath.Join(s.Root(), "two")); err != nil {
		t.Fatal(err)
	}
	const goroutines = 8
	iters := 150
	if testing.Short() {
		iters = 30
	}
	slot := int64(3 * 4096)
	var wg sync.WaitGroup
	errs := make(chan error, goroutines+1)
	for g := 0; g < goroutines; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			names := []string{"one", "two"}
			for i := 0; i < iters; i++ {
				b, err := s.Open(names[(g+i)%2], unix.O_RDWR, 0)
				if err != nil {
					errs <- fmt.Errorf("goroutine %d: Open: %v", g, err)
					return
				}
				off := int64(g)*slot + int64(i%3)*4096
				p := pattern(byte(i), off, 100)
				if n, err := b.WriteAt(p, off); err != nil || n != len(p) {
					errs <- fmt.Errorf("goroutine %d: WriteAt = %d, %v", g, n, err)
					s.Release(b)
					return
				}
				got := make([]byte, len(p))
				if n, err := b.ReadAt(got, off); err != nil || n != len(p) || string(got) != string(p) {
					errs <- fmt.Errorf("goroutine %d: ReadAt = %d, %v, equal %v", g, n, err, string(got) == string(p))
					s.Release(b)
					return
				}
				if i%50 == 0 {
					if err := b.Sync(); err != nil {
						errs <- fmt.Errorf("goroutine %d: Sync: %v", g, err)
						s.Release(b)
						return
					}
				}
				if err := s.Release(b); err != nil {
					errs <- fmt.Errorf("goroutine %d: Release: %v", g, err)
					return
				}
			}
		}(g)
	}
	// Store-wide calls meanwhile.
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; i < 3; i++ {
			if err := s.Sync(); err != nil {
				errs <- fmt.Errorf("Store.Sync: %v", err)
				return
			}
			s.Unsynced()
			time.Sleep(10 * time.Millisecond)
		}
	}()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	st := mustStats(t, s)
	if st.Mappings != 0 || st.MappedBytes != 0 {
		t.Errorf("after all releases: Mappings %d, MappedBytes %d", st.Mappings, st.MappedBytes)
	}
	s.mu.Lock()
	open := len(s.blobs)
	s.mu.Unlock()
	if open != 0 {
		t.Errorf("%d blobs still in the store's table", open)
	}
	if n := openFdsOn(t, filepath.Join(s.Root(), "one")) + openFdsOn(t, filepath.Join(s.Root(), "two")); n != 0 {
		t.Errorf("%d descriptors left open", n)
	}
	// Every slot holds its last write.
	f, err := os.ReadFile(filepath.Join(s.Root(), "one"))
	if err != nil {
		t.Fatal(err)
	}
	for g := 0; g < goroutines; g++ {
		for k := 0; k < 3; k++ {
			last := -1
			for i := 0; i < iters; i++ {
				if i%3 == k {
					last = i
				}
			}
			if last < 0 {
				continue
			}
			off := int64(g)*slot + int64(k)*4096
			checkBytes(t, fmt.Sprintf("slot %d/%d", g, k), f[off:off+100], pattern(byte(last), off, 100))
		}
	}
	if got := storeUnsynced(s); got < 0 {
		t.Errorf("Store.Unsynced %d", got)
	}
}
