package integration

// TestFsx runs the fsx model checker (package fsx: a seeded random mix of
// reads, writes, mapped reads and writes, truncates, fallocates, syncs,
// reopens, remounts and, single client only, a SIGKILL of the daemon,
// each step checked against a model of the files) on a mount, in this
// process: the daemon is another one.
//
// With MMAPFS_INTEGRATION_FS=loopback the checker runs against go-fuse's
// loopback (the fsync and 2clients runs), a check of the checker itself.
//
// CI runs -fsx.ops operations under each writeback policy, with
// --writeback-cache and with --direct-io, and once with two client
// processes that work on their own files of one mount at the same time
// (the test binary run again in roleFsxClient). A failure prints the seed,
// the step, the last operations and the command that replays it:
//
//	go test -race -count=1 -run 'TestFsx/fsync$' ./integration/ -fsx.seed S -fsx.ops N
//
// Soak a configuration for as long as asked:
//
//	go test -race -count=1 -timeout 0 -run 'TestFsx/fsync$' -v ./integration/ -fsx.duration 10m

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"hash/fnv"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mmapfs/mmapfs/integration/fsx"
)

var (
	fsxOps      = flag.Int("fsx.ops", 500, "fsx: operations per run (per client)")
	fsxSeed     = flag.Uint64("fsx.seed", 0, "fsx: seed (0: pick one at random and print it); every run derives its own seed from it and its name")
	fsxDuration = flag.Duration("fsx.duration", 0, "fsx: run each configuration for this long instead of -fsx.ops operations")
	fsxFiles    = flag.Int("fsx.files", 3, "fsx: files per client")
)

// Lines an fsx client writes to its stdout for the test that runs it.
const (
	fsxCtlRemount = "FSXCTL remount" // all my files are closed: remount, then send "go"
	fsxCtlDone    = "FSXCTL done "   // followed by the summary
)

// fsxRuns are the configurations CI runs: every writeback policy, and the
// kernel's caching switches that change the data path most.
var fsxRuns = []struct {
	name  string
	flags []string
}{
	{"fsync", []string{"--writeback", "fsync"}},
	{"write-through", []string{"--writeback", "write-through"}},
	{"close", []string{"--writeback", "close"}},
	{"periodic-50ms", []string{"--writeback", "periodic:50ms"}},
	{"async", []string{"--writeback", "async"}},
	{"none", []string{"--writeback", "none"}},
	{"writeback-cache", []string{"--writeback-cache"}},
	{"direct-io", []string{"--direct-io"}},
}

// fsxClients is how many processes the multi-client run starts.
const fsxClients = 2

func fsxMasterSeed(t *testing.T) uint64 {
	if *fsxSeed != 0 {
		return *fsxSeed
	}
	return rand.Uint64()%1_000_000_000 + 1
}

func fsxReplay(name string, master uint64) string {
	extra := ""
	if *fsxFiles != 3 {
		extra = fmt.Sprintf(" -fsx.files %d", *fsxFiles)
	}
	return fmt.Sprintf("go test -race -count=1 -run 'TestFsx/%s$' ./integration/ -fsx.seed %d -fsx.ops %%d%s", name, master, extra)
}

func TestFsx(t *testing.T) {
	t.Parallel()
	master := fsxMasterSeed(t)
	t.Logf("fsx master seed %d (replay any run with -fsx.seed %d)", master, master)
	for _, r := range fsxRuns {
		t.Run(r.name, func(t *testing.T) {
			t.Parallel()
			flags := r.flags
			if loopbackMode {
				if r.name != "fsync" {
					t.Skip("mmapfs flags")
				}
				flags = nil
			}
			fsxSingle(t, r.name, master, flags)
		})
	}
	t.Run(fmt.Sprintf("%dclients", fsxClients), func(t *testing.T) {
		t.Parallel()
		fsxMulti(t, fmt.Sprintf("%dclients", fsxClients), master)
	})
}

// fsxSeedFor derives the seed of the run named name from the master seed,
// so that the runs of one invocation differ and each replays from the
// master seed and its name.
func fsxSeedFor(master uint64, name string) uint64 {
	h := fnv.New64a()
	binary.Write(h, binary.LittleEndian, master)
	h.Write([]byte(name))
	s := h.Sum64()
	if s == 0 {
		s = 1
	}
	return s
}

