package integration

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mmapfs/mmapfs/integration/brokenfs"
)

// The tests of `mmapfs check DIR` on real filesystems: it must pass on
// mmapfs under its switch sets, on the store's filesystem, on tmpfs and on
// go-fuse's loopback, and catch the two broken FUSE filesystems of
// brokenfs. It runs as nobody (no root needed) on a directory nobody owns.

// checkReport is the --json output of mmapfs check.
type checkReport struct {
	Dir           string        `json:"dir"`
	Filesystem    string        `json:"filesystem"`
	Seed          uint64        `json:"seed"`
	Ops           int           `json:"ops"`
	Results       []checkResult `json:"results"`
	Passed        int           `json:"passed"`
	Failed        int           `json:"failed"`
	NotApplicable int           `json:"not_applicable"`
}

// checkResult is one guarantee's result in a checkReport.
type checkResult struct {
	Name        string `json:"name"`
	Description string `json:"description"`
	Verdict     string `json:"verdict"`
	Expected    string `json:"expected"`
	Seen        string `json:"seen"`
	Reproduce   string `json:"reproduce"`
	Details     string `json:"details"`
	Why         string `json:"why"`
}

// verdicts maps each guarantee's name to its verdict.
func (r *checkReport) verdicts() map[string]string {
	v := map[string]string{}
	for _, x := range r.Results {
		v[x.Name] = x.Verdict
	}
	return v
}

// table is the report as lines "name verdict (why)".
func (r *checkReport) table() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s (%s), seed %d, %d ops: %d passed, %d failed, %d n/a\n", r.Dir, r.Filesystem, r.Seed, r.Ops, r.Passed, r.Failed, r.NotApplicable)
	for _, x := range r.Results {
		fmt.Fprintf(&b, "  %-20s %-4s", x.Name, x.Verdict)
		switch x.Verdict {
		case "fail":
			fmt.Fprintf(&b, " expected %s; seen %s; reproduce: %s", x.Expected, x.Seen, x.Reproduce)
		case "n/a":
			fmt.Fprintf(&b, " %s", x.Why)
		}
		b.WriteByte('\n')
	}
	return b.String()
}

// runCheck runs mmapfs check --json on dir with args, as cred (nil: as the
// test), and returns its report and exit status.
func runCheck(t *testing.T, cred *syscall.Credential, dir string, args ...string) (*checkReport, int) {
	t.Helper()
	if cred != nil {
		if err := os.Chmod(filepath.Dir(binPath), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command(binPath, append(append([]string{"check", "--json"}, args...), dir)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Credential: cred}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { done <- cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-time.After(2 * time.Minute):
		cmd.Process.Kill()
		<-done
		t.Fatalf("mmapfs check %s: still running after 2 minutes; stderr:\n%s", dir, stderr.String())
	}
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	if code != 0 && stderr.Len() > 0 {
		t.Logf("mmapfs check %s: exit %d, stderr:\n%s", dir, code, stderr.String())
	}
	var rep checkReport
	if err := json.Unmarshal(stdout.Bytes(), &rep); err != nil {
		t.Fatalf("mmapfs check %s: exit %d, output not a report (%v):\n%s\nstderr:\n%s", dir, code, err, stdout.String(), stderr.String())
	}
	return &rep, code
}

// nobodyCred is the credential of uid and gid nobody.
var nobodyCred = &syscall.Credential{Uid: nobody, Gid: nobody}

// nobodyDir is a fresh directory owned by nobody, in a test directory
// nobody can reach.
func nobodyDir(t *testing.T, name string) string {
	t.Helper()
	d := openDir(t, name)
	if err := os.Chown(d, nobody, nobody); err != nil {
		t.Fatal(err)
	}
	return d
}

// requireAllPass fails the test unless every guarantee of rep passed but
// those in na, which must be not applicable, and the exit status is 0.
func requireAllPass(t *testing.T, rep *checkReport, code int, na ...string) {
	t.Helper()
	t.Logf("mmapfs check:\n%s", rep.table())
	for _, r := range rep.Results {
		want := "pass"
		if slices.Contains(na, r.Name) {
			want = "n/a"
		}
		if r.Verdict != want {
			t.Errorf("%s: %s, want %s", r.Name, r.Verdict, want)
		}
	}
	if code != 0 {
		t.Errorf("exit status %d, want 0", code)
	}
}

// requireFull fails the test unless rep has a result for every guarantee.
func requireFull(t *testing.T, rep *checkReport) {
	t.Helper()
	if len(rep.Results) != 19 {
		t.Errorf("%d results, want one for each of the 19 guarantees", len(rep.Results))
	}
}

// requireCaught fails the test unless every guarantee in fail failed, with
// what was expected, what was seen and how to reproduce it, and the exit
// status is 1.
func requireCaught(t *testing.T, rep *checkReport, code int, fail ...string) {
	t.Helper()
	t.Logf("mmapfs check:\n%s", rep.table())
	v := rep.verdicts()
	for _, name := range fail {
		if v[name] != "fail" {
			t.Errorf("%s: %s, want fail", name, v[name])
		}
	}
	for _, r := range rep.Results {
		if r.Verdict == "fail" && (r.Expected == "" || r.Seen == "" || !strings.Contains(r.Reproduce, fmt.Sprintf("--only %s --seed %d", r.Name, rep.Seed))) {
			t.Errorf("%s failed without a full report: %+v", r.Name, r)
		}
	}
	if code != 1 {
		t.Errorf("exit status %d, want 1", code)
	}
}

// requireGone fails the test unless dir is empty: the check removed its
// files.
func requireGone(t *testing.T, dir string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 0 {
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		t.Errorf("%s holds %v after the check; want it empty", dir, names)
	}
}

// mountBroken serves orig at mnt as kind in this process (the check maps
// the files in a process of its own) until the test ends.
func mountBroken(t *testing.T, kind brokenfs.Kind) string {
	t.Helper()
	orig, mnt := nobodyDir(t, "orig"), openDir(t, "mnt")
	srv, err := brokenfs.Mount(mnt, orig, kind)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := srv.Unmount(); err != nil {
			t.Errorf("unmounting %s: %v", mnt, err)
			forceUnmount(mnt)
		}
	})
	if err := srv.WaitMount(); err != nil {
		t.Fatal(err)
	}
	return mnt
}

