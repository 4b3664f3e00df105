package integration

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mmapfs/mmapfs/fs"
	"github.com/mmapfs/mmapfs/fs/wire"
)

// What the CLI and the daemon say: stats, power-cut summaries, errors on
// dead mounts, the metrics endpoint, a refused unmount.

// oneLine fails the test if msg (an error printed by the CLI) is not a
// single line.
func oneLine(t *testing.T, what, msg string) {
	t.Helper()
	if strings.Count(strings.TrimRight(msg, "\n"), "\n") > 0 {
		t.Errorf("%s: the message is not one line:\n%s", what, msg)
	}
}

// TestStatsWatchIntervalForms: the interval of stats --watch is taken in
// every usual form, and out-of-range intervals are refused with the
// flag's name, the value and the range.
func TestStatsWatchIntervalForms(t *testing.T) {
	t.Parallel()
	skipIfLoopback(t)
	m := startMount(t)
	for _, args := range [][]string{
		{"--watch", "200ms", m.mnt},
		{"-w", "200ms", m.mnt},
		{m.mnt, "--watch", "200ms"},
		{"--watch=200ms", m.mnt},
	} {
		name := strings.ReplaceAll(strings.Join(args, " "), m.mnt, "MNT")
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			// --watch runs until interrupted: stop it after a few lines
			// (the header and two intervals), or after pollTimeout with
			// fewer, which fails.
			r := runUntilLines(t, pollTimeout, 3, append([]string{"stats"}, args...)...)
			lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
			if r.exitCode != -1 || r.stderr != "" || len(lines) < 3 || !strings.Contains(lines[0], "wr MiB/s") {
				t.Errorf("stats %s: exit %d, stderr %q, stdout:\n%s\nwant a header and lines every 200ms until stopped", strings.Join(args, " "), r.exitCode, r.stderr, r.stdout)
			}
		})
	}
	for _, tc := range []struct{ flag, value string }{{"--watch=-1s", "-1s"}, {"--watch=0", "0s"}, {"-w=-5ms", "-5ms"}} {
		r := runBinary(t, cliTimeout, nil, "stats", tc.flag, m.mnt)
		// The first line; a usage line may follow.
		first, _, _ := strings.Cut(r.stderr, "\n")
		if r.exitCode != 1 || !strings.Contains(first, "--watch "+tc.value) || !strings.Contains(first, "more than 0") {
			t.Errorf("stats %s: exit %d, stderr %q; want a refusal naming --watch, %s and the range", tc.flag, r.exitCode, r.stderr, tc.value)
		}
	}
}

