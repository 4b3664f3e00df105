package integration

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestFio runs fio with crc32c verification: two jobs write disjoint halves
// of ONE file concurrently (write, then read back and verify every block),
// then after a remount fio verifies the file again through the mount and
// once more on the blob in the store.
//
// fio's own checks: each block carries a header (magic, offset, length,
// the job's random seed) and a crc32c of the block; verify_fatal stops at
// the first bad block. On top of that the test requires exit status 0, no
// job error in the JSON report, and that every job wrote and read back its
// whole region.
//
// The mmap engine of fio (3.33, and its current source) ignores a job's
// offset when it maps the file (it maps from file offset 0 and subtracts
// the job's offset from the I/O's), so an mmap job at offset N writes to
// the first N bytes: two mmap jobs on one file overwrite each other, even on
// ext4. So the mmap engine is always the job at offset 0, and shares the
// file with a psync job in the other half; psync runs alone with
// numjobs=2 and offset_increment.
func TestFio(t *testing.T) {
	t.Parallel()
	fio := needTool(t, "fio", "fio")
	forJudgeMounts(t, func(t *testing.T, m *mount) {
		for _, v := range fioVariants {
			t.Run(v.name, func(t *testing.T) {
				dir := filepath.Join(m.mnt, v.name)
				if err := os.Mkdir(dir, 0o755); err != nil {
					t.Fatal(err)
				}
				runFio(t, fio, m, v)
			})
		}
	})
}

// fioRegion is the size of each job's part of the shared file.
const fioRegion = 4 << 20

type fioVariant struct {
	name  string
	jobs  string // job sections (REGION is fioRegion); fioJobFile adds the global one
	njobs int    // how many jobs fio runs
}

var fioVariants = []fioVariant{
	{"psync-seq", `
[psync-seq]
ioengine=psync
rw=write
bs=64k
numjobs=2
offset_increment=REGION
`, 2},
	{"psync-rand", `
[psync-rand]
ioengine=psync
rw=randwrite
bs=4k
numjobs=2
offset_increment=REGION
`, 2},
	{"mmap-seq+psync-rand", `
[mmap-seq]
ioengine=mmap
rw=write
bs=64k
offset=0

[psync-rand]
ioengine=psync
rw=randwrite
bs=4k
offset=REGION
`, 2},
	{"mmap-rand+psync-seq", `
[mmap-rand]
ioengine=mmap
rw=randwrite
bs=4k
offset=0

[psync-seq]
ioengine=psync
rw=write
bs=64k
offset=REGION
`, 2},
}

// fioLimit bounds one fio run. A run takes about a second; the bound is
// for a machine whose disk the suite's other tests saturate (the 10 GiB
// heap test): a verify after a remount reads the blob, which may then
// wait for the disk on every 4 KiB page. Once it took over a minute.
const fioLimit = 5 * time.Minute

// fioSlow is when a run on a mount is slow enough to look into.
const fioSlow = 30 * time.Second

// fioJobFile returns a job file writing dir/data.fio with the jobs of v;
// verifyOnly makes it only read back and verify what an earlier run with
// the same jobs wrote (same offsets, same seeds).
func fioJobFile(dir string, v fioVariant, verifyOnly bool) string {
	mode := "do_verify=1"
	if verifyOnly {
		mode = "verify_only=1"
	}
	return fmt.Sprintf(`[global]
directory=%s
filename=data.fio
size=%d
verify=crc32c
%s
verify_fatal=1
end_fsync=1
runtime=%d
%s`, dir, fioRegion, mode, int(fioLimit.Seconds()), strings.ReplaceAll(v.jobs, "REGION", fmt.Sprint(fioRegion)))
}

