package fs

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// StatsName is the name of the read-only stats file at the root of every
// mount. It is not in the store, so readdir does not list it; it shadows
// a blob of the same name at the store's root.
const StatsName = ".mmapfs-stats"

// statsIno is the stats file's inode number, far from any a loopback
// inode of the store's own device takes.
const statsIno = ^uint64(0) - 1

// virtualFile is a file of the daemon's own at the root of the mount (the
// stats and control files): an empty regular file owned by the daemon's
// user, dated from the mount, whose attributes the kernel does not cache.
type virtualFile struct {
	gofs.Inode
	m    *mountState // read only
	ino  uint64      // read only
	perm uint32      // read only
}

// newVirtual returns the inode of vf (embedded in node) and fills out.
func (n *Node) newVirtual(ctx context.Context, node gofs.InodeEmbedder, vf *virtualFile, out *fuse.EntryOut) *gofs.Inode {
	vf.fill(&out.Attr)
	return n.NewInode(ctx, node, gofs.StableAttr{Mode: syscall.S_IFREG, Ino: vf.ino})
}

func (vf *virtualFile) fill(a *fuse.Attr) {
	a.Mode = syscall.S_IFREG | vf.perm
	a.Nlink = 1
	a.Ino = vf.ino
	a.Uid, a.Gid = uint32(os.Getuid()), uint32(os.Getgid())
	t := vf.m.started
	a.SetTimes(&t, &t, &t)
}

var _ = (gofs.NodeGetattrer)((*virtualFile)(nil))

// Getattr reports an empty regular file, like /proc files.
func (vf *virtualFile) Getattr(ctx context.Context, f gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	vf.fill(&out.Attr)
	out.SetTimeout(0)
	return 0
}

// statsNode is the stats file. Each open renders the figures once; reads
// of that descriptor serve that rendering (FOPEN_DIRECT_IO, so the kernel
// caches nothing and ignores the size).
type statsNode struct {
	virtualFile
}

// statsInode returns the stats file's inode and fills out.
func (n *Node) statsInode(ctx context.Context, out *fuse.EntryOut) *gofs.Inode {
	sn := &statsNode{virtualFile{m: n.m, ino: statsIno, perm: 0o444}}
	return n.newVirtual(ctx, sn, &sn.virtualFile, out)
}

var _ = (gofs.NodeSetattrer)((*statsNode)(nil))

// Setattr refuses: the stats file cannot be changed.
func (sn *statsNode) Setattr(ctx context.Context, f gofs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	return syscall.EPERM
}

var _ = (gofs.NodeOpener)((*statsNode)(nil))

// Open renders the figures; an open for writing is refused.
func (sn *statsNode) Open(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	if flags&syscall.O_ACCMODE != syscall.O_RDONLY || flags&syscall.O_TRUNC != 0 {
		return nil, 0, syscall.EACCES
	}
	data, err := sn.m.statsJSON()
	if err != nil {
		return nil, 0, sn.m.errno("open", StatsName, err)
	}
	return &statsHandle{data: data}, fuse.FOPEN_DIRECT_IO, 0
}

func (m *mountState) statsJSON() ([]byte, error) {
	s, err := m.snapshot()
	if err != nil {
		return nil, fmt.Errorf("gathering stats: %w", err)
	}
	data, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encoding stats: %w", err)
	}
	return append(data, '\n'), nil
}

// statsHandle serves one rendering of the stats.
type statsHandle struct {
	data []byte // read only
}

var _ = (gofs.FileReader)((*statsHandle)(nil))

func (h *statsHandle) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	return readAt(h.data, dest, off), 0
}

// readAt serves what a read of len(dest) bytes at off gets of data, which
// no one changes (a later rendering or answer is a new slice).
func readAt(data, dest []byte, off int64) fuse.ReadResult {
	if off >= int64(len(data)) {
		return fuse.ReadResultData(nil)
	}
	return fuse.ReadResultData(data[off:min(int64(len(data)), off+int64(len(dest)))])
}
