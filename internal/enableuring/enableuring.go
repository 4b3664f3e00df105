// Package enableuring shares the fuse module's enable_uring switch
// between the processes that need it on for a while: the tests of
// fs/uring and of the integration suite (which go test ./... runs at
// once, as separate binaries) and the bench. The daemon never uses it:
// it never changes enable_uring.
//
// The rule: whoever finds the switch off turns it on and records what it
// read in a file beside the lock (the record); the last user out, of
// whichever process, puts the recorded value back and removes the
// record. A user holds a shared flock(2) on the users file for as long
// as it needs the switch on; an exclusive flock on the mutex file
// serialises every read-modify-write of the switch and the record. A
// user that leaves takes the users file exclusively without waiting: if
// it cannot, someone still uses the switch and will put it back. The
// kernel drops the flocks of a process that dies however it dies, so a
// killed user never blocks the others; if it was the last, its record
// stays until the next user leaves or Recover runs (the integration
// suite's watchdog runs it when the test binary dies).
package enableuring

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// Param is the fuse module's switch for FUSE over io_uring.
const Param = "/sys/module/fuse/parameters/enable_uring"

// ErrNoURing says that this kernel has no FUSE over io_uring: the
// switch does not exist.
var ErrNoURing = errors.New("this kernel has no FUSE over io_uring")

// Switch is an enable_uring switch and the files that share it.
type Switch struct {
	// Param is the switch: Param, or a file of a test's own.
	Param string
	// Lock is the base name of the mutex (Lock), the users file
	// (Lock+".users") and the record (Lock+".was").
	Lock string
}

// For returns the Switch of param: the real one's files are in /run
// (gone at boot, as is the module's state), another file's beside it.
func For(param string) Switch {
	if param == Param {
		return Switch{Param: param, Lock: "/run/mmapfs-enable-uring.lock"}
	}
	return Switch{Param: param, Lock: param + ".lock"}
}

// Real is the machine's switch.
var Real = For(Param)

func (s Switch) usersPath() string  { return s.Lock + ".users" }
func (s Switch) recordPath() string { return s.Lock + ".was" }

// flockFile opens (making it) path and flocks it with how.
func flockFile(path string, how int) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	for {
		err = unix.Flock(int(f.Fd()), how)
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("flock %s: %w", path, err)
	}
	return f, nil
}

// lockMu takes the mutex; the caller closes the file to release it.
func (s Switch) lockMu() (*os.File, error) {
	f, err := flockFile(s.Lock, unix.LOCK_EX)
	if err != nil {
		return nil, fmt.Errorf("locking %s's users: %w", s.Param, err)
	}
	return f, nil
}

// read returns the switch's value, trimmed, and its bytes.
func (s Switch) read() (string, []byte, error) {
	b, err := os.ReadFile(s.Param)
	if errors.Is(err, os.ErrNotExist) {
		return "", nil, fmt.Errorf("%w (%s does not exist: Linux 6.14 or later with CONFIG_FUSE_IO_URING, and the fuse module loaded)", ErrNoURing, s.Param)
	}
	if err != nil {
		return "", nil, fmt.Errorf("reading %s: %w", s.Param, err)
	}
	return string(bytes.TrimSpace(b)), b, nil
}

func isOn(v string) bool  { return v == "Y" || v == "1" }
func isOff(v string) bool { return v == "N" || v == "0" }

// Use is one user's hold on the switch; Release ends it.
type Use struct {
	s     Switch
	users *os.File // shared flock on s.usersPath(); nil once released
	// Changed says this use turned the switch on (from what it
	// read, recorded).
	Changed bool
}

