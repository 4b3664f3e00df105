package fs

import (
	"errors"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/mmapfs/mmapfs/fs/wire"
)

// The kernel throttles the dirty pages of a FUSE mount hard through the
// mount's backing device (its bdi): strict_limit on and max_ratio 1 %, so
// a client writing through a mapping of the mount is held to a sliver of
// the dirty page budget. As root, a mount can set its own bdi's limits:
// these are writeback-policy switches too (more dirty data allowed in the
// mount's page cache is more data at risk there, and less throttling).

// BDISettings are the changes a mount asks for; a negative value leaves
// the kernel's.
type BDISettings struct {
	MaxRatio    int // percent of the dirty page budget, 0..100
	StrictLimit int // 0 or 1
	ReadaheadKB int
	// MaxRatioDefaulted says that nothing asked for MaxRatio: it is
	// RootMaxRatio, set because CanSetBDI found nothing against it.
	// If the bdi then refuses it for lack of permission (EACCES,
	// EPERM, EROFS: a user namespace's root over the host's sysfs,
	// a read-only file), the mount keeps the kernel's and the log
	// says so once (KeptKernelBDI), instead of failing; a ratio that
	// was asked for still fails the mount.
	MaxRatioDefaulted bool
}

// NoBDIChanges leaves every bdi setting as the kernel sets it.
var NoBDIChanges = BDISettings{MaxRatio: -1, StrictLimit: -1, ReadaheadKB: -1}

// RootMaxRatio is the max_ratio a mount asks for when its daemon can set
// its bdi (CanSetBDI) and no flag or profile says otherwise. The kernel's
// 1 % strict share holds a client writing through a mapping of the mount
// to a few MiB of dirty pages on most machines, and so to the speed of
// one WRITE at a time (mmap random 4 KiB writes: 0.15 of what 10 % gives,
// scripts/bench). The strict limit stays as the kernel sets it: the mount
// can still hold no more than this share of the machine's dirty budget,
// whatever its daemon does (a wedged daemon's mount holds up to 10 % of
// it, dirty, where the kernel's default lets it hold 1 %), and the
// daemon, which dirties store pages to clean the mount's, keeps the other
// 90 % to do it in.
const RootMaxRatio = 10

// CanSetBDI says whether this daemon can set its mount's bdi: nil when it
// runs as root and /sys/class/bdi is writable, else why not. A bdi's
// files are root's (0644), and a read-only sysfs (a container's) refuses
// root too.
func CanSetBDI() error {
	if uid := os.Geteuid(); uid != 0 {
		return fmt.Errorf("the daemon runs as uid %d, and the files of /sys/class/bdi are root's", uid)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(bdiRoot, &st); err != nil {
		return fmt.Errorf("%s: %w", bdiRoot, err)
	}
	if st.Flags&unix.ST_RDONLY != 0 {
		return fmt.Errorf("%s is on a read-only sysfs", bdiRoot)
	}
	return nil
}

// KeptKernelBDI is the log line of a mount that keeps the kernel's
// dirty-page budget for FUSE because its daemon cannot set its bdi, why.
func KeptKernelBDI(why error) string {
	return fmt.Sprintf("the mount keeps the kernel's dirty-page budget for FUSE (bdi max_ratio 1, strict): %v; writes through a mapping of it are throttled sooner than on a root daemon's mount, which gets --bdi-max-ratio %d", why, RootMaxRatio)
}

// bdiRoot is where the kernel shows every bdi.
const bdiRoot = "/sys/class/bdi"

func bdiDir(dev string) string { return filepath.Join(bdiRoot, dev) }

// applyBDI writes the settings of set to the bdi of the mount dev. A
// defaulted max_ratio the bdi refuses for lack of permission is left as
// the kernel's, said once to logger (see BDISettings.MaxRatioDefaulted).
func applyBDI(dev string, set BDISettings, logger *log.Logger) error {
	dir := bdiDir(dev)
	for _, kv := range []struct {
		file string
		v    int
	}{{"strict_limit", set.StrictLimit}, {"max_ratio", set.MaxRatio}, {"read_ahead_kb", set.ReadaheadKB}} {
		if kv.v < 0 {
			continue
		}
		p := filepath.Join(dir, kv.file)
		err := os.WriteFile(p, []byte(strconv.Itoa(kv.v)), 0)
		if err != nil && kv.file == "max_ratio" && set.MaxRatioDefaulted && isPermission(err) {
			logger.Print(KeptKernelBDI(fmt.Errorf("cannot write its default %d: %w", kv.v, err)))
			continue
		}
		if err != nil {
			return fmt.Errorf("setting %s to %d: %w", p, kv.v, err)
		}
	}
	return nil
}

// isPermission says err is a refusal for lack of permission: EACCES,
// EPERM or EROFS.
func isPermission(err error) bool {
	return errors.Is(err, unix.EACCES) || errors.Is(err, unix.EPERM) || errors.Is(err, unix.EROFS)
}

// readBDI reads the bdi settings of the mount dev.
func readBDI(dev string) (wire.BDI, error) {
	b := wire.BDI{Device: dev}
	var errs []error
	read := func(name string) int64 {
		raw, err := os.ReadFile(filepath.Join(bdiDir(dev), name))
		if err != nil {
			errs = append(errs, err)
			return -1
		}
		v, err := strconv.ParseInt(strings.TrimSpace(string(raw)), 10, 64)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
			return -1
		}
		return v
	}
	b.MaxRatio = int(read("max_ratio"))
	b.StrictLimit = int(read("strict_limit"))
	b.ReadaheadKB = int(read("read_ahead_kb"))
	b.MaxBytes = read("max_bytes")
	return b, errors.Join(errs...)
}
