package backing

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
)

// File flags: an immutable file (chattr +i, FS_IMMUTABLE_FL) takes no
// change at all; an append-only file (chattr +a, FS_APPEND_FL) takes only
// appends. The store's filesystem enforces both on every open, name
// operation and attribute change the daemon makes, and the rules are its
// own (measured on ext4):
//
//   - opens: +i refuses every writable open and O_TRUNC (EPERM); +a refuses
//     a writable open without O_APPEND and O_TRUNC (EPERM);
//   - a descriptor opened before the flag keeps its access: write, pwrite,
//     ftruncate and fallocate on it get EPERM under +i; under +a it may
//     still write anywhere (Linux checks append-only at open), ftruncate
//     and hole punching are EPERM, plain fallocate works;
//   - mmap(MAP_SHARED) of a descriptor open for writing on a +a file is
//     EACCES whatever the protection; a mapping made before the flag keeps
//     working, except that a write fault on a page of an immutable file
//     raises SIGBUS;
//   - utimensat with explicit times is EPERM under both; +a still takes
//     UTIME_NOW.
//
// What the daemon does on top, since it keeps a descriptor and a writable
// mapping per blob that outlive the flag:
//
//   - Blob.flags caches the file's flags: learned at acquire when the
//     O_RDWR open is refused (a writable open that succeeds proves the file
//     has neither flag), when a write fault or an EPERM from pwrite or
//     ftruncate shows that the file changed behind the daemon, and at
//     every FS_IOC_SETFLAGS or FS_IOC_FSSETXATTR that goes through the
//     mount (Blob.FileAttr, which holds the blob exclusively, so that no
//     write through the mapping straddles the change). WriteAt, Truncate and Allocate load it once,
//     atomically: the hot path pays one load.
//   - Immutable: every write, truncate and fallocate is EPERM, checked
//     before the mapping is touched (a write into a page already writable
//     in the mapping would otherwise succeed where write(2) is refused).
//   - Append-only: the blob is never written through its mapping. A blob
//     first opened while the file is append-only is mapped read-only from
//     an O_RDONLY descriptor (a shared mapping of a writable descriptor is
//     refused) and keeps a second descriptor, afd, opened O_WRONLY|O_APPEND
//     (by /proc/self/fd from the first, so that it is the same file); every
//     write is write(2) on afd, which lands at the end of the file, and the
//     mapping grows after it. A write at the end appends; a write starting
//     below the end whose bytes below the end are what the file holds
//     there (a page the kernel sends again, under the writeback cache)
//     appends only the rest; any other write below or past the end is
//     EPERM, since it would change what an append-only file keeps, or put
//     the bytes where the writer did not ask. A blob that was writable
//     before the file became append-only still has its O_RDWR descriptor,
//     to which ext4 allows any write: it writes with pwrite(2) at the
//     requested offset (ftruncate, which growing the mapping ahead of a
//     copy needs, is refused, and so would be applying the write's mtime
//     later; write(2) sets size and mtime itself).
//   - Dirty ledger and policies: a write(2) on afd dirties pages that the
//     read-only mapping cannot msync (msync syncs only a mapping of a
//     writable descriptor), so such pages are made durable by fdatasync of
//     the blob: they are counted dirty and at risk as any other, and Sync
//     fdatasyncs where it would msync.
//   - The power-cut simulation saves pages before an append as before a
//     write; putting back an immutable or append-only file needs the
//     flags lifted (ftruncate and pwrite are refused), so the cut clears
//     them, puts the pages back and sets them again (liftFlags; the daemon
//     needs CAP_LINUX_IMMUTABLE for that, as for chattr).
//   - A file made immutable behind the daemon while mapped: a write into a
//     page still writable in the mapping lands (and is written back as any
//     dirty page is); one that faults is turned into EPERM by the fault
//     path, which then learns the flags. A pending mtime that the file now
//     refuses is dropped (the kernel would have set it at write time,
//     before the flag). Nothing is lost and nothing kills the daemon.
//   - A blob with an append descriptor, or whose file carries a flag, is
//     never dropped by the residency sweep: it could not be reopened
//     O_RDWR by handle.

// Bits of Blob.flags.
const (
	flagImmutable uint32 = 1 << iota // the file is immutable (STATX_ATTR_IMMUTABLE)
	flagAppend                       // the file is append-only (STATX_ATTR_APPEND)
	flagViaAppend                    // the blob is written through afd (it is not writable)
)

