// Package brokenfs mounts go-fuse's loopback filesystem (fs.NewLoopbackRoot,
// as scripts/loopback -no-passthrough does) in the calling process, as it
// is or with one of two mistakes a FUSE filesystem makes with mappings, for
// the tests of `mmapfs check` (integration/check_test.go) to show that the
// check catches them:
//
//   - DirectIO opens every file with FOPEN_DIRECT_IO and does not ask the
//     kernel for FUSE_DIRECT_IO_ALLOW_MMAP: the kernel then refuses every
//     MAP_SHARED mapping (ENODEV). Programs that map files break.
//   - StaleLinks names its inodes by path, as sshfs does: a hard link made
//     through it gets an inode of its own, and every file is opened with
//     FOPEN_KEEP_CACHE, with long attribute and entry timeouts and no
//     automatic invalidation of the data cache. A write(2) through one
//     name is a write behind the kernel's back for the other name's pages:
//     a mapping of the other name keeps serving the old bytes.
//
// The process that mounts must never map files of the mount (a process
// that serves a FUSE mount and page-faults on it can deadlock): the check
// runs in a process of its own.
package brokenfs

import (
	"context"
	"fmt"
	"hash/fnv"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// Kind is which filesystem Mount serves.
type Kind int

// The kinds.
const (
	// Loopback is go-fuse's loopback without kernel passthrough: the
	// reference the broken ones are made from.
	Loopback Kind = iota
	// DirectIO opens files with FOPEN_DIRECT_IO, shared mappings not
	// allowed.
	DirectIO
	// StaleLinks gives hard links inodes of their own and keeps the
	// kernel's cache of every file.
	StaleLinks
)

func (k Kind) String() string {
	switch k {
	case Loopback:
		return "loopback"
	case DirectIO:
		return "directio"
	case StaleLinks:
		return "stalelinks"
	}
	return fmt.Sprintf("kind %d", int(k))
}

// node is a loopback node with the kind's mistakes.
type node struct {
	fs.LoopbackNode
	kind Kind
}

var (
	_ fs.NodeOpener  = (*node)(nil)
	_ fs.NodeCreater = (*node)(nil)
	_ fs.NodeLinker  = (*node)(nil)
)

// openFlags are the FOPEN_ flags of every open of the kind.
func (n *node) openFlags() uint32 {
	switch n.kind {
	case DirectIO:
		return fuse.FOPEN_DIRECT_IO
	case StaleLinks:
		return fuse.FOPEN_KEEP_CACHE
	}
	return 0
}

// Open opens as the loopback does, with the kind's flags.
func (n *node) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	fh, fl, errno := n.LoopbackNode.Open(ctx, flags)
	return fh, fl | n.openFlags(), errno
}

// Create creates as the loopback does, with the kind's flags.
func (n *node) Create(ctx context.Context, name string, flags uint32, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	in, fh, fl, errno := n.LoopbackNode.Create(ctx, name, flags, mode, out)
	return in, fh, fl | n.openFlags(), errno
}

// Link links as the loopback does; StaleLinks gives the new name an inode
// of its own, numbered from its path.
func (n *node) Link(ctx context.Context, target fs.InodeEmbedder, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if n.kind != StaleLinks {
		return n.LoopbackNode.Link(ctx, target, name, out)
	}
	root := n.Root()
	p := filepath.Join(n.RootData.Path, n.Path(root), name)
	old := filepath.Join(n.RootData.Path, target.EmbeddedInode().Path(root))
	if err := syscall.Link(old, p); err != nil {
		return nil, fs.ToErrno(err)
	}
	var st syscall.Stat_t
	if err := syscall.Lstat(p, &st); err != nil {
		return nil, fs.ToErrno(err)
	}
	h := fnv.New64a()
	h.Write([]byte(p))
	ino := h.Sum64() | 1<<63
	out.Attr.FromStat(&st)
	out.Attr.Ino = ino
	child := &node{LoopbackNode: fs.LoopbackNode{RootData: n.RootData}, kind: n.kind}
	return n.NewInode(ctx, child, fs.StableAttr{Mode: st.Mode, Ino: ino}), 0
}

// Mount serves orig at mnt as kind, for every user (allow_other, which
// needs root or user_allow_other), until the returned server is
// unmounted.
func Mount(mnt, orig string, kind Kind) (*fuse.Server, error) {
	var st syscall.Stat_t
	if err := syscall.Stat(orig, &st); err != nil {
		return nil, fmt.Errorf("brokenfs %s: %w", kind, &os.PathError{Op: "stat", Path: orig, Err: err})
	}
	data := &fs.LoopbackRoot{Path: orig, Dev: uint64(st.Dev)}
	data.NewNode = func(r *fs.LoopbackRoot, _ *fs.Inode, _ string, _ *syscall.Stat_t) fs.InodeEmbedder {
		return &node{LoopbackNode: fs.LoopbackNode{RootData: r}, kind: kind}
	}
	root := &node{LoopbackNode: fs.LoopbackNode{RootData: data}, kind: kind}
	data.RootNode = root
	timeout := time.Second
	if kind == StaleLinks {
		timeout = time.Hour
	}
	opts := &fs.Options{
		AttrTimeout:     &timeout,
		EntryTimeout:    &timeout,
		NullPermissions: true,
		MountOptions: fuse.MountOptions{
			AllowOther:               true,
			FsName:                   orig,
			Name:                     "brokenfs-" + kind.String(),
			DisabledCapabilities:     fuse.CAP_PASSTHROUGH,
			ExplicitDataCacheControl: kind == StaleLinks,
		},
	}
	server, err := fs.Mount(mnt, root, opts)
	if err != nil {
		return nil, fmt.Errorf("brokenfs %s: mounting %s at %s: %w", kind, orig, mnt, err)
	}
	return server, nil
}
