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
// from /proc/self/mountinfo) when they can be found. A holder of this
// mount namespace found with no mount of the store is a daemon ending
// after its unmount (or one not mounted yet): lockStore waits up to
// endingWait for it, saying so through logf, and refuses only if it
// still holds the store then, or mounts it meanwhile.
//
// With shared (--unsafe-shared-store) it takes a shared lock instead, so
// that a daemon started later without the flag is still refused; if an
// ordinary daemon holds the store (after the same wait for one with no
// mount of it), it takes none and returns nil.
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
	told, retried := false, false
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
		h := storeHolder(f)
		if h.pid == 0 && !retried {
			// Let go between the flock and the look in /proc/locks?
			retried = true
			continue
		}
		retried = false
		if !h.unmounted() || time.Since(start) >= endingWait {
			if shared {
				// Served anyway, without a lock (see above).
				return nil, f.Close()
			}
			return nil, errors.Join(h.refusal(root, time.Since(start), told), f.Close())
		}
		// Held by a daemon of this mount namespace with no mount of
		// the store: one ending after its unmount, still syncing and
		// closing (umount returns before it is done: "umount M &&
		// mmapfs S M"), or one not mounted yet, which is refused
		// once its mount shows.
		if !told {
			logf("store %s: pid %d holds it with no mount of it (a daemon ending after its unmount, or starting); waiting up to %v for it to let go", root, h.pid, endingWait)
			told = true
		}
		time.Sleep(endingPoll)
	}
}

// How long and how often lockStore waits for a daemon that holds the
// store but has no mount of it (variables for the tests).
var (
	endingWait = 30 * time.Second
	endingPoll = 20 * time.Millisecond
)

// holder is who holds a store's lock, as far as it can be found.
type holder struct {
	pid     int      // 0: not found
	sameNS  bool     // pid is in this process's mount namespace
	tableOK bool     // the mount table was read
	mounts  []string // the mountpoints of the store's fuse.mmapfs mounts
}

// unmounted reports whether the holder is known to be a process of this
// mount namespace with no mount of the store: only then is it waited for.
func (h holder) unmounted() bool {
	return h.pid != 0 && h.sameNS && h.tableOK && len(h.mounts) == 0
}

// storeHolder finds who holds the lock of the store f. A mount is the
// store's if its source is the store's directory (the same device and
// inode, whatever path names it).
func storeHolder(f *os.File) holder {
	var h holder
	var st unix.Stat_t
	if unix.Fstat(int(f.Fd()), &st) != nil {
		return h
	}
	if pid, ok := flockHolder(st.Dev, st.Ino); ok {
		h.pid = pid
		mine, err1 := os.Readlink("/proc/self/ns/mnt")
		theirs, err2 := os.Readlink("/proc/" + strconv.Itoa(pid) + "/ns/mnt")
		h.sameNS = err1 == nil && err2 == nil && mine == theirs
	}
	mounts, err := readMounts()
	if err != nil {
		return h
	}
	h.tableOK = true
	h.mounts = mountsOf(mounts, func(source string) bool {
		var ms unix.Stat_t
		return unix.Stat(source, &ms) == nil && ms.Dev == st.Dev && ms.Ino == st.Ino
	})
	return h
}

// refusal is the error of a store held by h; waited is how long it was
// waited for, when waitedFor.
func (h holder) refusal(root string, waited time.Duration, waitedFor bool) error {
	who := "another process"
	if h.pid != 0 {
		who = "pid " + strconv.Itoa(h.pid)
	}
	if len(h.mounts) > 0 {
		who += ", mounted at " + strings.Join(h.mounts, " and ")
	} else if waitedFor {
		who += fmt.Sprintf(", with no mount of it, still holding it after %v", waited.Round(100*time.Millisecond))
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

// mountsOf returns the mountpoints of the fuse.mmapfs mounts in mounts
// whose source isStore says is the store.
func mountsOf(mounts []mountInfo, isStore func(source string) bool) []string {
	var mnts []string
	for _, mi := range mounts {
		if mi.fstype == "fuse.mmapfs" && isStore(mi.source) {
			mnts = append(mnts, mi.mountpoint)
		}
	}
	return mnts
}
