package integration

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mmapfs/mmapfs/fs/wire"
)

// The cost of the daemon's request record on its data path: 4 KiB preads
// of a file of the mount, each served by the daemon (--direct-io: none
// from the kernel's page cache), with no tracer (BenchmarkTraceOff: what
// every mount pays, one atomic load a request) and with one connected that
// reads and discards the records (BenchmarkTraceOn, which also reports
// the records it got and dropped per op).

func BenchmarkTraceOff(b *testing.B) { benchTracePread(b, traceNone) }

func BenchmarkTraceOn(b *testing.B) { benchTracePread(b, traceRecord) }

// BenchmarkTraceKernel is the same preads under a whole mmapfs trace of
// the mount (the kernel's events through its tracefs instance and the
// daemon's records, joined into a summary): what a user pays while
// watching.
func BenchmarkTraceKernel(b *testing.B) { benchTracePread(b, traceKernel) }

// The tracing a benchmark runs under.
const (
	traceNone   = iota // no tracer
	traceRecord        // the daemon's record, to a tracer that discards it
	traceKernel        // mmapfs trace --summary
)

func benchTracePread(b *testing.B, trace int) {
	m := startMount(b, "--direct-io")
	path := filepath.Join(m.mnt, "f")
	const size = 1 << 20
	if err := os.WriteFile(path, make([]byte, size), 0o644); err != nil {
		b.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	var sink *discardTracer
	stopTrace := func() {}
	switch trace {
	case traceRecord:
		sink = discardTrace(b, m.mnt)
	case traceKernel:
		stopTrace = startBenchTrace(b, m)
	}
	buf := make([]byte, 4096)
	i := 0
	for b.Loop() {
		if _, err := f.ReadAt(buf, int64(i%(size/4096))*4096); err != nil {
			b.Fatal(err)
		}
		i++
	}
	stopTrace()
	if sink != nil {
		// Let the daemon's last batch arrive before counting.
		time.Sleep(50 * time.Millisecond)
		records, dropped := sink.counts()
		b.ReportMetric(float64(records)/float64(b.N), "records/op")
		b.ReportMetric(float64(dropped)/float64(b.N), "dropped/op")
	}
	if err := f.Close(); err != nil {
		b.Fatal(err)
	}
	m.stop(b)
}

// discardTracer is a tracer that reads a daemon's records and counts
// them, in blocking reads of a descriptor of its own: a goroutine parked
// in Go's network poller would slow the benchmark's own preads (the
// runtime's idle threads then wait in epoll), which is no cost of the
// daemon's.
type discardTracer struct {
	done             chan struct{}
	records, dropped uint64 // read after done is closed
	fd               int
	once             sync.Once // closes fd
}

// discardTrace connects a tracer to the mount at mnt that reads and
// discards its records; the benchmark skips where the daemon takes no
// trace request (a daemon from before it, run for comparison).
func discardTrace(b *testing.B, mnt string) *discardTracer {
	b.Helper()
	path := filepath.Join(b.TempDir(), "trace.sock")
	lfd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		b.Fatal(err)
	}
	defer unix.Close(lfd)
	if err := unix.Bind(lfd, &unix.SockaddrUnix{Name: path}); err != nil {
		b.Fatal(err)
	}
	if err := unix.Listen(lfd, 1); err != nil {
		b.Fatal(err)
	}
	reply, err := control(b, mnt, wire.ControlTrace+" "+path)
	if strings.HasPrefix(reply.Error, "unknown request") {
		b.Skipf("the daemon takes no trace request: %s", reply.Error)
	}
	if err != nil || reply.Error != "" {
		b.Fatalf("%s %s: %v, %q", wire.ControlTrace, path, err, reply.Error)
	}
	fd, _, err := unix.Accept4(lfd, unix.SOCK_CLOEXEC) // the daemon connected before it answered
	if err != nil {
		b.Fatal(err)
	}
	d := &discardTracer{done: make(chan struct{}), fd: fd}
	go func() {
		defer close(d.done)
		buf := make([]byte, 1<<20)
		var rest []byte // a record split across reads
		hello := true
		for {
			n, err := unix.Read(fd, buf)
			if err == unix.EINTR {
				continue
			}
			if n <= 0 {
				return
			}
			p := append(rest, buf[:n]...)
			if hello {
				i := bytes.IndexByte(p, '\n')
				if i < 0 {
					rest = p
					continue
				}
				p, hello = p[i+1:], false
			}
			for ; len(p) >= wire.TraceRecordSize; p = p[wire.TraceRecordSize:] {
				var x wire.TraceRecord
				if err := x.UnmarshalBinary(p); err != nil {
					return
				}
				if x.Opcode == wire.TraceDropped {
					d.dropped += uint64(x.Result)
				} else {
					d.records++
				}
			}
			rest = append(rest[:0:0], p...)
		}
	}()
	b.Cleanup(func() { d.counts() })
	return d
}

// counts ends the trace and returns what it got.
func (d *discardTracer) counts() (records, dropped uint64) {
	d.once.Do(func() {
		// Wakes the blocked read, which then returns 0.
		if err := unix.Shutdown(d.fd, unix.SHUT_RDWR); err == nil {
			<-d.done
		}
		unix.Close(d.fd)
	})
	<-d.done
	return d.records, d.dropped
}

// startBenchTrace starts mmapfs trace --summary of m, waits until it
// traces, and returns what ends it.
func startBenchTrace(b *testing.B, m *mount) (stop func()) {
	var stderr syncBuffer
	tr := daemonCommand("trace", m.mnt, "--summary")
	tr.Stderr = &stderr
	d := startDaemon(b, tr)
	for deadline := time.Now().Add(30 * time.Second); !strings.Contains(m.out.String(), "trace: recording every request"); time.Sleep(20 * time.Millisecond) {
		if d.exited() || time.Now().After(deadline) {
			tr.Process.Kill()
			b.Fatalf("mmapfs trace did not start: %s", stderr.String())
		}
	}
	return func() {
		tr.Process.Signal(unix.SIGINT)
		if !d.waitExit(30 * time.Second) {
			tr.Process.Kill()
			d.waitExit(killTimeout)
			b.Errorf("mmapfs trace did not end after SIGINT: %s", stderr.String())
		}
	}
}
