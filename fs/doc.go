// Package fs is the FUSE side of mmapfs: a go-fuse node tree over a store
// directory whose namespace is go-fuse's loopback node and whose data path
// is package backing's shared mappings.
//
// Every regular file opened on the mount is served by one backing.Blob per
// backing inode: reads copy out of its MAP_SHARED mapping, writes copy into
// it, fsync msyncs the pages written, truncate and fallocate resize it.
// Directories, names, links, symlinks, permissions and xattrs are left to
// fs.LoopbackNode, which keeps them in the store directory as the
// underlying filesystem does.
//
// It must never touch a mapping itself (only backing does, through its
// fault-safe functions), and must never be used to serve a mount from a
// process that also maps files of that mount (see go-fuse's notes on
// deadlocks): tests that mmap the mount run the daemon as its own process.
//
// # Error handling
//
// Inside, errors are wrapped with the operation and path. They become a
// syscall.Errno only at the FUSE boundary, in errno(), with errors.As: an
// error without an errno in its chain is EIO. Errors that mean lost or
// refused data (EIO, ENOSPC, EDQUOT, EROFS, EFBIG) are logged there, once,
// with the file's name.
//
// # Locking
//
// The package keeps no locks of its own on the data path; a handle's Blob
// does its own locking (see package backing). mountState is read only after
// Mount returns.
package fs
