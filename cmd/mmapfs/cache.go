package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	iofs "io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/mmapfs/mmapfs/fs"
	"github.com/mmapfs/mmapfs/fs/wire"
)

func newCacheCommand() *cobra.Command {
	var watch time.Duration
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "cache [--watch [INTERVAL]] [--json] PATH...",
		Short: "Show both page caches of files on an mmapfs mount: the mount's and the blob's",
		Long: `Show, for each file named (a directory: every regular file beneath it), the
two page caches that hold its data, from cachestat(2) (Linux 6.5 and later):
the mount's page cache of the file, which clients read and write through, and
the store's page cache of its blob, which the daemon's MAP_SHARED mapping
reads and writes. For each: the pages cached, dirty, under writeback,
evicted and recently evicted, per file and in total.

A page a client dirties (a write(2) with --writeback-cache, a store through
a MAP_SHARED mapping) is dirty on the mount until the kernel's writeback
sends it to the daemon as a WRITE; the daemon's copy into its mapping makes
the blob's page dirty until the daemon msyncs it (at fsync under the fsync
policy).

With --auto-cache (the default), this command's own open (it is a client of
the mount like any other) keeps the mount's cached pages of a file that is
as the kernel last saw it, and with --keep-cache of every file: the
mount's figures are the cache as the other clients left it. With neither,
the kernel drops the mount's cached pages of a file at every open, this
command's included, writing dirty pages back first: the mount's figures
are then what survived that open.

--watch takes the interval as --watch 2s, --watch=2s or -w 2s; bare, it is
1s; it prints a line of totals per interval (with --json, one document per
interval). Sizes are in binary units (KiB, MiB); page counts in the pages of
this machine.`,
		Args: func(cmd *cobra.Command, args []string) error {
			_, _, err := cacheArgs(cmd, watch, args)
			return err
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			paths, every, err := cacheArgs(cmd, watch, args)
			if err != nil {
				return err
			}
			return runCache(cmd.OutOrStdout(), paths, every, asJSON, nil)
		},
	}
	cmd.Flags().DurationVarP(&watch, "watch", "w", 0, "print a line of totals every `INTERVAL` (--watch 2s, --watch=2s, -w 2s; bare: 1s) until interrupted")
	cmd.Flags().Lookup("watch").NoOptDefVal = bareWatch.String()
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON (with --watch: one document per interval)")
	return cmd
}

// cacheArgs returns the paths and the --watch interval (0: print once)
// of a cache command line. As in watchArgs, a bare --watch leaves the word
// after it to the arguments: given bare, a first or last argument that
// parses as a duration, with paths besides it, is the interval.
func cacheArgs(cmd *cobra.Command, watch time.Duration, args []string) (paths []string, every time.Duration, err error) {
	given := cmd.Flags().Changed("watch")
	if given && watch == bareWatch && len(args) >= 2 {
		if d, perr := time.ParseDuration(args[0]); perr == nil {
			watch, args = d, args[1:]
		} else if d, perr := time.ParseDuration(args[len(args)-1]); perr == nil {
			watch, args = d, args[:len(args)-1]
		}
	}
	if len(args) == 0 {
		return nil, 0, errors.New("requires at least 1 PATH (a file or directory on an mmapfs mount)")
	}
	if given && watch <= 0 {
		return nil, 0, fmt.Errorf("--watch %v: out of range: the interval must be more than 0 (e.g. 1s or 500ms); leave --watch out to print once", watch)
	}
	return args, watch, nil
}

// pageStat is one layer's cachestat of one file, in pages.
type pageStat struct {
	Cached          uint64 `json:"cached_pages"`
	Dirty           uint64 `json:"dirty_pages"`
	Writeback       uint64 `json:"writeback_pages"`
	Evicted         uint64 `json:"evicted_pages"`
	RecentlyEvicted uint64 `json:"recently_evicted_pages"`
}

func (p *pageStat) add(q pageStat) {
	p.Cached += q.Cached
	p.Dirty += q.Dirty
	p.Writeback += q.Writeback
	p.Evicted += q.Evicted
	p.RecentlyEvicted += q.RecentlyEvicted
}

// fileCache is both page caches of one file on a mount.
type fileCache struct {
	Path  string   `json:"path"`  // on the mount, as named (or found beneath a directory named)
	Blob  string   `json:"blob"`  // the blob in the store
	Size  int64    `json:"size"`  // bytes, as the mount shows it
	Mount pageStat `json:"mount"` // the mount's page cache of the file
	Store pageStat `json:"store"` // the store's page cache of the blob
}