// The fsxattr ioctls, _IOR('X', 31, struct fsxattr) and _IOW('X', 32,
// struct fsxattr), which x/sys/unix does not define, and the size of
// struct fsxattr.
const (
	fsIocFsGetXattr = 0x801c581f
	fsIocFsSetXattr = 0x401c5820
	fsxattrSize     = 28

	fsImmutableFl = 0x10 // FS_IMMUTABLE_FL, chattr +i
	fsAppendFl    = 0x20 // FS_APPEND_FL, chattr +a
)

// FileAttrSizes returns, for one of the file-attribute ioctls
// (FS_IOC_GETFLAGS, FS_IOC_SETFLAGS, FS_IOC_FSGETXATTR, FS_IOC_FSSETXATTR),
// how many bytes it takes in and gives out, and whether cmd is one of
// them.
func FileAttrSizes(cmd uint32) (in, out int, ok bool) {
	switch cmd {
	case unix.FS_IOC_GETFLAGS:
		return 0, 4, true
	case unix.FS_IOC_SETFLAGS:
		return 4, 0, true
	case fsIocFsGetXattr:
		return 0, fsxattrSize, true
	case fsIocFsSetXattr:
		return fsxattrSize, 0, true
	}
	return 0, 0, false
}

// fileAttrSets reports whether cmd changes the file's attributes.
func fileAttrSets(cmd uint32) bool {
	return cmd == unix.FS_IOC_SETFLAGS || cmd == fsIocFsSetXattr
}

// fileAttrName names a file-attribute ioctl in messages.
func fileAttrName(cmd uint32) string {
	switch cmd {
	case unix.FS_IOC_GETFLAGS:
		return "FS_IOC_GETFLAGS"
	case unix.FS_IOC_SETFLAGS:
		return "FS_IOC_SETFLAGS"
	case fsIocFsGetXattr:
		return "FS_IOC_FSGETXATTR"
	case fsIocFsSetXattr:
		return "FS_IOC_FSSETXATTR"
	}
	return "ioctl 0x" + strconv.FormatUint(uint64(cmd), 16)
}

// FileAttr does the file-attribute ioctl cmd on fd, a descriptor of a
// regular file or directory of the store: in holds what a SET command
// takes (at least FileAttrSizes' in bytes), out receives what a GET
// command gives. name labels errors. Any other cmd is ENOTTY. The store's
// filesystem decides (EPERM without CAP_LINUX_IMMUTABLE, EOPNOTSUPP for a
// flag it does not have).
func FileAttr(fd int, name string, cmd uint32, in, out []byte) error {
	wantIn, wantOut, ok := FileAttrSizes(cmd)
	if !ok {
		return &os.PathError{Op: fileAttrName(cmd), Path: name, Err: syscall.ENOTTY}
	}
	if len(in) < wantIn || len(out) < wantOut {
		return &os.PathError{Op: fileAttrName(cmd), Path: name, Err: fmt.Errorf("%d bytes in and %d out, want %d and %d: %w", len(in), len(out), wantIn, wantOut, syscall.EINVAL)}
	}
	var err error
	switch cmd {
	case unix.FS_IOC_GETFLAGS:
		var v uint32
		if v, err = unix.IoctlGetUint32(fd, unix.FS_IOC_GETFLAGS); err == nil {
			binary.NativeEndian.PutUint32(out, v)
		}
	case unix.FS_IOC_SETFLAGS:
		err = unix.IoctlSetPointerInt(fd, unix.FS_IOC_SETFLAGS, int(int32(binary.NativeEndian.Uint32(in))))
	case fsIocFsGetXattr:
		err = ioctlBuf(fd, fsIocFsGetXattr, out[:fsxattrSize])
	case fsIocFsSetXattr:
		// The kernel only reads it; a copy keeps the caller's buffer
		// out of the system call.
		err = ioctlBuf(fd, fsIocFsSetXattr, bytes.Clone(in[:fsxattrSize]))
	}
	if err != nil {
		return &os.PathError{Op: fileAttrName(cmd), Path: name, Err: err}
	}
	return nil
}

