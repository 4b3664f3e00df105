package integration

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mmapfs/mmapfs/fs"
	"github.com/mmapfs/mmapfs/fs/wire"
	"github.com/mmapfs/mmapfs/internal/enableuring"
)

// suiteTransportEnv, set to dev, uring or auto, runs every mount of the
// suite over that transport (a test's own --transport, given after,
// wins). With uring TestMain is a user of enable_uring for the whole run,
// as withURing is for a test (uringSwitch: on while used, put back by the
// last user of any process, or by the watchdog if this binary dies);
// where it cannot (no CONFIG_FUSE_IO_URING) the run is skipped, saying
// why.
const suiteTransportEnv = "MMAPFS_INTEGRATION_TRANSPORT"

// suiteTransportFlags are the daemon flags suiteTransportEnv asks for:
// dev when it is unset, so that a run over /dev/fuse stays on it while
// the uring tests of the same run turn enable_uring on (the default,
// auto, would take the rings then).
func suiteTransportFlags() []string {
	if loopbackMode {
		return nil // go-fuse's loopback has no --transport
	}
	if v := os.Getenv(suiteTransportEnv); v != "" {
		return []string{"--transport", v}
	}
	return []string{"--transport", "dev"}
}

// enableURing is the fuse module's switch for FUSE over io_uring.
const enableURing = "/sys/module/fuse/parameters/enable_uring"

// uringSwitch is enable_uring as this suite shares it with every other
// process that needs it (fs/uring's tests, other runs of the suite, the
// bench): internal/enableuring. A use turns it on if it is off; the last
// use of any process puts back what it was; the watchdog puts it back if
// this binary dies while the last user (runWatchdog).
var uringSwitch = enableuring.For(enableURing)

// errNoURing says that this kernel has no FUSE over io_uring.
var errNoURing = enableuring.ErrNoURing

// acquireURing makes the caller a user of enable_uring: on until it
// calls release. It returns an error wrapping errNoURing where the
// kernel has none.
func acquireURing() (release func() error, err error) {
	u, err := uringSwitch.Acquire()
	if err != nil {
		return nil, err
	}
	return u.Release, nil
}

// skipUnlessTransport skips a test of --transport where the flag cannot
// be tried: the loopback mode of the suite (the flag is mmapfs's) and a
// test that is not root (--transport uring needs root).
func skipUnlessTransport(t *testing.T) {
	t.Helper()
	if loopbackMode {
		t.Skip("--transport is mmapfs's")
	}
	if os.Geteuid() != 0 {
		t.Skip("--transport uring needs root")
	}
}

// withURing turns enable_uring on for the test and puts it back after;
// it skips the test where FUSE over io_uring cannot be had (not root,
// no CONFIG_FUSE_IO_URING, the loopback mode of the suite).
func withURing(t *testing.T) {
	t.Helper()
	skipUnlessTransport(t)
	release, err := acquireURing()
	if errors.Is(err, errNoURing) {
		t.Skip(err)
	} else if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := release(); err != nil {
			t.Error(err)
		}
	})
}

// suiteURing prepares the run for suiteTransportEnv: with uring it
// turns enable_uring on for the whole run (the caller calls release
// after the last test); skip, if not empty, says why the run cannot be
// had here. An unknown transport is an error.
func suiteURing() (release func() error, skip string, err error) {
	release = func() error { return nil }
	switch v := os.Getenv(suiteTransportEnv); v {
	case "", "dev", "auto":
		return release, "", nil
	case "uring":
		if loopbackMode {
			return release, "", nil // go-fuse's loopback has no --transport: the env is ignored
		}
		if os.Geteuid() != 0 {
			return release, suiteTransportEnv + "=uring needs root", nil
		}
		r, err := acquireURing()
		if errors.Is(err, errNoURing) {
			return release, suiteTransportEnv + "=uring: " + err.Error(), nil
		} else if err != nil {
			return release, "", fmt.Errorf("%s=uring: %w", suiteTransportEnv, err)
		}
		return r, "", nil
	default:
		return release, "", fmt.Errorf("%s=%q: want dev, uring or auto", suiteTransportEnv, v)
	}
}

// transportOf reads the transport part of the mount's stats.
func transportOf(t *testing.T, mnt string) *wire.Transport {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(mnt, statsFile))
	if err != nil {
		t.Fatal(err)
	}
	var s struct {
		Transport *wire.Transport `json:"transport"`
	}
	if err := json.Unmarshal(raw, &s); err != nil {
		t.Fatal(err)
	}
	if s.Transport == nil {
		t.Fatalf("the stats have no transport:\n%s", raw)
	}
	return s.Transport
}