// cacheTotal sums the files of a report.
type cacheTotal struct {
	Files int      `json:"files"`
	Size  int64    `json:"size"`
	Mount pageStat `json:"mount"`
	Store pageStat `json:"store"`
}

// mountNote is what one mount's switches mean for its figures.
type mountNote struct {
	Mountpoint string `json:"mountpoint"`
	Store      string `json:"store"`
	// KeepCache and AutoCache are the mount's --keep-cache and
	// --auto-cache, nil when its stats file cannot be read (another
	// user's mount).
	KeepCache *bool `json:"keep_cache"`
	AutoCache *bool `json:"auto_cache"`
}

// cacheReport is the output of one look at the paths.
type cacheReport struct {
	Time     time.Time   `json:"time"`
	PageSize int         `json:"page_size"`
	Mounts   []mountNote `json:"mounts"`
	Files    []fileCache `json:"files"`
	Total    cacheTotal  `json:"total"`
}

// runCache prints the report of paths once, or a line of totals every
// interval until stop is closed (never, from the CLI: the user
// interrupts it).
func runCache(w io.Writer, paths []string, every time.Duration, asJSON bool, stop <-chan struct{}) error {
	if every <= 0 {
		r, err := collectCache(paths)
		if err != nil {
			return err
		}
		if asJSON {
			return writeCacheJSON(w, r)
		}
		return printCache(w, r)
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for line := 0; ; line++ {
		r, err := collectCache(paths)
		if err != nil {
			return err
		}
		switch {
		case asJSON:
			err = writeCacheJSON(w, r)
		default:
			if line%20 == 0 {
				if _, err := fmt.Fprintln(w, cacheWatchHeader); err != nil {
					return err
				}
			}
			_, err = fmt.Fprintln(w, cacheWatchLine(r))
		}
		if err != nil {
			return err
		}
		select {
		case <-stop:
			return nil
		case <-t.C:
		}
	}
}

func writeCacheJSON(w io.Writer, r *cacheReport) error {
	raw, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("encoding the cache report: %w", err)
	}
	_, err = w.Write(append(raw, '\n'))
	return err
}

// collectCache looks at both page caches of every regular file of paths.
func collectCache(paths []string) (*cacheReport, error) {
	r := &cacheReport{Time: time.Now().UTC(), PageSize: os.Getpagesize(), Files: []fileCache{}, Mounts: []mountNote{}}
	stores := map[string]*storeDir{}
	defer func() {
		for _, s := range stores {
			s.dir.Close()
		}
	}()
	for _, p := range paths {
		if err := collectPath(r, stores, p); err != nil {
			return nil, err
		}
	}
	for _, f := range r.Files {
		r.Total.Files++
		r.Total.Size += f.Size
		r.Total.Mount.add(f.Mount)
		r.Total.Store.add(f.Store)
	}
	return r, nil
}

// storeDir is the open root of one mount's store.
type storeDir struct {
	mnt, root string
	dir       *os.File // O_PATH: the root the blobs are opened beneath
}

// collectPath adds the files of path (a file, or a directory walked
// recursively) to r.
func collectPath(r *cacheReport, stores map[string]*storeDir, path string) error {
	abs, err := filepath.Abs(path)
	if err != nil {
		return fmt.Errorf("cache: %s: %w", path, err)
	}
	e, _, ok := mountAt(abs)
	if !ok || e.fsType != mmapfsType {
		if _, serr := os.Lstat(abs); serr != nil {
			return fmt.Errorf("cache: %w", serr)
		}
		shown := path
		if real, err := filepath.EvalSymlinks(abs); err == nil && real != abs {
			shown = fmt.Sprintf("%s (a symlink to %s)", path, real)
		}
		if ok {
			return fmt.Errorf("cache: %s is not on an mmapfs mount: it is on the %s mount of %s at %s", shown, e.fsType, e.source, e.mountPoint)
		}
		return fmt.Errorf("cache: %s is not on an mmapfs mount", shown)
	}
	fi, err := os.Lstat(abs)
	if err != nil {
		return cachePathError(path, e.mountPoint, err)
	}
	// The path the kernel knows: symlinks on the way resolved (through the
	// mount, which shows the store's), so that it is relative to the
	// mountpoint as the blob is to the store root.
	real, err := filepath.EvalSymlinks(abs)
	if err != nil {
		return cachePathError(path, e.mountPoint, err)
	}
	if fi.Mode()&iofs.ModeSymlink != 0 {
		if fi, err = os.Stat(real); err != nil {
			return cachePathError(path, e.mountPoint, err)
		}
	}
	s := stores[e.mountPoint]
	if s == nil {
		dir, err := os.OpenFile(e.source, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("cache: opening the store %s of the mount at %s: %w", e.source, e.mountPoint, err)
		}
		s = &storeDir{mnt: e.mountPoint, root: e.source, dir: dir}
		stores[e.mountPoint] = s
		keep, auto := cacheSwitches(e.mountPoint)
		r.Mounts = append(r.Mounts, mountNote{Mountpoint: e.mountPoint, Store: e.source, KeepCache: keep, AutoCache: auto})
	}
	if !fi.IsDir() {
		if !fi.Mode().IsRegular() {
			return fmt.Errorf("cache: %s is not a regular file or a directory (%s): it has no page cache to show", path, fi.Mode().Type())
		}
		if isVirtualPath(s.mnt, real) {
			return fmt.Errorf("cache: %s is a file of mmapfs itself, not of the store: it has no blob", path)
		}
		f, err := statFile(s, path, real)
		if err != nil {
			return err
		}
		r.Files = append(r.Files, f)
		return nil
	}
	return filepath.WalkDir(real, func(p string, d iofs.DirEntry, err error) error {
		shown := filepath.Join(path, strings.TrimPrefix(p, real))
		if err != nil {
			return cachePathError(shown, s.mnt, err)
		}
		if !d.Type().IsRegular() || isVirtualPath(s.mnt, p) {
			return nil
		}
		f, err := statFile(s, shown, p)
		if err != nil {
			return err
		}
		r.Files = append(r.Files, f)
		return nil
	})
}