// The guarantees a filesystem that refuses shared mappings fails.
var sharedMappingGuarantees = []string{"shared-msync", "shared-two-mappings", "shared-other-process", "fork"}

// The guarantees a filesystem that serves stale pages fails.
var coherenceGuarantees = []string{"write-coherence", "msync-invalidate", "msync-async", "madvise-dontneed"}

// TestCheck runs mmapfs check as nobody on every filesystem of the
// README's table.
func TestCheck(t *testing.T) {
	t.Parallel()
	skipIfLoopback(t) // binPath is the loopback, not mmapfs check
	for _, sw := range [][]string{nil, {"--writeback-cache"}, {"--direct-io"}, {"--keep-cache"}} {
		name := "mmapfs"
		for _, s := range sw {
			name += s
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			// The daemon runs as root (only root may open /dev/fuse
			// here), the check as nobody, who owns the store.
			store, mnt := nobodyDir(t, "store"), openDir(t, "mnt")
			startMountAt(t, store, mnt, append([]string{"--allow-other"}, sw...)...)
			rep, code := runCheck(t, nobodyCred, mnt, "--quick")
			requireAllPass(t, rep, code, "remount")
			requireFull(t, rep)
			if !strings.HasPrefix(rep.Filesystem, "fuse") {
				t.Errorf("filesystem %q, want fuse.mmapfs", rep.Filesystem)
			}
			requireGone(t, mnt)
			requireGone(t, store)
		})
	}
	t.Run("store-fs", func(t *testing.T) {
		t.Parallel()
		d := nobodyDir(t, "dir")
		rep, code := runCheck(t, nobodyCred, d, "--quick")
		requireAllPass(t, rep, code, "remount")
		requireFull(t, rep)
		requireGone(t, d)
	})
	t.Run("tmpfs", func(t *testing.T) {
		t.Parallel()
		if os.Geteuid() != 0 {
			t.Skip("mounting a tmpfs needs root")
		}
		d := openDir(t, "tmpfs")
		if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=64m,mode=0777", "mmapfs-check", d).CombinedOutput(); err != nil {
			t.Skipf("mount -t tmpfs: %v: %s", err, out)
		}
		t.Cleanup(func() {
			if out, err := exec.Command("umount", d).CombinedOutput(); err != nil {
				t.Errorf("umount %s: %v: %s", d, err, out)
				forceUnmount(d)
			}
		})
		rep, code := runCheck(t, nobodyCred, d, "--quick")
		requireAllPass(t, rep, code, "remount")
		requireFull(t, rep)
		if rep.Filesystem != "tmpfs" {
			t.Errorf("filesystem %q, want tmpfs", rep.Filesystem)
		}
		requireGone(t, d)
	})
	t.Run("loopback", func(t *testing.T) {
		t.Parallel()
		d := mountBroken(t, brokenfs.Loopback)
		rep, code := runCheck(t, nobodyCred, d, "--quick")
		requireAllPass(t, rep, code, "remount")
		requireFull(t, rep)
		requireGone(t, d)
	})
	t.Run("broken-directio", func(t *testing.T) {
		t.Parallel()
		d := mountBroken(t, brokenfs.DirectIO)
		rep, code := runCheck(t, nobodyCred, d, "--quick")
		requireCaught(t, rep, code, sharedMappingGuarantees...)
		for _, r := range rep.Results {
			if slices.Contains(sharedMappingGuarantees, r.Name) && !strings.Contains(r.Seen, "ENODEV") {
				t.Errorf("%s: seen %q, want the ENODEV of the refused mapping", r.Name, r.Seen)
			}
			if r.Verdict == "n/a" && !strings.Contains(r.Why, "ENODEV") && r.Name != "remount" {
				t.Errorf("%s: n/a for %q, want the refused shared mapping named as the finding", r.Name, r.Why)
			}
		}
		if v := rep.verdicts(); v["private"] != "pass" || v["mmap-permissions"] != "pass" {
			t.Errorf("private: %s, mmap-permissions: %s; want both to pass (MAP_PRIVATE works with direct I/O)", v["private"], v["mmap-permissions"])
		}
		requireGone(t, d)
	})
	t.Run("broken-stalelinks", func(t *testing.T) {
		t.Parallel()
		d := mountBroken(t, brokenfs.StaleLinks)
		rep, code := runCheck(t, nobodyCred, d, "--quick")
		requireCaught(t, rep, code, coherenceGuarantees...)
		for _, r := range rep.Results {
			if slices.Contains(coherenceGuarantees, r.Name) && !strings.Contains(r.Expected, "hard link") {
				t.Errorf("%s: expected %q, want the write through the hard link named", r.Name, r.Expected)
			}
		}
		if v := rep.verdicts(); v["shared-msync"] != "pass" || v["model"] != "pass" {
			t.Errorf("shared-msync: %s, model: %s; want both to pass (one name per file is coherent)", v["shared-msync"], v["model"])
		}
		requireGone(t, d)
	})
}