// TestURingServes mounts with --transport uring and checks that what a
// shell does (create, write, cat, ls, mkdir, rename, unlink) gives the
// answers ext4 gives, and that the requests went over the rings: the
// stats name the transport and count the requests of its queues.
func TestURingServes(t *testing.T) {
	withURing(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	metrics := l.Addr().String()
	l.Close()
	m := startMount(t, "--transport", "uring", "--uring-entries", "2", "--metrics", metrics)
	before := transportOf(t, m.mnt)
	if before.Name != "uring" || len(before.Queues) == 0 {
		t.Fatalf("transport %+v, want uring with its queues", before)
	}
	for _, q := range before.Queues {
		if q.Entries != 2 {
			t.Errorf("queue %d: %d entries, want the 2 asked for", q.Queue, q.Entries)
		}
	}
	served := func(tr *wire.Transport) (n uint64) {
		for _, q := range tr.Queues {
			n += q.Requests
		}
		return n
	}

	plain := t.TempDir()
	for _, dir := range []string{plain, m.mnt} {
		p := filepath.Join(dir, "f")
		if err := os.WriteFile(p, []byte("echo > file\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		f, err := os.OpenFile(p, os.O_APPEND|os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.Write([]byte(strings.Repeat("x", 300<<10))); err != nil { // more than one WRITE
			t.Fatal(err)
		}
		if err := errors.Join(f.Sync(), f.Close()); err != nil {
			t.Fatal(err)
		}
		if err := os.Mkdir(filepath.Join(dir, "d"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(p, filepath.Join(dir, "d", "g")); err != nil {
			t.Fatal(err)
		}
	}
	for _, rel := range []string{"d/g"} {
		want, err := os.ReadFile(filepath.Join(plain, rel))
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(filepath.Join(m.mnt, rel))
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != string(want) {
			t.Errorf("%s: read %d bytes over the rings, ext4 has %d", rel, len(got), len(want))
		}
	}
	names := func(dir string) []string {
		es, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		var ns []string
		for _, e := range es {
			if e.Name() != statsFile && e.Name() != fs.ControlName {
				ns = append(ns, e.Name())
			}
		}
		return ns
	}
	if got, want := strings.Join(names(m.mnt), " "), strings.Join(names(plain), " "); got != want {
		t.Errorf("ls: %q on the mount, %q on ext4", got, want)
	}
	for _, dir := range []string{plain, m.mnt} {
		if err := os.Remove(filepath.Join(dir, "d", "g")); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(filepath.Join(dir, "d", "g")); !errors.Is(err, syscall.ENOENT) {
			t.Errorf("%s: stat after unlink: %v, want ENOENT", dir, err)
		}
	}
	after := transportOf(t, m.mnt)
	if n := served(after) - served(before); n < 20 {
		t.Errorf("%d requests served over the rings for the operations above, want at least 20: %+v", n, after.Queues)
	}
	t.Logf("queues: %+v", after.Queues)

	// Prometheus has the same: the transport, and each queue's requests.
	resp, err := http.Get("http://" + metrics + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(body), `mmapfs_transport_info{transport="uring"} 1`) {
		t.Errorf("metrics lack the transport:\n%s", body)
	}
	var scraped uint64
	for _, line := range strings.Split(string(body), "\n") {
		if rest, ok := strings.CutPrefix(line, "mmapfs_uring_requests_total{queue="); ok {
			_, v, _ := strings.Cut(rest, " ")
			n, err := strconv.ParseUint(v, 10, 64)
			if err != nil {
				t.Fatalf("metric line %q: %v", line, err)
			}
			scraped += n
		}
	}
	if scraped < served(after) {
		t.Errorf("mmapfs_uring_requests_total sums to %d, the stats said %d before", scraped, served(after))
	}

	// And mmapfs stats' table has a row for the transport and its queues.
	r := runBinary(t, cliTimeout, nil, "stats", m.mnt)
	const want = "\ntransport  "
	row := ""
	if i := strings.Index(r.stdout, want); i >= 0 {
		row, _, _ = strings.Cut(r.stdout[i+1:], "\n")
	}
	if r.exitCode != 0 || !strings.Contains(row, fmt.Sprintf("uring, %d queues: ", len(after.Queues))) || !strings.Contains(row, "queue 0: ") || !strings.Contains(row, " of 2 entries busy (most ") {
		t.Errorf("mmapfs stats (exit %d): transport row %q, want uring with its %d queues of 2 entries:\n%s%s", r.exitCode, row, len(after.Queues), r.stdout, r.stderr)
	}
	m.stop(t)
}

// TestURingRefusedWhenOff: with enable_uring off, --transport uring
// refuses to mount, naming the parameter and how to turn it on, and
// leaves nothing mounted. Where enable_uring is really off and no test
// of this process needs it on, the daemon meets the real thing. Where it
// is on (a test of this run, or another run on the machine, needs it:
// the test never turns it off under them), the daemon runs in a mount
// namespace of its own in which a file that reads N is bind-mounted on
// enableURing: what is tested then is the daemon's own check and
// message, which run before anything is mounted, not the kernel's.
func TestURingRefusedWhenOff(t *testing.T) {
	skipUnlessTransport(t)
	store, mnt := t.TempDir(), t.TempDir()
	args := []string{"mount", "--transport", "uring", store, mnt}
	if _, err := os.Stat(enableURing); err != nil {
		t.Skipf("no FUSE over io_uring in this kernel: %v", err)
	}
	// Off and unused: no process turns it on while IfOff holds it.
	ran, err := uringSwitch.IfOff(func() {
		r := runBinary(t, cliTimeout, []string{mnt}, args...)
		checkURingRefusal(t, r.exitCode, r.stderr, mnt)
	})
	if err != nil {
		t.Fatal(err)
	}
	if ran {
		return
	}

	unshare, err := exec.LookPath("unshare")
	if err != nil {
		t.Skipf("%s is on and there is no unshare(1) to show the daemon a private one that is off: %v", enableURing, err)
	}
	off := filepath.Join(t.TempDir(), "enable_uring")
	if err := os.WriteFile(off, []byte("N\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := trampolineCommand(unshare, append([]string{"--mount", "--propagation", "private", "sh", "-c",
		`mount --bind "$1" "$2" && shift 2 && exec "$@"`, "sh", off, enableURing, binPath}, args...)...)
	var stdout, stderr syncBuffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var werr error
	select {
	case werr = <-done:
	case <-time.After(cliTimeout):
		cmd.Process.Kill() // its namespace, and whatever it mounted there, goes with it
		<-done
		t.Fatalf("mount --transport uring with a private enable_uring of N still running after %v:\n%s", cliTimeout, stderr.String())
	}
	code := 0
	if werr != nil {
		var ee *exec.ExitError
		if !errors.As(werr, &ee) {
			t.Fatal(werr)
		}
		code = ee.ExitCode()
	}
	if strings.Contains(stderr.String(), "mount: ") && !strings.Contains(stderr.String(), "mmapfs") {
		t.Fatalf("could not bind-mount a private %s: %s", enableURing, stderr.String())
	}
	checkURingRefusal(t, code, stderr.String(), mnt)
}

// checkURingRefusal checks the end of a mount --transport uring with
// enable_uring off: a failure whose message names the parameter and how
// to turn it on, and nothing mounted on mnt.
func checkURingRefusal(t *testing.T, exitCode int, stderr, mnt string) {
	t.Helper()
	if exitCode == 0 {
		t.Fatalf("mount --transport uring with enable_uring off succeeded:\n%s", stderr)
	}
	for _, want := range []string{enableURing, "echo 1 > " + enableURing} {
		if !strings.Contains(stderr, want) {
			t.Errorf("refusal does not say %q:\n%s", want, stderr)
		}
	}
	if mounted(mnt) {
		t.Errorf("%s is mounted after the refusal", mnt)
	}
	t.Logf("refused: %s", strings.TrimSpace(stderr))
}

// TestURingStopsCleanly: a mount served over the rings, with files
// still being opened on both CPUs, unmounts and its daemon exits
// within the harness's bounds (the entries end when the kernel tears
// the queues down), and the store mounts again.
func TestURingStopsCleanly(t *testing.T) {
	withURing(t)
	m := startMount(t, "--transport", "uring")
	deadline := time.Now().Add(300 * time.Millisecond)
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := filepath.Join(m.mnt, "w"+string(rune('a'+w)))
			for time.Now().Before(deadline) {
				if err := os.WriteFile(p, []byte("x"), 0o644); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	m.remount(t)
	if tr := transportOf(t, m.mnt); tr.Name != "uring" {
		t.Errorf("after the remount: transport %q", tr.Name)
	}
	m.stop(t)
}

// TestURingInterruptReachesRingRequest: a client killed while its READ
// is held by the daemon (an injected delay; --direct-io, so that the
// reader waits for the request itself, not for a page it can give up
// on) ends at once under both transports. The kernel sends the INTERRUPT over /dev/fuse even for a
// request it gave a ring; unless the daemon hands it to the handler that
// serves the rings, the delay runs out first and the killed client
// stays in D state all that time.
func TestURingInterruptReachesRingRequest(t *testing.T) {
	withURing(t)
	const delay = 8 * time.Second
	for _, tr := range []string{"dev", "uring"} {
		t.Run(tr, func(t *testing.T) {
			store := t.TempDir()
			storeWrite(t, store, "slow", []byte("slow\n"))
			rule := "op=read,path=slow,delay=" + delay.String()
			m := startMountAt(t, store, t.TempDir(), "--transport", tr, "--direct-io", "--inject", rule)
			cmd := exec.Command("cat", filepath.Join(m.mnt, "slow"))
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			done := make(chan struct{})
			go func() { cmd.Wait(); close(done) }()
			// Before the mount's cleanup: a reader left waiting (the
			// wait below failed) would hold the mount busy.
			t.Cleanup(func() {
				cmd.Process.Kill()
				<-done
			})
			// The READ is in the daemon, held by the delay: the daemon
			// logs that as the delay begins.
			injectLogged(t, m, rule, "read", "slow", "delayed "+delay.String())
			start := time.Now()
			if err := cmd.Process.Kill(); err != nil {
				t.Fatal(err)
			}
			select {
			case <-done:
				t.Logf("%s: the killed reader ended %v after the kill", tr, time.Since(start).Round(time.Millisecond))
			case <-time.After(delay / 2):
				<-done // the delay runs out: nothing is left behind
				t.Fatalf("%s: the killed reader ended only %v after the kill, with the injected delay: its INTERRUPT did not reach the request", tr, time.Since(start).Round(time.Millisecond))
			}
			m.stop(t)
		})
	}
}

// TestURingAuto: --transport auto serves over /dev/fuse while
// enable_uring is off and over the rings once it is on, and the stats
// and the log say which.
func TestURingAuto(t *testing.T) {
	skipUnlessTransport(t)
	off, err := uringSwitch.IfOff(func() {
		m := startMount(t, "--transport", "auto")
		if tr := transportOf(t, m.mnt); tr.Name != "dev" || len(tr.Queues) != 0 {
			t.Errorf("--transport auto with enable_uring off: transport %+v, want dev", tr)
		}
		m.stop(t)
		if !strings.Contains(m.out.String(), "--transport auto: dev") || !strings.Contains(m.out.String(), enableURing) {
			t.Errorf("the log does not say auto chose dev, and why:\n%s", m.out)
		}
	})
	if err != nil && !errors.Is(err, errNoURing) {
		t.Fatal(err)
	}
	if !off {
		t.Log("enable_uring was not off: only the uring half runs")
	}
	withURing(t)
	m := startMount(t, "--transport", "auto")
	if tr := transportOf(t, m.mnt); tr.Name != "uring" || len(tr.Queues) == 0 {
		t.Errorf("--transport auto with enable_uring on: transport %+v, want uring with its queues", tr)
	}
	m.stop(t)
	if !strings.Contains(m.out.String(), "--transport auto: uring") {
		t.Errorf("the log does not say auto chose uring:\n%s", m.out)
	}
}

// TestURingInterruptDuringHandoff: a client killed while its READ is
// the ring entry's but not yet in flight in go-fuse (the entry's
// hand-off, widened by fs.TestURingHandoffDelayEnv; the READ then held
// by an injected delay, under --direct-io) ends at once. Its INTERRUPT
// comes over /dev/fuse while go-fuse knows no such request: answered
// EAGAIN, it would be lost (the kernel looks the unique up only among
// /dev/fuse's requests, not the rings'), and the killed client would
// wait out the delay; the daemon instead retries it until the entry has
// handed the READ over.
func TestURingInterruptDuringHandoff(t *testing.T) {
	withURing(t)
	const (
		delay   = 8 * time.Second
		handoff = 90 * time.Millisecond // within the daemon's 100 ms of retries
		holding = "test hand-off delay: holding READ"
	)
	t.Setenv(fs.TestURingHandoffDelayEnv, handoff.String())
	store := t.TempDir()
	storeWrite(t, store, "slow", []byte("slow\n"))
	m := startMountAt(t, store, t.TempDir(), "--transport", "uring", "--direct-io", "--inject", "op=read,path=slow,delay="+delay.String())
	defer m.stop(t)
	// The kill must land inside the hand-off, or the INTERRUPT finds
	// the READ in flight and the test proves nothing: a kill that came
	// late is tried again.
	for attempt := 1; attempt <= 3; attempt++ {
		before := strings.Count(m.out.String(), holding)
		cmd := exec.Command("cat", filepath.Join(m.mnt, "slow"))
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		deadline := time.Now().Add(10 * time.Second)
		for strings.Count(m.out.String(), holding) == before && time.Now().Before(deadline) {
			time.Sleep(100 * time.Microsecond)
		}
		seen := time.Now()
		if err := cmd.Process.Kill(); err != nil {
			t.Fatal(err)
		}
		late := time.Since(seen)
		if strings.Count(m.out.String(), holding) == before {
			<-done
			t.Fatalf("the READ of slow never reached a ring entry's hand-off (no %q in the log):\n%s", holding, m.out)
		}
		select {
		case <-done:
		case <-time.After(delay / 2):
			<-done // the delay runs out: nothing is left behind
			t.Fatalf("the reader killed %v into its READ's hand-off ended only %v after the kill: its INTERRUPT was lost", late.Round(time.Microsecond), time.Since(seen).Round(time.Millisecond))
		}
		t.Logf("attempt %d: killed %v into the %v hand-off, the reader ended %v after the kill", attempt, late.Round(time.Microsecond), handoff, time.Since(seen).Round(time.Millisecond))
		if late < handoff/2 {
			return
		}
	}
	t.Skipf("the kill came later than %v into the hand-off three times: the machine is too busy to aim at the window", handoff/2)
}

// TestURingRegisterFailureAbortWithoutFusectl: a daemon whose ring
// entries the kernel refuses (fs.TestURingPayloadEnv) and which cannot
// abort the connection through fusectl (fs.TestURingConnectionEnv names
// a directory that does not exist, as where fusectl cannot be mounted)
// aborts it by a forced unmount instead, and exits with the
// registration's error: it neither hangs nor serves the mount over
// /dev/fuse (the kernel lets the held requests go there after a failed
// registration), and no mount is left.
func TestURingRegisterFailureAbortWithoutFusectl(t *testing.T) {
	withURing(t)
	noConn := filepath.Join(t.TempDir(), "no-such-connection")
	mnt, stderr := failedRegistration(t, fs.TestURingPayloadEnv+"=4096", fs.TestURingConnectionEnv+"="+noConn)
	for _, want := range []string{"FUSE_IO_URING_CMD_REGISTER", syscall.EINVAL.Error(), noConn, "aborted the connection by a forced unmount of " + mnt} {
		if !strings.Contains(stderr, want) {
			t.Errorf("the daemon's output does not say %q:\n%s", want, stderr)
		}
	}
}

// TestURingBDIBeforeRings: under uring the mount's bdi is set before the
// rings are registered (the kernel lets the requests it held back go the
// moment they are): a --bdi-max-ratio the bdi refuses (its files bound
// read-only in a mount namespace of the daemon's own) fails the mount
// before any ring entry exists, naming the file, and leaves no mount.
func TestURingBDIBeforeRings(t *testing.T) {
	withURing(t)
	if _, err := exec.LookPath("unshare"); err != nil {
		t.Skip("no unshare(1)")
	}
	store, mnt := t.TempDir(), t.TempDir()
	const script = `mount --bind /sys/devices/virtual/bdi /sys/devices/virtual/bdi || exit 3
mount -o remount,bind,ro /sys/devices/virtual/bdi || exit 3
exec "$0" mount "$@"`
	cmd := exec.Command("unshare", "-m", "--propagation", "private", "sh", "-c", script, binPath,
		"--transport", "uring", "--bdi-max-ratio", "20", store, mnt)
	code, stderr := runCommand(t, cmd, cliTimeout)
	switch code {
	case -1:
		t.Fatalf("the daemon whose bdi was refused still ran %v later:\n%s", cliTimeout, stderr)
	case 0, 3:
		t.Fatalf("exit %d, want the daemon's failure:\n%s", code, stderr)
	}
	if !strings.Contains(stderr, "/max_ratio to 20") || !strings.Contains(stderr, "read-only file system") {
		t.Errorf("the error does not name the bdi's max_ratio and EROFS:\n%s", stderr)
	}
	if strings.Contains(stderr, "transport uring:") {
		t.Errorf("the rings were registered (and served) before the bdi was set:\n%s", stderr)
	}
	if mounted(mnt) {
		t.Errorf("%s is mounted outside the namespace", mnt)
	}
}

// TestURingAutoInitWithoutURing: an INIT that does not negotiate io_uring
// (fs.TestURingNoInitEnv: the daemon does not ask, as when enable_uring
// is turned off between its look and the mount) makes --transport auto
// serve over /dev/fuse (nothing is held back then) and say why, while
// --transport uring fails with that reason and leaves no mount.
func TestURingAutoInitWithoutURing(t *testing.T) {
	withURing(t)
	t.Setenv(fs.TestURingNoInitEnv, "1")
	m := startMount(t, "--transport", "auto")
	if tr := transportOf(t, m.mnt); tr.Name != "dev" || len(tr.Queues) != 0 {
		t.Errorf("--transport auto after an INIT without io_uring: transport %+v, want dev", tr)
	}
	writeFile(t, filepath.Join(m.mnt, "f"), []byte("over dev\n"))
	checkBoth(t, m, "f", []byte("over dev\n"))
	m.stop(t)
	if !strings.Contains(m.out.String(), "--transport auto: dev (the kernel did not offer FUSE_OVER_IO_URING at INIT") {
		t.Errorf("the log does not say auto fell back to dev, and why:\n%s", m.out)
	}

	store, mnt := t.TempDir(), t.TempDir()
	watchdogWatch(mnt)
	code, stderr := runCommand(t, daemonCommand("mount", "--transport", "uring", store, mnt), cliTimeout)
	if mounted(mnt) {
		t.Errorf("%s still mounted after --transport uring was refused at INIT", mnt)
		if err := forceUnmount(mnt); err != nil {
			t.Error(err)
		}
	}
	watchdogForget(mnt)
	if code == -1 || code == 0 {
		t.Fatalf("--transport uring after an INIT without io_uring: exit %d, want a failure:\n%s", code, stderr)
	}
	if !strings.Contains(stderr, "--transport uring: the kernel did not offer FUSE_OVER_IO_URING at INIT") {
		t.Errorf("the error does not say INIT did not offer io_uring:\n%s", stderr)
	}
}

// TestURingAutoFdMountRefused: root without CAP_SYS_ADMIN (setpriv drops
// it from the daemon's sets and bounding set) cannot mount /dev/fuse
// itself, so --transport auto, which chose uring, falls back to dev
// through fusermount3 and says why, where --transport uring refuses with
// that EPERM. (fusermount3 cannot mount either without the capability in
// the bounding set: both daemons exit 1 here; what differs is the path
// taken.)
func TestURingAutoFdMountRefused(t *testing.T) {
	withURing(t)
	if _, err := exec.LookPath("setpriv"); err != nil {
		t.Skip("no setpriv(1)")
	}
	for _, c := range []struct {
		transport string
		want      string
	}{
		{"auto", "--transport auto: dev (mount(2) of "},
		{"uring", "--transport uring: mount(2) of "},
	} {
		store, mnt := t.TempDir(), t.TempDir()
		watchdogWatch(mnt)
		cmd := exec.Command("setpriv", "--inh-caps=-sys_admin", "--bounding-set=-sys_admin",
			binPath, "mount", "--transport", c.transport, store, mnt)
		code, stderr := runCommand(t, cmd, cliTimeout)
		if mounted(mnt) {
			t.Errorf("--transport %s without CAP_SYS_ADMIN: %s mounted", c.transport, mnt)
			if err := forceUnmount(mnt); err != nil {
				t.Error(err)
			}
		}
		watchdogForget(mnt)
		if code != 1 {
			t.Errorf("--transport %s without CAP_SYS_ADMIN: exit %d, want 1:\n%s", c.transport, code, stderr)
		}
		if !strings.Contains(stderr, c.want) || !strings.Contains(stderr, syscall.EPERM.Error()) {
			t.Errorf("--transport %s without CAP_SYS_ADMIN: the output does not say %q with EPERM:\n%s", c.transport, c.want, stderr)
		}
		if c.transport == "auto" && strings.Contains(stderr, "--transport uring: ") {
			t.Errorf("--transport auto failed as uring instead of falling back to dev:\n%s", stderr)
		}
	}
}
