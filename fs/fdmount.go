package fs

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Mounting as root: the daemon opens /dev/fuse and mounts it itself, then
// hands go-fuse the descriptor as the magic mountpoint "/dev/fd/N".
//
// go-fuse's own direct mount (MountOptions.DirectMount) is followed by its
// "poll hack" in Server.WaitMount: the daemon opens and polls a file of its
// own mount (.go-fuse-epoll-hack) so that the kernel learns early that
// POLL is not implemented. A SIGKILL while that open is in flight leaves
// the daemon in D state until the connection is aborted: the killed thread
// waits, uninterruptibly, for an answer only the dying process could send.
// mmapfs never opens files of its own mount (a client's poll gets ENOSYS
// once and the kernel remembers it), so it does not need the hack, and
// go-fuse skips it for a "/dev/fd/N" mountpoint. From mount(2) to the
// answer to INIT (inside fuse.NewServer) the daemon touches nothing on the
// mount, so a SIGKILL at any point closes /dev/fuse, which aborts the
// connection, and the process ends.
//
// The same descriptor is what a FUSE-over-io_uring transport needs.

// fdMountOptions are what mount(2) is given for a FUSE mount.
type fdMountOptions struct {
	source   string   // the mount's source, as /proc/mounts shows it
	name     string   // subtype: the fstype is "fuse."+name
	maxRead  int      // max_read=, in bytes: go-fuse's effective MaxWrite
	options  []string // further options: ro, default_permissions; dev, suid, exec and their no- forms become flags
	allowAll bool     // allow_other
}

// mountFuseFd opens /dev/fuse and mounts it at mnt as go-fuse's direct mount
// does (fuse/mount_linux.go mountDirect: the same options, the same flags,
// so that /proc/mounts shows the same line). It returns the descriptor,
// close-on-exec, for fuse.NewServer as "/dev/fd/N"; the caller unmounts.
func mountFuseFd(mnt string, o fdMountOptions) (int, error) {
	var st unix.Stat_t
	if err := unix.Stat(mnt, &st); err != nil {
		return -1, &os.PathError{Op: "stat", Path: mnt, Err: err}
	}
	fd, err := unix.Open("/dev/fuse", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, &os.PathError{Op: "open", Path: "/dev/fuse", Err: err}
	}
	var flags uintptr = unix.MS_NOSUID | unix.MS_NODEV
	data := []string{
		"fd=" + strconv.Itoa(fd),
		fmt.Sprintf("rootmode=%o", st.Mode&unix.S_IFMT),
		"user_id=" + strconv.Itoa(os.Geteuid()),
		"group_id=" + strconv.Itoa(os.Getegid()),
		"max_read=" + strconv.Itoa(o.maxRead),
	}
	for _, opt := range o.options {
		switch opt {
		case "nodev":
			flags |= unix.MS_NODEV
		case "dev":
			flags &^= unix.MS_NODEV
		case "nosuid":
			flags |= unix.MS_NOSUID
		case "suid":
			flags &^= unix.MS_NOSUID
		case "noexec":
			flags |= unix.MS_NOEXEC
		case "exec":
			flags &^= unix.MS_NOEXEC
		default:
			data = append(data, opt)
		}
	}
	if o.allowAll {
		data = append(data, "allow_other")
	}
	if err := unix.Mount(o.source, mnt, "fuse."+o.name, flags, strings.Join(data, ",")); err != nil {
		return -1, errors.Join(fmt.Errorf("mount(2) of %s at %s (fuse.%s, %s): %w", o.source, mnt, o.name, strings.Join(data[1:], ","), err),
			closeFd(fd))
	}
	return fd, nil
}

func closeFd(fd int) error {
	if err := unix.Close(fd); err != nil {
		return fmt.Errorf("closing /dev/fuse: %w", err)
	}
	return nil
}

// unmountFd unmounts a mount made by mountFuseFd. It retries an EBUSY a few
// times as go-fuse's Server.Unmount does: the kernel may not yet have seen
// the last close of a file on the mount.
func unmountFd(mnt string) error {
	var err error
	delay := time.Duration(0)
	for try := 0; try < 5; try++ {
		if err = unix.Unmount(mnt, 0); !errors.Is(err, syscall.EBUSY) {
			break
		}
		delay = 2*delay + 5*time.Millisecond
		time.Sleep(delay)
	}
	if err != nil {
		return fmt.Errorf("unmount %s: %w", mnt, err)
	}
	return nil
}

// effectiveMaxWrite is the MaxWrite go-fuse will use for n (its
// setDefaults): 0 means 128 KiB, capped at what the kernel allows.
func effectiveMaxWrite(n int) int {
	if n <= 0 {
		n = 128 << 10
	}
	limit := 256
	if b, err := os.ReadFile("/proc/sys/fs/fuse/max_pages_limit"); err == nil {
		if v, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
			limit = v
		}
	}
	return min(n, limit*os.Getpagesize())
}
