package integration

import (
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// The daemon clears setuid/setgid bits and file capabilities itself
// (CAP_HANDLE_KILLPRIV_V2, which spares a getxattr round trip per write):
// each case runs on a plain directory of the store's filesystem and on
// the mount, and the file's mode and capabilities afterwards must agree.

// fileCaps is a valid security.capability value (revision 2, effective,
// CAP_NET_RAW permitted).
func fileCaps() []byte {
	v := make([]byte, 20)
	binary.LittleEndian.PutUint32(v[0:], 0x02000001)
	binary.LittleEndian.PutUint32(v[4:], 1<<13)
	return v
}

func TestKillPrivMatchesStoreFilesystem(t *testing.T) {
	t.Parallel()
	skipIfLoopback(t)
	if os.Geteuid() != 0 {
		t.Skip("needs root to act as another user and to set file capabilities")
	}
	asNobody := func(args ...string) {
		t.Helper()
		cmd := exec.Command(args[0], args[1:]...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%v as nobody: %v: %s", args, err, out)
		}
	}
	type result struct {
		mode uint32
		caps bool
	}
	cases := []struct {
		name  string
		mode  uint32
		caps  bool
		apply func(p string)
	}{
		{"write by another user", 0o6777, false, func(p string) { asNobody("sh", "-c", "printf x >> "+p) }},
		{"truncate by another user", 0o6777, false, func(p string) { asNobody("truncate", "-s", "1", p) }},
		{"O_TRUNC by another user", 0o6777, false, func(p string) { asNobody("sh", "-c", "printf y > "+p) }},
		{"setgid without group execute", 0o2766, false, func(p string) { asNobody("sh", "-c", "printf x >> "+p) }},
		{"write by root keeps the bits", 0o6777, false, func(p string) {
			f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
			if err != nil {
				t.Fatal(err)
			}
			f.Write([]byte("r"))
			f.Close()
		}},
		{"write by root removes capabilities", 0o755, true, func(p string) {
			f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
			if err != nil {
				t.Fatal(err)
			}
			f.Write([]byte("r"))
			f.Close()
		}},
	}
	run := func(dir string, i int) result {
		c := cases[i]
		p := filepath.Join(dir, "f"+string(rune('a'+i)))
		if err := os.WriteFile(p, []byte("data"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, os.FileMode(c.mode&0o777)|modeBits(c.mode)); err != nil {
			t.Fatal(err)
		}
		if c.caps {
			if err := unix.Setxattr(p, "security.capability", fileCaps(), 0); err != nil {
				t.Skipf("setting file capabilities: %v", err)
			}
		}
		c.apply(p)
		var st unix.Stat_t
		if err := unix.Stat(p, &st); err != nil {
			t.Fatal(err)
		}
		_, err := unix.Getxattr(p, "security.capability", make([]byte, 64))
		return result{mode: st.Mode & 0o7777, caps: err == nil}
	}
	native := openDir(t, "native")
	store, mnt := openDir(t, "store"), openDir(t, "mnt")
	startMountAt(t, store, mnt, "--allow-other")
	for i, c := range cases {
		want := run(native, i)
		got := run(mnt, i)
		if got != want {
			t.Errorf("%s: mount leaves mode %o caps %v, the store's filesystem mode %o caps %v", c.name, got.mode, got.caps, want.mode, want.caps)
		}
	}
}

// modeBits turns the setuid/setgid/sticky bits of a Unix mode into Go's.
func modeBits(m uint32) os.FileMode {
	var fm os.FileMode
	if m&syscall.S_ISUID != 0 {
		fm |= os.ModeSetuid
	}
	if m&syscall.S_ISGID != 0 {
		fm |= os.ModeSetgid
	}
	if m&syscall.S_ISVTX != 0 {
		fm |= os.ModeSticky
	}
	return fm
}
