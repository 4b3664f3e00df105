package integration

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mmapfs/mmapfs/fs"
)

// The mount's dirty-page budget (its bdi's max_ratio and strict_limit):
// the kernel gives every FUSE mount 1 % of the machine's dirty budget,
// strictly; a root daemon raises the share to fs.RootMaxRatio and keeps
// the strict limit, unless a flag or the kernel-defaults profile says
// otherwise; a daemon that may not set it keeps the kernel's and says so.

// sysBDI reads max_ratio and strict_limit of the bdi of the mount at mnt
// from sysfs, as the kernel has them.
func sysBDI(t *testing.T, mnt string) (maxRatio, strict int) {
	t.Helper()
	e, ok := mountInfo(mnt)
	if !ok {
		t.Fatalf("%s is not mounted", mnt)
	}
	read := func(name string) int {
		p := filepath.Join("/sys/class/bdi", e.dev, name)
		raw, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		v, err := strconv.Atoi(strings.TrimSpace(string(raw)))
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		return v
	}
	return read("max_ratio"), read("strict_limit")
}

// wantBDI checks that the stats and sysfs both show the bdi of m with
// max_ratio and strict_limit as wanted.
func wantBDI(t *testing.T, m *mount, what string, maxRatio, strict int) {
	t.Helper()
	if r, s := sysBDI(t, m.mnt); r != maxRatio || s != strict {
		t.Errorf("%s: /sys/class/bdi max_ratio %d, strict_limit %d; want %d, %d", what, r, s, maxRatio, strict)
	}
	b := bdiSnapshot(t, m).BDI
	if b == nil {
		t.Fatalf("%s: the stats show no bdi", what)
	}
	if b.MaxRatio != maxRatio || b.StrictLimit != strict {
		t.Errorf("%s: stats bdi %+v; want max_ratio %d, strict_limit %d", what, *b, maxRatio, strict)
	}
}

// TestBDIDefault: a root daemon's mount gets max_ratio fs.RootMaxRatio
// with the kernel's strict limit kept; --profile kernel-defaults and
// --bdi-max-ratio -1 leave the kernel's 1 %, also on a mount made at the
// same mountpoint after a raised one (the bdi is the superblock's, made
// anew by each mount), and a flag given on its own wins over the default.
func TestBDIDefault(t *testing.T) {
	t.Parallel()
	skipIfLoopback(t)
	if os.Geteuid() != 0 {
		t.Skip("setting a bdi needs root")
	}
	if fs.RootMaxRatio == 1 {
		t.Fatal("fs.RootMaxRatio is the kernel's 1: nothing to tell apart")
	}
	t.Run("defaults", func(t *testing.T) {
		t.Parallel()
		store, mnt := t.TempDir(), t.TempDir()
		m := startMountAt(t, store, mnt)
		wantBDI(t, m, "defaults", fs.RootMaxRatio, 1)
		if logged(m, "keeps the kernel's dirty-page budget") {
			t.Errorf("a root daemon says it keeps the kernel's budget:\n%s", m.out)
		}
		m.stop(t)
		// The next mount at the same place, asking for the kernel's.
		k := startMountAt(t, store, mnt, "--profile", "kernel-defaults")
		defer k.stop(t)
		wantBDI(t, k, "--profile kernel-defaults after a mount with the defaults", 1, 1)
		k.remount(t)
		wantBDI(t, k, "--profile kernel-defaults, remounted", 1, 1)
	})
	for _, c := range []struct {
		name             string
		flags            []string
		maxRatio, strict int
	}{
		{"leave it", []string{"--bdi-max-ratio", "-1"}, 1, 1},
		{"as -o", []string{"-o", "bdi_max_ratio=-1"}, 1, 1},
		{"flag wins", []string{"--bdi-max-ratio", "30"}, 30, 1},
		{"profile and flag", []string{"--profile", "kernel-defaults", "--bdi-max-ratio", "5"}, 5, 1},
		{"strict off", []string{"--bdi-strict-limit", "0"}, fs.RootMaxRatio, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			m := startMount(t, c.flags...)
			defer m.stop(t)
			wantBDI(t, m, strings.Join(c.flags, " "), c.maxRatio, c.strict)
		})
	}
}

// TestBDIDefaultNotRoot: a daemon that is not root cannot set its bdi:
// the mount keeps the kernel's 1 % strict budget, and the log says so
// once, with the reason.
func TestBDIDefaultNotRoot(t *testing.T) {
	t.Parallel()
	skipIfLoopback(t)
	store, mnt := nobodyMountDirs(t)
	m := startMountAs(t, &syscall.Credential{Uid: nobody, Gid: nobody}, store, mnt)
	defer m.stop(t)
	if r, s := sysBDI(t, mnt); r != 1 || s != 1 {
		t.Errorf("a non-root daemon's mount: max_ratio %d, strict_limit %d; want the kernel's 1, 1", r, s)
	}
	const line = "keeps the kernel's dirty-page budget for FUSE (bdi max_ratio 1, strict)"
	if !logged(m, line, "uid 65534") {
		t.Fatalf("no log line says the mount keeps the kernel's budget, and why:\n%s", m.out)
	}
	if n := strings.Count(m.out.String(), line); n != 1 {
		t.Errorf("the log says it %d times, want once:\n%s", n, m.out)
	}
}

// skipUnlessMountNamespace skips a test that runs the daemon in a mount
// namespace of its own (inMountNamespace) where it cannot: the loopback
// mode (the script runs mmapfs's command line), a test that is not root,
// or no unshare(1).
func skipUnlessMountNamespace(t *testing.T) {
	t.Helper()
	skipIfLoopback(t)
	if os.Geteuid() != 0 {
		t.Skip("needs root to make a mount namespace")
	}
	if _, err := exec.LookPath("unshare"); err != nil {
		t.Skip("no unshare(1)")
	}
}

