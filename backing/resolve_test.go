package backing

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// TestResolveBeneath: names resolve beneath the store root only, and never
// through a symlink, whatever the request's name says.
func TestResolveBeneath(t *testing.T) {
	s := newStore(t)
	root := s.Root()
	outside := t.TempDir()
	if err := os.WriteFile(filepath.Join(outside, "secret"), []byte("SECRET"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(root, "d"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(root, "link")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(outside, "secret"), filepath.Join(root, "filelink")); err != nil {
		t.Fatal(err)
	}
	rel, err := filepath.Rel(root, filepath.Join(outside, "secret"))
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"link/secret", "filelink", rel, "d/../../x", "/etc/passwd"} {
		if b, err := s.Open(name, unix.O_RDONLY, 0); err == nil {
			s.Release(b)
			t.Errorf("Open(%q) succeeded", name)
		} else if !errors.Is(err, syscall.ELOOP) && !errors.Is(err, syscall.EXDEV) {
			t.Errorf("Open(%q): %v, want ELOOP or EXDEV", name, err)
		}
		if fd, err := s.OpenDir(name, unix.O_PATH); err == nil {
			syscall.Close(fd)
			t.Errorf("OpenDir(%q) succeeded", name)
		}
	}
	// The symlink itself, not its target.
	fd, err := s.OpenEntry("link")
	if err != nil {
		t.Fatalf("OpenEntry(link): %v", err)
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(fd, &st); err != nil || st.Mode&syscall.S_IFMT != syscall.S_IFLNK {
		t.Errorf("OpenEntry(link) opened mode %o, %v; want the symlink", st.Mode, err)
	}
	syscall.Close(fd)
	b, err := s.Open("d/../d/x", unix.O_RDWR|unix.O_CREAT, 0o644)
	if err != nil {
		t.Fatalf("a .. that stays beneath the root: %v", err)
	}
	if err := s.Release(b); err != nil {
		t.Error(err)
	}
}
