// This file wraps every request method of go-fuse's fuse.RawFileSystem to
// count it. A method a later go-fuse adds would be served uncounted
// through the embedded interface: TestCountingFSCoversRawFileSystem fails
// until it is declared here (or named in the test as no request).

package fs

import (
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// countingFS wraps the raw filesystem go-fuse builds from the node tree and
// counts every request by FUSE op, with its latency and whether it failed;
// while a tracer is connected, it records each one for it (reqtrace.go).
type countingFS struct {
	fuse.RawFileSystem
	c *counters
	t *reqTracer // records each request for the tracers (reqtrace.go)
}

type opIndex int

// The FUSE ops counted, one per request kind (WRITE through Writev counts
// as write).
const (
	opLookup opIndex = iota
	opForget
	opGetattr
	opSetattr
	opMknod
	opMkdir
	opUnlink
	opRmdir
	opRename
	opLink
	opSymlink
	opReadlink
	opAccess
	opGetxattr
	opListxattr
	opSetxattr
	opRemovexattr
	opCreate
	opTmpfile
	opOpen
	opRead
	opLseek
	opGetlk
	opSetlk
	opSetlkw
	opRelease
	opWrite
	opCopyFileRange
	opIoctl
	opFlush
	opFsync
	opFallocate
	opOpendir
	opReaddir
	opReaddirplus
	opReleasedir
	opFsyncdir
	opStatfs
	opStatx
	numOps
)

// opNames are the ops' names in the stats, lower case as FUSE names them.
var opNames = [numOps]string{
	"lookup",
	"forget",
	"getattr",
	"setattr",
	"mknod",
	"mkdir",
	"unlink",
	"rmdir",
	"rename",
	"link",
	"symlink",
	"readlink",
	"access",
	"getxattr",
	"listxattr",
	"setxattr",
	"removexattr",
	"create",
	"tmpfile",
	"open",
	"read",
	"lseek",
	"getlk",
	"setlk",
	"setlkw",
	"release",
	"write",
	"copy_file_range",
	"ioctl",
	"flush",
	"fsync",
	"fallocate",
	"opendir",
	"readdir",
	"readdirplus",
	"releasedir",
	"fsyncdir",
	"statfs",
	"statx",
}

func (c *countingFS) Lookup(cancel <-chan struct{}, header *fuse.InHeader, name string, out *fuse.EntryOut) fuse.Status {
	start := time.Now()
	rq := c.t.begin(cancel, header, start)
	r0 := c.RawFileSystem.Lookup(cancel, header, name, out)
	c.c.done(opLookup, start, r0)
	c.t.end(rq, r0, 0)
	return r0
}

func (c *countingFS) Forget(nodeid, nlookup uint64) {
	start := time.Now()
	rq := c.t.beginForget(nodeid, start)
	c.RawFileSystem.Forget(nodeid, nlookup)
	c.c.done(opForget, start, fuse.OK)
	c.t.end(rq, fuse.OK, 0)
}

func (c *countingFS) GetAttr(cancel <-chan struct{}, input *fuse.GetAttrIn, out *fuse.AttrOut) fuse.Status {
	start := time.Now()
	rq := c.t.begin(cancel, &input.InHeader, start)
	r0 := c.RawFileSystem.GetAttr(cancel, input, out)
	c.c.done(opGetattr, start, r0)
	rq.ino(out.Attr.Ino)
	c.t.end(rq, r0, 0)
	return r0
}

func (c *countingFS) SetAttr(cancel <-chan struct{}, input *fuse.SetAttrIn, out *fuse.AttrOut) fuse.Status {
	start := time.Now()
	rq := c.t.begin(cancel, &input.InHeader, start)
	r0 := c.RawFileSystem.SetAttr(cancel, input, out)
	c.c.done(opSetattr, start, r0)
	rq.ino(out.Attr.Ino)
	c.t.end(rq, r0, 0)
	return r0
}

func (c *countingFS) Mknod(cancel <-chan struct{}, input *fuse.MknodIn, name string, out *fuse.EntryOut) fuse.Status {
	start := time.Now()
	rq := c.t.begin(cancel, &input.InHeader, start)
	r0 := c.RawFileSystem.Mknod(cancel, input, name, out)
	c.c.done(opMknod, start, r0)
	c.t.end(rq, r0, 0)
	return r0
}

func (c *countingFS) Mkdir(cancel <-chan struct{}, input *fuse.MkdirIn, name string, out *fuse.EntryOut) fuse.Status {
	start := time.Now()
	rq := c.t.begin(cancel, &input.InHeader, start)
	r0 := c.RawFileSystem.Mkdir(cancel, input, name, out)
	c.c.done(opMkdir, start, r0)
	c.t.end(rq, r0, 0)
	return r0
}

func (c *countingFS) Unlink(cancel <-chan struct{}, header *fuse.InHeader, name string) fuse.Status {
	start := time.Now()
	rq := c.t.begin(cancel, header, start)
	r0 := c.RawFileSystem.Unlink(cancel, header, name)
	c.c.done(opUnlink, start, r0)
	c.t.end(rq, r0, 0)
	return r0
}

func (c *countingFS) Rmdir(cancel <-chan struct{}, header *fuse.InHeader, name string) fuse.Status {
	start := time.Now()
	rq := c.t.begin(cancel, header, start)
	r0 := c.RawFileSystem.Rmdir(cancel, header, name)
	c.c.done(opRmdir, start, r0)
	c.t.end(rq, r0, 0)
	return r0
}

func (c *countingFS) Rename(cancel <-chan struct{}, input *fuse.RenameIn, oldName string, newName string) fuse.Status {
	start := time.Now()
	rq := c.t.begin(cancel, &input.InHeader, start)
	r0 := c.RawFileSystem.Rename(cancel, input, oldName, newName)
	c.c.done(opRename, start, r0)
	c.t.end(rq, r0, 0)
	return r0
}

func (c *countingFS) Link(cancel <-chan struct{}, input *fuse.LinkIn, filename string, out *fuse.EntryOut) fuse.Status {
	start := time.Now()
	rq := c.t.begin(cancel, &input.InHeader, start)
	r0 := c.RawFileSystem.Link(cancel, input, filename, out)
	c.c.done(opLink, start, r0)
	c.t.end(rq, r0, 0)
	return r0
}

func (c *countingFS) Symlink(cancel <-chan struct{}, header *fuse.InHeader, pointedTo string, linkName string, out *fuse.EntryOut) fuse.Status {
	start := time.Now()
	rq := c.t.begin(cancel, header, start)
	r0 := c.RawFileSystem.Symlink(cancel, header, pointedTo, linkName, out)
	c.c.done(opSymlink, start, r0)
	c.t.end(rq, r0, 0)
	return r0
}

func (c *countingFS) Readlink(cancel <-chan struct{}, header *fuse.InHeader) ([]byte, fuse.Status) {
	start := time.Now()
	rq := c.t.begin(cancel, header, start)
	r0, r1 := c.RawFileSystem.Readlink(cancel, header)
	c.c.done(opReadlink, start, r1)
	c.t.end(rq, r1, uint32(len(r0)))
	return r0, r1
}

func (c *countingFS) Access(cancel <-chan struct{}, input *fuse.AccessIn) fuse.Status {
	start := time.Now()
	rq := c.t.begin(cancel, &input.InHeader, start)
	r0 := c.RawFileSystem.Access(cancel, input)
	c.c.done(opAccess, start, r0)
	c.t.end(rq, r0, 0)
	return r0
}

func (c *countingFS) GetXAttr(cancel <-chan struct{}, header *fuse.InHeader, attr string, dest []byte) (uint32, fuse.Status) {
	start := time.Now()
	rq := c.t.begin(cancel, header, start)
	r0, r1 := c.RawFileSystem.GetXAttr(cancel, header, attr, dest)
	c.c.done(opGetxattr, start, r1)
	c.t.end(rq, r1, r0)
	return r0, r1
}

func (c *countingFS) ListXAttr(cancel <-chan struct{}, header *fuse.InHeader, dest []byte) (uint32, fuse.Status) {
	start := time.Now()
	rq := c.t.begin(cancel, header, start)
	r0, r1 := c.RawFileSystem.ListXAttr(cancel, header, dest)
	c.c.done(opListxattr, start, r1)
	c.t.end(rq, r1, r0)
	return r0, r1
}

func (c *countingFS) SetXAttr(cancel <-chan struct{}, input *fuse.SetXAttrIn, attr string, data []byte) fuse.Status {
	start := time.Now()
	rq := c.t.begin(cancel, &input.InHeader, start)
	r0 := c.RawFileSystem.SetXAttr(cancel, input, attr, data)
	c.c.done(opSetxattr, start, r0)
	c.t.end(rq, r0, 0)
	return r0
}

func (c *countingFS) RemoveXAttr(cancel <-chan struct{}, header *fuse.InHeader, attr string) fuse.Status {
	start := time.Now()
	rq := c.t.begin(cancel, header, start)
	r0 := c.RawFileSystem.RemoveXAttr(cancel, header, attr)
	c.c.done(opRemovexattr, start, r0)
	c.t.end(rq, r0, 0)
	return r0
}

func (c *countingFS) Create(cancel <-chan struct{}, input *fuse.CreateIn, name string, out *fuse.CreateOut) fuse.Status {
	start := time.Now()
	rq := c.t.begin(cancel, &input.InHeader, start)
	r0 := c.RawFileSystem.Create(cancel, input, name, out)
	c.c.done(opCreate, start, r0)
	c.t.end(rq, r0, 0)
	return r0
}

func (c *countingFS) Tmpfile(cancel <-chan struct{}, input *fuse.CreateIn, out *fuse.CreateOut) fuse.Status {
	start := time.Now()
	rq := c.t.begin(cancel, &input.InHeader, start)
	r0 := c.RawFileSystem.Tmpfile(cancel, input, out)
	c.c.done(opTmpfile, start, r0)
	c.t.end(rq, r0, 0)
	return r0
}

func (c *countingFS) Open(cancel <-chan struct{}, input *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	start := time.Now()
	rq := c.t.begin(cancel, &input.InHeader, start)
	r0 := c.RawFileSystem.Open(cancel, input, out)
	c.c.done(opOpen, start, r0)
	c.t.end(rq, r0, 0)
	return r0
}

func (c *countingFS) Read(cancel <-chan struct{}, input *fuse.ReadIn, buf []byte) (fuse.ReadResult, fuse.Status) {
	start := time.Now()
	rq := c.t.begin(cancel, &input.InHeader, start)
	r0, r1 := c.RawFileSystem.Read(cancel, input, buf)
	c.c.done(opRead, start, r1)
	rq.span(input.Offset, uint64(input.Size))
	c.t.end(rq, r1, readSize(rq, r0, r1))
	return r0, r1
}

func (c *countingFS) Lseek(cancel <-chan struct{}, in *fuse.LseekIn, out *fuse.LseekOut) fuse.Status {
	start := time.Now()
	rq := c.t.begin(cancel, &in.InHeader, start)
	r0 := c.RawFileSystem.Lseek(cancel, in, out)
	c.c.done(opLseek, start, r0)
	rq.span(in.Offset, 0)
	c.t.end(rq, r0, 0)
	return r0
}

func (c *countingFS) GetLk(cancel <-chan struct{}, input *fuse.LkIn, out *fuse.LkOut) fuse.Status {
	start := time.Now()
	rq := c.t.begin(cancel, &input.InHeader, start)
	r0 := c.RawFileSystem.GetLk(cancel, input, out)
	c.c.done(opGetlk, start, r0)
	c.t.end(rq, r0, 0)
	return r0
}

func (c *countingFS) SetLk(cancel <-chan struct{}, input *fuse.LkIn) fuse.Status {
	start := time.Now()
	rq := c.t.begin(cancel, &input.InHeader, start)
	r0 := c.RawFileSystem.SetLk(cancel, input)
	c.c.done(opSetlk, start, r0)
	c.t.end(rq, r0, 0)
	return r0
}

func (c *countingFS) SetLkw(cancel <-chan struct{}, input *fuse.LkIn) fuse.Status {
	start := time.Now()
	rq := c.t.begin(cancel, &input.InHeader, start)
	r0 := c.RawFileSystem.SetLkw(cancel, input)
	c.c.done(opSetlkw, start, r0)
	c.t.end(rq, r0, 0)
	return r0
}

func (c *countingFS) Release(cancel <-chan struct{}, input *fuse.ReleaseIn) {
	start := time.Now()
	rq := c.t.begin(cancel, &input.InHeader, start)
	c.RawFileSystem.Release(cancel, input)
	c.c.done(opRelease, start, fuse.OK)
	c.t.end(rq, fuse.OK, 0)
}

func (c *countingFS) Write(cancel <-chan struct{}, input *fuse.WriteIn, data []byte) (uint32, fuse.Status) {
	start := time.Now()
	rq := c.t.begin(cancel, &input.InHeader, start)
	r0, r1 := c.RawFileSystem.Write(cancel, input, data)
	c.c.done(opWrite, start, r1)
	rq.span(input.Offset, uint64(input.Size))
	c.t.end(rq, r1, r0)
	return r0, r1
}

func (c *countingFS) Writev(cancel <-chan struct{}, input *fuse.WriteIn, data [][]byte) (uint32, fuse.Status) {
	start := time.Now()
	rq := c.t.begin(cancel, &input.InHeader, start)
	r0, r1 := c.RawFileSystem.Writev(cancel, input, data)
	if r1 == fuse.ENOSYS { // go-fuse retries with Write, counted there
		c.t.discard(rq)
	} else {
		c.c.done(opWrite, start, r1)
		rq.span(input.Offset, uint64(input.Size))
		c.t.end(rq, r1, r0)
	}
	return r0, r1
}

func (c *countingFS) CopyFileRange(cancel <-chan struct{}, input *fuse.CopyFileRangeIn) (uint32, fuse.Status) {
	start := time.Now()
	rq := c.t.begin(cancel, &input.InHeader, start)
	r0, r1 := c.RawFileSystem.CopyFileRange(cancel, input)
	c.c.done(opCopyFileRange, start, r1)
	rq.span(input.OffIn, input.Len)
	c.t.end(rq, r1, r0)
	return r0, r1
}

func (c *countingFS) Ioctl(cancel <-chan struct{}, input *fuse.IoctlIn, inbuf []byte, output *fuse.IoctlOut, outbuf []byte) fuse.Status {
	start := time.Now()
	rq := c.t.begin(cancel, &input.InHeader, start)
	r0 := c.RawFileSystem.Ioctl(cancel, input, inbuf, output, outbuf)
	c.c.done(opIoctl, start, r0)
	c.t.end(rq, r0, 0)
	return r0
}

func (c *countingFS) Flush(cancel <-chan struct{}, input *fuse.FlushIn) fuse.Status {
	start := time.Now()
	rq := c.t.begin(cancel, &input.InHeader, start)
	r0 := c.RawFileSystem.Flush(cancel, input)
	c.c.done(opFlush, start, r0)
	c.t.end(rq, r0, 0)
	return r0
}

func (c *countingFS) Fsync(cancel <-chan struct{}, input *fuse.FsyncIn) fuse.Status {
	start := time.Now()
	rq := c.t.begin(cancel, &input.InHeader, start)
	r0 := c.RawFileSystem.Fsync(cancel, input)
	c.c.done(opFsync, start, r0)
	c.t.end(rq, r0, 0)
	return r0
}

func (c *countingFS) Fallocate(cancel <-chan struct{}, input *fuse.FallocateIn) fuse.Status {
	start := time.Now()
	rq := c.t.begin(cancel, &input.InHeader, start)
	r0 := c.RawFileSystem.Fallocate(cancel, input)
	c.c.done(opFallocate, start, r0)
	rq.span(input.Offset, input.Length)
	c.t.end(rq, r0, 0)
	return r0
}

func (c *countingFS) OpenDir(cancel <-chan struct{}, input *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	start := time.Now()
	rq := c.t.begin(cancel, &input.InHeader, start)
	r0 := c.RawFileSystem.OpenDir(cancel, input, out)
	c.c.done(opOpendir, start, r0)
	c.t.end(rq, r0, 0)
	return r0
}

func (c *countingFS) ReadDir(cancel <-chan struct{}, input *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	start := time.Now()
	rq := c.t.begin(cancel, &input.InHeader, start)
	r0 := c.RawFileSystem.ReadDir(cancel, input, out)
	c.c.done(opReaddir, start, r0)
	c.t.end(rq, r0, 0)
	return r0
}

func (c *countingFS) ReadDirPlus(cancel <-chan struct{}, input *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	start := time.Now()
	rq := c.t.begin(cancel, &input.InHeader, start)
	r0 := c.RawFileSystem.ReadDirPlus(cancel, input, out)
	c.c.done(opReaddirplus, start, r0)
	c.t.end(rq, r0, 0)
	return r0
}

func (c *countingFS) ReleaseDir(input *fuse.ReleaseIn) {
	start := time.Now()
	rq := c.t.begin(nil, &input.InHeader, start)
	c.RawFileSystem.ReleaseDir(input)
	c.c.done(opReleasedir, start, fuse.OK)
	c.t.end(rq, fuse.OK, 0)
}

func (c *countingFS) FsyncDir(cancel <-chan struct{}, input *fuse.FsyncIn) fuse.Status {
	start := time.Now()
	rq := c.t.begin(cancel, &input.InHeader, start)
	r0 := c.RawFileSystem.FsyncDir(cancel, input)
	c.c.done(opFsyncdir, start, r0)
	c.t.end(rq, r0, 0)
	return r0
}

func (c *countingFS) StatFs(cancel <-chan struct{}, input *fuse.InHeader, out *fuse.StatfsOut) fuse.Status {
	start := time.Now()
	rq := c.t.begin(cancel, input, start)
	r0 := c.RawFileSystem.StatFs(cancel, input, out)
	c.c.done(opStatfs, start, r0)
	c.t.end(rq, r0, 0)
	return r0
}

func (c *countingFS) Statx(cancel <-chan struct{}, input *fuse.StatxIn, out *fuse.StatxOut) fuse.Status {
	start := time.Now()
	rq := c.t.begin(cancel, &input.InHeader, start)
	r0 := c.RawFileSystem.Statx(cancel, input, out)
	c.c.done(opStatx, start, r0)
	rq.ino(out.Statx.Ino)
	c.t.end(rq, r0, 0)
	return r0
}

// readSize is the bytes a READ's answer carries, for its record.
func readSize(rq *inflight, r fuse.ReadResult, st fuse.Status) uint32 {
	if rq == nil || r == nil || st != fuse.OK {
		return 0
	}
	return uint32(r.Size())
}