// TestCheckRemount checks that msynced and fsynced data survive
// --remount: on the store's filesystem with a remount that does nothing,
// on an mmapfs mount unmounted and mounted again, and that a remount that
// fails or loses data fails the guarantee.
func TestCheckRemount(t *testing.T) {
	t.Parallel()
	skipIfLoopback(t) // binPath is the loopback, not mmapfs check
	t.Run("store-fs", func(t *testing.T) {
		t.Parallel()
		d := nobodyDir(t, "dir")
		rep, code := runCheck(t, nobodyCred, d, "--only", "remount,shared-msync", "--remount", "true")
		requireAllPass(t, rep, 0)
		if code != 0 || len(rep.Results) != 2 {
			t.Errorf("exit %d, %d results; want 0, 2", code, len(rep.Results))
		}
		requireGone(t, d)
	})
	t.Run("fails", func(t *testing.T) {
		t.Parallel()
		d := nobodyDir(t, "dir")
		rep, code := runCheck(t, nobodyCred, d, "--only", "remount", "--remount", "false")
		requireCaught(t, rep, code, "remount")
		if r := rep.Results[0]; !strings.Contains(r.Expected, "remount command succeeds") {
			t.Errorf("expected %q, want the remount command named", r.Expected)
		}
		requireGone(t, d)
	})
	t.Run("loses-data", func(t *testing.T) {
		t.Parallel()
		d := nobodyDir(t, "dir")
		// A "remount" that drops the fsynced write(2), as a filesystem
		// that loses it would.
		rep, code := runCheck(t, nobodyCred, d, "--only", "remount", "--remount", "find "+d+" -name written-fsync -exec truncate -s 0 {} +")
		requireCaught(t, rep, code, "remount")
		if r := rep.Results[0]; !strings.Contains(r.Expected, "written-fsync") {
			t.Errorf("expected %q, want the file that lost its data named", r.Expected)
		}
		requireGone(t, d)
	})
	t.Run("mmapfs", func(t *testing.T) {
		t.Parallel()
		store, mnt := openDir(t, "store"), openDir(t, "mnt")
		log := filepath.Join(t.TempDir(), "daemon.log")
		mountCmd := fmt.Sprintf("%s %s %s -o log=%s", binPath, store, mnt, log)
		t.Cleanup(func() {
			if mounted(mnt) {
				if out, err := exec.Command("umount", mnt).CombinedOutput(); err != nil {
					t.Errorf("umount %s: %v: %s", mnt, err, out)
					forceUnmount(mnt)
				}
			}
		})
		if out, err := exec.Command("/bin/sh", "-c", mountCmd).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v: %s", mountCmd, err, out)
		}
		rep, code := runCheck(t, nil, mnt, "--only", "remount,shared-msync", "--remount", "umount "+mnt+" && "+mountCmd)
		requireAllPass(t, rep, 0)
		if code != 0 {
			t.Errorf("exit %d, want 0", code)
		}
		if n := strings.Count(string(readFile(t, log)), "serving "); n != 2 {
			t.Errorf("the daemon's log says %d times that it serves the mount, want 2 (mounted, and mounted again by --remount)", n)
		}
		requireGone(t, mnt)
		requireGone(t, store)
	})
}

