package backing

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/mmapfs/mmapfs/fs/wire"
)

func newSimStore(tb testing.TB, dir string, p Policy) *Store {
	tb.Helper()
	return newStoreWith(tb, dir, Options{Policy: p, PowerCutSim: true})
}

// simModel is one file of the power-cut model: what it holds now and
// what it held at its last sync.
type simModel struct {
	name        string
	cur, synced []byte
	blob        *Blob // nil while closed
}

func (m *simModel) write(p []byte, off int64) {
	if end := off + int64(len(p)); end > int64(len(m.cur)) {
		m.cur = append(m.cur, make([]byte, end-int64(len(m.cur)))...)
	}
	copy(m.cur[off:], p)
}

func (m *simModel) truncate(size int64) {
	if size <= int64(len(m.cur)) {
		m.cur = m.cur[:size]
		return
	}
	m.cur = append(m.cur, make([]byte, size-int64(len(m.cur)))...)
}

// TestPowerCutModel runs random writes, truncates, hole punches, syncs,
// closes and reopens over a few files, cuts the power at the end, and
// checks every file against the model: under the fsync policy exactly
// what the last sync of each file saw; under write-through everything.
func TestPowerCutModel(t *testing.T) {
	for _, tc := range []struct {
		policy Policy
	}{
		{Policy{Kind: PolicyFsync}},
		{Policy{Kind: PolicyNone}},
		{Policy{Kind: PolicyAsync}},
		{Policy{Kind: PolicyClose}},
		{Policy{Kind: PolicyWriteThrough}},
	} {
		for _, handles := range []bool{true, false} {
			name := fmt.Sprintf("%s/handles=%v", tc.policy, handles)
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				for seed := uint64(1); seed <= 8; seed++ {
					runPowerCutModel(t, tc.policy, handles, seed)
				}
			})
		}
	}
}

