package backing

import (
	"fmt"
	"testing"
)

// warmBlob returns a blob of size bytes, written and read once so that its
// pages are in the page cache and mapped.
func warmBlob(b *testing.B, size int) (*Store, *Blob) {
	b.Helper()
	s := newStore(b)
	bl := openBlob(b, s, "bench")
	b.Cleanup(func() {
		if err := s.Release(bl); err != nil {
			b.Error(err)
		}
	})
	mustWrite(b, bl, pattern(1, 0, size), 0)
	buf := make([]byte, size)
	if n, err := bl.ReadAt(buf, 0); err != nil || n != size {
		b.Fatalf("ReadAt = %d, %v", n, err)
	}
	if err := bl.Sync(); err != nil {
		b.Fatal(err)
	}
	return s, bl
}

func BenchmarkReadAt(b *testing.B) {
	const size = 16 << 20
	for _, n := range []int{4 << 10, 1 << 20} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			_, bl := warmBlob(b, size)
			buf := make([]byte, n)
			slots := int64(size / n)
			b.SetBytes(int64(n))
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				off := int64(i) % slots * int64(n)
				if m, err := bl.ReadAt(buf, off); err != nil || m != n {
					b.Fatalf("ReadAt = %d, %v", m, err)
				}
			}
		})
	}
}

func BenchmarkWriteAt(b *testing.B) {
	const n = 4 << 10
	b.Run("inplace", func(b *testing.B) { benchInPlace(b, 2, n, 16<<20, false) })
	b.Run("append", func(b *testing.B) { benchAppend(b, 3, n, 64<<20) })
}

// benchInPlace writes n bytes at a time over a cached blob of size bytes,
// cycling through it; with syncAfter it syncs the blob after each write,
// untimed, so that every write finds its pages write-protected again.
func benchInPlace(b *testing.B, seed byte, n, size int, syncAfter bool) {
	_, bl := warmBlob(b, size)
	p := pattern(seed, 0, n)
	b.SetBytes(int64(n))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		off := int64(i % (size / n) * n)
		if m, err := bl.WriteAt(p, off); err != nil || m != n {
			b.Fatalf("WriteAt = %d, %v", m, err)
		}
		if syncAfter {
			b.StopTimer()
			if err := bl.Sync(); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
		}
	}
}

// benchAppend appends n bytes at a time to a blob, starting a fresh blob
// every limit bytes so that the benchmark does not grow one file without
// bound.
func benchAppend(b *testing.B, seed byte, n int, limit int64) {
	s := newStore(b)
	p := pattern(seed, 0, n)
	b.SetBytes(int64(n))
	var bl *Blob
	var off int64
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if bl == nil || off >= limit {
			b.StopTimer()
			if bl != nil {
				if err := bl.Truncate(0); err != nil {
					b.Fatal(err)
				}
				release(b, s, bl)
			}
			bl = openBlob(b, s, fmt.Sprint("append", i))
			off = 0
			b.StartTimer()
		}
		if m, err := bl.WriteAt(p, off); err != nil || m != n {
			b.Fatalf("WriteAt = %d, %v", m, err)
		}
		off += int64(n)
	}
	b.StopTimer()
	release(b, s, bl)
}

// BenchmarkSync dirties N scattered pages of a warm 16 MiB blob and syncs
// them; bytes are the dirty bytes synced.
func BenchmarkSync(b *testing.B) {
	const size = 16 << 20
	for _, pages := range []int{1, 32} {
		b.Run(fmt.Sprint(pages), func(b *testing.B) {
			_, bl := warmBlob(b, size)
			ps := pagesz()
			stride := int64(size) / ps / int64(pages) * ps
			one := []byte{0}
			b.SetBytes(int64(pages) * ps)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				one[0] = byte(i)
				for k := 0; k < pages; k++ {
					if _, err := bl.WriteAt(one, int64(k)*stride+int64(i%7)); err != nil {
						b.Fatal(err)
					}
				}
				b.StartTimer()
				if err := bl.Sync(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkPageSetAddRange records sequential 4 KiB writes, as markDirty
// does for a streaming writer.
func BenchmarkPageSetAddRange(b *testing.B) {
	const n = 4 << 10
	ps := pagesz()
	var s pageSet
	b.SetBytes(n)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		off := int64(i) * n
		s.addRange(off/ps, pagesCeil(off+n))
	}
	if s.count != pagesCeil(int64(b.N)*n) {
		b.Fatalf("count %d", s.count)
	}
}

// BenchmarkWriteAtMiB writes 1 MiB at a time: into pages a sync has just
// cleaned (so every page of the mapping is write-protected again, as after
// each fsync of a file being rewritten), and appending to a growing file.
func BenchmarkWriteAtMiB(b *testing.B) {
	const n = 1 << 20
	b.Run("aftersync", func(b *testing.B) { benchInPlace(b, 4, n, 64<<20, true) })
	b.Run("append", func(b *testing.B) { benchAppend(b, 5, n, 256<<20) })
}