// Acquire makes the caller a user of the switch: on until it releases
// it. It turns an off switch on, recording what it read for the last
// user to put back. It returns an error wrapping ErrNoURing where the
// switch does not exist.
func (s Switch) Acquire() (*Use, error) {
	mu, err := s.lockMu()
	if errors.Is(err, os.ErrPermission) {
		// Not root (the bench may run so): a switch that is on
		// already can be used, one that is off cannot be turned on.
		if v, _, rerr := s.read(); rerr != nil || !isOn(v) {
			return nil, errors.Join(err, rerr)
		}
		return &Use{s: s}, nil
	}
	if err != nil {
		return nil, err
	}
	defer mu.Close()
	v, was, err := s.read()
	if err != nil {
		return nil, err
	}
	if !isOn(v) && !isOff(v) {
		return nil, fmt.Errorf("%s reads %q, neither Y nor N", s.Param, v)
	}
	users, err := flockFile(s.usersPath(), unix.LOCK_SH)
	if err != nil {
		return nil, fmt.Errorf("joining %s's users: %w", s.Param, err)
	}
	u := &Use{s: s, users: users}
	if isOn(v) {
		return u, nil
	}
	// Off: record it before writing, so that a kill in between leaves
	// a record of the original, never an on switch without one.
	if _, err := os.Stat(s.recordPath()); errors.Is(err, os.ErrNotExist) {
		if err := writeRecord(s.recordPath(), was); err != nil {
			return nil, errors.Join(err, users.Close())
		}
	}
	if err := os.WriteFile(s.Param, []byte("1"), 0); err != nil {
		err = fmt.Errorf("turning %s on: %w", s.Param, err)
		return nil, errors.Join(err, users.Close(), s.restoreIfUnused())
	}
	if now, _, err := s.read(); err != nil || !isOn(now) {
		err = fmt.Errorf("turning %s on: it reads %q after writing 1 (%v)", s.Param, now, err)
		return nil, errors.Join(err, users.Close(), s.restoreIfUnused())
	}
	u.Changed = true
	return u, nil
}

// writeRecord writes b to path atomically (a temporary file renamed).
func writeRecord(path string, b []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("recording the switch's value: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("recording the switch's value: %w", errors.Join(err, os.Remove(tmp)))
	}
	return nil
}

// Release ends the use; the last user of all puts back what the first
// recorded. Safe to call twice.
func (u *Use) Release() error {
	if u == nil || u.users == nil {
		return nil
	}
	mu, err := u.s.lockMu()
	if err != nil {
		return errors.Join(err, u.users.Close())
	}
	defer mu.Close()
	cerr := u.users.Close()
	u.users = nil
	return errors.Join(cerr, u.s.restoreIfUnused())
}

// restoreIfUnused puts the recorded value back if nobody holds the
// switch; the caller holds the mutex.
func (s Switch) restoreIfUnused() error {
	rec, err := os.ReadFile(s.recordPath())
	if errors.Is(err, os.ErrNotExist) {
		return nil // nothing to put back
	}
	if err != nil {
		return fmt.Errorf("reading the record of %s: %w", s.Param, err)
	}
	users, err := flockFile(s.usersPath(), unix.LOCK_EX|unix.LOCK_NB)
	if errors.Is(err, unix.EWOULDBLOCK) {
		return nil // still used: the last one out puts it back
	}
	if err != nil {
		return fmt.Errorf("checking %s's users: %w", s.Param, err)
	}
	defer users.Close()
	if err := os.WriteFile(s.Param, rec, 0); err != nil {
		return fmt.Errorf("putting %s back to %q: %w", s.Param, strings.TrimSpace(string(rec)), err)
	}
	if err := os.Remove(s.recordPath()); err != nil {
		return fmt.Errorf("removing the record of %s: %w", s.Param, err)
	}
	return nil
}

// Recover puts back what a user that died recorded, if nobody uses the
// switch now; a no-op otherwise. For a process that watches users that
// may be killed.
func (s Switch) Recover() error {
	if _, err := os.Stat(s.recordPath()); errors.Is(err, os.ErrNotExist) {
		return nil // nothing recorded: do not even make the lock files
	}
	mu, err := s.lockMu()
	if err != nil {
		return err
	}
	defer mu.Close()
	return s.restoreIfUnused()
}

// IfOff runs f if the switch is off and nobody uses it, with the mutex
// held: no user turns it on while f runs (Acquire waits). It says
// whether f ran.
func (s Switch) IfOff(f func()) (bool, error) {
	mu, err := s.lockMu()
	if err != nil {
		return false, err
	}
	defer mu.Close()
	v, _, err := s.read()
	if err != nil || !isOff(v) {
		return false, err
	}
	users, err := flockFile(s.usersPath(), unix.LOCK_EX|unix.LOCK_NB)
	if errors.Is(err, unix.EWOULDBLOCK) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("checking %s's users: %w", s.Param, err)
	}
	users.Close()
	f()
	return true, nil
}
