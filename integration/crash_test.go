package integration

import (
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mmapfs/mmapfs/integration/crashmodel"
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
		log, err := crashmodel.ParseLog(w.out.String())
		if err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
		model, err := crashmodel.Build(seed, log)
		if err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
		if strings.Contains(before, "\nE ") || strings.HasPrefix(before, "E ") {
			t.Errorf("seed %d: a call failed before the daemon was killed: %v", seed, model.Last())
		}
		if model.Last() == nil || model.Last().Status != 'E' {
			t.Errorf("seed %d: the writer stopped without an error; want it to see the daemon's death. Its output ends:\n%s", seed, tailLog(w.out.String(), 5))
		}

		// Every write that returned is in the blobs, before any remount.
		storeTree, err := crashmodel.ReadTree(filepath.Join(m.store, dir))
		if err != nil {
			t.Fatalf("seed %d: reading the store: %v", seed, err)
		}
		rep := model.Check(storeTree, false)
		calls += len(log)
		acks += model.Acks()
		files += rep.Files
		bytesChecked += rep.BytesChecked
		for _, n := range rep.Notes {
			t.Logf("seed %d: %s", seed, n)
		}
		if len(rep.Problems) > 0 {
			t.Errorf("seed %d (round %d, killed %v after the writer started; %s): the store after SIGKILL:\n%s\nthe writer's last lines:\n%s",
				seed, i, delay, model.Summary(),
				strings.Join(rep.Problems, "\n"), tailLog(w.out.String(), 12))
		}

		// The dead mount goes, the store mounts again and shows the same.
		if err := forceUnmount(m.mnt); err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
		m.start(t)
		mountTree, err := crashmodel.ReadTree(filepath.Join(m.mnt, dir))
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
