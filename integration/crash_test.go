package integration

import (
	"flag"
	"fmt"
	"github.com/mmapfs/mmapfs/integration/crashwriter/crashdata"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// The process-crash half of the durability contract, in many seeded
// rounds: a writer in its own process (crashwriter/) makes random changes
// on the mount with fsyncs, the daemon is killed with SIGKILL at a random
// moment, the store is mounted again, and the writer's directory must hold
// exactly what the calls that returned success did (every write that
// returned is in the blob, fsynced or not; every create, rename and mkdir
// that returned is in the store), give or take the one call in flight.
//
//	go test ./integration/ -run TestCrashKill -crash.rounds=200
//	go test ./integration/ -run TestCrashKill/fsync -crash.seed=1234 -crash.rounds=1
//
// (The package comes before these flags, or they take "=": go test does
// not know them.)

var (
	crashRounds = flag.Int("crash.rounds", 12, "rounds of TestCrashKill per writeback policy")
	crashSeed   = flag.Uint64("crash.seed", 0, "seed of the first round of the crash and power-cut tests (0: from the clock); round i uses seed+i")
)

var crashSeedOnce = sync.OnceValue(func() uint64 {
	if *crashSeed != 0 {
		return *crashSeed
	}
	return uint64(time.Now().UnixNano()) % 1e9
})

// crashBaseSeed returns the seed of the first round: the same for every
// test of the run, so that one -crash.seed reproduces any of them.
func crashBaseSeed() uint64 { return crashSeedOnce() }

// crashDelay is the moment, after the writer started, at which round seed
// crashes: between lo and hi.
func crashDelay(seed uint64, lo, hi time.Duration) time.Duration {
	r := rand.New(rand.NewPCG(seed, 0x6b696c6c))
	return lo + time.Duration(r.Int64N(int64(hi-lo)))
}

func TestCrashKill(t *testing.T) {
	policies := []string{"fsync", "write-through", "periodic:100ms"}
	if loopbackMode {
		policies = policies[:1] // the loopback has no policies
	}
	for _, policy := range policies {
		t.Run(strings.ReplaceAll(policy, ":", "-"), func(t *testing.T) {
			t.Parallel()
			var flags []string
			if !loopbackMode {
				flags = []string{"--writeback", policy}
			}
			crashKillRounds(t, *crashRounds, flags)
		})
	}
}

func crashKillRounds(t *testing.T, rounds int, flags []string) {
	base := crashBaseSeed()
	t.Logf("seeds %d..%d; rerun one with -crash.seed=SEED -crash.rounds=1", base, base+uint64(rounds)-1)
	m := startMount(t, flags...)
	var done, calls, acks, files, bytesChecked int
	start := time.Now()
	for i := 0; i < rounds; i++ {
		done++
		seed := base + uint64(i)
		dir := fmt.Sprintf("round%d", i)
		if err := os.Mkdir(filepath.Join(m.mnt, dir), 0o755); err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
		w := startWriter(t, filepath.Join(m.mnt, dir), seed)
		w.started(t)
		delay := crashDelay(seed, 20*time.Millisecond, 300*time.Millisecond)
		time.Sleep(delay)
		before := w.out.String()
		m.kill(t)
		if err := w.finish(10 * time.Second); err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
		log, err := parseCrashLog(w.out.String())
		if err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
		model, err := buildCrashModel(seed, log)
		if err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
		if strings.Contains(before, "\nE ") || strings.HasPrefix(before, "E ") {
			t.Errorf("seed %d: a call failed before the daemon was killed: %v", seed, model.last)
		}
		if model.last == nil || model.last.status != 'E' {
			t.Errorf("seed %d: the writer stopped without an error; want it to see the daemon's death. Its output ends:\n%s", seed, tailLog(w.out.String(), 5))
		}

		// Every write that returned is in the blobs, before any remount.
		storeTree, err := readTree(filepath.Join(m.store, dir))
		if err != nil {
			t.Fatalf("seed %d: reading the store: %v", seed, err)
		}
		rep := model.check(storeTree, false)
		calls += len(log)
		acks += model.acks
		files += rep.files
		bytesChecked += rep.bytesChecked
		for _, n := range rep.notes {
			t.Logf("seed %d: %s", seed, n)
		}
		if len(rep.problems) > 0 {
			t.Errorf("seed %d (round %d, killed %v after the writer started; %s): the store after SIGKILL:\n%s\nthe writer's last lines:\n%s",
				seed, i, delay, model.summary(),
				strings.Join(rep.problems, "\n"), tailLog(w.out.String(), 12))
		}

		// The dead mount goes, the store mounts again and shows the same.
		if err := forceUnmount(m.mnt); err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
		m.start(t)
		mountTree, err := readTree(filepath.Join(m.mnt, dir))
		if err != nil {
			t.Fatalf("seed %d: reading the mount after the restart: %v", seed, err)
		}
		if d := diffTrees(storeTree, mountTree); d != "" {
			t.Errorf("seed %d: the mount after the restart differs from the store:\n%s", seed, d)
		}
		if t.Failed() {
			t.Logf("stopping after the first failed round (seed %d)", seed)
			break
		}
	}
	t.Logf("%d rounds in %v: %d calls, %d acknowledged syncs, %d files and %d bytes checked after SIGKILL",
		done, time.Since(start).Round(time.Millisecond), calls, acks, files, bytesChecked)
}

// TestCrashModel checks the checker of the crash tests on a made-up log:
// it must accept what may be there after a crash and catch every loss.
func TestCrashModel(t *testing.T) {
	t.Parallel()
	const seed = 7
	log := `START
B 1 mkdir d1
D 1
B 2 fsyncdir .
D 2
B 3 create 0 d1/f2
D 3
B 4 write 0 0 5000
D 4
B 5 fsync 0
D 5
B 6 fsyncdir d1
D 6
B 7 write 0 5000 3000
D 7
B 8 create 1 f3
D 8
B 9 write 1 0 100
D 9
B 10 rename 0 d1/f2 f4
D 10
B 11 mmapw 0 4000 2000
D 11
B 12 write 0 100 50
E 12 transport endpoint is not connected
`
	calls, err := parseCrashLog(log + "B 13 incompl")
	if err != nil {
		t.Fatal(err)
	}
	m, err := buildCrashModel(seed, calls)
	if err != nil {
		t.Fatal(err)
	}
	cur := func() []byte {
		b := append([]byte{}, crashdata.Data(seed, 4, 5000)...)
		b = append(b, crashdata.Data(seed, 7, 3000)...)
		copy(b[4000:], crashdata.Data(seed, 11, 2000))
		return b
	}
	with := func(b []byte, off int, w []byte) []byte { copy(b[off:], w); return b }
	type tree = map[string]treeEntry
	dir := treeEntry{dir: true}
	f3 := treeEntry{data: crashdata.Data(seed, 9, 100)}
	acked := with(append([]byte{}, crashdata.Data(seed, 4, 5000)...), 4000, crashdata.Data(seed, 11, 1000))
	for _, c := range []struct {
		name     string
		powerCut bool
		tree     tree
		ok       bool
	}{
		{"kill: all there", false, tree{"d1": dir, "f4": {data: cur()}, "f3": f3}, true},
		{"kill: the failed write happened", false, tree{"d1": dir, "f4": {data: with(cur(), 100, crashdata.Data(seed, 12, 50))}, "f3": f3}, true},
		{"kill: a written byte lost", false, tree{"d1": dir, "f4": {data: with(cur(), 5500, []byte{^cur()[5500]})}, "f3": f3}, false},
		{"kill: short", false, tree{"d1": dir, "f4": {data: cur()[:7999]}, "f3": f3}, false},
		{"kill: rename undone", false, tree{"d1": dir, "d1/f2": {data: cur()}, "f3": f3}, false},
		{"kill: file gone", false, tree{"d1": dir, "f4": {data: cur()}}, false},
		{"kill: directory gone", false, tree{"f4": {data: cur()}, "f3": f3}, false},
		{"kill: an extra file", false, tree{"d1": dir, "f4": {data: cur()}, "f3": f3, "x": {}}, false},
		{"cut: all there", true, tree{"d1": dir, "f4": {data: cur()}, "f3": f3}, true},
		{"cut: only what was acked", true, tree{"d1": dir, "d1/f2": {data: acked}}, true},
		{"cut: unacked append as zeros", true, tree{"d1": dir, "d1/f2": {data: with(append(acked[:5000:5000], make([]byte, 3000)...), 4000, crashdata.Data(seed, 11, 2000))}}, true},
		{"cut: msynced bytes of the unacked append lost", true, tree{"d1": dir, "d1/f2": {data: append(acked[:5000:5000], make([]byte, 3000)...)}}, false},
		{"cut: the msynced range lost", true, tree{"d1": dir, "d1/f2": {data: crashdata.Data(seed, 4, 5000)}}, false},
		{"cut: a fsynced byte lost", true, tree{"d1": dir, "d1/f2": {data: with(append([]byte{}, acked...), 10, []byte{0})}}, false},
		{"cut: fsynced size lost", true, tree{"d1": dir, "d1/f2": {data: acked[:4999]}}, false},
		{"cut: fsynced file gone", true, tree{"d1": dir, "f3": f3}, false},
		{"cut: under both names", true, tree{"d1": dir, "d1/f2": {data: acked}, "f4": {data: acked}}, false},
		{"cut: junk in an unacked byte", true, tree{"d1": dir, "f4": {data: with(cur(), 7000, []byte{^cur()[7000]})}}, false},
	} {
		rep := m.check(c.tree, c.powerCut)
		if ok := len(rep.problems) == 0; ok != c.ok {
			t.Errorf("%s: ok %v, want %v; problems:\n%s", c.name, ok, c.ok, strings.Join(rep.problems, "\n"))
		}
	}
}
