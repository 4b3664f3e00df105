package integration

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Nothing on the mount reaches outside the store: the daemon never follows
// a symlink inside the store on behalf of a request. A symlink a client
// reads and follows is the client's own business (it resolves on its side
// of the mount); what these tests plant are symlinks the daemon would meet
// in the middle of its own work: a directory or a file that the kernel
// knows (cached, with long timeouts) swapped for a symlink to a secret
// outside the store, behind the daemon's back.

// time0 is a time no test sets otherwise.
var time0 = time.Unix(42, 0)

type outside struct {
	dir, secret string
	mode        os.FileMode
}

func makeOutside(t *testing.T) outside {
	t.Helper()
	o := outside{dir: t.TempDir()}
	o.secret = filepath.Join(o.dir, "secret")
	if err := os.WriteFile(o.secret, []byte("SECRET"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(o.dir, 0o700); err != nil {
		t.Fatal(err)
	}
	o.mode = 0o600
	return o
}

// check fails the test if anything outside changed.
func (o outside) check(t *testing.T) {
	t.Helper()
	ents, err := os.ReadDir(o.dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 1 || ents[0].Name() != "secret" {
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		t.Errorf("outside directory now holds %v, want only secret", names)
	}
	fi, err := os.Stat(o.secret)
	if err != nil {
		t.Fatalf("secret outside the store: %v", err)
	}
	if fi.Mode().Perm() != o.mode || fi.Size() != 6 {
		t.Errorf("secret outside the store changed: mode %v size %d", fi.Mode(), fi.Size())
	}
	if got, _ := os.ReadFile(o.secret); !bytes.Equal(got, []byte("SECRET")) {
		t.Errorf("secret outside the store now holds %q", got)
	}
	if sz, err := unix.Getxattr(o.secret, "user.planted", nil); err == nil || sz > 0 {
		t.Errorf("an xattr reached the secret outside the store")
	}
	if dfi, err := os.Stat(o.dir); err != nil || dfi.Mode().Perm() != 0o700 {
		t.Errorf("outside directory mode changed: %v, %v", dfi.Mode(), err)
	}
}

func noSecret(t *testing.T, what string, data []byte, err error) {
	t.Helper()
	if err == nil || bytes.Contains(data, []byte("SECRET")) {
		t.Errorf("%s through a symlink planted in the store: %q, %v; want an error and nothing of the secret", what, data, err)
	}
}

func TestNoEscapeThroughSwappedDirectory(t *testing.T) {
	t.Parallel()
	skipIfLoopback(t)
	o := makeOutside(t)
	m := startMount(t, "--entry-timeout", "1h", "--attr-timeout", "1h")
	dir := filepath.Join(m.mnt, "dir")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); err != nil { // the kernel now knows dir
		t.Fatal(err)
	}
	sd := filepath.Join(m.store, "dir")
	if err := os.Remove(sd); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(o.dir, sd); err != nil {
		t.Fatal(err)
	}

	data, err := os.ReadFile(filepath.Join(dir, "secret"))
	noSecret(t, "read dir/secret", data, err)
	_, err = os.Stat(filepath.Join(dir, "secret"))
	noSecret(t, "stat dir/secret", nil, err)
	ents, err := os.ReadDir(dir)
	if len(ents) > 0 {
		t.Errorf("readdir of the swapped directory listed %d entries (%v)", len(ents), err)
	}
	_, err = os.Create(filepath.Join(dir, "new"))
	noSecret(t, "create dir/new", nil, err)
	noSecret(t, "mkdir dir/newdir", nil, os.Mkdir(filepath.Join(dir, "newdir"), 0o755))
	noSecret(t, "symlink dir/link", nil, os.Symlink("x", filepath.Join(dir, "link")))
	noSecret(t, "unlink dir/secret", nil, os.Remove(filepath.Join(dir, "secret")))
	noSecret(t, "rename dir/secret", nil, os.Rename(filepath.Join(dir, "secret"), filepath.Join(m.mnt, "stolen")))
	// Operations on dir itself reach the symlink in the store, never what
	// it points to.
	_ = os.Chmod(dir, 0o777)
	_ = unix.Setxattr(dir, "user.planted", []byte("x"), 0)
	if _, err := os.Stat(filepath.Join(m.mnt, "stolen")); err == nil {
		t.Errorf("the secret was moved into the mount")
	}
	o.check(t)
	if !logged(m, "refused to follow a symlink") {
		t.Errorf("the daemon did not log the refused symlink:\n%s", m.out)
	}
}

func TestNoEscapeThroughSwappedFile(t *testing.T) {
	t.Parallel()
	skipIfLoopback(t)
	o := makeOutside(t)
	m := startMount(t, "--entry-timeout", "1h", "--attr-timeout", "1h")
	file := filepath.Join(m.mnt, "file")
	writeFile(t, file, []byte("inside"))
	if _, err := os.Stat(file); err != nil {
		t.Fatal(err)
	}
	sf := filepath.Join(m.store, "file")
	if err := os.Remove(sf); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(o.secret, sf); err != nil {
		t.Fatal(err)
	}

	data, err := os.ReadFile(file)
	noSecret(t, "read file", data, err)
	noSecret(t, "truncate file", nil, os.Truncate(file, 0))
	f, err := os.OpenFile(file, os.O_WRONLY|os.O_APPEND, 0)
	if err == nil {
		f.Write([]byte("appended"))
		f.Close()
	}
	_ = os.Chmod(file, 0o666)
	_ = os.Chtimes(file, time0, time0)
	_ = unix.Setxattr(file, "user.planted", []byte("x"), 0)
	o.check(t)
	fi, err := os.Lstat(o.secret)
	if err == nil && fi.ModTime().Equal(time0) {
		t.Errorf("utimes reached the secret outside the store")
	}
}

// TestAllowOther: without --allow-other another user cannot use the mount
// at all; with it, default_permissions makes the kernel enforce modes.
func TestAllowOther(t *testing.T) {
	t.Parallel()
	skipIfLoopback(t)
	if os.Geteuid() != 0 {
		t.Skip("needs root to act as another user")
	}
	asNobody := func(args ...string) error {
		cmd := exec.Command(args[0], args[1:]...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
		out, err := cmd.CombinedOutput()
		if err != nil && len(out) > 0 {
			t.Logf("%s as nobody: %s", strings.Join(args, " "), bytes.TrimSpace(out))
		}
		return err
	}
	for _, allow := range []bool{false, true} {
		store, mnt := openDir(t, "store"), openDir(t, "mnt")
		var flags []string
		if allow {
			flags = append(flags, "--allow-other")
		}
		m := startMountAt(t, store, mnt, flags...)
		writeFile(t, filepath.Join(m.mnt, "public"), []byte("public"))
		writeFile(t, filepath.Join(m.mnt, "private"), []byte("private"))
		if err := os.Chmod(filepath.Join(m.mnt, "public"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(filepath.Join(m.mnt, "private"), 0o600); err != nil {
			t.Fatal(err)
		}
		publicErr := asNobody("cat", filepath.Join(m.mnt, "public"))
		privateErr := asNobody("cat", filepath.Join(m.mnt, "private"))
		writeErr := asNobody("sh", "-c", "echo x >> "+filepath.Join(m.mnt, "public"))
		if !allow && (publicErr == nil || privateErr == nil) {
			t.Errorf("without --allow-other another user read the mount (public: %v, private: %v)", publicErr, privateErr)
		}
		if allow && (publicErr != nil || privateErr == nil || writeErr == nil) {
			t.Errorf("with --allow-other: public read %v (want ok), private read %v (want denied), write to 0644 %v (want denied)", publicErr, privateErr, writeErr)
		}
		checkContent(t, filepath.Join(m.store, "public"), []byte("public"))
	}
}
