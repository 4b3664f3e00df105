package fs

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// One daemon per store. Two daemons mapping and syncing the same blobs would
// each keep a ledger of what is unsynced that misses the other's writes, so
// "bytes at risk", fsync's promise as the ledger tracks it and the power-cut
// simulation would all be wrong, silently; and each mount's kernel caches
// would go stale behind the other's writes. So a daemon holds an exclusive
// flock(2) on the store root for its whole life. The kernel drops it when
// the last descriptor closes: on every exit, SIGKILL included, with no
// stale lock file to clean up.

// ErrStoreLocked is what Mount's error wraps when another daemon holds the
// store.
var ErrStoreLocked = errors.New("the store is already served by another mmapfs daemon")

// lockStore takes the store lock of root, or fails with ErrStoreLocked
// naming the daemon that holds it (its pid from /proc/locks, its mountpoint
// from /proc/self/mountinfo) when they can be found.
//
// With shared (--unsafe-shared-store) it takes a shared lock instead, so
// that a daemon started later without the flag is still refused; if an
// ordinary daemon holds the store, it takes none and returns nil.
func lockStore(root string, shared bool) (*os.File, error) {
	f, err := os.OpenFile(root, os.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		return nil, fmt.Errorf("locking store %s: %w", root, err)
	}
	how := unix.LOCK_EX
	if shared {
		how = unix.LOCK_SH
	}
	err = unix.Flock(int(f.Fd()), how|unix.LOCK_NB)
	if err == nil {
		return f, nil
	}
	var st unix.Stat_t
	serr := unix.Fstat(int(f.Fd()), &st)
	cerr := f.Close()
	if !errors.Is(err, syscall.EWOULDBLOCK) {
		return nil, errors.Join(fmt.Errorf("locking store %s: flock: %w", root, err), cerr)
	}
	if shared {
		return nil, cerr
	}
	who := "another process"
	if serr == nil {
		if pid, ok := flockHolder(st.Dev, st.Ino); ok {
			who = "pid " + strconv.Itoa(pid)
		}
	}
	// The mountpoints only add to the message: without the mount table
	// it still says why the mount is refused.
	if mounts, err := readMounts(); err == nil {
		if mnts := mountsOf(mounts, root); len(mnts) > 0 {
			who += ", mounted at " + strings.Join(mnts, " and ")
		}
	}
	return nil, fmt.Errorf("store %s: %w (%s); stop that daemon first, or see --unsafe-shared-store", root, ErrStoreLocked, who)
}

// flockHolder finds the process holding a flock on the inode (dev, ino) in
// /proc/locks, whose lines read
//
//	1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF
//
// (a waiter's line has "->" after the number).
func flockHolder(dev, ino uint64) (int, bool) {
	f, err := os.Open("/proc/locks")
	if err != nil {
		return 0, false
	}
	defer f.Close()
	want := fmt.Sprintf("%02x:%02x:%d", unix.Major(dev), unix.Minor(dev), ino)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fl := strings.Fields(sc.Text())
		if len(fl) < 6 || fl[1] != "FLOCK" || fl[5] != want {
			continue
		}
		if pid, err := strconv.Atoi(fl[4]); err == nil {
			return pid, true
		}
	}
	return 0, false
}

// mountsOf returns the mountpoints of the fuse.mmapfs mounts of store in
// mounts.
func mountsOf(mounts []mountInfo, store string) []string {
	var mnts []string
	for _, mi := range mounts {
		if mi.fstype == "fuse.mmapfs" && mi.source == store {
			mnts = append(mnts, mi.mountpoint)
		}
	}
	return mnts
}
