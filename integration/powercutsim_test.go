package integration

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mmapfs/mmapfs/fs"
	"github.com/mmapfs/mmapfs/fs/wire"
)

// The power-cut simulation (--powercut-sim, `mmapfs powercut`): the same
// workload under each writeback policy, the power cut at a chosen point,
// the store mounted again, and every file checked: exactly what was synced
// survives, nothing synced is lost.

// simPolicies are the policies the simulation is tried under, with what
// survives a cut of each: whether every write is synced as it is made, and
// whether a close syncs.
var simPolicies = []struct {
	flags        []string
	writeThrough bool // every write through the daemon is synced as made
	// closeSyncs: every close(2) of a descriptor of the file syncs it
	// (after the kernel has written the dirty pages of the mount's
	// mappings back). That includes the copies of the test's
	// descriptors that a fork makes and its exec closes: once the test
	// has run a command, every file it holds open is synced.
	closeSyncs bool
}{
	{flags: []string{"--writeback", "fsync"}},
	{flags: []string{"--writeback", "write-through"}, writeThrough: true},
	{flags: []string{"--writeback", "close"}, closeSyncs: true},
	{flags: []string{"--writeback", "periodic:1h"}},
	{flags: []string{"--writeback", "async"}},
	{flags: []string{"--writeback", "none"}},
}

// powerCut runs `mmapfs powercut --json` on m, which must have been
// mounted with --powercut-sim, and checks that the daemon exited 0 and the
// mount is gone. It returns the daemon's report.
func (m *mount) powerCut(t testing.TB) *wire.ControlReply {
	t.Helper()
	m.mu.Lock()
	d := m.d
	m.down = true
	m.mu.Unlock()
	res := runBinary(t, time.Minute, nil, "powercut", "--json", m.mnt)
	if res.exitCode != 0 {
		t.Fatalf("mmapfs powercut %s: exit %d\n%s\n%s\ndaemon:\n%s", m.mnt, res.exitCode, res.stdout, res.stderr, m.out)
	}
	var r wire.ControlReply
	if err := json.Unmarshal([]byte(res.stdout), &r); err != nil {
		t.Fatalf("mmapfs powercut --json: %v\n%s", err, res.stdout)
	}
	m.waitGone(t, d, "the power cut")
	return &r
}

// dryRun runs `mmapfs powercut --dry-run --json` on m.
func (m *mount) dryRun(t testing.TB) *wire.ControlReply {
	t.Helper()
	res := runBinary(t, time.Minute, nil, "powercut", "--dry-run", "--json", m.mnt)
	if res.exitCode != 0 {
		t.Fatalf("mmapfs powercut --dry-run %s: exit %d\n%s\n%s", m.mnt, res.exitCode, res.stdout, res.stderr)
	}
	var r wire.ControlReply
	if err := json.Unmarshal([]byte(res.stdout), &r); err != nil {
		t.Fatalf("mmapfs powercut --dry-run --json: %v\n%s", err, res.stdout)
	}
	return &r
}

