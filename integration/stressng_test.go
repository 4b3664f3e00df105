package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestStressNG runs stress-ng's file-system and file-mapping stressors,
// one stress-ng per stressor, with --verify (for those that check their
// data) and --metrics-brief. The rule: a stressor that passes on a plain
// directory (the store's kind of filesystem) must pass on the mount: exit
// status 0 and no "fail:" or "error:" line. A stressor that fails on the
// plain directory is skipped, with its output as the reason.
//
// Left out: mmapfork maps only anonymous memory (no file at all) and
// grabs most of the free memory of the machine, which takes ~17 s here
// whatever its time limit; mmapmany, mremap and the like map no file
// either. Left out to keep the run short (each passes on the mount, as of
// stress-ng 0.15.06): madvise, aiol, fsize, io, getdent, filename, flock,
// and fiemap (FUSE has no FIEMAP: it skips itself on the mount).
func TestStressNG(t *testing.T) {
	t.Parallel()
	sng := needTool(t, "stress-ng", "stress-ng")
	for _, s := range stressors {
		t.Run(s.name, func(t *testing.T) {
			t.Parallel()
			// The run on a plain directory goes on while the mount is
			// set up and stressed: it decides only whether the mount's
			// run counts, and the two together take the time of one.
			baseDir := t.TempDir()
			var base toolRun
			var baseWG sync.WaitGroup
			baseWG.Go(func() { base = runStressor(t, sng, baseDir, s, stressBaselineTime) })
			t.Cleanup(baseWG.Wait) // also when the test stops early
			m := startMount(t)
			dir := filepath.Join(m.mnt, "stress")
			if err := os.Mkdir(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			r := runStressor(t, sng, dir, s, stressMountTime)
			var daemon string
			if r.timedOut {
				daemon = daemonAtTimeout(m) // now, before the baseline's wait
			}
			baseWG.Wait()
			if bad := stressVerdict(base); bad != "" {
				if r.timedOut {
					// A skip does not print the daemon's output: what
					// the timeout found is shown here.
					t.Logf("the run on the mount timed out too:\n%s%s\ndaemon output:\n%s", r, daemon, m.out.String())
				}
				t.Skipf("fails on a plain directory too (%s), so it judges nothing here:\n%s", bad, base)
			}
			if bad := stressVerdict(r); bad != "" {
				t.Errorf("stress-ng %s passes on a plain directory but not on the mount: %s\n%s\nthe same on a plain directory:\n%s%s",
					s.name, bad, r, base, daemon)
			} else if stressSkipped(r) && !stressSkipped(base) {
				t.Logf("stress-ng %s ran on a plain directory but skipped itself on the mount:\n%s", s.name, r)
			}
			if !r.timedOut { // else the daemon was made to dump its stacks and exit
				checkNoFaults(t, m)
			}
		})
	}
}

const (
	// stressBaselineTime is how long a stressor runs on the plain
	// directory: only to learn whether it works on this machine at all.
	stressBaselineTime = "1s"
	// stressMountTime is how long it runs on the mount.
	stressMountTime = "2s"
)

// stressDentries is how many names the dentry stressor makes a round.
// stress-ng 0.15.06 (stress-dentry.c) checks its time limit only while it
// makes and looks up names: the unlinks that end a round (a LOOKUP each,
// and an UNLINK for most) and the unlink of all the round's names once
// more on its way out run to the end whatever the time. With the default
// 2048 names that is up to 4096 names after the limit, whose time grows
// with the machine's load, not with the mount: a 2 s run on the mount
// took up to 15.5 s (with -race, beside a CPU hog and other mounts), on
// its way to runTool's 60 s on a busier machine, where one CI run timed
// out. 256 names a round keep what the stressor does (names made, found,
// missed and removed in its four orders, round after round) and bound
// that tail to 512 names. Its sync(2) every round waits for every
// filesystem of the machine, but not for FUSE mounts (Linux 6.18: not
// even for the dirty pages of a stopped daemon's mount).
const stressDentries = 256

type stressor struct {
	name string
	args []string // the stressor (one instance) and its options
}

// stressors bound every size to tens of MiB (several default to 1 GiB).
var stressors = []stressor{
	// Data through mappings of files.
	{"mmap-file", []string{"--mmap", "1", "--mmap-file", "--mmap-bytes", "4m"}},
	{"mmap-file-async", []string{"--mmap", "1", "--mmap-file", "--mmap-async", "--mmap-mprotect", "--mmap-bytes", "4m"}},
	{"msync", []string{"--msync", "1", "--msync-bytes", "16m"}},
	{"msyncmany", []string{"--msyncmany", "1"}},
	// Data through read and write.
	{"hdd", []string{"--hdd", "1", "--hdd-bytes", "16m"}},
	{"hdd-rnd-fsync", []string{"--hdd", "1", "--hdd-bytes", "16m", "--hdd-opts", "wr-rnd,rd-rnd,fsync"}},
	{"seek", []string{"--seek", "1", "--seek-size", "32m", "--seek-punch"}},
	{"fallocate", []string{"--fallocate", "1", "--fallocate-bytes", "16m"}},
	{"fpunch", []string{"--fpunch", "1"}},
	{"readahead", []string{"--readahead", "1", "--readahead-bytes", "16m"}},
	{"iomix", []string{"--iomix", "1", "--iomix-bytes", "16m"}},
	{"copy-file", []string{"--copy-file", "1", "--copy-file-bytes", "128m"}}, // its minimum
	{"sync-file", []string{"--sync-file", "1", "--sync-file-bytes", "16m"}},
	{"io-uring", []string{"--io-uring", "1"}},
	// The namespace.
	{"dir", []string{"--dir", "1", "--dir-dirs", "256"}},
	{"rename", []string{"--rename", "1"}},
	{"link", []string{"--link", "1"}},
	{"symlink", []string{"--symlink", "1"}},
	{"dentry", []string{"--dentry", "1", "--dentries", strconv.Itoa(stressDentries)}},
	{"fstat", []string{"--fstat", "1", "--fstat-dir", "{dir}"}},
	{"xattr", []string{"--xattr", "1"}},
	// Locks.
	{"lockf", []string{"--lockf", "1"}},
	{"fcntl", []string{"--fcntl", "1"}},
}

// runStressor runs s for dur with its files in dir.
func runStressor(t *testing.T, sng, dir string, s stressor, dur string) toolRun {
	t.Helper()
	args := make([]string, 0, len(s.args)+8)
	for _, a := range s.args {
		args = append(args, strings.ReplaceAll(a, "{dir}", dir))
	}
	if s.name == "fstat" {
		// Something to stat in the directory besides stress-ng's own.
		for _, n := range []string{"a", "b", "c"} {
			if err := os.WriteFile(filepath.Join(dir, n), []byte(n), 0o644); err != nil {
				t.Error(err)
			}
		}
	}
	args = append(args, "--timeout", dur, "--temp-path", dir, "--verify", "--metrics-brief")
	return runTool(t, 60*time.Second, dir, nil, sng, args...)
}

// stressFail matches stress-ng's lines that report a failure.
var stressFail = regexp.MustCompile(`(?m)^stress-ng: (fail|error):.*$`)

// stressVerdict returns why the run is a failure, or "".
func stressVerdict(r toolRun) string {
	var why []string
	if !r.ok() {
		if r.timedOut {
			why = append(why, "did not finish in time")
		} else {
			why = append(why, "exit status "+strconv.Itoa(r.code))
		}
	}
	out := r.stdout + r.stderr
	if lines := stressFail.FindAllString(out, 3); len(lines) > 0 {
		why = append(why, strings.Join(lines, "; "))
	}
	return strings.Join(why, "; ")
}

// stressSkipped reports whether stress-ng skipped the stressor (it then exits 0).
func stressSkipped(r toolRun) bool {
	out := r.stdout + r.stderr
	return strings.Contains(out, "skipping stressor")
}

// daemonAtTimeout returns what the daemon of m was doing when a stressor
// on its mount ran out of time, to tell a daemon that stopped answering
// from a slow machine or a client stuck elsewhere in the kernel (runTool
// has the client's stacks): the kernel stacks of the daemon's threads not
// sleeping interruptibly, and the Go stacks of all its goroutines, which
// SIGQUIT makes it write to the output the cleanup logs (a test that
// calls this has failed, or is skipped). The daemon exits of it, on
// purpose as far as the cleanup is concerned, which unmounts.
func daemonAtTimeout(m *mount) string {
	m.mu.Lock()
	d := m.d
	running := d != nil && !d.exited()
	m.down = m.down || running
	m.mu.Unlock()
	if !running {
		return "\n--- the daemon had exited"
	}
	pid := d.cmd.Process.Pid
	stacks := threadStacks(pid)
	how := "its goroutines' stacks are in the daemon output below"
	if err := d.cmd.Process.Signal(syscall.SIGQUIT); err != nil {
		how = fmt.Sprintf("SIGQUIT for its goroutines' stacks: %v", err)
	} else if !d.waitExit(killTimeout) {
		how = fmt.Sprintf("it had not exited %v after SIGQUIT (goroutines' stacks, if any, in the daemon output below)", killTimeout)
	}
	return fmt.Sprintf("\n--- the daemon (pid %d) then, its threads not sleeping interruptibly (%s):\n%s", pid, how, stacks)
}
