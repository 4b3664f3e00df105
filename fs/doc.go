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
// # Locking
//
// The package keeps no locks of its own on the data path; a handle's Blob
// does its own locking (see package backing). mountState is read only after
// Mount returns.
package fs