// isVirtualPath reports whether p is one of the files the daemon serves
// at the mount's root without a blob (the stats and control files).
func isVirtualPath(mnt, p string) bool {
	return filepath.Dir(p) == mnt && (filepath.Base(p) == fs.StatsName || filepath.Base(p) == fs.ControlName)
}

// cacheSwitches returns the mount's --keep-cache and --auto-cache from
// its stats file, nil if it cannot be read.
func cacheSwitches(mnt string) (keep, auto *bool) {
	s, _, err := readStats(filepath.Join(mnt, fs.StatsName))
	if err != nil {
		return nil, nil
	}
	return &s.Switches.KeepCache, &s.Switches.AutoCache
}

// statFile cachestats the file at p on the mount (shown as shown) and its
// blob in s's store.
func statFile(s *storeDir, shown, p string) (fileCache, error) {
	rel, err := filepath.Rel(s.mnt, p)
	if err != nil || rel == ".." || strings.HasPrefix(rel, "../") {
		return fileCache{}, fmt.Errorf("cache: %s resolves to %s, outside the mount at %s", shown, p, s.mnt)
	}
	f := fileCache{Path: shown, Blob: filepath.Join(s.root, rel)}
	mf, err := os.OpenFile(p, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0)
	if err != nil {
		return f, cachePathError(shown, s.mnt, err)
	}
	defer mf.Close()
	st, err := mf.Stat()
	if err != nil {
		return f, cachePathError(shown, s.mnt, err)
	}
	f.Size = st.Size()
	if f.Mount, err = cachestat(mf); err != nil {
		return f, cachestatError(shown, "the mount's", err)
	}
	fd, err := unix.Openat2(int(s.dir.Fd()), rel, &unix.OpenHow{
		Flags:   unix.O_RDONLY | unix.O_NOFOLLOW | unix.O_NONBLOCK | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
	})
	if err != nil {
		if errors.Is(err, syscall.ELOOP) || errors.Is(err, syscall.EXDEV) {
			return f, fmt.Errorf("cache: the blob %s of %s is not a regular file beneath the store (a symlink on its path, which is not followed): %w", f.Blob, shown, err)
		}
		return f, fmt.Errorf("cache: opening the blob %s of %s: %w", f.Blob, shown, err)
	}
	bf := os.NewFile(uintptr(fd), f.Blob)
	defer bf.Close()
	if f.Store, err = cachestat(bf); err != nil {
		return f, cachestatError(f.Blob, "the store's", err)
	}
	return f, nil
}

// cachestat returns the page cache of the whole of f.
func cachestat(f *os.File) (pageStat, error) {
	var cs unix.Cachestat_t
	// Len 0: from Off to the end of the file.
	if err := unix.Cachestat(uint(f.Fd()), &unix.CachestatRange{}, &cs, 0); err != nil {
		return pageStat{}, err
	}
	return pageStat{Cached: cs.Cache, Dirty: cs.Dirty, Writeback: cs.Writeback, Evicted: cs.Evicted, RecentlyEvicted: cs.Recently_evicted}, nil
}

// cachePathError explains why the file path on the mount at mnt could
// not be looked at.
func cachePathError(path, mnt string, err error) error {
	switch {
	case deadMount(err):
		return mountError("cache", mnt, err)
	case errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EPERM):
		return fmt.Errorf("cache: no permission to open %s for reading, which cachestat needs (%w): a mount is open only to the user running its daemon unless mounted with --allow-other, and then the file's mode decides", path, err)
	}
	return fmt.Errorf("cache: %w", err)
}

