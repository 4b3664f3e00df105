package fs

import (
	"syscall"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// killprivFS takes over from the kernel the clearing of setuid and setgid
// bits when an unprivileged caller writes or truncates a file
// (CAP_HANDLE_KILLPRIV_V2). Without it, the kernel asks the daemon for the
// security.capability xattr before every write to decide itself: a round
// trip per write(2). With it, the kernel flags the requests that must
// clear the bits (WRITE_KILL_SUIDGID on WRITE, OPEN_KILL_SUIDGID on an
// O_TRUNC OPEN or CREATE, FATTR_KILL_SUIDGID on a truncating SETATTR) and
// this wrapper clears them after the request succeeds. The capability
// xattr, which the kernel no longer removes either, is removed by the Blob
// on its first write (see backing.Blob.WriteAt).
//
// go-fuse hands file handles none of these flags, so this sits at the raw
// protocol level, where the requests carry them.
type killprivFS struct {
	fuse.RawFileSystem
}

// killSuidgid clears the setuid and setgid bits. The kernel flags a
// request only when its caller may not keep them (no CAP_FSETID; for
// setgid, not in the file's group either), as file_remove_privs decides
// for a local filesystem.
func (k *killprivFS) killSuidgid(cancel <-chan struct{}, hdr fuse.InHeader, nodeID uint64) {
	hdr.NodeId = nodeID
	var attr fuse.AttrOut
	if st := k.RawFileSystem.GetAttr(cancel, &fuse.GetAttrIn{InHeader: hdr}, &attr); st != fuse.OK {
		return
	}
	kill := attr.Mode & (syscall.S_ISUID | syscall.S_ISGID)
	if kill == 0 {
		return
	}
	in := fuse.SetAttrIn{SetAttrInCommon: fuse.SetAttrInCommon{
		InHeader: hdr,
		Valid:    fuse.FATTR_MODE,
		Mode:     attr.Mode &^ kill & 0o7777,
	}}
	// Errors are logged at the boundary inside SetAttr; the write
	// itself succeeded and is not undone.
	k.RawFileSystem.SetAttr(cancel, &in, &attr)
}

// go-fuse serves WRITE through Writev, and through Write only where Writev
// says ENOSYS; both clear the bits the request asks for.

func (k *killprivFS) Writev(cancel <-chan struct{}, in *fuse.WriteIn, data [][]byte) (uint32, fuse.Status) {
	n, st := k.RawFileSystem.Writev(cancel, in, data)
	if st == fuse.OK && in.WriteFlags&fuse.WRITE_KILL_SUIDGID != 0 {
		k.killSuidgid(cancel, in.InHeader, in.NodeId)
	}
	return n, st
}

func (k *killprivFS) Write(cancel <-chan struct{}, in *fuse.WriteIn, data []byte) (uint32, fuse.Status) {
	n, st := k.RawFileSystem.Write(cancel, in, data)
	if st == fuse.OK && in.WriteFlags&fuse.WRITE_KILL_SUIDGID != 0 {
		k.killSuidgid(cancel, in.InHeader, in.NodeId)
	}
	return n, st
}

func (k *killprivFS) Open(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	st := k.RawFileSystem.Open(cancel, in, out)
	if st == fuse.OK && in.Mode&fuse.OPEN_KILL_SUIDGID != 0 {
		k.killSuidgid(cancel, in.InHeader, in.NodeId)
	}
	return st
}

func (k *killprivFS) Create(cancel <-chan struct{}, in *fuse.CreateIn, name string, out *fuse.CreateOut) fuse.Status {
	st := k.RawFileSystem.Create(cancel, in, name, out)
	if st == fuse.OK && in.OpenFlags&fuse.OPEN_KILL_SUIDGID != 0 {
		k.killSuidgid(cancel, in.InHeader, out.NodeId)
		// The attributes returned describe the file before the kill.
		out.AttrValid, out.AttrValidNsec = 0, 0
	}
	return st
}

func (k *killprivFS) SetAttr(cancel <-chan struct{}, in *fuse.SetAttrIn, out *fuse.AttrOut) fuse.Status {
	st := k.RawFileSystem.SetAttr(cancel, in, out)
	if st == fuse.OK && in.Valid&fuse.FATTR_KILL_SUIDGID != 0 && in.Valid&fuse.FATTR_MODE == 0 {
		k.killSuidgid(cancel, in.InHeader, in.NodeId)
		st = k.RawFileSystem.GetAttr(cancel, &fuse.GetAttrIn{InHeader: in.InHeader}, out)
	}
	return st
}