// FileAttr does a file-attribute ioctl (see the package function) on the
// blob's descriptor. A SET holds the blob exclusively and applies a
// pending mtime first (an immutable or append-only file would refuse it
// later); then the blob learns the file's flags, so that its next write
// obeys them.
func (b *Blob) FileAttr(cmd uint32, in, out []byte) error {
	if !fileAttrSets(cmd) {
		if err := b.rlock(); err != nil {
			return err
		}
		defer b.mu.RUnlock()
		return FileAttr(b.fd, b.name, cmd, in, out)
	}
	if err := b.lock(); err != nil {
		return err
	}
	defer b.mu.Unlock()
	if err := b.applyMtimeLocked(); err != nil {
		return err
	}
	err := FileAttr(b.fd, b.name, cmd, in, out)
	// Even a refused SET may follow a change made behind the daemon.
	return errors.Join(err, b.refreshFlagsLocked())
}

// AppendAt is WriteAt for a client descriptor opened while the file was
// append-only: while it still is, the write may only append (as
// writeFlagged decides for an append-only blob), even when the blob's own
// descriptor predates the flag and could write anywhere. Once the flag is
// gone it is WriteAt.
func (b *Blob) AppendAt(p []byte, off int64) (int, error) {
	if !b.AppendOnly() {
		return b.WriteAt(p, off)
	}
	if off < 0 {
		return 0, b.pathErr("write", syscall.EINVAL)
	}
	if len(p) == 0 {
		return 0, nil
	}
	if end := off + int64(len(p)); end > MaxFileSize || end < off {
		return 0, b.pathErr("write", fmt.Errorf("offset %d + %d bytes is past the maximum file size %d: %w", off, len(p), MaxFileSize, syscall.EFBIG))
	}
	if err := b.injectFault("write", len(p)); err != nil {
		return 0, err
	}
	return b.writeFlagged(p, off, true)
}

// AppendOnly reports whether the blob's file is append-only (chattr +a)
// as far as the blob knows.
func (b *Blob) AppendOnly() bool { return b.flags.Load()&flagAppend != 0 }

// fileFlags returns the immutable and append-only bits of the file open on
// fd, from statx, which every filesystem answers (FS_IOC_GETFLAGS is not
// everywhere).
func fileFlags(fd int) (uint32, error) {
	var st unix.Statx_t
	if err := unix.Statx(fd, "", unix.AT_EMPTY_PATH, 0, &st); err != nil {
		return 0, err
	}
	var f uint32
	if st.Attributes&unix.STATX_ATTR_IMMUTABLE != 0 {
		f |= flagImmutable
	}
	if st.Attributes&unix.STATX_ATTR_APPEND != 0 {
		f |= flagAppend
	}
	return f, nil
}

// refreshFlagsLocked reads the file's flags into b.flags, keeping
// flagViaAppend. b.mu must be held exclusively (or the blob not yet
// shared).
func (b *Blob) refreshFlagsLocked() error {
	f, err := fileFlags(b.fd)
	if err != nil {
		return b.pathErr("statx", err)
	}
	b.flags.Store(f | b.flags.Load()&flagViaAppend)
	return nil
}

// refreshFlags is refreshFlagsLocked taking b.mu.
func (b *Blob) refreshFlags() error {
	if err := b.lock(); err != nil {
		return err
	}
	defer b.mu.Unlock()
	return b.refreshFlagsLocked()
}

// flagErr returns the error a change of the file gets under flags f
// (immutable: anything; append-only: what append allows not), or nil.
func (b *Blob) flagErr(op string, f uint32) error {
	switch {
	case f&flagImmutable != 0:
		return b.pathErr(op, fmt.Errorf("the file is immutable (chattr +i): %w", syscall.EPERM))
	case f&flagAppend != 0:
		return b.pathErr(op, fmt.Errorf("the file is append-only (chattr +a): %w", syscall.EPERM))
	}
	return nil
}

// reopenFd opens the file open on fd again, with flags (O_CLOEXEC added),
// through its /proc/self/fd link: the same file whatever its name is now,
// with the open checked as any other (an append-only file refuses a
// writable open without O_APPEND).
func reopenFd(fd int, name string, flags int) (int, error) {
	nfd, err := unix.Open("/proc/self/fd/"+strconv.Itoa(fd), flags|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, &os.PathError{Op: "open", Path: name, Err: err}
	}
	return nfd, nil
}

// writeFdLocked returns the descriptor that changes the file: the blob's
// own when it is writable, else its append descriptor, else -1. b.mu must
// be held.
func (b *Blob) writeFdLocked() int {
	if b.writable {
		return b.fd
	}
	return b.afd
}

