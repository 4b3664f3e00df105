package integration

import (
	"encoding/json"
	"errors"
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
)

// suiteTransportEnv, set to dev or uring, runs every mount of the suite
// over that transport (a test's own --transport, given after, wins).
// With uring the run needs enable_uring on, which the suite does not
// turn on for it: `echo 1 > /sys/module/fuse/parameters/enable_uring`.
const suiteTransportEnv = "MMAPFS_INTEGRATION_TRANSPORT"

// suiteTransportFlags are the daemon flags suiteTransportEnv asks for.
func suiteTransportFlags() []string {
	if v := os.Getenv(suiteTransportEnv); v != "" {
		return []string{"--transport", v}
	}
	return nil
}

// enableURing is the fuse module's switch for FUSE over io_uring.
const enableURing = "/sys/module/fuse/parameters/enable_uring"

// uringUsers shares enable_uring between the tests of this file that
// run at once: the first turns it on, the last puts back what it was.
var uringUsers struct {
	sync.Mutex
	n   int
	was []byte
}

// withURing turns enable_uring on for the test and puts it back after;
// it skips the test where FUSE over io_uring cannot be had (not root,
// no CONFIG_FUSE_IO_URING, the loopback mode of the suite).
func withURing(t *testing.T) {
	t.Helper()
	if loopbackMode {
		t.Skip("--transport is mmapfs's")
	}
	if os.Geteuid() != 0 {
		t.Skip("--transport uring needs root")
	}
	uringUsers.Lock()
	defer uringUsers.Unlock()
	if uringUsers.n == 0 {
		was, err := os.ReadFile(enableURing)
		if errors.Is(err, os.ErrNotExist) {
			t.Skipf("no FUSE over io_uring in this kernel (%s)", enableURing)
		}
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(enableURing, []byte("1"), 0); err != nil {
			t.Fatalf("turning %s on: %v", enableURing, err)
		}
		uringUsers.was = was
	}
	uringUsers.n++
	t.Cleanup(func() {
		uringUsers.Lock()
		defer uringUsers.Unlock()
		uringUsers.n--
		if uringUsers.n == 0 {
			if err := os.WriteFile(enableURing, uringUsers.was, 0); err != nil {
				t.Errorf("putting %s back to %q: %v", enableURing, uringUsers.was, err)
			}
		}
	})
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
	m.stop(t)
}

// TestURingRefusedWhenOff: with enable_uring off, --transport uring
// refuses to mount, naming the parameter and how to turn it on, and
// leaves nothing mounted.
func TestURingRefusedWhenOff(t *testing.T) {
	if loopbackMode {
		t.Skip("--transport is mmapfs's")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	uringUsers.Lock()
	defer uringUsers.Unlock()
	if uringUsers.n > 0 {
		t.Skip("another test has enable_uring on")
	}
	b, err := os.ReadFile(enableURing)
	if err != nil {
		t.Skipf("no FUSE over io_uring in this kernel: %v", err)
	}
	if strings.TrimSpace(string(b)) != "N" {
		t.Skipf("%s is %s here", enableURing, strings.TrimSpace(string(b)))
	}
	mnt := t.TempDir()
	r := runBinary(t, cliTimeout, []string{mnt}, "mount", "--transport", "uring", t.TempDir(), mnt)
	if r.exitCode == 0 {
		t.Fatalf("mount --transport uring with enable_uring off succeeded:\n%s", r.stderr)
	}
	for _, want := range []string{enableURing, "echo 1 > " + enableURing} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("refusal does not say %q:\n%s", want, r.stderr)
		}
	}
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
			m := startMountAt(t, store, t.TempDir(), "--transport", tr, "--direct-io", "--inject", "op=read,path=slow,delay="+delay.String())
			cmd := exec.Command("cat", filepath.Join(m.mnt, "slow"))
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			done := make(chan struct{})
			go func() { cmd.Wait(); close(done) }()
			time.Sleep(500 * time.Millisecond) // the READ is in the daemon, sleeping
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
	if loopbackMode {
		t.Skip("--transport is mmapfs's")
	}
	if os.Geteuid() != 0 {
		t.Skip("--transport uring needs root")
	}
	uringUsers.Lock()
	b, err := os.ReadFile(enableURing)
	off := uringUsers.n == 0 && err == nil && strings.TrimSpace(string(b)) == "N"
	if off {
		m := startMount(t, "--transport", "auto")
		if tr := transportOf(t, m.mnt); tr.Name != "dev" || len(tr.Queues) != 0 {
			t.Errorf("--transport auto with enable_uring off: transport %+v, want dev", tr)
		}
		m.stop(t)
		if !strings.Contains(m.out.String(), "--transport auto: dev") || !strings.Contains(m.out.String(), enableURing) {
			t.Errorf("the log does not say auto chose dev, and why:\n%s", m.out)
		}
	}
	uringUsers.Unlock()
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