// TestPowerCutSimPolicies writes, overwrites, appends, truncates and maps
// files under each policy, fsyncing some of it, cuts the power with files
// still open, mounts the store again and checks every byte.
func TestPowerCutSimPolicies(t *testing.T) {
	for _, pol := range simPolicies {
		t.Run(pol.flags[1], func(t *testing.T) {
			t.Parallel()
			m := startMount(t, append([]string{"--powercut-sim"}, pol.flags...)...)
			ps := os.Getpagesize()
			a := pattern(64<<10, 1)  // fsynced
			b := pattern(2*ps, 2)    // overwrites a at 4 pages, not synced
			c := pattern(ps, 3)      // appended, not synced
			d := pattern(20<<10, 4)  // closed, never synced
			e := pattern(32<<10, 5)  // fsynced, then truncated to 10 KiB
			mp := pattern(16<<10, 6) // mapped: fsynced, then changed through the mapping
			m1 := pattern(ps, 7)     // page 1 of the mapping, msynced
			m2 := pattern(ps, 8)     // page 2 of the mapping, not msynced
			open := func(name string) *os.File {
				f, err := os.OpenFile(filepath.Join(m.mnt, name), os.O_RDWR|os.O_CREATE, 0o644)
				if err != nil {
					t.Fatal(err)
				}
				return f
			}
			write := func(f *os.File, p []byte, off int64) {
				if _, err := f.WriteAt(p, off); err != nil {
					t.Fatal(err)
				}
			}
			sync := func(f *os.File) {
				if err := f.Sync(); err != nil {
					t.Fatal(err)
				}
			}

			fa := open("synced")
			write(fa, a, 0)
			sync(fa)
			write(fa, b, int64(4*ps))
			write(fa, c, int64(len(a)))

			fd := open("closed")
			write(fd, d, 0)
			if err := fd.Close(); err != nil {
				t.Fatal(err)
			}

			fe := open("truncated")
			write(fe, e, 0)
			sync(fe)
			if err := fe.Truncate(10 << 10); err != nil {
				t.Fatal(err)
			}

			fm := open("mapped")
			write(fm, mp, 0)
			sync(fm)
			mem, err := unix.Mmap(int(fm.Fd()), 0, len(mp), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
			if err != nil {
				t.Fatal(err)
			}
			copy(mem[ps:], m1)
			if err := unix.Msync(mem[ps:2*ps], unix.MS_SYNC); err != nil {
				t.Fatal(err)
			}
			copy(mem[2*ps:], m2)

			// What a cut now would lose, as the stats and the dry run
			// see it.
			plan := m.dryRun(t)
			if !plan.Simulation || plan.Report == nil || plan.Report.Done {
				t.Fatalf("dry run: %+v", plan)
			}
			lost := map[string]int64{}
			for _, f := range plan.Report.Files {
				lost[f.Name] = f.Restored + f.Cutoff
			}
			wantLost := map[string]int64{}
			if !pol.writeThrough && !pol.closeSyncs {
				wantLost["synced"] = int64(len(b) + len(c))
				wantLost["closed"] = int64(len(d))
			}
			if !pol.closeSyncs {
				wantLost["truncated"] = int64(len(e) - 8<<10) // the pages from the one 10 KiB falls in
			}
			for name, want := range wantLost {
				if lost[name] != want {
					t.Errorf("dry run: %s would lose %d bytes, want %d (plan %+v)", name, lost[name], want, plan.Report.Files)
				}
			}
			// The page changed through the mapping and not msynced
			// reaches the daemon only if the kernel writes it back on
			// its own meanwhile.
			if l := lost["mapped"]; l != 0 && l != int64(ps) {
				t.Errorf("dry run: mapped would lose %d bytes, want 0 or one page", l)
			}

			rep := m.powerCut(t)
			if rep.Report == nil || !rep.Report.Done {
				t.Fatalf("power cut report: %+v", rep)
			}
			// The client's descriptors and mapping died with the mount.
			unix.Munmap(mem)
			for _, f := range []*os.File{fa, fe, fm} {
				f.Close()
			}

			m.start(t)
			want := bytes.Clone(a)
			if pol.writeThrough || pol.closeSyncs {
				copy(want[4*ps:], b)
				want = append(want, c...)
			}
			checkContent(t, filepath.Join(m.mnt, "synced"), want)
			want = nil
			if pol.writeThrough || pol.closeSyncs {
				want = d
			}
			checkContent(t, filepath.Join(m.mnt, "closed"), want)
			want = e
			if pol.closeSyncs {
				want = e[:10<<10]
			}
			checkContent(t, filepath.Join(m.mnt, "truncated"), want)
			got := readFile(t, filepath.Join(m.mnt, "mapped"))
			want = bytes.Clone(mp)
			copy(want[ps:], m1)
			// The page not msynced reached the daemon only if the
			// kernel wrote it back on its own; synced only then, and
			// only under write-through.
			if (pol.writeThrough && bytes.Equal(got[2*ps:3*ps], m2)) || pol.closeSyncs {
				copy(want[2*ps:], m2)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("mapped after the cut: %s", diffBytes(got, want))
			}
			m.stop(t)
		})
	}
}

// TestPowerCutSimRefused checks the errors: a cut on a mount without the
// simulation is refused with a message that says how to get it, and the
// mount goes on; a dry run there lists the unsynced writes; the control
// file takes no other request.
func TestPowerCutSimRefused(t *testing.T) {
	t.Parallel()
	m := startMount(t)
	writeFile(t, filepath.Join(m.mnt, "f"), []byte("unsynced"))
	res := runBinary(t, time.Minute, nil, "powercut", m.mnt)
	if res.exitCode == 0 || !strings.Contains(res.stderr, "--powercut-sim") {
		t.Errorf("powercut without the simulation: exit %d, stderr %q; want a failure that names --powercut-sim", res.exitCode, res.stderr)
	}
	res = runBinary(t, time.Minute, nil, "powercut", "--dry-run", m.mnt)
	if res.exitCode != 0 || !strings.Contains(res.stdout, "f (closed)") {
		t.Errorf("dry run without the simulation: exit %d\n%s%s\nwant f listed as at risk", res.exitCode, res.stdout, res.stderr)
	}
	ctl, err := os.OpenFile(filepath.Join(m.mnt, fs.ControlName), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, err = ctl.Write([]byte("reboot"))
	wantErrno(t, "unknown control request", err, syscall.EINVAL)
	if err := ctl.Close(); err != nil {
		t.Fatal(err)
	}
	wantErrno(t, "unlink of the control file", os.Remove(filepath.Join(m.mnt, fs.ControlName)), syscall.EPERM)
	checkContent(t, filepath.Join(m.mnt, "f"), []byte("unsynced"))
	m.stop(t)
}

// record is the i-th 512-byte record of the loggers: its number, then
// bytes that depend on it.
func record(i int) []byte {
	r := make([]byte, 512)
	binary.LittleEndian.PutUint64(r, uint64(i)+1)
	for j := 8; j < len(r); j++ {
		r[j] = byte(i*31 + j)
	}
	return r
}

// intactRecords counts the records at the start of log that are whole.
func intactRecords(log []byte) int {
	n := 0
	for ; (n+1)*512 <= len(log); n++ {
		if !bytes.Equal(log[n*512:(n+1)*512], record(n)) {
			break
		}
	}
	return n
}

const (
	demoRecords = 1000 // records each logger writes
	demoSyncs   = 64   // a logger syncs after every demoSyncs records
)

// demoResult is what one policy's demonstration lost.
type demoResult struct {
	policy        string
	ignoresFsync  bool
	writeThrough  bool
	closeSyncs    bool  // the loggers' files are synced by the forks of the run (see simPolicies)
	atRisk        int64 // unsynced bytes in the stats before the cut
	lost          int64 // bytes put back or cut off by the cut
	pwriteKept    int   // of demoRecords
	mmapKept      int
	fullAcked     int // SQLite commits acknowledged before the cut
	fullKept      int // rows found after it
	fullIntegrity string
	offAcked      int
	offKept       int
	offIntegrity  string
}

// sqliteWriter commits one row per transaction into a WAL database and
// prints each committed id; it runs until killed.
const sqliteWriter = `
import sqlite3, sys, os
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("PRAGMA journal_mode=WAL")
db.execute("PRAGMA synchronous=" + sys.argv[2])
db.execute("CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, v BLOB)")
i = 0
while True:
    i += 1
    db.execute("BEGIN")
    db.execute("INSERT INTO t(id, v) VALUES (?, ?)", (i, os.urandom(1000)))
    db.execute("COMMIT")
    print(i, flush=True)
`

// sqliteVerdict prints PRAGMA integrity_check and the row count.
const sqliteVerdict = `
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
try:
    ok = db.execute("PRAGMA integrity_check").fetchone()[0]
except sqlite3.DatabaseError as e:
    print("error:", e); sys.exit(0)
try:
    n = db.execute("SELECT count(*) FROM t").fetchone()[0]
except sqlite3.DatabaseError as e:
    n = 0
print(ok.replace(" ", "_"), n)
`

// startSQLite starts the writer on the mount and waits for commits
// acknowledged commits.
func startSQLite(t *testing.T, py, path, sync string, commits int) (*exec.Cmd, func() int) {
	t.Helper()
	cmd := exec.Command(py, "-c", sqliteWriter, path, sync)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	acked := make(chan int, 1<<16)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if n, err := strconv.Atoi(sc.Text()); err == nil {
				acked <- n
			}
		}
		close(acked)
	}()
	last := 0
	deadline := time.After(2 * time.Minute)
	for last < commits {
		select {
		case n, ok := <-acked:
			if !ok {
				t.Fatalf("sqlite writer (%s) ended after %d commits: %s", sync, last, stderr.String())
			}
			last = n
		case <-deadline:
			cmd.Process.Kill()
			t.Fatalf("sqlite writer (%s): only %d commits in 2 minutes", sync, last)
		}
	}
	// What it acknowledged by the time the caller asks.
	return cmd, func() int {
		for {
			select {
			case n, ok := <-acked:
				if !ok {
					return last
				}
				last = n
			default:
				return last
			}
		}
	}
}

