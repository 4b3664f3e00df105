package wire

import (
	"encoding/binary"
	"fmt"
)

// ControlTrace, followed by a space and the path of a unix socket, asks
// the daemon to connect to that socket and send it its record of every
// request it serves from then on: one TraceHello as a JSON line, then one
// TraceRecord (TraceRecordSize bytes, MarshalBinary's layout) per request,
// until the socket is closed. Several tracers may be connected at once;
// with none the daemon keeps no record.
const ControlTrace = "trace"

// TraceHello is the first line a daemon sends a tracer: what it needs to
// read the records and find the kernel's events of this mount.
type TraceHello struct {
	// Pid is the daemon's process id (its threads send no client
	// requests; the kernel's events in its context are background ones).
	Pid int `json:"pid"`
	// Store is the store directory; record inode numbers are the store's.
	Store string `json:"store"`
	// StoreDev is the store's st_dev (user-space encoding, unix.Major/Minor).
	StoreDev uint64 `json:"store_dev"`
	// Clock names the clock of TraceRecord.Start: "monotonic".
	Clock string `json:"clock"`
}

// TraceDropped is the Opcode of a record that stands for records the
// daemon dropped: a tracer that does not read fast enough fills the
// daemon's buffer of its records, and the requests served then are not
// recorded for it (they are never made to wait). Its Result is how many
// were dropped (more than 2^32-1 come as several such records), Start the
// Start of the first of them, and Service the time from there to the end
// of the last; its other fields are 0. It comes in the stream where the
// dropped records would have: after every record that ended before them,
// before every record that ended after them.
const TraceDropped = 0

// TraceRecordSize is the size of a marshalled TraceRecord.
const TraceRecordSize = 88

// TraceRecord is the daemon's record of one FUSE request it served. It is
// a fixed-size value so that recording one allocates nothing.
type TraceRecord struct {
	// Unique is the request's id, as the kernel's fuse_request_send and
	// fuse_request_end events give it.
	Unique uint64
	// NodeID is the request's node; Ino its inode number in the store,
	// where the daemon has it at hand: the requests on an open file
	// (read, write, fsync, flush, release, fallocate, lseek, getattr
	// and statx through a handle) and getattr, setattr and statx of any
	// node; 0 for the others (lookup, create, open, readdir, forget...:
	// a getattr's record of the same NodeID gives it).
	NodeID uint64
	Ino    uint64
	// Offset and Length are the request's range (read, write, fallocate,
	// copy_file_range, lseek); 0 for others.
	Offset uint64
	Length uint32
	// Opcode is the FUSE opcode (fuse.h numbering, as the kernel's
	// event), or TraceDropped.
	Opcode uint32
	// Start is when the daemon began serving it (CLOCK_MONOTONIC, ns);
	// Service how long serving took, ns.
	Start   int64
	Service int64
	// Pid is the thread that made the request, as the kernel gave it:
	// its task id, which is the process id for a process's first
	// thread only (0 for the kernel's own requests, e.g. a forget).
	Pid uint32
	// Errno is the answer's error, 0 for success.
	Errno int32
	// Result is what the answer carried: bytes read or written.
	Result uint32
	// FaultPages is how many pages of the blob's range were not in the
	// store's page cache when the daemon copied (so were faulted in).
	FaultPages uint32
	// Msyncs and MsyncBytes are the msync (and fdatasync) calls the
	// daemon made on the blob while serving it, and the bytes they
	// covered.
	Msyncs     uint32
	_          uint32
	MsyncBytes uint64
}

// MarshalBinary puts r into b (at least TraceRecordSize bytes), little
// endian, in field order.
func (r *TraceRecord) MarshalBinary(b []byte) {
	_ = b[TraceRecordSize-1]
	le := binary.LittleEndian
	le.PutUint64(b[0:], r.Unique)
	le.PutUint64(b[8:], r.NodeID)
	le.PutUint64(b[16:], r.Ino)
	le.PutUint64(b[24:], r.Offset)
	le.PutUint32(b[32:], r.Length)
	le.PutUint32(b[36:], r.Opcode)
	le.PutUint64(b[40:], uint64(r.Start))
	le.PutUint64(b[48:], uint64(r.Service))
	le.PutUint32(b[56:], r.Pid)
	le.PutUint32(b[60:], uint32(r.Errno))
	le.PutUint32(b[64:], r.Result)
	le.PutUint32(b[68:], r.FaultPages)
	le.PutUint32(b[72:], r.Msyncs)
	le.PutUint32(b[76:], 0)
	le.PutUint64(b[80:], r.MsyncBytes)
}

// UnmarshalBinary reads a record MarshalBinary wrote.
func (r *TraceRecord) UnmarshalBinary(b []byte) error {
	if len(b) < TraceRecordSize {
		return fmt.Errorf("trace record of %d bytes, want %d", len(b), TraceRecordSize)
	}
	le := binary.LittleEndian
	r.Unique = le.Uint64(b[0:])
	r.NodeID = le.Uint64(b[8:])
	r.Ino = le.Uint64(b[16:])
	r.Offset = le.Uint64(b[24:])
	r.Length = le.Uint32(b[32:])
	r.Opcode = le.Uint32(b[36:])
	r.Start = int64(le.Uint64(b[40:]))
	r.Service = int64(le.Uint64(b[48:]))
	r.Pid = le.Uint32(b[56:])
	r.Errno = int32(le.Uint32(b[60:]))
	r.Result = le.Uint32(b[64:])
	r.FaultPages = le.Uint32(b[68:])
	r.Msyncs = le.Uint32(b[72:])
	r.MsyncBytes = le.Uint64(b[80:])
	return nil
}
