package inject

import (
	"errors"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestParseAccepts(t *testing.T) {
	for _, tc := range []struct {
		rule  string
		check func(r *Rule) bool
	}{
		{"op=fsync,errno=EIO,times=1", func(r *Rule) bool { return r.Op == "fsync" && r.Errno == syscall.EIO && r.Times == 1 }},
		{"op=write,path=db/*-wal,nth=3,torn=512", func(r *Rule) bool {
			return r.Path == "db/*-wal" && r.Nth == 3 && r.Torn == 512 && r.TornErrno == 0
		}},
		{"op=write,torn=512:EIO", func(r *Rule) bool { return r.Torn == 512 && r.TornErrno == syscall.EIO }},
		{"op=write,torn=0:ENOSPC", func(r *Rule) bool { return r.Torn == 0 && r.TornErrno == syscall.ENOSPC }},
		{"op=read,short=100,prob=0.5", func(r *Rule) bool { return r.Short == 100 && r.Prob == 0.5 && !r.HasSeed }},
		{"op=read,short=1KiB,prob=1,seed=-7", func(r *Rule) bool { return r.Short == 1024 && r.Prob == 1 && r.HasSeed && r.Seed == -7 }},
		{"op=fsync,delay=5ms-50ms", func(r *Rule) bool { return r.DelayMin == 5*time.Millisecond && r.DelayMax == 50*time.Millisecond }},
		{"op=fsync,delay=200ms", func(r *Rule) bool { return r.DelayMin == 200*time.Millisecond && r.DelayMax == 200*time.Millisecond }},
		{"op=msync,errno=EIO,fsyncgate", func(r *Rule) bool { return r.Fsyncgate && r.Errno == syscall.EIO }},
		{"op=fault,path=big,errno=EIO,after=1MiB", func(r *Rule) bool { return r.HasAfter && r.After == 1<<20 && r.Path == "big" }},
		{"op=write,after=0,errno=ENOSPC", func(r *Rule) bool { return r.HasAfter && r.After == 0 }},
		{"op=read,after=2M,errno=EIO", func(r *Rule) bool { return r.After == 2_000_000 }},
		{"op=mkdir,path=/a/b,errno=edquot", func(r *Rule) bool { return r.Path == "a/b" && r.Errno == syscall.EDQUOT }},
		{"op=unlink,errno=ENAMETOOLONG", func(r *Rule) bool { return r.Errno == syscall.ENAMETOOLONG }},
		{"errno=EROFS,op=rename", func(r *Rule) bool { return r.Op == "rename" && r.Errno == syscall.EROFS }},
	} {
		r, err := Parse(tc.rule)
		if err != nil {
			t.Errorf("Parse(%q): %v", tc.rule, err)
			continue
		}
		if r.Text != tc.rule || !tc.check(r) {
			t.Errorf("Parse(%q) = %+v", tc.rule, r)
		}
	}
	for _, op := range Ops {
		if _, err := Parse("op=" + op + ",errno=EIO"); err != nil {
			t.Errorf("op %s: %v", op, err)
		}
	}
}

func TestParseRefuses(t *testing.T) {
	for _, tc := range []struct{ rule, part, msg string }{
		{"", "", "empty; want op=OP"},
		{"op=wrte,errno=EIO", "", `op "wrte": want one of read, write, fsync`},
		{"errno=EIO", "", "op= is required"},
		{"op=fsync", "", "no action: give one of errno=NAME"},
		{"op=fsync,errno=EIO,delay=1s", "", "two actions: errno and delay"},
		{"op=write,torn=1,short=1", "", "two actions: torn and short"},
		{"op=fsync,,errno=EIO", "", "an empty part"},
		{"op=fsync,errno=EIO,", "", "an empty part"},
		{"op=fsync,colour=red,errno=EIO", "colour=red", `unknown key "colour": want one of op, path, nth`},
		{"op=fsync,op=write,errno=EIO", "op=write", "op given twice (first op=fsync)"},
		{"op=fsync,errno=", "errno=", "errno needs a value"},
		{"op=fsync,errno", "errno", "errno needs a value"},
		{"op=fsync,errno=EWHAT", "errno=EWHAT", `unknown errno "EWHAT": want a name such as EIO, ENOSPC`},
		{"op=read,torn=5", "torn=5", "torn= is for op=write only"},
		{"op=write,short=5", "short=5", "short= is for op=read only"},
		{"op=write,torn=0", "torn=0", "torn=0 writes nothing"},
		{"op=write,torn=x", "torn=x", `"x" is not a byte count`},
		{"op=write,torn=5:EBOGUS", "torn=5:EBOGUS", `unknown errno "EBOGUS"`},
		{"op=read,short=-1", "short=-1", `"-1" is not a byte count`},
		{"op=fsync,errno=EIO,fsyncgate", "fsyncgate", "fsyncgate is for op=msync only"},
		{"op=msync,delay=1ms,fsyncgate", "fsyncgate", "fsyncgate needs errno="},
		{"op=msync,errno=EIO,fsyncgate=1", "fsyncgate=1", "fsyncgate takes no value"},
		{"op=fsync,errno=EIO,after=1K", "after=1K", "after= counts bytes: for op=read, op=write, op=msync, op=fault only"},
		{"op=read,errno=EIO,after=1X", "after=1X", `"1X" is not a byte count`},
		{"op=read,errno=EIO,nth=0", "nth=0", "want a whole number, 1 or more"},
		{"op=read,errno=EIO,nth=x", "nth=x", "want a whole number, 1 or more"},
		{"op=read,errno=EIO,times=0", "times=0", "want a whole number, 1 or more"},
		{"op=read,errno=EIO,prob=0", "prob=0", "want a probability, more than 0 and at most 1"},
		{"op=read,errno=EIO,prob=1.5", "prob=1.5", "want a probability"},
		{"op=read,errno=EIO,prob=NaN", "prob=NaN", "want a probability"},
		{"op=read,errno=EIO,seed=3", "seed=3", "seed= is for prob="},
		{"op=read,errno=EIO,prob=0.5,seed=x", "seed=x", "want a whole number"},
		{"op=fsync,delay=fast", "delay=fast", `"fast" is not a duration`},
		{"op=fsync,delay=50ms-5ms", "delay=50ms-5ms", "ends before it starts"},
		{"op=fsync,delay=11m", "delay=11m", "longer than 10m0s"},
		{"op=fsync,delay=1ms-x", "delay=1ms-x", `"x" is not a duration`},
		{"op=read,path=[,errno=EIO", "path=[", "not a glob"},
		{"op=fsync, errno=EIO", " errno=EIO", "no spaces in a rule"},
	} {
		_, err := Parse(tc.rule)
		var re *RuleError
		if !errors.As(err, &re) {
			t.Errorf("Parse(%q) = %v, want a *RuleError", tc.rule, err)
			continue
		}
		if re.Rule != tc.rule || re.Part != tc.part || !strings.Contains(re.Msg, tc.msg) {
			t.Errorf("Parse(%q): part %q msg %q; want part %q, msg containing %q", tc.rule, re.Part, re.Msg, tc.part, tc.msg)
		}
		if !strings.Contains(err.Error(), fmt.Sprintf("%q", tc.rule)) {
			t.Errorf("Parse(%q): %q does not name the rule", tc.rule, err)
		}
	}
}

func TestParseBytes(t *testing.T) {
	for s, want := range map[string]int64{"0": 0, "512": 512, "4KiB": 4096, "1MiB": 1 << 20, "1GiB": 1 << 30, "3K": 3000, "2M": 2e6, "1G": 1e9, "7B": 7} {
		if got, err := ParseBytes(s); err != nil || got != want {
			t.Errorf("ParseBytes(%q) = %d, %v; want %d", s, got, err, want)
		}
	}
	for _, s := range []string{"", "K", "1.5K", "-1", "1KB", "99999999999TiB"} {
		if _, err := ParseBytes(s); err == nil {
			t.Errorf("ParseBytes(%q) accepted", s)
		}
	}
}

// newSet is a set with the rules (which must parse).
func newSet(t *testing.T, sim bool, rules ...string) *Set {
	t.Helper()
	s := NewSet(1, sim)
	for _, text := range rules {
		r, err := Parse(text)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Add(r); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

// fired decides count calls of op on p, n bytes each, and returns the
// indices (from 1) of the calls that got an errno.
func fired(s *Set, op, p string, n int64, count int) []int {
	var out []int
	for i := 1; i <= count; i++ {
		if d := s.Decide(op, p, n); d.Errno != 0 {
			out = append(out, i)
		}
	}
	return out
}

func TestMatching(t *testing.T) {
	for _, tc := range []struct {
		rule  string
		op, p string
		n     int64
		calls int
		want  string
	}{
		{"op=fsync,errno=EIO", "fsync", "a", 0, 3, "[1 2 3]"},
		{"op=fsync,errno=EIO", "write", "a", 0, 3, "[]"},
		{"op=fsync,errno=EIO,nth=2", "fsync", "a", 0, 4, "[2]"},
		{"op=fsync,errno=EIO,times=2", "fsync", "a", 0, 4, "[1 2]"},
		{"op=write,errno=EIO,after=10", "write", "a", 4, 5, "[4 5]"}, // 12 bytes have passed before the 4th
		{"op=write,errno=EIO,after=8", "write", "a", 4, 4, "[3 4]"},  // exactly 8 before the 3rd
		{"op=write,errno=EIO,after=8,times=1", "write", "a", 4, 4, "[3]"},
		{"op=write,path=db/*-wal,errno=EIO", "write", "db/x-wal", 1, 1, "[1]"},
		{"op=write,path=db/*-wal,errno=EIO", "write", "db/sub/x-wal", 1, 1, "[]"},
		{"op=write,path=db/*-wal,errno=EIO", "write", "x-wal", 1, 1, "[]"},
		{"op=statfs,path=*,errno=EIO", "statfs", "", 0, 1, "[1]"},
	} {
		s := newSet(t, false, tc.rule)
		if got := fmt.Sprint(fired(s, tc.op, tc.p, tc.n, tc.calls)); got != tc.want {
			t.Errorf("%s, %d calls of %s %q: fired at %s, want %s", tc.rule, tc.calls, tc.op, tc.p, got, tc.want)
		}
	}
}

func TestProbSeeded(t *testing.T) {
	const rule = "op=read,errno=EIO,prob=0.3,seed=42"
	a := fired(newSet(t, false, rule), "read", "f", 1, 1000)
	b := fired(newSet(t, false, rule), "read", "f", 1, 1000)
	if fmt.Sprint(a) != fmt.Sprint(b) {
		t.Fatalf("the same seed fired at different calls")
	}
	if len(a) < 230 || len(a) > 370 {
		t.Fatalf("prob=0.3 fired %d of 1000 times", len(a))
	}
	c := fired(newSet(t, false, "op=read,errno=EIO,prob=0.3,seed=43"), "read", "f", 1, 1000)
	if fmt.Sprint(a) == fmt.Sprint(c) {
		t.Fatalf("seeds 42 and 43 fired at the same calls")
	}
	// Without seed=, the set's seed is used and listed.
	s := newSet(t, false, "op=read,errno=EIO,prob=0.5")
	if l := s.List(); l[0].Seed != 2 { // the set's 1 + the rule's id 1
		t.Fatalf("listed seed %d, want 2", l[0].Seed)
	}
	if got := len(fired(newSet(t, false, "op=read,errno=EIO,prob=1"), "read", "f", 1, 100)); got != 100 {
		t.Fatalf("prob=1 fired %d of 100 times", got)
	}
}

func TestDecisionActions(t *testing.T) {
	s := newSet(t, true, "op=write,torn=3:ENOSPC", "op=write,delay=2ms", "op=write,errno=EIO", "op=read,short=7", "op=msync,errno=EIO,fsyncgate")
	d := s.Decide("write", "f", 10)
	if d.Torn != 3 || d.TornErrno != syscall.ENOSPC || d.Errno != 0 || d.Delay != 2*time.Millisecond || d.Short != -1 {
		t.Fatalf("write: %+v", d)
	}
	if d.Rule != "#1 op=write,torn=3:ENOSPC" || len(d.Logs) != 2 {
		t.Fatalf("write: rule %q, logs %q", d.Rule, d.Logs)
	}
	if d = s.Decide("read", "f", 10); d.Short != 7 || d.Torn != -1 || d.Errno != 0 {
		t.Fatalf("read: %+v", d)
	}
	if d = s.Decide("msync", "f", 4096); !d.Fsyncgate || d.Errno != syscall.EIO {
		t.Fatalf("msync: %+v", d)
	}
	if d = s.Decide("fsync", "f", 0); d.Acts() {
		t.Fatalf("fsync: %+v", d)
	}
	l := s.List()
	if len(l) != 5 || l[0].Hits != 1 || l[1].Hits != 1 || l[2].Hits != 0 || l[2].Calls != 1 || l[0].LastPath != "f" || l[0].LastHit == nil || l[2].LastHit != nil {
		t.Fatalf("list: %+v", l)
	}
	// A delay range stays in its range.
	s = newSet(t, false, "op=fsync,delay=1ms-3ms")
	for range 100 {
		if d := s.Decide("fsync", "f", 0).Delay; d < time.Millisecond || d > 3*time.Millisecond {
			t.Fatalf("delay %v outside 1ms-3ms", d)
		}
	}
}

func TestFsyncgateNeedsSim(t *testing.T) {
	r, err := Parse("op=msync,errno=EIO,fsyncgate")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := NewSet(0, false).Add(r); err == nil || !strings.Contains(err.Error(), "--powercut-sim") {
		t.Fatalf("Add without the simulation: %v", err)
	}
	if _, err := NewSet(0, true).Add(r); err != nil {
		t.Fatal(err)
	}
}

func TestAddClearList(t *testing.T) {
	s := newSet(t, false, "op=read,errno=EIO", "op=write,errno=EIO", "op=fsync,errno=EIO")
	if !s.Active() || !s.Has("write") || s.Has("flush") {
		t.Fatal("not active with rules, or Has wrong")
	}
	if n, err := s.Clear(2); n != 1 || err != nil {
		t.Fatalf("Clear(2) = %d, %v", n, err)
	}
	if _, err := s.Clear(2); err == nil || !strings.Contains(err.Error(), "no rule 2: the mount's rules are 1, 3") {
		t.Fatalf("Clear(2) again: %v", err)
	}
	if got := fmt.Sprint(fired(s, "write", "f", 1, 1)); got != "[]" {
		t.Fatalf("a cleared rule fired: %s", got)
	}
	ids := []int{}
	for _, r := range s.List() {
		ids = append(ids, r.ID)
	}
	if fmt.Sprint(ids) != "[1 3]" {
		t.Fatalf("ids %v", ids)
	}
	if n, err := s.Clear(0); n != 2 || err != nil {
		t.Fatalf("Clear(0) = %d, %v", n, err)
	}
	if s.Active() || len(s.List()) != 0 {
		t.Fatal("rules left after clearing all")
	}
	if _, err := s.Clear(1); err == nil || !strings.Contains(err.Error(), "no rules") {
		t.Fatalf("Clear on an empty set: %v", err)
	}
	// Ids are not reused.
	r, _ := Parse("op=read,errno=EIO")
	if id, _ := s.Add(r); id != 4 {
		t.Fatalf("new id %d, want 4", id)
	}
	var nilSet *Set
	if nilSet.Active() || nilSet.List() != nil || nilSet.Decide("read", "f", 1).Acts() {
		t.Fatal("a nil set acts")
	}
}

func TestLogRateLimit(t *testing.T) {
	s := newSet(t, false, "op=read,errno=EIO")
	logged := 0
	var last string
	for range 1000 {
		d := s.Decide("read", "dir/f", 1)
		logged += len(d.Logs)
		if len(d.Logs) > 0 {
			last = d.Logs[0]
		}
	}
	if logged != LoggedHits+2 { // 1..10, then 100 and 1000
		t.Fatalf("logged %d lines of 1000 hits", logged)
	}
	if want := `inject: rule #1 "op=read,errno=EIO": read "dir/f": EIO (hit 1000)`; last != want {
		t.Fatalf("last line %q, want %q", last, want)
	}
}

// ENOSYS would make the kernel stop sending the op for good: refused.
func TestParseRefusesENOSYS(t *testing.T) {
	for _, rule := range []string{"op=fsync,errno=ENOSYS", "op=write,torn=10:enosys"} {
		if _, err := Parse(rule); err == nil || !strings.Contains(err.Error(), "ENOSYS is refused") {
			t.Errorf("Parse(%q): %v, want ENOSYS refused", rule, err)
		}
	}
}

// short= is refused on a mount with the writeback cache.
func TestAddRefusesShortWithWritebackCache(t *testing.T) {
	r, err := Parse("op=read,short=10")
	if err != nil {
		t.Fatal(err)
	}
	s := NewSet(0, false)
	s.WritebackCache()
	if _, err := s.Add(r); err == nil || !strings.Contains(err.Error(), "--writeback-cache") {
		t.Errorf("Add(short=10) on a writeback-cache mount: %v, want refused", err)
	}
	if _, err := NewSet(0, false).Add(r); err != nil {
		t.Errorf("Add(short=10) without the writeback cache: %v", err)
	}
}

// TestServedBytes: a read's bytes count for after= as Served reports
// them (what it served), not as Decide was asked.
func TestServedBytes(t *testing.T) {
	s := NewSet(1, false)
	r, err := Parse("op=read,path=f,after=100,errno=EIO")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Add(r); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 10; i++ {
		if d := s.Decide("read", "f", 0); d.Errno != 0 {
			t.Fatalf("read %d, after %d bytes served: %v", i, 10*i, d.Errno)
		}
		s.Served("read", "f", 10)
		s.Served("read", "g", 1000) // another file: not counted
	}
	if d := s.Decide("read", "f", 0); d.Errno != syscall.EIO {
		t.Fatalf("after 100 bytes served: %v, want EIO", d.Errno)
	}
}

// TestWaitsEndWhenCleared: a decision's delays come rule by rule, each
// with a channel that its rule's clearing closes.
func TestWaitsEndWhenCleared(t *testing.T) {
	s := NewSet(1, false)
	var ids []int
	for _, text := range []string{"op=fsync,delay=1m", "op=fsync,delay=2m"} {
		r, err := Parse(text)
		if err != nil {
			t.Fatal(err)
		}
		id, err := s.Add(r)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	d := s.Decide("fsync", "f", 0)
	if len(d.Waits) != 2 || d.Waits[0].For != time.Minute || d.Waits[1].For != 2*time.Minute || d.Delay != 3*time.Minute {
		t.Fatalf("waits %+v, delay %v; want 1m and 2m, 3m in all", d.Waits, d.Delay)
	}
	closed := func(c <-chan struct{}) bool {
		select {
		case <-c:
			return true
		default:
			return false
		}
	}
	if _, err := s.Clear(ids[0]); err != nil {
		t.Fatal(err)
	}
	if !closed(d.Waits[0].Cleared) || closed(d.Waits[1].Cleared) {
		t.Fatalf("after clearing rule %d: the first wait ended %v, the second %v; want only the first", ids[0], closed(d.Waits[0].Cleared), closed(d.Waits[1].Cleared))
	}
	if _, err := s.Clear(0); err != nil {
		t.Fatal(err)
	}
	if !closed(d.Waits[1].Cleared) {
		t.Fatal("after clearing every rule the second wait goes on")
	}
}