// writeFlagged is WriteAt for a blob whose file carries a flag or which is
// written through its append descriptor (see the top of this file).
// onlyAppend is set for a write through a descriptor opened while the
// file was append-only (AppendAt): it may only append, even through a
// blob whose own descriptor predates the flag.
func (b *Blob) writeFlagged(p []byte, off int64, onlyAppend bool) (int, error) {
	if _, err := b.beginChange("write", true, flagImmutable, false); err != nil {
		return 0, err
	}
	n, at, written, extended, err := b.writeFlaggedLocked(p, off, onlyAppend)
	// Pages written with write(2) through a blob that is not writable
	// cannot be msynced through its read-only mapping: they count as a
	// size change too, so that Sync fdatasyncs them. (The system call
	// set the mtime itself: none is left pending.)
	meta := extended || !b.writable
	b.mu.Unlock()
	if written > 0 {
		b.dirtyLedger(at, at+int64(written), meta)
	}
	if err != nil {
		return n, err
	}
	if written == 0 {
		return n, nil
	}
	return n, b.afterWrite(at, at+int64(written), extended)
}

// writeFlaggedLocked does writeFlagged under b.mu (held exclusively, past
// beginChange: not cut, not immutable, a descriptor that writes). It
// returns the bytes of p accounted for (n), where the bytes it wrote
// landed (at, written of them) and whether that extended the file.
func (b *Blob) writeFlaggedLocked(p []byte, off int64, onlyAppend bool) (n int, at int64, written int, extended bool, err error) {
	var skip int
	if b.writable && !onlyAppend {
		// A descriptor from before the file became append-only:
		// ext4 lets it write anywhere. pwrite(2) sets the size and
		// the mtime itself.
		at = off
		if err := b.simSave(off, off+int64(len(p))); err != nil {
			return 0, 0, 0, false, err
		}
		written, err = pwriteAll(b.fd, p, off)
		if err != nil {
			err = b.pathErr("write", fmt.Errorf("pwrite at %d: %w", off+int64(written), err))
		}
	} else {
		// Only appends: through afd (not writable, past beginChange),
		// or at the end through the blob's own descriptor from before
		// the flag, for a client descriptor opened after it.
		if off > b.size {
			return 0, 0, 0, false, b.pathErr("write", fmt.Errorf("at %d, past the end %d of an append-only file (chattr +a): %w", off, b.size, syscall.EPERM))
		}
		if off < b.size {
			// Only what the file already holds may be sent again.
			skip = int(min(int64(len(p)), b.size-off))
			have := make([]byte, skip)
			if _, err := preadAll(b.fd, have, off); err != nil {
				return 0, 0, 0, false, b.pathErr("write", fmt.Errorf("reading back bytes %d-%d of an append-only file: %w", off, off+int64(skip), err))
			}
			if !bytes.Equal(have, p[:skip]) {
				return 0, 0, 0, false, b.pathErr("write", fmt.Errorf("at %d, below the end %d of an append-only file (chattr +a), would change its bytes: %w", off, b.size, syscall.EPERM))
			}
			if skip == len(p) {
				return len(p), 0, 0, false, nil
			}
		}
		rest := p[skip:]
		if err := b.simSave(b.size, b.size+int64(len(rest))); err != nil {
			return 0, 0, 0, false, err
		}
		if b.writable {
			at = b.size
			written, err = pwriteAll(b.fd, rest, at)
			if err != nil {
				err = b.pathErr("write", fmt.Errorf("appending %d bytes: %w", len(rest)-written, err))
			}
		} else {
			written, err = writeAll(b.afd, rest)
			if err != nil {
				err = b.pathErr("write", fmt.Errorf("appending %d bytes: %w", len(rest)-written, err))
			}
			at = b.size
		}
		if written > 0 && !b.writable {
			// O_APPEND put it at the end of the file as it is,
			// which a writer behind the daemon may have moved: the
			// descriptor's offset says where. (lseek of a regular
			// file does not fail; if it did, b.size is where the
			// write would have landed without such a writer.)
			if pos, serr := unix.Seek(b.afd, 0, unix.SEEK_CUR); serr == nil {
				at = pos - int64(written)
			}
		}
	}
	if written > 0 {
		// What the kernel just set is newer than any pending mtime,
		// and the write removed the file's capabilities itself
		// (file_remove_privs).
		b.mtime.Store(0)
		b.caps.Store(false)
		if end := at + int64(written); end > b.size {
			extended = true
			if cerr := b.ensureCapLocked(end); cerr != nil {
				err = errors.Join(err, cerr)
				b.refreshSizeLocked()
			} else {
				b.size = end
			}
		}
	}
	if err != nil {
		if errors.Is(err, syscall.EPERM) {
			// Flagged behind the daemon since it last looked.
			err = errors.Join(err, b.refreshFlagsLocked())
		}
		return skip + written, at, written, extended, err
	}
	return skip + written, at, written, extended, nil
}

