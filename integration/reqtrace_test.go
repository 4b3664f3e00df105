package integration

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mmapfs/mmapfs/fs"
	"github.com/mmapfs/mmapfs/fs/wire"
)

// The FUSE opcodes (fuse.h) the trace tests look for.
const (
	fuseRead  = 15
	fuseWrite = 16
	fuseFsync = 20
)

// tracerConn is the test's end of a daemon's trace: the hello, and the
// records as a goroutine reads them.
type tracerConn struct {
	conn    *net.UnixConn
	hello   wire.TraceHello
	records chan wire.TraceRecord // closed at the end of the stream
	err     chan error            // why the stream ended (nil: EOF)
	resume  chan struct{}         // closed: read the records
}

// askTrace listens on a new unix socket, asks the mount at mnt for a
// trace on it through the control file, accepts the daemon's connection
// and reads its hello; a goroutine then reads the records.
func askTrace(t testing.TB, mnt string) *tracerConn {
	t.Helper()
	tc := askTracePaused(t, mnt)
	close(tc.resume)
	return tc
}

// askTracePaused is askTrace with a goroutine that reads no record
// before resume is closed.
func askTracePaused(t testing.TB, mnt string) *tracerConn {
	t.Helper()
	path := filepath.Join(t.TempDir(), "trace.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if reply, err := control(t, mnt, wire.ControlTrace+" "+path+"\n"); err != nil || reply.Error != "" {
		t.Fatalf("%s %s: %v, %q", wire.ControlTrace, path, err, reply.Error)
	}
	if err := ln.SetDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	conn, err := ln.AcceptUnix()
	if err != nil {
		t.Fatalf("accepting the daemon's connection: %v", err)
	}
	t.Cleanup(func() { conn.Close() })
	tc := &tracerConn{conn: conn, records: make(chan wire.TraceRecord, 1<<16), err: make(chan error, 1), resume: make(chan struct{})}
	r := bufio.NewReaderSize(conn, 1<<16)
	if err := conn.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	line, err := r.ReadBytes('\n')
	if err != nil {
		t.Fatalf("reading the hello: %v", err)
	}
	if err := json.Unmarshal(line, &tc.hello); err != nil {
		t.Fatalf("the hello %q: %v", line, err)
	}
	if err := conn.SetReadDeadline(time.Time{}); err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(tc.records)
		<-tc.resume
		b := make([]byte, wire.TraceRecordSize)
		for {
			if _, err := io.ReadFull(r, b); err != nil {
				if errors.Is(err, io.EOF) {
					err = nil
				}
				tc.err <- err
				return
			}
			var rec wire.TraceRecord
			if err := rec.UnmarshalBinary(b); err != nil {
				tc.err <- err
				return
			}
			tc.records <- rec
		}
	}()
	return tc
}

// control writes req to the mount's control file and reads the answer.
func control(t testing.TB, mnt, req string) (wire.ControlReply, error) {
	t.Helper()
	var reply wire.ControlReply
	ctl, err := os.OpenFile(filepath.Join(mnt, fs.ControlName), os.O_RDWR, 0)
	if err != nil {
		return reply, err
	}
	defer ctl.Close()
	_, werr := ctl.Write([]byte(req))
	raw, err := io.ReadAll(io.NewSectionReader(ctl, 0, 1<<20))
	if err != nil {
		return reply, err
	}
	if err := json.Unmarshal(raw, &reply); err != nil {
		return reply, err
	}
	return reply, werr
}

// find reads records until one matches, failing after 5 s.
func (tc *tracerConn) find(t *testing.T, what string, match func(wire.TraceRecord) bool) wire.TraceRecord {
	t.Helper()
	timeout := time.After(5 * time.Second)
	for {
		select {
		case rec, ok := <-tc.records:
			if !ok {
				t.Fatalf("the trace ended (%v) before %s", <-tc.err, what)
			}
			if match(rec) {
				return rec
			}
		case <-timeout:
			t.Fatalf("no record of %s within 5 s", what)
		}
	}
}

