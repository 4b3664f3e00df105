package fs

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"log"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/mmapfs/mmapfs/fs/wire"
)

// The live state of the dirty-page budget: how much of the page cache of
// the mount's backing device (and of the store's) is dirty or under
// writeback, the device's share of the dirty threshold, and the system's
// thresholds. The kernel shows them per bdi only in debugfs
// (/sys/kernel/debug/bdi/DEV/stats); /sys/class/bdi has the settings
// alone, /proc/vmstat the system's thresholds. They are read when the
// stats are gathered: a few small files per read of the stats, nothing on
// the data path.

// debugfsDir is where debugfs is mounted.
const debugfsDir = "/sys/kernel/debug"

// bdiPaths are where the bdi figures are read from; tests point them at
// captured files.
type bdiPaths struct {
	debugfs string // debugfsDir
	vmstat  string // /proc/vmstat
	sysBlk  string // /sys/dev/block
	sysBDI  string // /sys/class/bdi
}

var livePaths = bdiPaths{debugfs: debugfsDir, vmstat: "/proc/vmstat", sysBlk: "/sys/dev/block", sysBDI: "/sys/class/bdi"}

// bdiStats are the figures of one bdi, in bytes (bandwidth in bytes per
// second), as its debugfs stats file has them in KiB.
type bdiStats struct {
	writeback, reclaimable, bdiThresh    int64
	dirtyThresh, backgroundThresh        int64
	dirtied, written, writeBandwidthPerS int64
}

// parseBDIStats parses a /sys/kernel/debug/bdi/DEV/stats file: lines of
// "Name: value unit", the figures this reads in kB (kBps for the
// bandwidth). A figure it needs and does not find is an error.
func parseBDIStats(r io.Reader) (bdiStats, error) {
	var b bdiStats
	fields := map[string]*int64{
		"BdiWriteback":      &b.writeback,
		"BdiReclaimable":    &b.reclaimable,
		"BdiDirtyThresh":    &b.bdiThresh,
		"DirtyThresh":       &b.dirtyThresh,
		"BackgroundThresh":  &b.backgroundThresh,
		"BdiDirtied":        &b.dirtied,
		"BdiWritten":        &b.written,
		"BdiWriteBandwidth": &b.writeBandwidthPerS,
	}
	seen := map[string]bool{}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		name, rest, ok := strings.Cut(sc.Text(), ":")
		p, want := fields[strings.TrimSpace(name)]
		if !ok || !want {
			continue
		}
		f := strings.Fields(rest)
		if len(f) != 2 || (f[1] != "kB" && f[1] != "kBps") {
			return b, fmt.Errorf("%s: %q is not a number of kB", name, strings.TrimSpace(rest))
		}
		kb, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return b, fmt.Errorf("%s: %w", name, err)
		}
		*p = kb << 10
		seen[strings.TrimSpace(name)] = true
	}
	if err := sc.Err(); err != nil {
		return b, err
	}
	for name := range fields {
		if !seen[name] {
			return b, fmt.Errorf("no %s", name)
		}
	}
	return b, nil
}

// parseVmstatThresholds returns the system's background and dirty
// thresholds, in bytes, from /proc/vmstat (which has them in pages).
func parseVmstatThresholds(r io.Reader, pageSize int64) (background, dirty int64, err error) {
	var haveBg, haveDirty bool
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		name, v, ok := strings.Cut(sc.Text(), " ")
		if !ok {
			continue
		}
		var p *int64
		switch name {
		case "nr_dirty_background_threshold":
			p, haveBg = &background, true
		case "nr_dirty_threshold":
			p, haveDirty = &dirty, true
		default:
			continue
		}
		n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("%s: %w", name, err)
		}
		*p = n * pageSize
	}
	if err := sc.Err(); err != nil {
		return 0, 0, err
	}
	if !haveBg || !haveDirty {
		return 0, 0, errors.New("no nr_dirty_background_threshold or nr_dirty_threshold")
	}
	return background, dirty, nil
}

// storeBDI returns the name of the bdi of the block device dev (a
// filesystem's st_dev): the bdi of the disk (a partition's is its
// disk's), or of the device itself for a filesystem with a bdi of its
// own (FUSE, NFS); "" for none (tmpfs, overlayfs: the noop bdi).
func (p bdiPaths) storeBDI(dev uint64) string {
	name := fmt.Sprintf("%d:%d", unix.Major(dev), unix.Minor(dev))
	// /sys/dev/block/DEV links to the device's directory; a partition's
	// is inside its disk's, which has the bdi link.
	if blk, err := filepath.EvalSymlinks(filepath.Join(p.sysBlk, name)); err == nil {
		for _, link := range []string{filepath.Join(blk, "bdi"), filepath.Join(filepath.Dir(blk), "bdi")} {
			if target, err := os.Readlink(link); err == nil {
				return filepath.Base(target)
			}
		}
	}
	if _, err := os.Stat(filepath.Join(p.sysBDI, name)); err == nil {
		return name
	}
	return ""
}

// debugfsOnce mounts debugfs once per process, if it is not mounted and
// the daemon may: the bdi figures are there only.
var debugfsOnce sync.Once