// attachAppend gives a read-only blob the append descriptor afd, which it
// then owns; it reports whether it took it (not when the blob is writable
// or has one already).
func (b *Blob) attachAppend(afd int) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.writable || b.afd >= 0 {
		return false
	}
	b.afd = afd
	b.flags.Store(b.flags.Load() | flagViaAppend)
	return true
}

// mtimeRefused reports whether err, from applying a pending mtime, is the
// file refusing it because it became immutable or append-only behind the
// daemon. b.mu may be held shared: the flags are left for the next
// change to learn.
func (b *Blob) mtimeRefused(err error) bool {
	if !errors.Is(err, syscall.EPERM) {
		return false
	}
	f, ferr := fileFlags(b.fd)
	return ferr == nil && f&(flagImmutable|flagAppend) != 0
}

// faultFlagsLocked is called after a write into the mapping faulted: if the file
// became immutable or append-only behind the daemon (the kernel refuses
// the write fault), the blob learns it and the write gets EPERM. b.mu
// must be held exclusively.
func (b *Blob) faultFlagsLocked(off int64) error {
	f, err := fileFlags(b.fd)
	if err != nil || f&(flagImmutable|flagAppend) == 0 {
		return nil
	}
	b.flags.Store(f | b.flags.Load()&flagViaAppend)
	what := "immutable (chattr +i)"
	if f&flagImmutable == 0 {
		what = "append-only (chattr +a)"
	}
	return b.pathErr("write", fmt.Errorf("fault at offset %d: the file was made %s behind mmapfs's back: %w", off, what, syscall.EPERM))
}

// liftFlags runs fn with a writable descriptor of the file open on fd
// (which may be read-only), clearing its immutable and append-only flags
// for the while if it has them, and setting them again after: the power
// cut puts back files whatever their flags, as a real one would.
func liftFlags(fd int, name string, fn func(wfd int) error) (err error) {
	flags, gerr := unix.IoctlGetUint32(fd, unix.FS_IOC_GETFLAGS)
	lift := gerr == nil && flags&(fsImmutableFl|fsAppendFl) != 0
	if lift {
		if err := unix.IoctlSetPointerInt(fd, unix.FS_IOC_SETFLAGS, int(int32(flags&^(fsImmutableFl|fsAppendFl)))); err != nil {
			return &os.PathError{Op: "power cut: clearing the immutable and append-only flags", Path: name, Err: err}
		}
		defer func() {
			if serr := unix.IoctlSetPointerInt(fd, unix.FS_IOC_SETFLAGS, int(int32(flags))); serr != nil {
				err = errors.Join(err, &os.PathError{Op: "power cut: setting the flags back", Path: name, Err: serr})
			}
		}()
	}
	wfd, err := reopenFd(fd, name, unix.O_RDWR)
	if err != nil {
		return err
	}
	err = fn(wfd)
	if cerr := syscall.Close(wfd); cerr != nil {
		err = errors.Join(err, &os.PathError{Op: "close", Path: name, Err: cerr})
	}
	return err
}

// pwriteAll writes all of p at off, as far as the file takes it.
func pwriteAll(fd int, p []byte, off int64) (int, error) {
	return allOf(p, func(rest []byte, done int) (int, error) { return unix.Pwrite(fd, rest, off+int64(done)) })
}

// writeAll writes all of p with write(2).
func writeAll(fd int, p []byte) (int, error) {
	return allOf(p, func(rest []byte, _ int) (int, error) { return unix.Write(fd, rest) })
}

// preadAll fills p from off; a short file is EIO (the caller read below
// the size it knows).
func preadAll(fd int, p []byte, off int64) (int, error) {
	return allOf(p, func(rest []byte, done int) (int, error) { return unix.Pread(fd, rest, off+int64(done)) })
}

// allOf repeats io, one read or write of rest (what is left of p, after
// done bytes), until all of p is done, and returns how many bytes were.
// EINTR is tried again; a call that moves nothing is EIO.
func allOf(p []byte, io func(rest []byte, done int) (int, error)) (int, error) {
	n := 0
	for n < len(p) {
		m, err := io(p[n:], n)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return n, err
		}
		if m == 0 {
			return n, syscall.EIO
		}
		n += m
	}
	return n, nil
}
