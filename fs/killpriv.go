package fs

import (
	"syscall"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// killprivFS takes over from the kernel the clearing of setuid and setgid
// bits when an unprivileged caller writes or truncates a file, and when
// anyone changes a file's owner (CAP_HANDLE_KILLPRIV_V2). Without it, the
// kernel asks the daemon for the security.capability xattr before every
// write to decide itself: a round trip per write(2). With it, the kernel
// flags the requests that may have to clear the bits (WRITE_KILL_SUIDGID
// on WRITE, OPEN_KILL_SUIDGID on an O_TRUNC OPEN or CREATE,
// FATTR_KILL_SUIDGID on a truncating SETATTR, all three only when the
// caller lacks CAP_FSETID; and FATTR_KILL_SUIDGID on every chown of a
// non-directory), and this wrapper clears them after the request succeeds
// as the kernel does for a local filesystem (setattr_should_drop_suidgid,
// setattr_should_drop_sgid): the setuid bit always; the setgid bit only
// when the file is group-executable, or when the caller is neither in the
// file's group nor (on chown) holds CAP_FSETID. The setgid bit without
// group-execute is not a privilege but the mandatory-locking mark, and
// ext4 keeps it. The caller's groups and capabilities come from
// /proc/PID/status; when they cannot be read the bit is cleared. The
// capability xattr, which the kernel no longer removes either, is removed
// by the Blob on its first write (see backing.Blob.WriteAt).
//
// go-fuse hands file handles none of these flags, so this sits at the raw
// protocol level, where the requests carry them.
type killprivFS struct {
	fuse.RawFileSystem
}

// killRule says how a flagged request decides the setgid bit.
type killRule int

const (
	// killWrite: a write or truncate; the kernel flagged it because the
	// caller lacks CAP_FSETID.
	killWrite killRule = iota
	// killChown: a chown, flagged whatever the caller holds.
	killChown
)

// killBits returns the bits a flagged request clears from a file of mode
// mode and group gid (before the request), for the caller pid.
func killBits(rule killRule, mode, gid, pid uint32) uint32 {
	kill := mode & syscall.S_ISUID
	if mode&syscall.S_ISGID == 0 {
		return kill
	}
	if mode&syscall.S_IXGRP != 0 {
		return kill | syscall.S_ISGID
	}
	c, err := readCallerCreds(pid)
	if err != nil {
		return kill | syscall.S_ISGID // cannot tell: as if neither
	}
	if c.inGroup(gid) || (rule == killChown && c.capable(unix.CAP_FSETID)) {
		return kill
	}
	return kill | syscall.S_ISGID
}

// getattr returns the node's attributes, or false.
func (k *killprivFS) getattr(cancel <-chan struct{}, hdr fuse.InHeader, nodeID uint64) (fuse.Attr, bool) {
	hdr.NodeId = nodeID
	var attr fuse.AttrOut
	if st := k.RawFileSystem.GetAttr(cancel, &fuse.GetAttrIn{InHeader: hdr}, &attr); st != fuse.OK {
		return fuse.Attr{}, false
	}
	return attr.Attr, true
}

// clearBits clears the bits of kill that the file, whose attributes are
// attr now, has; it reports whether it changed the mode.
func (k *killprivFS) clearBits(cancel <-chan struct{}, hdr fuse.InHeader, nodeID uint64, attr *fuse.Attr, kill uint32) bool {
	if attr.Mode&kill == 0 {
		return false
	}
	hdr.NodeId = nodeID
	in := fuse.SetAttrIn{SetAttrInCommon: fuse.SetAttrInCommon{
		InHeader: hdr,
		Valid:    fuse.FATTR_MODE,
		Mode:     attr.Mode &^ kill & 0o7777,
	}}
	// Errors are logged at the boundary inside SetAttr; the request
	// itself succeeded and is not undone.
	var out fuse.AttrOut
	return k.RawFileSystem.SetAttr(cancel, &in, &out) == fuse.OK
}

// killAfterWrite clears the bits a write or truncate by an unprivileged
// caller clears, from a file whose attributes are attr (nil: ask).
func (k *killprivFS) killAfterWrite(cancel <-chan struct{}, hdr fuse.InHeader, nodeID uint64, attr *fuse.Attr) bool {
	if attr == nil {
		a, ok := k.getattr(cancel, hdr, nodeID)
		if !ok {
			return false
		}
		attr = &a
	}
	return k.clearBits(cancel, hdr, nodeID, attr, killBits(killWrite, attr.Mode, attr.Gid, hdr.Pid))
}

// go-fuse serves WRITE through Writev, and through Write only where Writev
// says ENOSYS; both clear the bits the request asks for.

func (k *killprivFS) Writev(cancel <-chan struct{}, in *fuse.WriteIn, data [][]byte) (uint32, fuse.Status) {
	n, st := k.RawFileSystem.Writev(cancel, in, data)
	if st == fuse.OK && in.WriteFlags&fuse.WRITE_KILL_SUIDGID != 0 {
		k.killAfterWrite(cancel, in.InHeader, in.NodeId, nil)
	}
	return n, st
}

func (k *killprivFS) Write(cancel <-chan struct{}, in *fuse.WriteIn, data []byte) (uint32, fuse.Status) {
	n, st := k.RawFileSystem.Write(cancel, in, data)
	if st == fuse.OK && in.WriteFlags&fuse.WRITE_KILL_SUIDGID != 0 {
		k.killAfterWrite(cancel, in.InHeader, in.NodeId, nil)
	}
	return n, st
}

func (k *killprivFS) Open(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	st := k.RawFileSystem.Open(cancel, in, out)
	if st == fuse.OK && in.Mode&fuse.OPEN_KILL_SUIDGID != 0 {
		k.killAfterWrite(cancel, in.InHeader, in.NodeId, nil)
	}
	return st
}

func (k *killprivFS) Create(cancel <-chan struct{}, in *fuse.CreateIn, name string, out *fuse.CreateOut) fuse.Status {
	st := k.RawFileSystem.Create(cancel, in, name, out)
	if st == fuse.OK && in.OpenFlags&fuse.OPEN_KILL_SUIDGID != 0 {
		if k.killAfterWrite(cancel, in.InHeader, out.NodeId, &out.Attr) {
			// The attributes returned describe the file before the kill.
			out.AttrValid, out.AttrValidNsec = 0, 0
		}
	}
	return st
}

func (k *killprivFS) SetAttr(cancel <-chan struct{}, in *fuse.SetAttrIn, out *fuse.AttrOut) fuse.Status {
	if in.Valid&fuse.FATTR_KILL_SUIDGID == 0 || in.Valid&fuse.FATTR_MODE != 0 {
		return k.RawFileSystem.SetAttr(cancel, in, out)
	}
	if in.Valid&(fuse.FATTR_UID|fuse.FATTR_GID) == 0 {
		// A truncate: out describes the file after it.
		st := k.RawFileSystem.SetAttr(cancel, in, out)
		if st == fuse.OK && k.killAfterWrite(cancel, in.InHeader, in.NodeId, &out.Attr) {
			st = k.RawFileSystem.GetAttr(cancel, &fuse.GetAttrIn{InHeader: in.InHeader}, out)
		}
		return st
	}
	// A chown: the kernel decides on the group the file has before it.
	before, ok := k.getattr(cancel, in.InHeader, in.NodeId)
	st := k.RawFileSystem.SetAttr(cancel, in, out)
	if st == fuse.OK && ok && k.clearBits(cancel, in.InHeader, in.NodeId, &out.Attr, killBits(killChown, before.Mode, before.Gid, in.Pid)) {
		st = k.RawFileSystem.GetAttr(cancel, &fuse.GetAttrIn{InHeader: in.InHeader}, out)
	}
	return st
}
