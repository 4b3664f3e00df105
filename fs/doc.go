// Package fs is the FUSE side of mmapfs: a go-fuse node tree over a store
// directory, with one node type of its own and package backing's shared
// mappings as its data path.
//
// Node (node.go) is every file, directory, symlink and special file of
// the mount; the stats and control files at the root are the only other
// nodes (statsfile.go, control.go; what they say, and the one list of
// figures behind the stats, the metrics and `mmapfs stats`, are package
// fs/wire's). Node embeds go-fuse's fs.Inode and implements each
// operation itself. The namespace operations (namespace.go: lookup,
// mkdir, mknod, symlink, link, unlink, rmdir, rename, readlink, readdir,
// statfs, statx, xattrs; ioctl.go: file flags) act with the *at system
// calls on O_PATH descriptors of directories opened beneath the store
// root by openat2(RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS)
// (backing.Store.OpenDir, cached in dircache.go), never following a
// symlink; directories, names, links, symlinks, permissions and xattrs
// stay in the store directory as its filesystem keeps them. Every
// regular file opened on the mount is served by one backing.Blob per
// backing inode: reads copy out of its MAP_SHARED mapping, writes copy
// into it, fsync msyncs the pages written, truncate and fallocate resize
// it.
//
// Node does not build on go-fuse's LoopbackNode, which it once embedded:
// the loopback resolves path strings from the root and follows symlinks
// planted in the store, and a method a later go-fuse adds to it would be
// inherited silently and resolve names that way. Of the loopback's
// methods Node implements every one (Lookup, Mknod, Mkdir, Rmdir, Unlink,
// Rename, Create, Symlink, Link, Readlink, Open, OpendirHandle, Readdir,
// Getattr, Setattr, Getxattr, Setxattr, Removexattr, Listxattr,
// CopyFileRange, Tmpfile, Statx, Statfs), each with its interface check
// beside it, and the node numbers are the loopback's (stableAttr).
// TestNodeCoversLoopback fails when a later go-fuse gives the loopback a
// method Node lacks, until it is implemented or dropped here with the
// reason. Operations neither implements are go-fuse's defaults, as they
// were: ACCESS is checked against Getattr's mode and owner (and with
// default_permissions the kernel checks before asking); POSIX and flock
// locks never reach the daemon: the mount leaves go-fuse's EnableLocks
// off, so the kernel is not offered the lock capabilities and keeps the
// locks for the mount itself (the README's Limits); FSYNCDIR fsyncs the
// directory stream's descriptor; LSEEK with SEEK_DATA or SEEK_HOLE goes
// to the handle (handle.go), the other whences the kernel answers
// itself.
//
// It must never touch a mapping itself (only backing does, through its
// fault-safe functions), and must never be used to serve a mount from a
// process that also maps files of that mount (see go-fuse's notes on
// deadlocks): tests that mmap the mount run the daemon as its own process.
//
// # Data path
//
// A READ and a WRITE each pass through three files. fs/handle.go:
// handle.Read and handle.Write, one call on the open file's Blob and the
// errno at the boundary. backing/blob.go for a read, backing/write.go for
// a write: Blob.ReadAt takes the mapping's read lock and clips the read to
// the file's size; Blob.WriteAt grows the file and its mapping first if
// the write extends it, marks the range dirty and applies the writeback
// policy. backing/fault.go: copyGuarded, the copy out of or into the
// mapping, with a fault on mapped memory turned into an error instead of
// a dead daemon. go-fuse's reply then copies the read bytes to the
// kernel from the request's own buffer, never from the mapping. No other
// code stands between the kernel and the mapping: the counters
// (counting.go) and killpriv.go wrap the request around the node tree,
// not inside it.
//
// # Error handling
//
// Inside, errors are wrapped with the operation and path. They become a
// syscall.Errno only at the FUSE boundary, in errno(), with errors.As: an
// error without an errno in its chain is EIO. Errors that mean lost or
// refused data (EIO, ENOSPC, EDQUOT, EROFS, EFBIG), and EACCES or EPERM
// (the store refusing the daemon, or a file flag refusing the change),
// are logged there, once, with the file's name; ELOOP too, saying that a
// symlink in the store was refused.
//
// # Kernel caching
//
// With --keep-cache and long attribute timeouts, warm reads never reach
// the daemon (a 3 s fio run sent it about 28 READs): they are the
// kernel's FUSE page cache against ext4's, and no init or open flag the
// daemon controls changes how that cache is kept. On Linux 6.18 it holds
// a FUSE file in 4 KiB folios whatever the daemon negotiates (a census
// through /proc/self/pagemap and /proc/kpageflags found no compound page
// with or without max_pages 256, writeback cache or direct I/O, whether
// filled by writes or by readahead), where ext4 holds the same file in
// 1 MiB folios. fio's profile shows it: filemap_get_read_batch 4.5 % of
// a 1 MiB sequential reader's samples on the mount against 0.2 % on ext4
// (0.77 of ext4's MiB/s), and filemap_get_read_batch + xas_load 12.3 %
// against 4.4 % for 4 KiB random reads (0.84 of ext4's IOPS);
// fuse_file_read_iter itself costs 0.9 % against ext4_file_read_iter's
// 0.7 %. go-fuse's loopback with kernel passthrough reads through the
// backing file's cache, large folios and all, hence its 0.98.
//
// One thing the daemon does decide for cached reads: go-fuse negotiates
// CAP_AUTO_INVAL_DATA, under which the kernel revalidates the file's
// attributes before every read from the page cache (and drops the cache
// when the mtime it gets has changed). Options.ExplicitInvalData turns
// that off; with --keep-cache, warm 1 MiB reads went from 7.4 to 8.5
// GB/s (0.75 to 0.86 of ext4) and 4 KiB random reads from 0.81 to 0.86,
// same run, alternating.
//
// # The request record (mmapfs trace)
//
// A tracer (mmapfs trace) writes "trace SOCKET" to the control file; the
// daemon connects to that socket and sends it a wire.TraceRecord of every
// request it serves from then on (reqtrace.go): countingFS, which already
// wraps every request to count it, fills the record, and the handle
// methods add what the daemon did for it (the blob's pages not in the
// page cache before the copy, the msyncs made while serving it), finding
// their request by the cancel channel go-fuse gives each one. With no
// tracer connected a request pays one atomic load; with one, recording
// allocates nothing and never waits for the tracer: a ring per tracer,
// drained by a goroutine, drops what a slow tracer cannot take and says
// so in the stream.
//
// # Locking
//
// The package keeps no locks of its own on the data path but the
// request record's, taken only while a tracer is connected and never
// across a system call: reqTracer.mu (the in-flight slots) and each
// tracer's mu (its ring); a handle's Blob
// does its own locking (see package backing). mountState is read only after
// Mount returns. Off the data path: dirCache.mu guards the directory
// descriptor cache and is never held across a system call (dircache.go),
// and each control-file handle has its own mutex (control.go).
package fs