// TestStatsFreshMountTable: on a mount that has done nothing, the stats
// table says nothing untrue: no quantile of calls never made, no age of
// unsynced writes there are none of, latencies in units, MiB where the
// values are MiB.
func TestStatsFreshMountTable(t *testing.T) {
	t.Parallel()
	skipIfLoopback(t)
	m := startMount(t)
	r := runBinary(t, cliTimeout, nil, "stats", m.mnt)
	if r.exitCode != 0 {
		t.Fatalf("stats: exit %d\n%s", r.exitCode, r.stderr)
	}
	// max-write=0 would be the flag, not the size in force.
	for _, bad := range []string{"<0", " 0µs", "oldest", " MB", "max-write=0"} {
		if strings.Contains(r.stdout, bad) {
			t.Errorf("stats of a fresh mount shows %q:\n%s", bad, r.stdout)
		}
	}
	// Every latency has its unit; a bound is "<" and a number of µs,
	// ms or s, never a bare count of microseconds.
	lat := regexp.MustCompile(`^(\S+)\s+(\d+)\s+(\d+)\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)$`)
	unit := regexp.MustCompile(`^<?[0-9.]+(µs|ms|s)$`)
	rows := 0
	for _, line := range strings.Split(r.stdout, "\n") {
		f := lat.FindStringSubmatch(line)
		if f == nil || f[1] == "FUSE" {
			continue
		}
		rows++
		for _, v := range f[4:] {
			if !unit.MatchString(v) {
				t.Errorf("op %s: latency %q has no unit:\n%s", f[1], v, line)
			}
		}
	}
	if rows == 0 {
		t.Errorf("no op row in the table:\n%s", r.stdout)
	}
	// A directory inside the mount is not its mountpoint.
	if err := os.Mkdir(filepath.Join(m.mnt, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	r = runBinary(t, cliTimeout, nil, "stats", filepath.Join(m.mnt, "sub"))
	if want := "not an mmapfs mount but a directory inside the one at " + m.mnt; r.exitCode != 1 || !strings.Contains(r.stderr, want) {
		t.Errorf("stats of a directory inside the mount: exit %d, stderr %q; want %q", r.exitCode, r.stderr, want)
	}
	// The header and the first interval's line, then stopped.
	w := runUntilLines(t, pollTimeout, 2, "stats", "--watch=200ms", m.mnt)
	if !strings.Contains(w.stdout, "unsynced MiB") || strings.Contains(w.stdout, "MB") {
		t.Errorf("stats --watch header: want MiB (the values are), got:\n%s", w.stdout)
	}
}

// TestDeadMountMessages: stats and powercut on a mount whose daemon died
// say how to recover, in one line; on a directory that is not a mount
// they say so.
func TestDeadMountMessages(t *testing.T) {
	t.Parallel()
	skipIfLoopback(t)
	m := startMount(t)
	m.kill(t)
	for _, args := range [][]string{{"stats", m.mnt}, {"stats", "--watch=1s", m.mnt}, {"powercut", m.mnt}, {"powercut", "--dry-run", m.mnt}} {
		r := runBinary(t, cliTimeout, nil, args...)
		if r.exitCode != 1 || !strings.Contains(r.stderr, "dead mount") || !strings.Contains(r.stderr, "fusermount3 -u "+m.mnt) || !strings.Contains(r.stderr, "mount the store again") {
			t.Errorf("%s on a dead mount: exit %d, stderr %q; want what to do (fusermount3 -u %s, mount again)", strings.Join(args, " "), r.exitCode, r.stderr, m.mnt)
		}
		oneLine(t, strings.Join(args, " "), r.stderr)
	}
	dir := t.TempDir()
	for _, cmd := range []string{"stats", "powercut"} {
		r := runBinary(t, cliTimeout, nil, cmd, dir)
		if r.exitCode != 1 || !strings.Contains(r.stderr, dir+" is not an mmapfs mount: nothing is mounted there") {
			t.Errorf("%s on a plain directory: exit %d, stderr %q", cmd, r.exitCode, r.stderr)
		}
	}
}

// TestPowerCutRefusedOneSentence: a cut without --powercut-sim is refused
// with one sentence that names the flag, from the CLI and in the control
// file's answer, without an errno's text stuck on.
func TestPowerCutRefusedOneSentence(t *testing.T) {
	t.Parallel()
	skipIfLoopback(t)
	m := startMount(t)
	r := runBinary(t, cliTimeout, nil, "powercut", m.mnt)
	msg := strings.TrimSpace(r.stderr)
	if r.exitCode != 1 || !strings.Contains(msg, "--powercut-sim") || strings.HasSuffix(msg, "invalid argument") {
		t.Errorf("powercut without the simulation: exit %d, stderr %q; want one sentence naming --powercut-sim", r.exitCode, r.stderr)
	}
	oneLine(t, "powercut", r.stderr)
	ctl, err := os.OpenFile(filepath.Join(m.mnt, fs.ControlName), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer ctl.Close()
	_, err = ctl.Write([]byte(wire.ControlPowerCut))
	wantErrno(t, "powercut through the control file", err, syscall.EINVAL)
	raw, err := io.ReadAll(io.NewSectionReader(ctl, 0, 1<<20))
	if err != nil {
		t.Fatal(err)
	}
	var reply wire.ControlReply
	if err := json.Unmarshal(raw, &reply); err != nil {
		t.Fatalf("answer: %v\n%s", err, raw)
	}
	if !strings.Contains(reply.Error, "--powercut-sim") || strings.HasSuffix(reply.Error, "invalid argument") {
		t.Errorf("answer's error %q: want one sentence naming --powercut-sim", reply.Error)
	}
	if err := ctl.Close(); err != nil {
		t.Fatal(err)
	}
	m.stop(t)
}

// TestPowerCutSummaryCounts: the power-cut summary counts apart the files
// that get bytes back, those only cut to their synced size, and those
// removed since.
func TestPowerCutSummaryCounts(t *testing.T) {
	t.Parallel()
	skipIfLoopback(t)
	m := startMount(t, "--powercut-sim")
	// a: synced, then overwritten: 10000 bytes to put back.
	a := filepath.Join(m.mnt, "a")
	writeFile(t, a, pattern(10000, 1))
	f, err := os.OpenFile(a, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(pattern(10000, 2), 0); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	// b, c: created and never synced: cut back to 0. d: the same, then
	// removed.
	writeFile(t, filepath.Join(m.mnt, "b"), []byte("bbbbb"))
	writeFile(t, filepath.Join(m.mnt, "c"), []byte("cccc"))
	writeFile(t, filepath.Join(m.mnt, "d"), []byte("ddd"))
	if err := os.Remove(filepath.Join(m.mnt, "d")); err != nil {
		t.Fatal(err)
	}

	dry := m.dryRun(t)
	if s := dry.Summary; s == nil || s.PutBackFiles != 1 || s.PutBackBytes != 10000 || s.CutFiles != 3 || s.CutBytes != 12 || s.Files != 4 {
		t.Errorf("dry run summary %+v: want 10000 bytes put back in 1 file, 12 cut off 3 (d is not known gone before the cut)", s)
	}
	r := runBinary(t, time.Minute, nil, "powercut", "--dry-run", m.mnt)
	if want := "would put back 9.8 KiB in 1 file to the last synced content; would cut 12 B off 3 files past the last synced size\n"; r.exitCode != 0 || !strings.HasSuffix(r.stdout, "\n"+want) {
		t.Errorf("powercut --dry-run: exit %d, want the summary %q:\n%s%s", r.exitCode, want, r.stdout, r.stderr)
	}

	m.mu.Lock()
	d := m.d
	m.down = true
	m.mu.Unlock()
	r = runBinary(t, time.Minute, nil, "powercut", m.mnt)
	want := "put back 9.8 KiB in 1 file to the last synced content; cut 9 B off 2 files past the last synced size; 1 file was removed since it was written: nothing to put back\n"
	if r.exitCode != 0 || !strings.Contains(r.stdout, "\n"+want) || !strings.Contains(r.stdout, "d (closed) (gone)") {
		t.Errorf("powercut: exit %d, want the summary %q and d gone:\n%s%s", r.exitCode, want, r.stdout, r.stderr)
	}
	m.waitGone(t, d, "the power cut")
	if !logged(m, "power cut: "+strings.TrimSuffix(want, "\n")) {
		t.Errorf("the daemon's log lacks the summary %q:\n%s", want, m.out)
	}
}

// TestMetricsGoProcessAndIndex: the metrics endpoint has the Go runtime's
// and the process's metrics, the mountpoint on mmapfs_info, and a page at
// / that links to /metrics.
func TestMetricsGoProcessAndIndex(t *testing.T) {
	t.Parallel()
	skipIfLoopback(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	m := startMount(t, "--metrics", fmt.Sprint(port))
	get := func(path string) string {
		t.Helper()
		c := http.Client{Timeout: 10 * time.Second}
		resp, err := c.Get(fmt.Sprintf("http://127.0.0.1:%d%s", port, path))
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		if resp.StatusCode != http.StatusOK {
			t.Errorf("GET %s: %s\n%s", path, resp.Status, b)
		}
		return string(b)
	}
	body := get("/metrics")
	for _, want := range []string{"\ngo_goroutines ", "\ngo_memstats_heap_alloc_bytes ", "\nprocess_open_fds ", "\nprocess_resident_memory_bytes "} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s", strings.TrimSpace(want))
		}
	}
	info := regexp.MustCompile(`(?m)^mmapfs_info\{.*\} 1$`).FindString(body)
	if !strings.Contains(info, fmt.Sprintf(`mountpoint=%q`, m.mnt)) {
		t.Errorf("mmapfs_info %q lacks mountpoint=%q", info, m.mnt)
	}
	if page := get("/"); !strings.Contains(page, `href="/metrics"`) {
		t.Errorf("/ does not link to /metrics:\n%s", page)
	}
	m.stop(t)
}

// TestUnmountBusyNamesHolders: a SIGTERM while files are open on the
// mount logs one line that names the processes holding it (an open file,
// a working directory); once they are gone a second signal ends the
// daemon cleanly.
func TestUnmountBusyNamesHolders(t *testing.T) {
	t.Parallel()
	skipIfLoopback(t)
	m := startMount(t)
	writeFile(t, filepath.Join(m.mnt, "held"), []byte("x"))
	if err := os.Mkdir(filepath.Join(m.mnt, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	held, err := os.Open(filepath.Join(m.mnt, "held"))
	if err != nil {
		t.Fatal(err)
	}
	var holders []*exec.Cmd
	stopHolders := func() {
		for _, c := range holders {
			c.Process.Kill()
			c.Wait() // killed: its exit status says only that
		}
		holders = nil
	}
	defer stopHolders()
	start := func(dir string, stdin *os.File) int {
		c := exec.Command("sleep", "60")
		c.Dir, c.Stdin = dir, stdin
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		holders = append(holders, c)
		return c.Process.Pid
	}
	open := start("/", held)
	cwd := start(filepath.Join(m.mnt, "sub"), nil)
	if err := held.Close(); err != nil {
		t.Fatal(err)
	}

	before := len(m.out.String())
	m.mu.Lock()
	d := m.d
	m.mu.Unlock()
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if !logged(m, "still open") {
		t.Fatalf("no refused unmount logged after SIGTERM with files open:\n%s", m.out)
	}
	// Give the rest of the message time to arrive, were it split.
	time.Sleep(200 * time.Millisecond)
	out := m.out.String()[before:]
	var busy []string
	for _, line := range strings.Split(strings.TrimRight(out, "\n"), "\n") {
		if !strings.HasPrefix(line, "mmapfs: ") {
			t.Errorf("a log line does not start with \"mmapfs: \" (a message split over lines?): %q\n%s", line, out)
		}
		if strings.Contains(line, "still open") {
			busy = append(busy, line)
		}
	}
	if len(busy) != 1 {
		t.Fatalf("%d lines say the mount is busy, want 1:\n%s", len(busy), out)
	}
	for _, want := range []string{fmt.Sprintf("pid %d (sleep)", open), fmt.Sprintf("pid %d (sleep, cwd)", cwd)} {
		if !strings.Contains(busy[0], want) {
			t.Errorf("the busy line does not name %s:\n%s", want, busy[0])
		}
	}
	if !mounted(m.mnt) || d.exited() {
		t.Fatalf("the daemon unmounted or exited with files open on the mount:\n%s", m.out)
	}
	stopHolders()
	m.stop(t)
}
