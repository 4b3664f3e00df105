package integration

import (
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
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
			baseWG.Wait()
			if bad := stressVerdict(base); bad != "" {
				t.Skipf("fails on a plain directory too (%s), so it judges nothing here:\n%s", bad, base)
			}
			if bad := stressVerdict(r); bad != "" {
				t.Errorf("stress-ng %s passes on a plain directory but not on the mount: %s\n%s\nthe same on a plain directory:\n%s",
					s.name, bad, r, base)
			} else if stressSkipped(r) && !stressSkipped(base) {
				t.Logf("stress-ng %s ran on a plain directory but skipped itself on the mount:\n%s", s.name, r)
			}
			checkNoFaults(t, m)
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
	{"dentry", []string{"--dentry", "1"}},
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
