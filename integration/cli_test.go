package integration

import (
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The command line: version, and the errors of mount.

const cliTimeout = 10 * time.Second

func skipIfLoopback(t *testing.T) {
	t.Helper()
	if loopbackMode {
		t.Skip("mmapfs command line")
	}
}

func TestVersion(t *testing.T) {
	t.Parallel()
	skipIfLoopback(t)
	r := runBinary(t, cliTimeout, nil, "version")
	if r.exitCode != 0 {
		t.Fatalf("mmapfs version: exit %d, want 0\nstdout: %s\nstderr: %s", r.exitCode, r.stdout, r.stderr)
	}
	if !strings.Contains(r.stdout, "mmapfs") {
		t.Errorf("mmapfs version printed %q (stderr %q), want a line containing \"mmapfs\"", r.stdout, r.stderr)
	}
}

func TestMountErrors(t *testing.T) {
	t.Parallel()
	skipIfLoopback(t)
	type setup struct {
		store, mnt string
		offending  []string // stderr must name one of these
	}
	cases := []struct {
		name  string
		setup func(t *testing.T) setup
	}{
		{"MissingMountpoint", func(t *testing.T) setup {
			mnt := filepath.Join(t.TempDir(), "missing")
			return setup{t.TempDir(), mnt, []string{mnt}}
		}},
		{"MountpointIsAFile", func(t *testing.T) setup {
			mnt := filepath.Join(t.TempDir(), "file")
			writeFile(t, mnt, []byte("x"))
			return setup{t.TempDir(), mnt, []string{mnt}}
		}},
		{"MountpointAlreadyMounted", func(t *testing.T) setup {
			m := startMount(t)
			return setup{t.TempDir(), m.mnt, []string{m.mnt}}
		}},
		{"StoreInsideMountpoint", func(t *testing.T) setup {
			mnt := t.TempDir()
			store := filepath.Join(mnt, "store")
			return setup{store, mnt, []string{store, mnt}}
		}},
		{"MountpointInsideStore", func(t *testing.T) setup {
			store := t.TempDir()
			mnt := filepath.Join(store, "mnt")
			if err := os.Mkdir(mnt, 0o755); err != nil {
				t.Fatal(err)
			}
			return setup{store, mnt, []string{store, mnt}}
		}},
		{"StoreUnderAFile", func(t *testing.T) setup {
			file := filepath.Join(t.TempDir(), "file")
			writeFile(t, file, []byte("x"))
			store := filepath.Join(file, "store")
			return setup{store, t.TempDir(), []string{store}}
		}},
		{"StoreIsAFile", func(t *testing.T) setup {
			store := filepath.Join(t.TempDir(), "file")
			writeFile(t, store, []byte("x"))
			return setup{store, t.TempDir(), []string{store}}
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			s := c.setup(t)
			r := runBinary(t, cliTimeout, []string{s.mnt}, "mount", s.store, s.mnt)
			switch r.exitCode {
			case -1:
				t.Fatalf("mmapfs mount %s %s still running after %v, want a quick non-zero exit\nstderr: %s", s.store, s.mnt, cliTimeout, r.stderr)
			case 0:
				t.Fatalf("mmapfs mount %s %s: exit 0, want non-zero\nstderr: %s", s.store, s.mnt, r.stderr)
			}
			named := false
			for _, p := range s.offending {
				named = named || strings.Contains(r.stderr, p)
			}
			if !named {
				t.Errorf("mmapfs mount %s %s: exit %d; stderr %q does not name %s", s.store, s.mnt, r.exitCode, r.stderr, strings.Join(s.offending, " or "))
			}
		})
	}
}

// TestMountAlreadyMountedKeepsFirst checks that a refused second mount does
// not disturb the first.
func TestMountAlreadyMountedKeepsFirst(t *testing.T) {
	t.Parallel()
	skipIfLoopback(t)
	m := startMount(t)
	writeFile(t, filepath.Join(m.mnt, "f"), []byte("first"))
	r := runBinary(t, cliTimeout, nil, "mount", t.TempDir(), m.mnt)
	if r.exitCode == 0 || r.exitCode == -1 {
		t.Errorf("second mount on %s: exit %d, want non-zero", m.mnt, r.exitCode)
	}
	if e, ok := mountInfo(m.mnt); !ok || e.source != m.store {
		t.Errorf("after the refused second mount, %s: mounted %v, source %q; want the first mount of %s", m.mnt, ok, e.source, m.store)
	}
	checkBoth(t, m, "f", []byte("first"))
}

// TestMetricsRefusedBeforeMount checks that a --metrics the daemon cannot
// serve (a port in use, a bad address, a host not of this machine) is
// refused before anything is mounted: the store, which the mount would
// create, is never created, and "serving" is never said.
func TestMetricsRefusedBeforeMount(t *testing.T) {
	t.Parallel()
	skipIfLoopback(t)
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	for _, addr := range []string{busy.Addr().String(), strconv.Itoa(busy.Addr().(*net.TCPAddr).Port), "a:b:c", "192.0.2.1:9100", "127.0.0.1:99999"} {
		store := filepath.Join(t.TempDir(), "store")
		mnt := t.TempDir()
		r := runBinary(t, cliTimeout, []string{mnt}, "mount", "--metrics", addr, store, mnt)
		if r.exitCode != 1 {
			t.Errorf("--metrics %s: exit %d, want 1\nstderr: %s", addr, r.exitCode, r.stderr)
		}
		if !strings.Contains(r.stderr, "--metrics "+addr) {
			t.Errorf("--metrics %s: stderr %q does not name the flag and its value", addr, r.stderr)
		}
		if strings.Contains(r.stderr, "serving") {
			t.Errorf("--metrics %s: the daemon mounted before refusing:\n%s", addr, r.stderr)
		}
		if _, err := os.Stat(store); !os.IsNotExist(err) {
			t.Errorf("--metrics %s: the store was created (%v): the mount went ahead", addr, err)
		}
	}
}

// TestUsageOnArgumentErrors checks that a command line with the wrong
// arguments prints the command's usage line, as cobra CLIs do.
func TestUsageOnArgumentErrors(t *testing.T) {
	t.Parallel()
	skipIfLoopback(t)
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"mount"}, "Usage: mmapfs mount [flags] STORE MOUNTPOINT\nRun 'mmapfs mount --help' for more."},
		{[]string{"mount", "--bogus", "a", "b"}, "Run 'mmapfs mount --help' for more."},
		{[]string{"version", "x"}, "Usage: mmapfs version"},
		{[]string{"onlyone"}, "Usage: mmapfs [flags] STORE MOUNTPOINT"},
	} {
		r := runBinary(t, cliTimeout, nil, c.args...)
		if r.exitCode != 1 || !strings.Contains(r.stderr, c.want) {
			t.Errorf("mmapfs %s: exit %d, stderr %q; want exit 1 and %q", strings.Join(c.args, " "), r.exitCode, r.stderr, c.want)
		}
	}
}