// TestCheckInterrupt interrupts mmapfs check in its model run with SIGINT
// and SIGTERM: it removes its files and ends as the signal would.
func TestCheckInterrupt(t *testing.T) {
	t.Parallel()
	skipIfLoopback(t) // binPath is the loopback, not mmapfs check
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM} {
		t.Run(sig.String(), func(t *testing.T) {
			t.Parallel()
			d := nobodyDir(t, "dir")
			if err := os.Chmod(filepath.Dir(binPath), 0o755); err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command(binPath, "check", "--only", "model", "--ops", "100000000", d)
			cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Credential: nobodyCred}
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			defer cmd.Process.Kill()
			// Wait for the model's files.
			deadline := time.Now().Add(30 * time.Second)
			for {
				m, _ := filepath.Glob(filepath.Join(d, "mmapfs-check-*", "model", "*"))
				if len(m) > 0 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("no model files after 30s; output:\n%s", out.String())
				}
				time.Sleep(20 * time.Millisecond)
			}
			time.Sleep(200 * time.Millisecond)
			if err := cmd.Process.Signal(sig); err != nil {
				t.Fatal(err)
			}
			err := cmd.Wait()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != 128+int(sig) {
				t.Errorf("exit %v after %v, want status %d; output:\n%s", err, sig, 128+int(sig), out.String())
			}
			if !strings.Contains(out.String(), "interrupted") {
				t.Errorf("output does not say it was interrupted:\n%s", out.String())
			}
			requireGone(t, d)
		})
	}
}

// TestCheckJSONShape pins the --json report's fields, which the README
// documents.
func TestCheckJSONShape(t *testing.T) {
	t.Parallel()
	skipIfLoopback(t) // binPath is the loopback, not mmapfs check
	d := nobodyDir(t, "dir")
	cmd := exec.Command(binPath, "check", "--json", "--only", "shared-msync,remount", "--seed", "7", d)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("mmapfs check: %v", err)
	}
	var raw map[string]any
	if err := json.Unmarshal(out, &raw); err != nil {
		t.Fatal(err)
	}
	var keys []string
	for k := range raw {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	if want := "dir failed filesystem not_applicable ops passed results seed"; strings.Join(keys, " ") != want {
		t.Errorf("report keys %v, want %s", keys, want)
	}
	rep, _ := runCheck(t, nil, d, "--only", "shared-msync,remount", "--seed", "7")
	if rep.Seed != 7 || rep.Dir != d || rep.Filesystem != "ext4" && rep.Filesystem == "" {
		t.Errorf("report %+v: want seed 7, dir %s and a filesystem", rep, d)
	}
	if len(rep.Results) != 2 || rep.Results[0].Name != "shared-msync" || rep.Results[0].Verdict != "pass" ||
		rep.Results[1].Name != "remount" || rep.Results[1].Verdict != "n/a" || rep.Results[1].Why == "" {
		t.Errorf("results %+v: want shared-msync pass, remount n/a with why", rep.Results)
	}
	if rep.Passed != 1 || rep.NotApplicable != 1 || rep.Failed != 0 {
		t.Errorf("counts %d/%d/%d, want 1 passed, 0 failed, 1 n/a", rep.Passed, rep.Failed, rep.NotApplicable)
	}
}
