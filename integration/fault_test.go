package integration

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestDiskFull: on a full store a write through the mount gets ENOSPC
// (extending a file, and filling a hole of a sparse one), never a dead
// daemon; once space is freed the same writes succeed; what was written
// before is intact; the daemon logs the file's name.
func TestDiskFull(t *testing.T) {
	t.Parallel()
	skipIfLoopback(t)
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a tmpfs")
	}
	store := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", store).CombinedOutput(); err != nil {
		t.Fatalf("mount tmpfs: %v: %s", err, out)
	}
	// Registered before the mount's own cleanup, so it runs after it.
	t.Cleanup(func() {
		if out, err := exec.Command("umount", store).CombinedOutput(); err != nil {
			t.Errorf("umount tmpfs: %v: %s", err, out)
		}
	})
	m := startMountAt(t, store, t.TempDir())

	keep := pattern(64<<10, 7)
	writeFile(t, filepath.Join(m.mnt, "keep"), keep)
	sparse := filepath.Join(m.mnt, "sparse")
	if err := os.WriteFile(sparse, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(sparse, 64<<20); err != nil { // a hole, no space used
		t.Fatal(err)
	}

	big := filepath.Join(m.mnt, "big")
	f, err := os.Create(big)
	if err != nil {
		t.Fatal(err)
	}
	chunk := bytes.Repeat([]byte{1}, 256<<10)
	var werr error
	for i := 0; i < 16 && werr == nil; i++ {
		_, werr = f.Write(chunk)
	}
	if errnoOf(werr) != syscall.ENOSPC {
		t.Fatalf("filling a 2 MiB store: %v, want ENOSPC", werr)
	}
	f.Close()

	// Filling a hole needs a page the store does not have.
	h, err := os.OpenFile(sparse, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if _, err := h.WriteAt(chunk, 32<<20); errnoOf(err) != syscall.ENOSPC {
		t.Errorf("writing into a hole of a full store: %v, want ENOSPC", err)
	}

	// The daemon is alive and what was there is intact.
	checkBoth(t, m, "keep", keep)
	readStats(t, m)

	if err := os.Remove(big); err != nil {
		t.Fatal(err)
	}
	if _, err := h.WriteAt(chunk, 32<<20); err != nil {
		t.Errorf("writing into the hole after freeing space: %v", err)
	}
	got := make([]byte, len(chunk))
	if _, err := h.ReadAt(got, 32<<20); err != nil || !bytes.Equal(got, chunk) {
		t.Errorf("reading back the hole's write: %v, equal %v", err, bytes.Equal(got, chunk))
	}
	if !strings.Contains(m.out.String(), "big") || !strings.Contains(m.out.String(), "no space") {
		t.Errorf("the daemon did not log the full disk with the file's name:\n%s", m.out)
	}
}
