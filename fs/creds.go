package fs

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// Modes and owners of new nodes, as ext4 gives them to the caller.
//
// The mode of a MKDIR, MKNOD, CREATE or TMPFILE request already has the
// caller's umask applied: go-fuse does not negotiate CAP_DONT_MASK, so
// the kernel applies it before sending the request. The daemon's own
// umask must then not count a second time, and ignoreUmask clears it once
// the mount is about to be served. From then on everything the daemon
// process creates gets exactly the mode it asks for.
//
// A node is created with the caller's filesystem uid and gid (asCaller),
// so that the store's filesystem gives it the owner, the group and the
// setgid bit it gives the caller itself (inode_init_owner: the group of
// a setgid directory, and its setgid bit to a new directory), and the
// node never exists, even for an instant, with an owner or a mode the
// caller could not have given it (as it would if the daemon created it
// as root and then chowned it).

// ignoreUmask sets the daemon's umask to 0 (see above). The umask is the
// whole process's.
func ignoreUmask() { unix.Umask(0) }

// asCaller runs create, which makes one new node in the store, with the
// filesystem uid and gid of the request's caller. When the daemon is not
// root (it cannot switch, and owns whatever it makes, as the mount's only
// user) or the caller is uid 0 gid 0, create runs as it is: no system call
// is added.
func (m *mountState) asCaller(ctx context.Context, create func() error) error {
	if !m.asRoot {
		return create()
	}
	c, ok := fuse.FromContext(ctx)
	if !ok || (c.Uid == 0 && c.Gid == 0) {
		return create()
	}
	return runAs(int(c.Uid), int(c.Gid), create)
}

// runAs runs fn on an OS thread of its own whose filesystem uid and gid
// are uid and gid, and waits for it.
//
// setfsuid and setfsgid change only the calling thread (they are raw
// system calls, not the runtime's all-threads setuid), so fn runs on a
// fresh goroutine locked to its thread for the whole switch; the runtime
// never clones a thread from a locked one (it asks its template thread),
// so no other thread inherits the switched credentials. Moving fsuid away
// from 0 makes the kernel drop the filesystem capabilities
// (CAP_DAC_OVERRIDE, CAP_FOWNER, CAP_FSETID, CAP_MKNOD, ...) from the
// thread's effective set; they are put back with capset for the
// duration of fn, so that the kernel's own permission checks, already
// made for the caller under default_permissions, are not made a second
// time against the daemon, and only the ownership of what fn creates
// changes. If the thread's credentials cannot be put back as they were,
// the goroutine exits still locked, and the runtime ends the thread with
// it.
func runAs(uid, gid int, fn func() error) error {
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		err, restored := switchAndRun(uid, gid, fn)
		if restored {
			runtime.UnlockOSThread()
		}
		done <- err
	}()
	return <-done
}

// switchAndRun is runAs on the locked thread. restored reports whether
// the thread's credentials are the daemon's again.
func switchAndRun(uid, gid int, fn func() error) (err error, restored bool) {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var caps [2]unix.CapUserData
	if err := unix.Capget(&hdr, &caps[0]); err != nil {
		return fmt.Errorf("creating as uid %d gid %d: capget: %w", uid, gid, err), true
	}
	prevGid, err := setfsgid(gid)
	if err != nil {
		return fmt.Errorf("creating as uid %d gid %d: %w", uid, gid, err), restoreCreds(-1, prevGid, &caps) == nil
	}
	prevUid, err := setfsuid(uid)
	if err == nil {
		err = unix.Capset(&hdr, &caps[0])
		if err != nil {
			err = fmt.Errorf("capset: %w", err)
		}
	}
	if err != nil {
		return fmt.Errorf("creating as uid %d gid %d: %w", uid, gid, err), restoreCreds(prevUid, prevGid, &caps) == nil
	}
	ferr := fn()
	if rerr := restoreCreds(prevUid, prevGid, &caps); rerr != nil {
		return errors.Join(ferr, fmt.Errorf("after creating as uid %d gid %d: %w", uid, gid, rerr)), false
	}
	return ferr, true
}

// setfsuid sets the thread's filesystem uid and returns the previous one.
// setfsuid(2) reports no failure but by leaving the fsuid as it was: ask
// again with an invalid uid, which changes nothing and returns the
// current one.
func setfsuid(uid int) (int, error) { return setfsid("uid", unix.SetfsuidRetUid, uid) }

// setfsgid is setfsuid for the filesystem gid.
func setfsgid(gid int) (int, error) { return setfsid("gid", unix.SetfsgidRetGid, gid) }

