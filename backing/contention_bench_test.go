package backing

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"
)

// BenchmarkOpenDuringPopulate measures what other requests pay while
// another client opens large files under Options.Populate, whose
// MAP_POPULATE maps in every page of the file: a background goroutine
// opens and releases four large files in turn, so that nearly every open
// of one is a first open that maps it. The timed operations:
//
//   - open: open and release of a small file that is open already (the
//     open shares its blob: openat2, fstat, the store's lock);
//   - open-first: open and release of a small file that is not (the open
//     maps it too, and the release hands the mapping to the batch);
//   - stats: the store's figures (Stats).
//
// Besides ns/op it reports the worst single operation (max-ns) and the
// 99th percentile (p99-ns), where a request stalled behind a large open
// shows, and how many large opens the background made (large-opens).
func BenchmarkOpenDuringPopulate(b *testing.B) {
	const (
		large  = 256 << 20
		larges = 4
		small  = 4 << 10
		files  = 64
	)
	dir := b.TempDir()
	// Written, not holes, so that every page is in the page cache and
	// MAP_POPULATE maps each one in.
	chunk := pattern(7, 0, 1<<20)
	for i := range larges {
		f, err := os.Create(filepath.Join(dir, fmt.Sprint("large", i)))
		if err != nil {
			b.Fatal(err)
		}
		for off := 0; off < large; off += len(chunk) {
			if _, err := f.Write(chunk); err != nil {
				b.Fatal(err)
			}
		}
		if err := f.Close(); err != nil {
			b.Fatal(err)
		}
	}
	for i := range files {
		for _, name := range []string{fmt.Sprint("held", i), fmt.Sprint("small", i)} {
			if err := os.WriteFile(filepath.Join(dir, name), pattern(byte(i), 0, small), 0o644); err != nil {
				b.Fatal(err)
			}
		}
	}
	s := newStoreWith(b, dir, Options{Populate: true})
	for i := range files {
		bl := openBlob(b, s, fmt.Sprint("held", i))
		b.Cleanup(func() { release(b, s, bl) })
	}
	openRelease := func(name string) error {
		bl, err := s.Open(name, rw, 0)
		if err != nil {
			return err
		}
		return s.Release(bl)
	}

	for _, op := range []struct {
		name string
		do   func(i int) error
	}{
		{"open", func(i int) error { return openRelease(fmt.Sprint("held", i%files)) }},
		{"open-first", func(i int) error { return openRelease(fmt.Sprint("small", i%files)) }},
		{"stats", func(int) error {
			_, err := s.Stats()
			return err
		}},
	} {
		b.Run(op.name, func(b *testing.B) {
			stop := make(chan struct{})
			var wg sync.WaitGroup
			var bgErr error
			var bgOpens int
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					if err := openRelease(fmt.Sprint("large", i%larges)); err != nil {
						bgErr = err
						return
					}
					bgOpens++
				}
			}()
			lat := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				start := time.Now()
				if err := op.do(i); err != nil {
					b.Fatal(err)
				}
				lat = append(lat, time.Since(start))
			}
			b.StopTimer()
			close(stop)
			wg.Wait()
			if bgErr != nil {
				b.Fatal(bgErr)
			}
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)-1]), "max-ns")
			b.ReportMetric(float64(lat[len(lat)*99/100]), "p99-ns")
			b.ReportMetric(float64(bgOpens), "large-opens")
		})
	}
}
