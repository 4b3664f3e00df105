package integration

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// Bad input gets the errno the store's own filesystem gives: each case
// runs on a plain directory of that filesystem and on the mount, and the
// answers must agree.

type badCall struct {
	name string
	// setup prepares dir (plain or mount) and returns what call needs.
	call func(t *testing.T, dir string) error
}

func mustCreate(t *testing.T, p string, data []byte) *os.File {
	t.Helper()
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

var badCalls = []badCall{
	{"pwrite past the maximum size", func(t *testing.T, d string) error {
		f := mustCreate(t, filepath.Join(d, "f"), nil)
		_, err := unix.Pwrite(int(f.Fd()), []byte("x"), 1<<62)
		return err
	}},
	{"ftruncate past the maximum size", func(t *testing.T, d string) error {
		f := mustCreate(t, filepath.Join(d, "f"), nil)
		return unix.Ftruncate(int(f.Fd()), 1<<62)
	}},
	{"ftruncate negative", func(t *testing.T, d string) error {
		f := mustCreate(t, filepath.Join(d, "f"), nil)
		return unix.Ftruncate(int(f.Fd()), -1)
	}},
	{"fallocate length 0", func(t *testing.T, d string) error {
		f := mustCreate(t, filepath.Join(d, "f"), nil)
		return unix.Fallocate(int(f.Fd()), 0, 0, 0)
	}},
	{"fallocate negative offset", func(t *testing.T, d string) error {
		f := mustCreate(t, filepath.Join(d, "f"), nil)
		return unix.Fallocate(int(f.Fd()), 0, -1, 10)
	}},
	{"fallocate unknown mode", func(t *testing.T, d string) error {
		f := mustCreate(t, filepath.Join(d, "f"), []byte("data"))
		return unix.Fallocate(int(f.Fd()), 0x4000, 0, 10)
	}},
	{"fallocate punch hole without keep size", func(t *testing.T, d string) error {
		f := mustCreate(t, filepath.Join(d, "f"), []byte("data"))
		return unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_PUNCH_HOLE, 0, 2)
	}},
	{"SEEK_DATA at EOF", func(t *testing.T, d string) error {
		f := mustCreate(t, filepath.Join(d, "f"), []byte("data"))
		_, err := unix.Seek(int(f.Fd()), 4, unix.SEEK_DATA)
		return err
	}},
	{"SEEK_HOLE past EOF", func(t *testing.T, d string) error {
		f := mustCreate(t, filepath.Join(d, "f"), []byte("data"))
		_, err := unix.Seek(int(f.Fd()), 100, unix.SEEK_HOLE)
		return err
	}},
	{"name of 256 bytes", func(t *testing.T, d string) error {
		return os.WriteFile(filepath.Join(d, strings.Repeat("n", 256)), nil, 0o644)
	}},
	{"name of 255 bytes", func(t *testing.T, d string) error {
		return os.WriteFile(filepath.Join(d, strings.Repeat("n", 255)), []byte("ok"), 0o644)
	}},
	{"O_EXCL on an existing file", func(t *testing.T, d string) error {
		mustCreate(t, filepath.Join(d, "f"), nil)
		_, err := unix.Open(filepath.Join(d, "f"), unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY, 0o644)
		return err
	}},
	{"O_DIRECTORY on a file", func(t *testing.T, d string) error {
		mustCreate(t, filepath.Join(d, "f"), nil)
		fd, err := unix.Open(filepath.Join(d, "f"), unix.O_RDONLY|unix.O_DIRECTORY, 0)
		if err == nil {
			unix.Close(fd)
		}
		return err
	}},
	{"open a directory for writing", func(t *testing.T, d string) error {
		if err := os.Mkdir(filepath.Join(d, "dir"), 0o755); err != nil {
			t.Fatal(err)
		}
		fd, err := unix.Open(filepath.Join(d, "dir"), unix.O_WRONLY, 0)
		if err == nil {
			unix.Close(fd)
		}
		return err
	}},
	{"truncate a directory", func(t *testing.T, d string) error {
		if err := os.Mkdir(filepath.Join(d, "dir"), 0o755); err != nil {
			t.Fatal(err)
		}
		return unix.Truncate(filepath.Join(d, "dir"), 0)
	}},
	{"rmdir a non-empty directory", func(t *testing.T, d string) error {
		if err := os.MkdirAll(filepath.Join(d, "dir", "sub"), 0o755); err != nil {
			t.Fatal(err)
		}
		return unix.Rmdir(filepath.Join(d, "dir"))
	}},
	{"rmdir a file", func(t *testing.T, d string) error {
		mustCreate(t, filepath.Join(d, "f"), nil)
		return unix.Rmdir(filepath.Join(d, "f"))
	}},
	{"unlink a directory", func(t *testing.T, d string) error {
		if err := os.Mkdir(filepath.Join(d, "dir"), 0o755); err != nil {
			t.Fatal(err)
		}
		return unix.Unlink(filepath.Join(d, "dir"))
	}},
	{"mkdir over an existing name", func(t *testing.T, d string) error {
		mustCreate(t, filepath.Join(d, "f"), nil)
		return unix.Mkdir(filepath.Join(d, "f"), 0o755)
	}},
	{"hard link to a directory", func(t *testing.T, d string) error {
		if err := os.Mkdir(filepath.Join(d, "dir"), 0o755); err != nil {
			t.Fatal(err)
		}
		return unix.Link(filepath.Join(d, "dir"), filepath.Join(d, "dirlink"))
	}},
	{"rename a directory into itself", func(t *testing.T, d string) error {
		if err := os.MkdirAll(filepath.Join(d, "dir", "sub"), 0o755); err != nil {
			t.Fatal(err)
		}
		return unix.Rename(filepath.Join(d, "dir"), filepath.Join(d, "dir", "sub", "x"))
	}},
	{"rename a directory over a non-empty one", func(t *testing.T, d string) error {
		if err := os.MkdirAll(filepath.Join(d, "a"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Join(d, "b", "sub"), 0o755); err != nil {
			t.Fatal(err)
		}
		return unix.Rename(filepath.Join(d, "a"), filepath.Join(d, "b"))
	}},
	{"RENAME_NOREPLACE onto an existing name", func(t *testing.T, d string) error {
		mustCreate(t, filepath.Join(d, "a"), nil)
		mustCreate(t, filepath.Join(d, "b"), nil)
		return unix.Renameat2(unix.AT_FDCWD, filepath.Join(d, "a"), unix.AT_FDCWD, filepath.Join(d, "b"), unix.RENAME_NOREPLACE)
	}},
	{"RENAME_EXCHANGE with a missing name", func(t *testing.T, d string) error {
		mustCreate(t, filepath.Join(d, "a"), nil)
		return unix.Renameat2(unix.AT_FDCWD, filepath.Join(d, "a"), unix.AT_FDCWD, filepath.Join(d, "missing"), unix.RENAME_EXCHANGE)
	}},
	{"RENAME_NOREPLACE|RENAME_EXCHANGE", func(t *testing.T, d string) error {
		mustCreate(t, filepath.Join(d, "a"), nil)
		mustCreate(t, filepath.Join(d, "b"), nil)
		return unix.Renameat2(unix.AT_FDCWD, filepath.Join(d, "a"), unix.AT_FDCWD, filepath.Join(d, "b"), unix.RENAME_NOREPLACE|unix.RENAME_EXCHANGE)
	}},
	{"readlink of a file", func(t *testing.T, d string) error {
		mustCreate(t, filepath.Join(d, "f"), nil)
		_, err := os.Readlink(filepath.Join(d, "f"))
		return err
	}},
	{"getxattr of a missing attribute", func(t *testing.T, d string) error {
		mustCreate(t, filepath.Join(d, "f"), nil)
		_, err := unix.Getxattr(filepath.Join(d, "f"), "user.missing", make([]byte, 16))
		return err
	}},
	{"setxattr XATTR_CREATE over an existing one", func(t *testing.T, d string) error {
		mustCreate(t, filepath.Join(d, "f"), nil)
		if err := unix.Setxattr(filepath.Join(d, "f"), "user.a", []byte("1"), 0); err != nil {
			return err
		}
		return unix.Setxattr(filepath.Join(d, "f"), "user.a", []byte("2"), unix.XATTR_CREATE)
	}},
	{"write to a read-only descriptor", func(t *testing.T, d string) error {
		mustCreate(t, filepath.Join(d, "f"), nil)
		f, err := os.Open(filepath.Join(d, "f"))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		_, err = unix.Write(int(f.Fd()), []byte("x"))
		return err
	}},
}

func TestBadInputMatchesStoreFilesystem(t *testing.T) {
	t.Parallel()
	m := startMount(t)
	for i, c := range badCalls {
		native := t.TempDir() // on the same filesystem as the store
		onMount := filepath.Join(m.mnt, "case"+strings.Repeat("x", i%3)+string(rune('a'+i%26))+string(rune('a'+i/26)))
		if err := os.Mkdir(onMount, 0o755); err != nil {
			t.Fatal(err)
		}
		want := errnoOf(c.call(t, native))
		got := errnoOf(c.call(t, onMount))
		if got != want {
			t.Errorf("%s: mount gives %s, the store's filesystem %s", c.name, errnoName(got), errnoName(want))
		}
	}
	readStats(t, m) // still serving
}

// TestLongPaths: paths up to PATH_MAX and names of 255 bytes work on the
// mount as on the store's filesystem, and one byte more fails the same way.
func TestLongPaths(t *testing.T) {
	t.Parallel()
	m := startMount(t)
	for _, root := range []string{t.TempDir(), m.mnt} {
		// Directories of 255-byte names until the path is as long as it
		// may be for a 255-byte file name at the bottom.
		seg := strings.Repeat("d", 255)
		dir := root
		for len(dir)+1+len(seg)+1+255 < unix.PathMax {
			dir = filepath.Join(dir, seg)
			if err := os.Mkdir(dir, 0o755); err != nil {
				t.Fatalf("mkdir at depth %d (%d bytes): %v", strings.Count(dir, seg), len(dir), err)
			}
		}
		// Pad the last directory name so the file path is exactly
		// PATH_MAX-1 bytes long.
		pad := unix.PathMax - 1 - (len(dir) + 1 + 255) - 1
		if pad > 0 {
			dir = filepath.Join(dir, strings.Repeat("p", pad))
			if err := os.Mkdir(dir, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		file := filepath.Join(dir, strings.Repeat("f", 255))
		if len(file) != unix.PathMax-1 {
			t.Fatalf("test built a path of %d bytes, want %d", len(file), unix.PathMax-1)
		}
		if err := os.WriteFile(file, []byte("deep"), 0o644); err != nil {
			t.Fatalf("%s: write a %d-byte path: %v", root, len(file), err)
		}
		if got, err := os.ReadFile(file); err != nil || string(got) != "deep" {
			t.Errorf("%s: read back %q, %v", root, got, err)
		}
		renamed := filepath.Join(dir, strings.Repeat("g", 255))
		if err := os.Rename(file, renamed); err != nil {
			t.Errorf("%s: rename at PATH_MAX: %v", root, err)
		}
		if err := os.WriteFile(file+"x", nil, 0o644); errnoOf(err) != syscall.ENAMETOOLONG {
			t.Errorf("%s: a path of PATH_MAX bytes: %v, want ENAMETOOLONG", root, err)
		}
	}
}