// inMountNamespace runs script with sh in a mount namespace of its own
// (unshare -m, private propagation: what it mounts stays there) on a
// fresh store and mountpoint, for a minute at the most: $0 is the
// mmapfs binary, "$@" the suite's transport flags, flags, the store and
// the mountpoint, and the environment has LOG, the file for the
// daemon's output, and MNT, the mountpoint. It fails the test if the
// script fails, and reports the mountpoint if it is mounted outside the
// namespace afterwards. It returns what the script printed and the
// daemon's log.
func inMountNamespace(t *testing.T, script string, flags ...string) (out, log string) {
	t.Helper()
	store, mnt := t.TempDir(), t.TempDir()
	logFile := filepath.Join(t.TempDir(), "log")
	args := append([]string{"-m", "--propagation", "private", "sh", "-c", script, binPath}, suiteTransportFlags()...)
	args = append(append(args, flags...), store, mnt)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "unshare", args...)
	cmd.Env = append(os.Environ(), "LOG="+logFile, "MNT="+mnt)
	b, err := cmd.CombinedOutput()
	logged, lerr := os.ReadFile(logFile)
	if lerr != nil {
		logged = []byte(fmt.Sprintf("(none: %v)", lerr))
	}
	if mounted(mnt) {
		t.Errorf("%s is mounted outside the namespace", mnt)
	}
	if err != nil {
		t.Fatalf("unshare: %v\n%s\ndaemon log:\n%s", err, b, logged)
	}
	return string(b), string(logged)
}

// TestBDIDefaultReadOnlySysfs: a root daemon that finds /sys/class/bdi
// read-only (as in a container) keeps the kernel's budget and says so
// once, instead of refusing the mount. The daemon runs in a mount
// namespace of its own, where /sys/class/bdi is bound read-only; its
// mount lives and ends there.
func TestBDIDefaultReadOnlySysfs(t *testing.T) {
	t.Parallel()
	skipUnlessMountNamespace(t)
	const script = `set -e
mount --bind /sys/class/bdi /sys/class/bdi
mount -o remount,bind,ro /sys/class/bdi
"$0" mount "$@" >"$LOG" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
for i in $(seq 200); do grep -q serving "$LOG" && break; sleep 0.05; done
dev=$(mountpoint -d "$MNT")
echo "bdi $(cat /sys/class/bdi/$dev/max_ratio) $(cat /sys/class/bdi/$dev/strict_limit)"
kill $pid
wait $pid`
	out, logged := inMountNamespace(t, script)
	if !strings.Contains(out, "bdi 1 1\n") {
		t.Errorf("the mount's bdi in the namespace: %q; want the kernel's max_ratio 1, strict_limit 1\ndaemon log:\n%s", out, logged)
	}
	const line = "keeps the kernel's dirty-page budget for FUSE (bdi max_ratio 1, strict)"
	if n := strings.Count(logged, line); n != 1 || !strings.Contains(logged, "read-only sysfs") {
		t.Errorf("the log says %d times that the mount keeps the kernel's budget (want once, with the read-only sysfs as the reason):\n%s", n, logged)
	}
}

// TestBDIDefaultUnwritableBDI: a root daemon whose sysfs is writable
// but whose bdi files are not (bound read-only here: EROFS; a user
// namespace's root over the host's sysfs gets EACCES, which takes the
// same path) keeps the kernel's budget when the ratio was only the
// default, and says so once with the cause; a --bdi-max-ratio asked for
// still fails the mount, naming the file. The daemon runs in a mount
// namespace of its own where /sys/devices/virtual/bdi (the bdis
// /sys/class/bdi links to) is bound read-only, so that CanSetBDI's look
// at /sys/class/bdi finds it writable.
func TestBDIDefaultUnwritableBDI(t *testing.T) {
	t.Parallel()
	skipUnlessMountNamespace(t)
	const script = `mount --bind /sys/devices/virtual/bdi /sys/devices/virtual/bdi || exit 3
mount -o remount,bind,ro /sys/devices/virtual/bdi || exit 3
"$0" mount "$@" >"$LOG" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
for i in $(seq 200); do grep -q serving "$LOG" && break; kill -0 $pid 2>/dev/null || break; sleep 0.05; done
if ! kill -0 $pid 2>/dev/null; then wait $pid; echo "exited $?"; exit 0; fi
dev=$(mountpoint -d "$MNT") || exit 4
echo "bdi $(cat /sys/class/bdi/$dev/max_ratio) $(cat /sys/class/bdi/$dev/strict_limit)"
kill $pid
wait $pid
echo "stopped $?"`
	for _, c := range []struct {
		name  string
		flags []string
		out   string // what the script must print
		log   string // what the daemon's log must say
	}{
		{"default", nil, "bdi 1 1\nstopped 0\n", "keeps the kernel's dirty-page budget for FUSE (bdi max_ratio 1, strict): cannot write its default 10: open /sys/class/bdi/"},
		{"asked for", []string{"--bdi-max-ratio", "20"}, "exited 1\n", "/max_ratio to 20: open /sys/class/bdi/"},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			out, logged := inMountNamespace(t, script, c.flags...)
			if out != c.out {
				t.Errorf("the script printed %q, want %q\ndaemon log:\n%s", out, c.out, logged)
			}
			if n := strings.Count(logged, c.log); n != 1 || !strings.Contains(logged, "read-only file system") {
				t.Errorf("the daemon's log says %q %d times, want once, with EROFS as the cause:\n%s", c.log, n, logged)
			}
		})
	}
}