func runFio(t *testing.T, fio string, m *mount, v fioVariant) {
	work := t.TempDir()
	// Write and verify through the mount.
	runFioJob(t, fio, work, "write", fioJobFile(filepath.Join(m.mnt, v.name), v, false), v.njobs, m)
	if t.Failed() {
		return
	}
	// A fresh mount has nothing of the file in its page cache: the verify
	// reads what the daemon serves from the blob.
	m.remount(t)
	runFioJob(t, fio, work, "verify-after-remount", fioJobFile(filepath.Join(m.mnt, v.name), v, true), v.njobs, m)
	// And the blob itself, read without the mount.
	runFioJob(t, fio, work, "verify-blob", fioJobFile(filepath.Join(m.store, v.name), v, true), v.njobs, nil)
}

// fioReport is the part of fio's JSON report checked here.
type fioReport struct {
	Jobs []struct {
		Name  string `json:"jobname"`
		Error int    `json:"error"`
		Read  struct {
			IOBytes int64 `json:"io_bytes"`
		} `json:"read"`
		Write struct {
			IOBytes int64 `json:"io_bytes"`
		} `json:"write"`
	} `json:"jobs"`
}

// runFioJob runs one job file and checks fio's verdict and report.
//
// A run on a mount (m not nil) still going after fioSlow logs what the
// daemon's threads are doing in the kernel and how many requests the
// FUSE connection has waiting, for whoever must find out why.
func runFioJob(t *testing.T, fio, work, phase, job string, njobs int, m *mount) {
	t.Helper()
	if m != nil {
		// done is guarded by mu, which the log holds: the test does not
		// end while it logs.
		var mu sync.Mutex
		done := false
		slow := time.AfterFunc(fioSlow, func() {
			mu.Lock()
			defer mu.Unlock()
			if done {
				return
			}
			m.mu.Lock()
			conn := m.conn
			m.mu.Unlock()
			waiting, _ := os.ReadFile(filepath.Join("/sys/fs/fuse/connections", conn, "waiting"))
			t.Logf("fio %s still running after %v; FUSE connection %s has %s requests waiting; daemon threads not sleeping:\n%s",
				phase, fioSlow, conn, strings.TrimSpace(string(waiting)), threadStacks(m.pid()))
		})
		defer func() {
			slow.Stop()
			mu.Lock()
			done = true
			mu.Unlock()
		}()
	}
	jobPath := filepath.Join(work, phase+".fio")
	outPath := filepath.Join(work, phase+".json")
	if err := os.WriteFile(jobPath, []byte(job), 0o644); err != nil {
		t.Fatal(err)
	}
	r := runTool(t, fioLimit+30*time.Second, work, nil, fio, "--output-format=json", "--output="+outPath, jobPath)
	raw, _ := os.ReadFile(outPath)
	fail := func(format string, args ...any) {
		t.Helper()
		t.Errorf("fio %s: %s\njob file:\n%s\n%s\nJSON report:\n%s", phase, fmt.Sprintf(format, args...), job, r, tailText(string(raw), 3000))
	}
	if !r.ok() {
		fail("fio failed")
		return
	}
	if strings.Contains(r.stderr, "verify:") || strings.Contains(r.stdout, "verify:") {
		fail("fio reported a verification failure")
		return
	}
	// fio writes its warnings ("fio: multiple writers may overwrite
	// blocks...", about offset_increment) into the report before the JSON.
	js := raw
	if i := bytes.Index(js, []byte("\n{")); i >= 0 && !bytes.HasPrefix(js, []byte("{")) {
		js = js[i+1:]
	}
	var rep fioReport
	if err := json.Unmarshal(js, &rep); err != nil {
		fail("cannot decode the JSON report: %v", err)
		return
	}
	if len(rep.Jobs) != njobs {
		fail("%d jobs in the report, want %d", len(rep.Jobs), njobs)
		return
	}
	for _, j := range rep.Jobs {
		if j.Error != 0 {
			fail("job %s: error %d (%v)", j.Name, j.Error, errnoName(syscall.Errno(j.Error)))
		}
		// verify_only reports the region as written too, without writing.
		if j.Write.IOBytes != fioRegion || j.Read.IOBytes != fioRegion {
			fail("job %s wrote %d bytes and read back %d, want %d each", j.Name, j.Write.IOBytes, j.Read.IOBytes, fioRegion)
		}
	}
}