// ensureDebugfs mounts debugfs at debugfsDir if its bdi directory is
// absent and the daemon is root, and says so in logger; it returns
// nothing: the stats say which source they used.
func ensureDebugfs(logger *log.Logger) {
	if logger == nil {
		logger = log.Default()
	}
	debugfsOnce.Do(func() {
		if _, err := os.Stat(filepath.Join(debugfsDir, "bdi")); err == nil || os.Geteuid() != 0 {
			return
		}
		if err := unix.Mount("debugfs", debugfsDir, "debugfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
			logger.Printf("bdi stats: mounting debugfs at %s: %v; the stats show the system's dirty thresholds only (mount -t debugfs none %s for the devices' figures)", debugfsDir, err, debugfsDir)
			return
		}
		logger.Printf("bdi stats: mounted debugfs at %s to read the backing devices' dirty-page figures (umount %s to undo)", debugfsDir, debugfsDir)
	})
}

// bdiFigures is the part of a bdi in the figures.
type bdiFigures struct {
	dirty, writeback, thresh, dirtied, written, bandwidth wire.ID
}

var (
	mountBDIFigures = bdiFigures{wire.MountBDIDirty, wire.MountBDIWriteback, wire.MountBDIThresh, wire.MountBDIDirtied, wire.MountBDIWritten, wire.MountBDIBandwidth}
	storeBDIFigures = bdiFigures{wire.StoreBDIDirty, wire.StoreBDIWriteback, wire.StoreBDIThresh, wire.StoreBDIDirtied, wire.StoreBDIWritten, wire.StoreBDIBandwidth}
)

// measureBDIs sets the bdi figures of f for the mount's bdi mountDev
// ("" before it is known) and the store's bdi storeDev ("" for none),
// and returns where each came from. pageSize is the page size of
// /proc/vmstat's counts.
func (p bdiPaths) measureBDIs(f *wire.Values, mountDev, storeDev string, pageSize int64) *wire.BDISources {
	var src wire.BDISources
	global := false // the thresholds are set
	one := func(dev string, ids bdiFigures, why string) wire.BDISource {
		if dev == "" {
			return wire.BDISource{Source: wire.SourceNone, Note: why}
		}
		path := filepath.Join(p.debugfs, "bdi", dev, "stats")
		raw, err := os.ReadFile(path)
		var b bdiStats
		if err == nil {
			b, err = parseBDIStats(bytes.NewReader(raw))
			if err != nil {
				err = fmt.Errorf("%s: %w", path, err)
			}
		}
		if err != nil {
			note := err.Error()
			if errors.Is(err, os.ErrNotExist) {
				if _, derr := os.Stat(filepath.Join(p.debugfs, "bdi")); derr != nil {
					note = fmt.Sprintf("debugfs is not mounted (mount -t debugfs none %s)", p.debugfs)
				}
			}
			return wire.BDISource{Device: dev, Source: wire.SourceVmstat, Note: note}
		}
		f.Set(ids.dirty, b.reclaimable)
		f.Set(ids.writeback, b.writeback)
		f.Set(ids.thresh, b.bdiThresh)
		f.Set(ids.dirtied, b.dirtied)
		f.Set(ids.written, b.written)
		f.Set(ids.bandwidth, b.writeBandwidthPerS)
		if !global {
			f.Set(wire.BackgroundThresh, b.backgroundThresh)
			f.Set(wire.DirtyThresh, b.dirtyThresh)
			global = true
		}
		return wire.BDISource{Device: dev, Source: wire.SourceDebugfs}
	}
	src.Mount = one(mountDev, mountBDIFigures, "the mount is not serving yet")
	src.Store = one(storeDev, storeBDIFigures, "the store's filesystem has no backing device (tmpfs, overlayfs...)")
	if !global {
		raw, err := os.ReadFile(p.vmstat)
		if err == nil {
			var bg, dirty int64
			if bg, dirty, err = parseVmstatThresholds(bytes.NewReader(raw), pageSize); err == nil {
				f.Set(wire.BackgroundThresh, bg)
				f.Set(wire.DirtyThresh, dirty)
			}
		}
		if err != nil {
			msg := fmt.Sprintf("; the thresholds: %s: %v", p.vmstat, err)
			src.Mount.Note += msg
			src.Store.Note += msg
		}
	}
	return &src
}

// ReadBDIDirty returns the bytes of the page cache of the backing device
// dev (major:minor, its name in /sys/class/bdi) that are dirty and under
// writeback now, from debugfs (/sys/kernel/debug/bdi/DEV/stats), for
// tools that sample them (mmapfs trace). It does not mount debugfs.
func ReadBDIDirty(dev string) (dirty, writeback int64, err error) {
	path := filepath.Join(livePaths.debugfs, "bdi", dev, "stats")
	raw, err := os.ReadFile(path)
	if err != nil {
		return 0, 0, fmt.Errorf("the dirty pages of bdi %s: %w", dev, err)
	}
	b, err := parseBDIStats(bytes.NewReader(raw))
	if err != nil {
		return 0, 0, fmt.Errorf("%s: %w", path, err)
	}
	return b.reclaimable, b.writeback, nil
}