// storeIno is the inode number of the store's file name.
func storeIno(t *testing.T, store, name string) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(filepath.Join(store, name), &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

// TestTraceDaemonRecords: a tracer connected through the control file
// gets the daemon's record of each request: a pread of a cold file comes
// as a READ of its offset and length, with the store's inode number, the
// calling thread's id and the cold pages the daemon faulted in; an fsync of a
// written file as an FSYNC with the msyncs it made. Once the tracer
// closes its socket the daemon drops it, says so, and serves on; at
// unmount a tracer still connected gets the end of its stream.
func TestTraceDaemonRecords(t *testing.T) {
	t.Parallel()
	store := t.TempDir()
	const size = 1 << 20
	cold := filepath.Join(store, "cold")
	if err := os.WriteFile(cold, bytes.Repeat([]byte("c"), size), 0o644); err != nil {
		t.Fatal(err)
	}
	dropStoreCache(t, cold)
	m := startMountAt(t, store, t.TempDir(), "--direct-io")
	tc := askTrace(t, m.mnt)
	var sst unix.Stat_t
	if err := unix.Stat(m.store, &sst); err != nil {
		t.Fatal(err)
	}
	realStore, err := filepath.EvalSymlinks(m.store)
	if err != nil {
		t.Fatal(err)
	}
	if h := tc.hello; h.Pid != m.pid() || h.Store != realStore || h.StoreDev != sst.Dev || h.Clock != "monotonic" {
		t.Errorf("hello %+v; want pid %d, store %s, dev %d, clock monotonic", h, m.pid(), realStore, sst.Dev)
	}

	f, err := os.Open(filepath.Join(m.mnt, "cold"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// The page cache of the store file could have been filled since
	// (the mount's open reads nothing): drop it again, right before.
	dropStoreCache(t, cold)
	const off, n = 256 << 10, 64 << 10
	buf := make([]byte, n)
	if got, err := f.ReadAt(buf, off); err != nil || got != n {
		t.Fatalf("pread of %d bytes at %d: %d, %v", n, off, got, err)
	}
	read := tc.find(t, "the pread", func(r wire.TraceRecord) bool { return r.Opcode == fuseRead && r.Offset == off })
	if read.Length != n || read.Result != n || read.Errno != 0 || read.Ino != storeIno(t, store, "cold") || read.Unique == 0 || read.NodeID == 0 {
		t.Errorf("READ record %+v; want length and result %d, ino %d", read, n, storeIno(t, store, "cold"))
	}
	// The kernel gives the calling thread's id: one of this process's.
	if _, err := os.Stat(filepath.Join("/proc/self/task", strconv.Itoa(int(read.Pid)))); err != nil {
		t.Errorf("READ record's pid %d is no thread of the test (pid %d): %v", read.Pid, os.Getpid(), err)
	}
	if read.FaultPages == 0 || read.FaultPages > n/4096 {
		t.Errorf("READ of %d cold pages: %d pages faulted in, want 1 to %d", n/4096, read.FaultPages, n/4096)
	}
	if read.Service <= 0 || read.Start <= 0 {
		t.Errorf("READ record's start %d, service %d", read.Start, read.Service)
	}

	w, err := os.Create(filepath.Join(m.mnt, "written"))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if _, err := w.Write(bytes.Repeat([]byte("w"), 3*4096)); err != nil {
		t.Fatal(err)
	}
	if err := w.Sync(); err != nil {
		t.Fatal(err)
	}
	write := tc.find(t, "the write", func(r wire.TraceRecord) bool { return r.Opcode == fuseWrite })
	if write.Offset != 0 || write.Length != 3*4096 || write.Result != 3*4096 {
		t.Errorf("WRITE record %+v; want 12288 bytes at 0", write)
	}
	fsync := tc.find(t, "the fsync", func(r wire.TraceRecord) bool { return r.Opcode == fuseFsync })
	if fsync.Msyncs < 1 || fsync.MsyncBytes < 4096 || fsync.Errno != 0 || fsync.Ino != storeIno(t, store, "written") || fsync.NodeID != write.NodeID {
		t.Errorf("FSYNC record %+v; want at least 1 msync of 4096 bytes or more, ino %d, node %d", fsync, storeIno(t, store, "written"), write.NodeID)
	}
	if read.Unique == write.Unique || write.Unique == fsync.Unique {
		t.Errorf("requests share ids: read %d, write %d, fsync %d", read.Unique, write.Unique, fsync.Unique)
	}

	// The tracer leaves: the daemon drops it and serves on.
	tc.conn.Close()
	waitOutput(t, m, "trace: tracer at ")
	if got, err := f.ReadAt(buf, 0); err != nil || got != n {
		t.Fatalf("pread once the tracer left: %d, %v", got, err)
	}
	// A tracer still connected at unmount gets the end of its stream.
	late := askTrace(t, m.mnt)
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	m.stop(t)
	timeout := time.After(5 * time.Second)
	for open := true; open; {
		select {
		case _, open = <-late.records:
		case <-timeout:
			t.Fatal("a tracer connected at unmount: its stream did not end within 5 s")
		}
	}
	if err := <-late.err; err != nil {
		t.Errorf("a tracer connected at unmount: its stream ended with %v, want EOF", err)
	}
}

// waitOutput waits up to 5 s for the daemon to print s.
func waitOutput(t *testing.T, m *mount, s string) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !strings.Contains(m.out.String(), s); time.Sleep(pollInterval) {
		if time.Now().After(deadline) {
			t.Fatalf("the daemon did not print %q within 5 s; its output:\n%s", s, m.out.String())
		}
	}
}

// dropStoreCache writes the store file at path out and drops its pages
// from the page cache.
func dropStoreCache(t testing.TB, path string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
		t.Fatalf("fadvise DONTNEED %s: %v", path, err)
	}
}

// TestTraceDaemonDropsCounted: a tracer that reads nothing for a while
// loses records, never silently: the daemon serves on at its pace, and
// once the tracer reads, drop records say how many it lost, so that the
// preads it got and those it was told it lost add up to all of them.
func TestTraceDaemonDropsCounted(t *testing.T) {
	t.Parallel()
	m := startMount(t, "--direct-io")
	path := filepath.Join(m.mnt, "f")
	if err := os.WriteFile(path, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tc := askTracePaused(t, m.mnt)
	// More than the daemon's ring (8192) and the socket's buffer hold.
	const preads = 20000
	buf := make([]byte, 4096)
	for i := range preads {
		if _, err := f.ReadAt(buf, int64(i%256)*4096); err != nil {
			t.Fatal(err)
		}
	}
	close(tc.resume)
	// Once the tracer reads again the ring drains and there is room: a
	// batch of preads, and a marker pread after it, is then recorded
	// whole. How soon that is depends on the machine, so batches (each
	// with its own marker) are made until one is, for up to pollTimeout.
	// In the stream a drop record comes before the first record kept
	// after a loss, so a marker with more records since the last drop
	// record than its batch's preads ends a batch kept whole.
	const (
		more       = 100
		markerBase = 12345 // batch k's marker: one byte at markerBase+k
	)
	var reads, markers, dropped, dropRecords, afterDrop int
	whole := -1 // the batch recorded whole
	deadline := time.Now().Add(pollTimeout)
	for k := 0; whole < 0; k++ {
		if time.Now().After(deadline) {
			t.Fatalf("%d batches of %d preads since the tracer read again, none recorded whole within %v (%d preads recorded, %d dropped in %d drop records)", k, more, pollTimeout, reads, dropped, dropRecords)
		}
		for i := range more {
			if _, err := f.ReadAt(buf, int64(i)*4096); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := f.ReadAt(buf[:1], int64(markerBase+k)); err != nil {
			t.Fatal(err)
		}
		// Read up to this batch's marker; it may have been dropped
		// itself, so not for longer than a while.
		wait := time.After(500 * time.Millisecond)
	records:
		for whole < 0 {
			select {
			case r, ok := <-tc.records:
				if !ok {
					t.Fatalf("the trace ended (%v) before a batch was recorded whole", <-tc.err)
				}
				switch {
				case r.Opcode == wire.TraceDropped:
					dropped += int(r.Result)
					dropRecords++
					afterDrop = 0
					if r.Result == 0 || r.Service < 0 {
						t.Errorf("drop record %+v", r)
					}
				case r.Opcode == fuseRead && r.Offset >= markerBase && r.Offset <= uint64(markerBase+k):
					markers++
					if afterDrop >= more {
						whole = int(r.Offset - markerBase)
					}
					if r.Offset == uint64(markerBase+k) {
						break records
					}
				case r.Opcode == fuseRead && r.Length == 4096:
					reads++
					afterDrop++
				}
			case <-wait:
				break records
			}
		}
	}
	// Every pread up to the whole batch's marker has been recorded or
	// counted in a drop record before that marker.
	total := preads + (whole+1)*(more+1)
	t.Logf("%d preads (%d batches after the pause, markers included): %d recorded, %d dropped in %d drop records", total, whole+1, reads+markers, dropped, dropRecords)
	if dropped == 0 || reads+markers+dropped < total || reads+markers >= total {
		t.Errorf("%d preads: %d recorded, %d dropped; want some dropped, and the two adding up to all", total, reads+markers, dropped)
	}
}
