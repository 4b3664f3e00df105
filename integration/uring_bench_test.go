package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// BenchmarkTransport measures the two transports in the same run, on
// mounts of their own: create+stat+unlink of an empty file (three to
// five requests, each a round trip), 4 KiB pwrite + fsync at random
// offsets of a 16 MiB file (a WRITE, an FSYNC and the store's
// fdatasync each), and 4 KiB preads of a 64 MiB file with --direct-io
// (every one a READ the daemon serves). BenchmarkTransport/native
// runs the write + fsync case on a plain directory of /tmp, the
// store's filesystem, for the ratio. Run it as root
// with enable_uring on, or it turns it on for the run:
//
//	go test -run '^$' -bench BenchmarkTransport ./integration/
func BenchmarkTransport(b *testing.B) {
	if loopbackMode || os.Geteuid() != 0 {
		b.Skip("needs mmapfs as root")
	}
	was, err := os.ReadFile(enableURing)
	if err != nil {
		b.Skipf("no FUSE over io_uring here: %v", err)
	}
	if strings.TrimSpace(string(was)) != "Y" {
		if err := os.WriteFile(enableURing, []byte("1"), 0); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() {
			if err := os.WriteFile(enableURing, was, 0); err != nil {
				b.Errorf("putting %s back: %v", enableURing, err)
			}
		})
	}
	b.Run("native/write-4k-fsync", func(b *testing.B) {
		benchWriteFsync(b, filepath.Join(b.TempDir(), "w"))
	})
	for _, tr := range []string{"dev", "uring"} {
		b.Run(tr+"/create-stat-unlink", func(b *testing.B) {
			m := startMount(b, "--transport", tr)
			defer m.stop(b)
			b.ResetTimer()
			for i := range b.N {
				p := filepath.Join(m.mnt, fmt.Sprintf("f%d", i))
				fd, err := unix.Open(p, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY, 0o644)
				if err != nil {
					b.Fatal(err)
				}
				unix.Close(fd)
				var st unix.Stat_t
				if err := unix.Stat(p, &st); err != nil {
					b.Fatal(err)
				}
				if err := unix.Unlink(p); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(tr+"/write-4k-fsync", func(b *testing.B) {
			m := startMount(b, "--transport", tr)
			defer m.stop(b)
			benchWriteFsync(b, filepath.Join(m.mnt, "w"))
		})
		b.Run(tr+"/read-4k-direct-io", func(b *testing.B) {
			m := startMount(b, "--transport", tr, "--direct-io")
			defer m.stop(b)
			p := filepath.Join(m.mnt, "r")
			const size = 64 << 20
			if err := os.WriteFile(p, make([]byte, size), 0o644); err != nil {
				b.Fatal(err)
			}
			f, err := os.Open(p)
			if err != nil {
				b.Fatal(err)
			}
			defer f.Close()
			buf := make([]byte, 4096)
			b.SetBytes(4096)
			b.ResetTimer()
			x := uint64(1)
			for range b.N {
				x = x*6364136223846793005 + 1442695040888963407
				if _, err := f.ReadAt(buf, int64(x>>40)%(size/4096)*4096); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// benchWriteFsync writes 4 KiB at a random 4 KiB-aligned offset of a
// 16 MiB file at p and fsyncs it, b.N times: what a database's commit
// does.
func benchWriteFsync(b *testing.B, p string) {
	const size = 16 << 20
	if err := os.WriteFile(p, make([]byte, size), 0o644); err != nil {
		b.Fatal(err)
	}
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, 4096)
	for i := range buf {
		buf[i] = byte(i)
	}
	b.SetBytes(4096)
	b.ResetTimer()
	x := uint64(7)
	for range b.N {
		x = x*6364136223846793005 + 1442695040888963407
		if _, err := f.WriteAt(buf, int64(x>>40)%(size/4096)*4096); err != nil {
			b.Fatal(err)
		}
		if err := f.Sync(); err != nil {
			b.Fatal(err)
		}
	}
}
