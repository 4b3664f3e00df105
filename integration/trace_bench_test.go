package integration

import (
	"bufio"
	"encoding/json"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mmapfs/mmapfs/fs/wire"
)

// The cost of the daemon's request record on its data path: 4 KiB preads
// of a file of the mount, each served by the daemon (--direct-io: none
// from the kernel's page cache), with no tracer (BenchmarkTraceOff: what
// every mount pays, one atomic load a request) and with one connected that
// reads and discards the records (BenchmarkTraceOn, which also reports
// the records it got and dropped per op).

func BenchmarkTraceOff(b *testing.B) { benchTracePread(b, false) }

func BenchmarkTraceOn(b *testing.B) { benchTracePread(b, true) }

func benchTracePread(b *testing.B, trace bool) {
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
	if trace {
		sink = discardTrace(b, m.mnt)
	}
	buf := make([]byte, 4096)
	i := 0
	for b.Loop() {
		if _, err := f.ReadAt(buf, int64(i%(size/4096))*4096); err != nil {
			b.Fatal(err)
		}
		i++
	}
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
// them.
type discardTracer struct {
	done             chan struct{}
	records, dropped uint64 // read after done is closed
	conn             *net.UnixConn
}

// discardTrace connects a tracer to the mount at mnt that reads and
// discards its records; the benchmark skips where the daemon takes no
// trace request (a daemon from before it, run for comparison).
func discardTrace(b *testing.B, mnt string) *discardTracer {
	b.Helper()
	path := filepath.Join(b.TempDir(), "trace.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	reply, err := control(b, mnt, wire.ControlTrace+" "+path)
	if strings.HasPrefix(reply.Error, "unknown request") {
		b.Skipf("the daemon takes no trace request: %s", reply.Error)
	}
	if err != nil || reply.Error != "" {
		b.Fatalf("%s %s: %v, %q", wire.ControlTrace, path, err, reply.Error)
	}
	if err := ln.SetDeadline(time.Now().Add(5 * time.Second)); err != nil {
		b.Fatal(err)
	}
	conn, err := ln.AcceptUnix()
	if err != nil {
		b.Fatal(err)
	}
	d := &discardTracer{done: make(chan struct{}), conn: conn}
	r := bufio.NewReaderSize(conn, 1<<20)
	line, err := r.ReadBytes('\n')
	if err != nil {
		b.Fatal(err)
	}
	var hello wire.TraceHello
	if err := json.Unmarshal(line, &hello); err != nil {
		b.Fatal(err)
	}
	var records, dropped uint64
	go func() {
		defer close(d.done)
		rec := make([]byte, wire.TraceRecordSize)
		for {
			if _, err := io.ReadFull(r, rec); err != nil {
				break
			}
			var x wire.TraceRecord
			if err := x.UnmarshalBinary(rec); err != nil {
				break
			}
			if x.Opcode == wire.TraceDropped {
				dropped += uint64(x.Result)
			} else {
				records++
			}
		}
		d.records, d.dropped = records, dropped
	}()
	b.Cleanup(func() { conn.Close(); <-d.done })
	return d
}

// counts ends the trace and returns what it got.
func (d *discardTracer) counts() (records, dropped uint64) {
	d.conn.Close()
	<-d.done
	return d.records, d.dropped
}