// TestPowerCutSimDemo is the demonstration: under each policy (and with
// --unsafe-ignore-fsync), a pwrite logger that fdatasyncs every 64
// records, a logger that writes the same records through a MAP_SHARED
// mapping and msyncs every 64, and SQLite in WAL mode with synchronous
// FULL and OFF committing rows, all cut mid-workload. After the cut: every
// synced record and every acknowledged FULL commit is there and the
// database passes integrity_check; what OFF and the unsynced records lost
// is logged (the README's table comes from this log).
func TestPowerCutSimDemo(t *testing.T) {
	py, pyErr := exec.LookPath("python3")
	type run struct {
		name  string
		flags []string
		wt    bool
		cs    bool
	}
	runs := []run{}
	for _, p := range simPolicies {
		runs = append(runs, run{name: p.flags[1], flags: p.flags, wt: p.writeThrough, cs: p.closeSyncs})
	}
	runs = append(runs, run{name: "fsync --unsafe-ignore-fsync", flags: []string{"--writeback", "fsync", "--unsafe-ignore-fsync"}})
	results := make([]*demoResult, len(runs))
	t.Run("policies", func(t *testing.T) {
		for i, r := range runs {
			t.Run(strings.ReplaceAll(r.name, " ", "_"), func(t *testing.T) {
				t.Parallel()
				res := &demoResult{policy: r.name, writeThrough: r.wt, closeSyncs: r.cs, ignoresFsync: len(r.flags) > 2}
				results[i] = res
				runDemo(t, py, pyErr, r.flags, res)
			})
		}
	})
	var b strings.Builder
	fmt.Fprintf(&b, "\n| policy | at risk before the cut | lost in the cut | pwrite log kept | mmap log kept | SQLite FULL kept / acked, integrity | SQLite OFF kept / acked, integrity |\n|---|---:|---:|---:|---:|---|---|\n")
	for _, r := range results {
		if r == nil {
			continue
		}
		fmt.Fprintf(&b, "| %s | %d B | %d B | %d / %d | %d / %d | %d / %d, %s | %d / %d, %s |\n", r.policy, r.atRisk, r.lost,
			r.pwriteKept, demoRecords, r.mmapKept, demoRecords, r.fullKept, r.fullAcked, r.fullIntegrity, r.offKept, r.offAcked, r.offIntegrity)
	}
	t.Log(b.String())
}

