package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mmapfs/mmapfs/internal/procstat"
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
		benchWriteFsync(b, filepath.Join(b.TempDir(), "w"), 0)
	})
	for _, tr := range []string{"dev", "uring"} {
		b.Run(tr+"/create-stat-unlink", func(b *testing.B) {
			m := startMount(b, "--transport", tr)
			defer m.stop(b)
			cpu := startCPU(b, m.pid())
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
			cpu.report(b)
		})
		b.Run(tr+"/write-4k-fsync", func(b *testing.B) {
			m := startMount(b, "--transport", tr)
			defer m.stop(b)
			benchWriteFsync(b, filepath.Join(m.mnt, "w"), m.pid())
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
			cpu := startCPU(b, m.pid())
			b.ResetTimer()
			x := uint64(1)
			for range b.N {
				x = x*6364136223846793005 + 1442695040888963407
				if _, err := f.ReadAt(buf, int64(x>>40)%(size/4096)*4096); err != nil {
					b.Fatal(err)
				}
			}
			cpu.report(b)
		})
	}
}

// benchWriteFsync writes 4 KiB at a random 4 KiB-aligned offset of a
// 16 MiB file at p and fsyncs it, b.N times: what a database's commit
// does. daemon is the serving daemon's pid (0: none, p is on the store's
// own filesystem).
func benchWriteFsync(b *testing.B, p string, daemon int) {
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
	cpu := startCPU(b, daemon)
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
	cpu.report(b)
}

// cpuMark is the CPU time the benchmark's own process (the client) and
// the daemon had used at its start. On a machine shared with other work
// the time per op swings with the load, while the CPU each side spends
// per op does not: the benchmark reports both (client-cpu-us/op,
// daemon-cpu-us/op). Every case here is one client thread waiting on
// each request, so the time per op is at least their sum.
type cpuMark struct {
	daemon         int // pid; 0: no daemon
	client, served time.Duration
}

func startCPU(b *testing.B, daemon int) cpuMark {
	b.Helper()
	c := cpuMark{daemon: daemon, client: selfCPU(b)}
	if daemon != 0 {
		c.served = procCPU(b, daemon)
	}
	return c
}

// report adds the CPU used per op since c as the benchmark's metrics.
func (c cpuMark) report(b *testing.B) {
	b.Helper()
	b.StopTimer()
	per := func(d time.Duration) float64 { return float64(d.Microseconds()) / float64(b.N) }
	b.ReportMetric(per(selfCPU(b)-c.client), "client-cpu-us/op")
	if c.daemon != 0 {
		b.ReportMetric(per(procCPU(b, c.daemon)-c.served), "daemon-cpu-us/op")
	}
}

// selfCPU is the user and system time this process has used.
func selfCPU(b *testing.B) time.Duration {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		b.Fatalf("getrusage: %v", err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// procCPU is the user and system time process pid has used, every thread
// of it, ended ones too (/proc/PID/stat's utime and stime, in clock ticks:
// 10 ms on Linux, a few hundredths of the seconds a case runs).
func procCPU(b *testing.B, pid int) time.Duration {
	st, err := procstat.OfPid(pid)
	if err != nil {
		b.Fatal(err)
	}
	ticks := st.UTime + st.STime
	const hz = 100 // USER_HZ, what /proc reports in on every Linux
	return time.Duration(ticks) * time.Second / hz
}
