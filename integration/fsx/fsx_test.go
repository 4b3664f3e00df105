package fsx

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The checker on a plain directory of the test's own filesystem (ext4 or
// tmpfs under go test's temporary directory), with no mount in between:
// what it expects there is what Linux does, so a failure here is a bug in
// the checker, not in a filesystem under test. The integration tests run
// it on mounts (integration/fsx_test.go).

func TestPlainDirectory(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name  string
		store bool // the directory is its own store: whole-file checks read it twice
	}{{"no store", false}, {"own store", true}} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			cfg := Config{Name: c.name, Dir: dir, Files: 3, Ops: 300, Seed: 3}
			if c.store {
				cfg.Store = dir
			}
			// Remounting a plain directory is nothing: the files are closed
			// and opened again around it.
			remounts := 0
			x, err := New(cfg, Hooks{Remount: func() error { remounts++; return nil }})
			if err != nil {
				t.Fatal(err)
			}
			if err := x.Run(); err != nil {
				t.Fatal(err)
			}
			if remounts == 0 {
				t.Errorf("no remount in %d steps of seed %d: pick a seed that draws one", cfg.Ops, cfg.Seed)
			}
			t.Log(x.Summary())
			ents, err := os.ReadDir(dir)
			if err != nil {
				t.Fatal(err)
			}
			if len(ents) != cfg.Files {
				t.Errorf("%d names in the directory, want the %d files", len(ents), cfg.Files)
			}
		})
	}
}

// TestCatchesChange changes a file behind the checker's back, during a
// remount: the check after it must report the file and the step.
func TestCatchesChange(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cfg := Config{Name: "change", Dir: dir, Files: 1, Ops: 300, Seed: 3, Replay: "replay with %d steps"}
	x, err := New(cfg, Hooks{Remount: func() error {
		f, err := os.OpenFile(filepath.Join(dir, "f0"), os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			return err
		}
		_, err = f.Write([]byte("x"))
		return errors.Join(err, f.Close())
	}})
	if err != nil {
		t.Fatal(err)
	}
	err = x.Run()
	if err == nil {
		t.Fatal("a byte appended behind the checker's back went unnoticed")
	}
	for _, want := range []string{"FAILED at step", "(seed 3)", "after remount", "f0: fstat size", "remount   (closes and reopens every file)", "replay: replay with "} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the failure does not say %q:\n%v", want, err)
		}
	}
}

func TestNewRefuses(t *testing.T) {
	t.Parallel()
	kill := func() error { return nil }
	for _, c := range []struct {
		name  string
		cfg   Config
		hooks Hooks
		want  string
	}{
		{"no directory", Config{}, Hooks{}, "no directory"},
		{"kill without restart", Config{Dir: "d", Store: "s"}, Hooks{Kill: kill}, "go together"},
		{"kill without store", Config{Dir: "d"}, Hooks{Kill: kill, Restart: kill}, "need Config.Store"},
	} {
		if _, err := New(c.cfg, c.hooks); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error saying %q", c.name, err, c.want)
		}
	}
}