func runDemo(t *testing.T, py string, pyErr error, flags []string, res *demoResult) {
	m := startMount(t, append([]string{"--powercut-sim"}, flags...)...)
	synced := demoRecords / demoSyncs * demoSyncs // records covered by the last sync

	// The pwrite logger.
	pw, err := os.OpenFile(filepath.Join(m.mnt, "pwrite.log"), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer pw.Close()
	for i := 0; i < demoRecords; i++ {
		if _, err := pw.WriteAt(record(i), int64(i)*512); err != nil {
			t.Fatal(err)
		}
		if (i+1)%demoSyncs == 0 {
			if err := unix.Fdatasync(int(pw.Fd())); err != nil {
				t.Fatal(err)
			}
		}
	}

	// The mmap logger: the file is laid out and synced, then written
	// through the mapping.
	mf, err := os.OpenFile(filepath.Join(m.mnt, "mmap.log"), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer mf.Close()
	if err := mf.Truncate(demoRecords * 512); err != nil {
		t.Fatal(err)
	}
	if err := mf.Sync(); err != nil {
		t.Fatal(err)
	}
	mem, err := unix.Mmap(int(mf.Fd()), 0, demoRecords*512, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(mem)
	for i := 0; i < demoRecords; i++ {
		copy(mem[i*512:], record(i))
		if (i+1)%demoSyncs == 0 {
			if err := unix.Msync(mem[:(i+1)*512], unix.MS_SYNC); err != nil {
				t.Fatal(err)
			}
		}
	}

	// SQLite, cut while it commits.
	var full, off *exec.Cmd
	var fullAcked, offAcked func() int
	if pyErr == nil {
		full, fullAcked = startSQLite(t, py, filepath.Join(m.mnt, "full.db"), "FULL", 200)
		off, offAcked = startSQLite(t, py, filepath.Join(m.mnt, "off.db"), "OFF", 200)
	} else {
		t.Logf("no python3 (%v): SQLite part skipped", pyErr)
	}

	st := readStats(t, m)
	res.atRisk = st.UnsyncedBytes
	rep := m.powerCut(t)
	res.lost = rep.Report.Restored + rep.Report.Cutoff
	if full != nil {
		res.fullAcked, res.offAcked = fullAcked(), offAcked()
		for _, c := range []*exec.Cmd{full, off} {
			c.Process.Kill()
			c.Wait()
		}
	}
	unix.Munmap(mem)
	mem = nil

	m.start(t)
	defer m.stop(t)
	res.pwriteKept = intactRecords(readFile(t, filepath.Join(m.mnt, "pwrite.log")))
	res.mmapKept = intactRecords(readFile(t, filepath.Join(m.mnt, "mmap.log")))
	if full != nil {
		res.fullIntegrity, res.fullKept = checkSQLite(t, py, filepath.Join(m.mnt, "full.db"))
		res.offIntegrity, res.offKept = checkSQLite(t, py, filepath.Join(m.mnt, "off.db"))
	}

	switch {
	case res.ignoresFsync:
		// Nothing the daemon was asked to sync was synced.
		if res.pwriteKept >= synced || res.mmapKept >= synced {
			t.Errorf("--unsafe-ignore-fsync kept %d pwrite and %d mmap records: want fewer than the %d synced ones lost", res.pwriteKept, res.mmapKept, synced)
		}
	default:
		if res.pwriteKept < synced || res.mmapKept < synced {
			t.Errorf("kept %d pwrite and %d mmap records; want at least the %d synced ones", res.pwriteKept, res.mmapKept, synced)
		}
		if (res.writeThrough || res.closeSyncs) && res.pwriteKept != demoRecords {
			t.Errorf("%s kept %d pwrite records, want all %d", res.policy, res.pwriteKept, demoRecords)
		}
		if res.closeSyncs && res.mmapKept != demoRecords {
			t.Errorf("%s kept %d mmap records, want all %d", res.policy, res.mmapKept, demoRecords)
		}
		if !res.writeThrough && !res.closeSyncs && res.pwriteKept != synced {
			t.Errorf("kept %d pwrite records, want exactly the %d synced ones", res.pwriteKept, synced)
		}
		if full != nil {
			if res.fullIntegrity != "ok" || res.fullKept < res.fullAcked {
				t.Errorf("SQLite FULL after the cut: integrity %q, %d rows of %d acknowledged", res.fullIntegrity, res.fullKept, res.fullAcked)
			}
		}
	}
	if !res.writeThrough && res.lost == 0 {
		t.Errorf("the cut put nothing back")
	}
}

// checkSQLite returns integrity_check's verdict and the row count.
func checkSQLite(t *testing.T, py, path string) (string, int) {
	t.Helper()
	out, err := exec.Command(py, "-c", sqliteVerdict, path).CombinedOutput()
	if err != nil {
		t.Fatalf("checking %s: %v\n%s", path, err, out)
	}
	f := strings.Fields(string(out))
	if len(f) != 2 {
		return strings.TrimSpace(string(out)), 0
	}
	n, _ := strconv.Atoi(f[1])
	return f[0], n
}
