package fs

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

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
// from /proc/self/mountinfo) when they can be found. A holder found with
// no mount of the store is a daemon ending after its unmount: lockStore
// waits up to endingWait for it, saying so through logf, and refuses
// only if it still holds the store then, or mounts it meanwhile.
//
// With shared (--unsafe-shared-store) it takes a shared lock instead, so
// that a daemon started later without the flag is still refused; if an
// ordinary daemon holds the store, it takes none and returns nil.
func lockStore(root string, shared bool, logf func(string, ...any)) (*os.File, error) {
	f, err := os.OpenFile(root, os.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		return nil, fmt.Errorf("locking store %s: %w", root, err)
	}
	how := unix.LOCK_EX
	if shared {
		how = unix.LOCK_SH
	}
	start := time.Now()
	told := false
	for {
		err = unix.Flock(int(f.Fd()), how|unix.LOCK_NB)
		if err == nil {
			if told {
				logf("store %s: the daemon that held it let go after %v; going on", root, time.Since(start).Round(time.Millisecond))
			}
			return f, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, errors.Join(fmt.Errorf("locking store %s: flock: %w", root, err), f.Close())
		}
		if shared {
			return nil, f.Close()
		}
		h := storeHolder(f, root)
		if h.pid == 0 || len(h.mounts) > 0 || time.Since(start) >= endingWait {
			return nil, errors.Join(h.refusal(root, time.Since(start), told), f.Close())
		}
		// Held by a daemon with no mount of the store: one ending
		// after its unmount, still syncing and closing (umount
		// returns before it is done: "umount M && mmapfs S M").
		if !told {
			logf("store %s: pid %d holds it and has no mount of it (a daemon ending after its unmount); waiting up to %v for it to let go", root, h.pid, endingWait)
			told = true
		}
		time.Sleep(endingPoll)
	}
}

// How long and how often lockStore waits for a daemon that holds the
// store but has no mount of it left (variables for the tests).
var (
	endingWait = 30 * time.Second
	endingPoll = 20 * time.Millisecond
)

// holder is who holds a store's lock, as far as it can be found: the pid
// (0: unknown) and its mountpoints of the store.
type holder struct {
	pid    int
	mounts []string
}

// storeHolder finds who holds the lock of the store f (at root).
func storeHolder(f *os.File, root string) holder {
	var h holder
	var st unix.Stat_t
	if unix.Fstat(int(f.Fd()), &st) == nil {
		if pid, ok := flockHolder(st.Dev, st.Ino); ok {
			h.pid = pid
		}
	}
	// The mountpoints only add to the message: without the mount table
	// it still says why the mount is refused.
	if mounts, err := readMounts(); err == nil {
		h.mounts = mountsOf(mounts, root)
	}
	return h
}

// refusal is the error of a store held by h, waited for for waited when
// waitedFor.
func (h holder) refusal(root string, waited time.Duration, waitedFor bool) error {
	who := "another process"
	if h.pid != 0 {
		who = "pid " + strconv.Itoa(h.pid)
	}
	if len(h.mounts) > 0 {
		who += ", mounted at " + strings.Join(h.mounts, " and ")
	} else if waitedFor {
		who += fmt.Sprintf(", with no mount of it, still holding it after %v", waited.Round(time.Second))
	}
	return fmt.Errorf("store %s: %w (%s); stop that daemon first, or see --unsafe-shared-store", root, ErrStoreLocked, who)
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
