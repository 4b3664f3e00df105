package fs

import (
	"os"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// TestKillBits: the bits a flagged write, truncate or chown clears, by
// the kernel's rule for a local file: setuid always; setgid when the file
// is group-executable, else (the mandatory-locking mark) only when the
// caller is outside the file's group and, on chown, lacks CAP_FSETID; and
// both when the caller's credentials cannot be read.
func TestKillBits(t *testing.T) {
	t.Parallel()
	self := uint32(os.Getpid())
	c, err := readCallerCreds(self)
	if err != nil {
		t.Fatal(err)
	}
	mine := uint32(os.Getegid())
	// A group this process is not in.
	other := uint32(54321)
	for c.inGroup(other) {
		other++
	}
	const suid, sgid = syscall.S_ISUID, syscall.S_ISGID
	fsetid := c.capable(unix.CAP_FSETID)
	for _, k := range []struct {
		name       string
		rule       killRule
		mode, gid  uint32
		pid        uint32
		want       uint32
		needFSETID bool // the case holds only for a caller with CAP_FSETID
	}{
		{"plain file", killWrite, 0o644, mine, self, 0, false},
		{"setuid", killWrite, suid | 0o755, mine, self, suid, false},
		{"setuid, chown", killChown, suid | 0o755, mine, self, suid, false},
		{"setgid group-executable", killWrite, sgid | 0o755, mine, self, sgid, false},
		{"setuid setgid group-executable", killChown, suid | sgid | 0o750, other, self, suid | sgid, false},
		{"lock mark, caller in group", killWrite, sgid | 0o644, mine, self, 0, false},
		{"lock mark, caller not in group", killWrite, sgid | 0o644, other, self, sgid, false},
		{"lock mark, chown by a caller with CAP_FSETID", killChown, sgid | 0o644, other, self, 0, true},
		{"lock mark, credentials unreadable (pid 0)", killWrite, suid | sgid | 0o644, mine, 0, suid | sgid, false},
		{"lock mark, no such process", killChown, sgid | 0o644, mine, 1 << 30, sgid, false},
	} {
		if k.needFSETID && !fsetid {
			continue
		}
		if got := killBits(k.rule, k.mode, k.gid, k.pid); got != k.want {
			t.Errorf("%s: killBits(mode %#o, gid %d) = %#o, want %#o", k.name, k.mode, k.gid, got, k.want)
		}
	}
}