// cachestatError explains a failed cachestat of path's page cache (layer
// names which).
func cachestatError(path, layer string, err error) error {
	switch {
	case errors.Is(err, syscall.ENOSYS):
		var u unix.Utsname
		release := "this kernel"
		if unix.Uname(&u) == nil {
			release = "this kernel (" + unix.ByteSliceToString(u.Release[:]) + ")"
		}
		return fmt.Errorf("cache: %s has no cachestat(2), which Linux 6.5 added: cannot show %s page cache of %s: %w", release, layer, path, err)
	case errors.Is(err, syscall.EPERM), errors.Is(err, syscall.EACCES):
		return fmt.Errorf("cache: the kernel refused to show %s page cache of %s (%w): it shows a file's page cache only to its owner, to one who may write it, or to root", layer, path, err)
	case deadMount(err):
		return fmt.Errorf("cache: %s page cache of %s: %w", layer, path, err)
	}
	return fmt.Errorf("cache: cachestat of %s page cache of %s: %w", layer, path, err)
}

// pagesStr renders n pages of size page as a size and the count: "1.0 MiB
// (256)".
func pagesStr(n uint64, page int) string {
	return fmt.Sprintf("%s (%d)", wire.BinarySize(int64(n)*int64(page)), n)
}

// printCache prints a report as a table: two rows per file, the mount's
// page cache and the store's, then the totals, then what the mounts'
// switches mean for the mount's figures.
func printCache(w io.Writer, r *cacheReport) error {
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintf(tw, "FILE\tSIZE\tCACHE\tCACHED (pages)\tDIRTY (pages)\tWRITEBACK (pages)\tEVICTED (pages)\tRECENTLY EVICTED (pages)\n")
	row := func(name, size, layer string, p pageStat) {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", name, size, layer,
			pagesStr(p.Cached, r.PageSize), pagesStr(p.Dirty, r.PageSize), pagesStr(p.Writeback, r.PageSize),
			pagesStr(p.Evicted, r.PageSize), pagesStr(p.RecentlyEvicted, r.PageSize))
	}
	for _, f := range r.Files {
		row(f.Path, wire.BinarySize(f.Size), "mount", f.Mount)
		row("", "", "store", f.Store)
	}
	t := r.Total
	row("total ("+wire.Plural(t.Files, "file", "files")+")", wire.BinarySize(t.Size), "mount", t.Mount)
	row("", "", "store", t.Store)
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, m := range r.Mounts {
		if m.KeepCache != nil && !*m.KeepCache && m.AutoCache != nil && !*m.AutoCache {
			if _, err := fmt.Fprintf(w, "\n%s is mounted without --keep-cache and --auto-cache: this command's open of each file dropped the mount's cached pages (dirty ones written back first), so its mount figures are what survived that open.\n", m.Mountpoint); err != nil {
				return err
			}
		}
	}
	return nil
}

// cacheWatchTitles are the columns of a --watch line: the time, the
// files, then the mount's and the store's cached, dirty and writeback
// bytes in MiB (2^20 bytes) and their evicted pages.
var cacheWatchTitles = []string{"time    ", "files", "mnt-cached MiB", "mnt-dirty MiB", "mnt-wb MiB", "mnt-evicted",
	"store-cached MiB", "store-dirty MiB", "store-wb MiB", "store-evicted"}

// cacheWatchHeader is the header line of --watch.
var cacheWatchHeader = strings.Join(cacheWatchTitles, "  ")

// cacheWatchLine is the --watch line of r's totals, each value right
// aligned under its title in cacheWatchHeader.
func cacheWatchLine(r *cacheReport) string {
	mib := func(pages uint64) string {
		return fmt.Sprintf("%.1f", float64(pages)*float64(r.PageSize)/(1<<20))
	}
	t := r.Total
	cols := []string{
		r.Time.Format("15:04:05"), fmt.Sprint(t.Files),
		mib(t.Mount.Cached), mib(t.Mount.Dirty), mib(t.Mount.Writeback), fmt.Sprint(t.Mount.Evicted),
		mib(t.Store.Cached), mib(t.Store.Dirty), mib(t.Store.Writeback), fmt.Sprint(t.Store.Evicted),
	}
	var b strings.Builder
	for i, c := range cols {
		if i > 0 {
			b.WriteString("  ")
		}
		fmt.Fprintf(&b, "%*s", len(cacheWatchTitles[i]), c)
	}
	return b.String()
}