// fsxSingle runs the checker in this process on a new mount with flags,
// with remounts and crashes of the daemon in the mix.
func fsxSingle(t *testing.T, name string, master uint64, flags []string) {
	m := startMount(t, flags...)
	cfg := fsx.Config{
		Name:           name,
		Dir:            m.mnt,
		Store:          m.store,
		Files:          *fsxFiles,
		Ops:            *fsxOps,
		Duration:       *fsxDuration,
		Seed:           fsxSeedFor(master, name),
		WritebackCache: slices.Contains(flags, "--writeback-cache"),
		Replay:         fsxReplay(name, master),
	}
	var holders []string // who held the mount busy during a remount
	x, err := fsx.New(cfg, fsx.Hooks{
		Remount: func() error {
			func() {
				stop := fsxWatchHolders(m.mnt, &holders)
				defer stop()
				m.stop(t)
			}()
			m.start(t)
			return nil
		},
		Kill: func() error { m.kill(t); return nil },
		Restart: func() error {
			if err := forceUnmount(m.mnt); err != nil {
				return err
			}
			m.start(t)
			return nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	reported := false
	defer func() {
		// A t.Fatal in the harness (a remount that failed) ends the
		// run without a failure of ours: show the operations anyway.
		if t.Failed() && !reported {
			t.Log(x.Failure(errors.New("the harness failed the test")))
			if len(holders) > 0 {
				t.Logf("processes seen with the mount open during the remount:\n%s", strings.Join(holders, "\n"))
			}
		}
	}()
	err = x.Run()
	reported = true
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("fsx %s: %s", name, x.Summary())
}

// fsxMsg is a line of a client's stdout, or its end (eof).
type fsxMsg struct {
	client int
	line   string
	eof    bool
}

// fsxMulti runs fsxClients client processes, each on its own files of one
// mount with its own seed and model. A client that draws a remount closes
// its files and asks for one; the test remounts once every client still
// running has asked, and lets them go on.
func fsxMulti(t *testing.T, name string, master uint64) {
	var flags []string
	if !loopbackMode {
		flags = []string{"--writeback", "periodic:50ms"}
	}
	m := startMount(t, flags...)
	msgs := make(chan fsxMsg, 16)
	quit := make(chan struct{})
	defer close(quit)
	type client struct {
		cmd     *exec.Cmd
		stdin   io.WriteCloser
		stderr  syncBuffer
		waiting bool
		done    bool
		summary string
		exited  chan struct{}
	}
	clients := make([]*client, fsxClients)
	for i := range clients {
		c := &client{exited: make(chan struct{})}
		clients[i] = c
		cname := fmt.Sprintf("%s/client%d", name, i)
		cfg := fsx.Config{
			Name:     cname,
			Dir:      m.mnt,
			Store:    m.store,
			Prefix:   fmt.Sprintf("c%d-", i),
			Files:    *fsxFiles,
			Ops:      *fsxOps,
			Duration: *fsxDuration,
			Seed:     fsxSeedFor(master, cname),
			Replay:   fsxReplay(name, master) + " (client " + fmt.Sprint(i) + " failed at that step; the other client runs alongside)",
		}
		js, err := json.Marshal(cfg)
		if err != nil {
			t.Fatal(err)
		}
		c.cmd = roleCommand(testBinary, roleFsxClient, string(js))
		c.cmd.Stderr = &c.stderr
		if c.stdin, err = c.cmd.StdinPipe(); err != nil {
			t.Fatal(err)
		}
		stdout, err := c.cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := c.cmd.Start(); err != nil {
			t.Fatalf("start client %d: %v", i, err)
		}
		// Registered after the mount's cleanup, so run before it: no
		// client holds the mount busy when it is stopped.
		t.Cleanup(func() {
			select {
			case <-c.exited:
			default:
				c.cmd.Process.Kill()
				<-c.exited
			}
		})
		go func() {
			send := func(msg fsxMsg) {
				select {
				case msgs <- msg:
				case <-quit:
				}
			}
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				send(fsxMsg{client: i, line: sc.Text()})
			}
			// Wait closes the pipe: only once it has been read to EOF.
			c.cmd.Wait()
			close(c.exited)
			send(fsxMsg{client: i, eof: true})
		}()
	}
	start := time.Now()
	remounts := 0
	idle := 5 * time.Minute
	for {
		running, waiting := 0, 0
		for _, c := range clients {
			if !c.done {
				running++
				if c.waiting {
					waiting++
				}
			}
		}
		if running == 0 {
			break
		}
		if waiting > 0 && waiting == running {
			m.remount(t)
			remounts++
			for _, c := range clients {
				if c.waiting {
					c.waiting = false
					io.WriteString(c.stdin, "go\n")
				}
			}
			continue
		}
		var msg fsxMsg
		select {
		case msg = <-msgs:
		case <-time.After(idle):
			t.Fatalf("no word from the fsx clients for %v", idle)
		}
		c := clients[msg.client]
		switch {
		case msg.eof:
			c.done = true
		case msg.line == fsxCtlRemount:
			c.waiting = true
		case strings.HasPrefix(msg.line, fsxCtlDone):
			c.summary = strings.TrimPrefix(msg.line, fsxCtlDone)
		default:
			t.Logf("client %d: %s", msg.client, msg.line)
		}
	}
	for i, c := range clients {
		<-c.exited
		c.stdin.Close()
		if ps := c.cmd.ProcessState; !ps.Success() || c.summary == "" {
			t.Errorf("fsx client %d failed (%v):\n%s", i, ps, c.stderr.String())
			continue
		}
		t.Logf("fsx %s client %d: %s", name, i, c.summary)
	}
	t.Logf("fsx %s: %d remounts in %.1fs", name, remounts, time.Since(start).Seconds())
}

// fsxClient is the test binary run as an fsx client by fsxMulti (in
// roleFsxClient): it runs the configuration in args[0] (fsx.Config as
// JSON) and returns the exit status. A remount is asked of the test over
// stdout and waits for "go" on stdin.
func fsxClient(args []string) int {
	var cfg fsx.Config
	if len(args) != 1 {
		fmt.Fprintf(os.Stderr, "fsx client: %d arguments, want the configuration as JSON\n", len(args))
		return 2
	}
	if err := json.Unmarshal([]byte(args[0]), &cfg); err != nil {
		fmt.Fprintf(os.Stderr, "fsx client: bad config: %v\n", err)
		return 2
	}
	in := bufio.NewScanner(os.Stdin)
	remount := func() error {
		fmt.Fprintln(os.Stdout, fsxCtlRemount)
		if !in.Scan() {
			return fmt.Errorf("no go-ahead from the test: %v", in.Err())
		}
		if in.Text() != "go" {
			return fmt.Errorf("the test said %q", in.Text())
		}
		return nil
	}
	x, err := fsx.New(cfg, fsx.Hooks{Remount: remount})
	if err != nil {
		fmt.Fprintf(os.Stderr, "fsx client: %v\n", err)
		return 2
	}
	if err := x.Run(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Fprintln(os.Stdout, fsxCtlDone+x.Summary())
	return 0
}

// fsxWatchHolders polls /proc for processes that hold files of mnt open
// (descriptors, mappings, cwd) until stop is called, and appends what it
// sees to *seen: a remount that fails with EBUSY says who held the mount.
func fsxWatchHolders(mnt string, seen *[]string) (stop func()) {
	done := make(chan struct{})
	finished := make(chan struct{})
	found := map[string]bool{}
	go func() {
		defer close(finished)
		for {
			for _, h := range fsxMountHolders(mnt) {
				if !found[h] {
					found[h] = true
					*seen = append(*seen, time.Now().Format("15:04:05.000 ")+h)
				}
			}
			select {
			case <-done:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	return func() {
		close(done)
		<-finished
	}
}

// fsxMountHolders lists the processes with a descriptor, a mapping or a
// working directory under mnt.
func fsxMountHolders(mnt string) []string {
	var out []string
	procs, _ := os.ReadDir("/proc")
	self := os.Getpid()
	for _, p := range procs {
		pid := p.Name()
		if pid[0] < '0' || pid[0] > '9' {
			continue
		}
		var what []string
		dir := "/proc/" + pid
		fds, _ := os.ReadDir(dir + "/fd")
		for _, fd := range fds {
			if l, err := os.Readlink(dir + "/fd/" + fd.Name()); err == nil && (l == mnt || strings.HasPrefix(l, mnt+"/")) {
				what = append(what, "fd "+fd.Name()+" -> "+l)
			}
		}
		if l, err := os.Readlink(dir + "/cwd"); err == nil && (l == mnt || strings.HasPrefix(l, mnt+"/")) {
			what = append(what, "cwd "+l)
		}
		if b, err := os.ReadFile(dir + "/maps"); err == nil && strings.Contains(string(b), mnt+"/") {
			what = append(what, "maps a file of the mount")
		}
		if len(what) == 0 {
			continue
		}
		cmd, _ := os.ReadFile(dir + "/cmdline")
		me := ""
		if pid == fmt.Sprint(self) {
			me = " (this test process)"
		}
		out = append(out, fmt.Sprintf("pid %s%s %q: %s", pid, me, strings.ReplaceAll(string(cmd), "\x00", " "), strings.Join(what, "; ")))
	}
	return out
}
