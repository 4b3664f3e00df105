package tracereport

import (
	"io"
	"testing"

	"github.com/mmapfs/mmapfs/cmd/mmapfs/ktrace"
	"github.com/mmapfs/mmapfs/fs/wire"
)

// BenchmarkCollector is the cost of one sequential-read request with its
// kernel events (readahead, 32 page adds on each layer, send, end) and
// record, into the timeline (written to io.Discard) or the summary only.
func BenchmarkCollector(b *testing.B) {
	for _, name := range []string{"timeline", "summary"} {
		b.Run(name, func(b *testing.B) {
			var sink Sink
			if name == "timeline" {
				sink = NewTimeline(io.Discard, 0)
			}
			c := NewCollector(testMount(), Options{Sink: sink})
			var e ktrace.Event
			var r wire.TraceRecord
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				t := testStart + int64(i)*50*us
				page := uint64(i) * 32
				e = ktrace.Event{Kind: ktrace.AsyncReadahead, Time: t, Pid: 100, Tgid: 100, Comm: "cat", Dev: testConn, Ino: 5, Index: page, ReqCount: 32, Size: 32, AsyncSize: 32, RAPages: 32}
				c.Kernel(&e)
				for j := uint64(0); j < 32; j++ {
					e = ktrace.Event{Kind: ktrace.PageAdd, Time: t + 1000, Pid: 100, Tgid: 100, Comm: "cat", Dev: testConn, Ino: 5, Index: page + j, Pages: 1}
					c.Kernel(&e)
					e.Dev, e.Pid, e.Tgid = testStoreDev, daemonTid, daemonPid
					c.Kernel(&e)
				}
				e = ktrace.Event{Kind: ktrace.RequestSend, Time: t + 2000, Pid: 100, Tgid: 100, Comm: "cat", Conn: testConn, Unique: uint64(i + 1), Opcode: readOp, Len: 80}
				c.Kernel(&e)
				r = wire.TraceRecord{Unique: uint64(i + 1), NodeID: 105, Ino: 5, Offset: page * 4096, Length: 128 << 10, Opcode: readOp, Start: t + 3000, Service: 20 * us, Pid: 100, Result: 128 << 10}
				c.Daemon(&r)
				e = ktrace.Event{Kind: ktrace.RequestEnd, Time: t + 30*us, Pid: daemonTid, Tgid: daemonPid, Comm: "mmapfs", Conn: testConn, Unique: uint64(i + 1)}
				c.Kernel(&e)
			}
			c.Flush()
		})
	}
}