func runPowerCutModel(t *testing.T, policy Policy, handles bool, seed uint64) {
	// Under write-through every write is synced as it is made: only
	// writes then, and nothing may be lost. (Truncates and punches are
	// not writes; that policy leaves them to fsync.)
	durable := policy.Kind == PolicyWriteThrough
	dir := t.TempDir()
	s := newSimStore(t, dir, policy)
	if !handles {
		s.canReopen = false // closed files keep a descriptor instead
	}
	rng := rand.New(rand.NewPCG(seed, 99))
	ps := pagesz()
	files := make([]*simModel, 4)
	for i := range files {
		m := &simModel{name: fmt.Sprintf("f%d", i)}
		// Some files start with synced content.
		if i%2 == 0 {
			m.cur = pattern(byte(i), 0, int(3*ps+100))
			if err := os.WriteFile(filepath.Join(dir, m.name), m.cur, 0o644); err != nil {
				t.Fatal(err)
			}
			if err := s.Sync(); err != nil {
				t.Fatal(err)
			}
		}
		m.synced = bytes.Clone(m.cur)
		files[i] = m
	}
	for step := 0; step < 120; step++ {
		m := files[rng.IntN(len(files))]
		if m.blob == nil {
			m.blob = openBlob(t, s, m.name)
		}
		b := m.blob
		what := fmt.Sprintf("seed %d step %d %s", seed, step, m.name)
		op := rng.IntN(10)
		if durable && op >= 5 && op <= 7 {
			op = 0
		}
		switch {
		case op < 5:
			off := rng.Int64N(8 * ps)
			p := pattern(byte(step), off, 1+rng.IntN(int(2*ps)))
			if _, err := b.WriteAt(p, off); err != nil {
				t.Fatalf("%s: write: %v", what, err)
			}
			m.write(p, off)
			if durable {
				m.synced = bytes.Clone(m.cur)
			}
		case op == 5:
			size := rng.Int64N(8 * ps)
			if err := b.Truncate(size); err != nil {
				t.Fatalf("%s: truncate: %v", what, err)
			}
			m.truncate(size)
		case op == 6:
			if len(m.cur) == 0 {
				continue
			}
			off := rng.Int64N(int64(len(m.cur)))
			n := 1 + rng.Int64N(2*ps)
			if err := b.Allocate(off, n, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE); err != nil {
				t.Fatalf("%s: punch: %v", what, err)
			}
			clear(m.cur[off:min(off+n, int64(len(m.cur)))])
		case op == 7:
			if err := b.Sync(); err != nil {
				t.Fatalf("%s: sync: %v", what, err)
			}
			m.synced = bytes.Clone(m.cur)
		default:
			release(t, s, b)
			m.blob = nil
			if policy.Kind == PolicyClose {
				m.synced = bytes.Clone(m.cur)
			}
		}
	}
	plan, err := s.PowerCutPlan()
	if err != nil {
		t.Fatal(err)
	}
	rep, err := s.PowerCut()
	if err != nil {
		t.Fatalf("seed %d: PowerCut: %v", seed, err)
	}
	if !rep.Done || plan.Done {
		t.Errorf("seed %d: Done is %v after the cut and %v in the plan", seed, rep.Done, plan.Done)
	}
	if rep.Restored != plan.Restored || rep.Cutoff != plan.Cutoff || len(rep.Files) != len(plan.Files) {
		t.Errorf("seed %d: the plan said %d bytes back and %d cut off in %d files, the cut did %d, %d in %d",
			seed, plan.Restored, plan.Cutoff, len(plan.Files), rep.Restored, rep.Cutoff, len(rep.Files))
	}
	for _, m := range files {
		got, err := os.ReadFile(filepath.Join(dir, m.name))
		if errors.Is(err, os.ErrNotExist) && len(m.synced) == 0 {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, m.synced) {
			t.Fatalf("seed %d: %s after the cut: %d bytes, want the %d synced ones (first difference at %d)",
				seed, m.name, len(got), len(m.synced), firstDiff(got, m.synced))
		}
		if m.blob != nil {
			if _, err := m.blob.WriteAt([]byte("x"), 0); !errors.Is(err, syscall.EIO) {
				t.Errorf("seed %d: write to %s after the cut: %v, want EIO", seed, m.name, err)
			}
			if err := m.blob.Truncate(0); !errors.Is(err, syscall.EIO) {
				t.Errorf("seed %d: truncate of %s after the cut: %v, want EIO", seed, m.name, err)
			}
			// Clean now (the cut put it back), it still cannot be
			// made durable: the power is off.
			if err := m.blob.Sync(); !errors.Is(err, syscall.EIO) {
				t.Errorf("seed %d: sync of %s after the cut: %v, want EIO", seed, m.name, err)
			}
			release(t, s, m.blob)
		}
	}
	if n := s.stats.simBytes.Load(); n != 0 {
		t.Errorf("seed %d: the simulation still holds %d bytes after the cut", seed, n)
	}
	if durable && (rep.Restored != 0 || rep.Cutoff != 0) {
		t.Errorf("seed %d: %s lost %d bytes and cut off %d: want nothing", seed, policy, rep.Restored, rep.Cutoff)
	}
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// TestPowerCutReport checks what the plan and the cut say of a file: the
// ranges put back, the bytes cut off, and that synced pages cost nothing.
func TestPowerCutReport(t *testing.T) {
	dir := t.TempDir()
	s := newSimStore(t, dir, Policy{Kind: PolicyFsync})
	ps := pagesz()
	b := openBlob(t, s, "r")
	mustWrite(t, b, pattern(1, 0, int(4*ps)), 0)
	if err := b.Sync(); err != nil {
		t.Fatal(err)
	}
	if plan, err := s.PowerCutPlan(); err != nil || len(plan.Files) != 0 {
		t.Fatalf("after a sync the plan lists %+v (%v), want nothing", plan.Files, err)
	}
	mustWrite(t, b, []byte("a"), ps+10)      // page 1
	mustWrite(t, b, []byte("b"), 2*ps+10)    // page 2
	mustWrite(t, b, pattern(2, 0, 10), 5*ps) // past the synced size
	st := mustStats(t, s)
	if !st.PowerCutSim || st.SimBytes != 2*ps || st.SimFiles != 1 {
		t.Errorf("stats: sim %v, %d bytes in %d files; want on, %d in 1", st.PowerCutSim, st.SimBytes, st.SimFiles, 2*ps)
	}
	plan, err := s.PowerCutPlan()
	if err != nil {
		t.Fatal(err)
	}
	want := wire.CutFile{Name: "r", Open: true, Restored: 2 * ps, Ranges: []wire.RiskRange{{Off: ps, Len: 2 * ps}},
		Size: 5*ps + 10, Synced: 4 * ps, Cutoff: ps + 10}
	if len(plan.Files) != 1 || fmt.Sprint(plan.Files[0]) != fmt.Sprint(want) {
		t.Fatalf("plan: %+v\nwant %+v", plan.Files, want)
	}
	release(t, s, b)
	// Closed, the file is still in the plan.
	plan, err = s.PowerCutPlan()
	if err != nil || len(plan.Files) != 1 || plan.Files[0].Open || plan.Restored != 2*ps {
		t.Fatalf("plan after close: %+v (%v)", plan, err)
	}
	rep, err := s.PowerCut()
	if err != nil {
		t.Fatal(err)
	}
	if rep.Restored != 2*ps || rep.Cutoff != ps+10 {
		t.Errorf("cut: %d bytes back, %d cut off; want %d and %d", rep.Restored, rep.Cutoff, 2*ps, ps+10)
	}
	got, err := os.ReadFile(filepath.Join(dir, "r"))
	if err != nil {
		t.Fatal(err)
	}
	checkBytes(t, "r after the cut", got, pattern(1, 0, int(4*ps)))
	if _, err := s.PowerCut(); !errors.Is(err, syscall.EALREADY) {
		t.Errorf("a second cut: %v, want EALREADY", err)
	}
}

// TestPowerCutSyncedByStore checks that a syncfs of the store (what an
// unmount does) makes closed files' changes durable: nothing to put back.
func TestPowerCutSyncedByStore(t *testing.T) {
	dir := t.TempDir()
	s := newSimStore(t, dir, Policy{Kind: PolicyNone})
	b := openBlob(t, s, "c")
	mustWrite(t, b, pattern(3, 0, 5000), 0)
	release(t, s, b)
	if err := s.Sync(); err != nil {
		t.Fatal(err)
	}
	rep, err := s.PowerCut()
	if err != nil || len(rep.Files) != 0 {
		t.Fatalf("cut after a store sync: %+v (%v), want nothing to put back", rep, err)
	}
	got, err := os.ReadFile(filepath.Join(dir, "c"))
	if err != nil {
		t.Fatal(err)
	}
	checkBytes(t, "c", got, pattern(3, 0, 5000))
}

// TestPowerCutGone checks that a file unlinked after it was closed dirty
// is reported gone, not an error.
func TestPowerCutGone(t *testing.T) {
	for _, handles := range []bool{true, false} {
		t.Run(fmt.Sprintf("handles=%v", handles), func(t *testing.T) {
			dir := t.TempDir()
			s := newSimStore(t, dir, Policy{Kind: PolicyFsync})
			s.canReopen = handles && s.canReopen
			b := openBlob(t, s, "g")
			mustWrite(t, b, pattern(4, 0, 100), 0)
			release(t, s, b)
			if err := os.Remove(filepath.Join(dir, "g")); err != nil {
				t.Fatal(err)
			}
			rep, err := s.PowerCut()
			if err != nil {
				t.Fatal(err)
			}
			if len(rep.Files) != 1 || !rep.Files[0].Gone {
				t.Errorf("cut: %+v, want g listed as gone", rep.Files)
			}
			if rep.Restored != 0 || rep.Cutoff != 0 {
				t.Errorf("cut of a gone file: restored %d, truncated %d bytes; want 0 and 0 (nothing of it is left)", rep.Restored, rep.Cutoff)
			}
		})
	}
}

// TestPowerCutOff checks that a store without the simulation refuses.
func TestPowerCutOff(t *testing.T) {
	s := newStore(t)
	if _, err := s.PowerCut(); !errors.Is(err, ErrNoSim) {
		t.Errorf("PowerCut without the simulation: %v, want ErrNoSim", err)
	}
	if _, err := s.PowerCutPlan(); !errors.Is(err, ErrNoSim) {
		t.Errorf("PowerCutPlan without the simulation: %v, want ErrNoSim", err)
	}
}