// setfsid sets the filesystem id (which: "uid" or "gid") with set,
// setfsuid(2) or setfsgid(2), and checks it took.
func setfsid(which string, set func(int) (int, error), id int) (int, error) {
	prev, err := set(id)
	if err != nil {
		return -1, fmt.Errorf("setfs%s %d: %w", which, id, err)
	}
	if now, _ := set(-1); now != id {
		return prev, fmt.Errorf("setfs%s %d: the filesystem %s stayed %d: %w", which, id, which, now, syscall.EPERM)
	}
	return prev, nil
}

// restoreCreds puts back the thread's filesystem uid and gid (-1: not
// changed) and its capabilities, and checks that they are back.
func restoreCreds(uid, gid int, caps *[2]unix.CapUserData) error {
	var errs []error
	if uid >= 0 {
		if _, err := setfsuid(uid); err != nil {
			errs = append(errs, err)
		}
	}
	if gid >= 0 {
		if _, err := setfsgid(gid); err != nil {
			errs = append(errs, err)
		}
	}
	// Back at fsuid 0 the kernel has raised the filesystem capabilities
	// again, from the permitted set: make the effective set exactly what
	// it was.
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var now [2]unix.CapUserData
	if err := unix.Capget(&hdr, &now[0]); err != nil {
		return errors.Join(append(errs, fmt.Errorf("capget: %w", err))...)
	}
	if now != *caps {
		if err := unix.Capset(&hdr, &caps[0]); err != nil {
			errs = append(errs, fmt.Errorf("capset: %w", err))
		}
	}
	return errors.Join(errs...)
}

// callerCreds is what the kernel knows of a request's caller that the
// request header does not carry: its filesystem gid, supplementary
// groups and effective capabilities, from /proc/PID/status.
type callerCreds struct {
	fsgid  uint32
	groups []uint32
	capEff uint64 // as seen from the daemon's user namespace; 0 for a caller in another
}

// readCallerCreds reads the credentials of the caller pid (the thread
// that made the request, as the FUSE header names it).
func readCallerCreds(pid uint32) (callerCreds, error) {
	if pid == 0 {
		return callerCreds{}, fmt.Errorf("caller credentials: the request names no process (pid 0): %w", syscall.ESRCH)
	}
	dir := "/proc/" + strconv.FormatUint(uint64(pid), 10)
	data, err := os.ReadFile(dir + "/status")
	if err != nil {
		return callerCreds{}, fmt.Errorf("caller credentials: %w", err)
	}
	var c callerCreds
	var haveGid, haveCaps bool
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		key, val, ok := bytes.Cut(sc.Bytes(), []byte(":"))
		if !ok {
			continue
		}
		fields := bytes.Fields(val)
		switch string(key) {
		case "Gid": // real, effective, saved, filesystem
			if len(fields) == 4 {
				g, err := strconv.ParseUint(string(fields[3]), 10, 32)
				if err != nil {
					return callerCreds{}, fmt.Errorf("caller credentials: %s/status: Gid: %w", dir, err)
				}
				c.fsgid, haveGid = uint32(g), true
			}
		case "Groups":
			for _, f := range fields {
				g, err := strconv.ParseUint(string(f), 10, 32)
				if err != nil {
					return callerCreds{}, fmt.Errorf("caller credentials: %s/status: Groups: %w", dir, err)
				}
				c.groups = append(c.groups, uint32(g))
			}
		case "CapEff":
			if len(fields) == 1 {
				v, err := strconv.ParseUint(string(fields[0]), 16, 64)
				if err != nil {
					return callerCreds{}, fmt.Errorf("caller credentials: %s/status: CapEff: %w", dir, err)
				}
				c.capEff, haveCaps = v, true
			}
		}
	}
	if !haveGid || !haveCaps {
		return callerCreds{}, fmt.Errorf("caller credentials: %s/status has no Gid or CapEff line: %w", dir, syscall.EINVAL)
	}
	// A capability held in another user namespace is not one over the
	// store's files.
	own, err1 := os.Readlink("/proc/self/ns/user")
	theirs, err2 := os.Readlink(dir + "/ns/user")
	if err1 != nil || err2 != nil || own != theirs {
		c.capEff = 0
	}
	return c, nil
}

// inGroup reports whether gid is the caller's filesystem gid or one of its
// supplementary groups (the kernel's in_group_p).
func (c callerCreds) inGroup(gid uint32) bool {
	if c.fsgid == gid {
		return true
	}
	for _, g := range c.groups {
		if g == gid {
			return true
		}
	}
	return false
}

// capable reports whether the caller has capability cap in effect.
func (c callerCreds) capable(cap uint) bool { return c.capEff&(1<<cap) != 0 }
