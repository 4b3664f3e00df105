package crashmodel

import (
	"strings"
	"testing"

	"github.com/mmapfs/mmapfs/integration/crashwriter/crashdata"
)

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
	calls, err := ParseLog(log + "B 13 incompl")
	if err != nil {
		t.Fatal(err)
	}
	m, err := Build(seed, calls)
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
	type tree = Tree
	dir := Entry{Dir: true}
	f3 := Entry{Data: crashdata.Data(seed, 9, 100)}
	acked := with(append([]byte{}, crashdata.Data(seed, 4, 5000)...), 4000, crashdata.Data(seed, 11, 1000))
	for _, c := range []struct {
		name     string
		powerCut bool
		tree     tree
		ok       bool
	}{
		{"kill: all there", false, tree{"d1": dir, "f4": {Data: cur()}, "f3": f3}, true},
		{"kill: the failed write happened", false, tree{"d1": dir, "f4": {Data: with(cur(), 100, crashdata.Data(seed, 12, 50))}, "f3": f3}, true},
		{"kill: a written byte lost", false, tree{"d1": dir, "f4": {Data: with(cur(), 5500, []byte{^cur()[5500]})}, "f3": f3}, false},
		{"kill: short", false, tree{"d1": dir, "f4": {Data: cur()[:7999]}, "f3": f3}, false},
		{"kill: rename undone", false, tree{"d1": dir, "d1/f2": {Data: cur()}, "f3": f3}, false},
		{"kill: file gone", false, tree{"d1": dir, "f4": {Data: cur()}}, false},
		{"kill: directory gone", false, tree{"f4": {Data: cur()}, "f3": f3}, false},
		{"kill: an extra file", false, tree{"d1": dir, "f4": {Data: cur()}, "f3": f3, "x": {}}, false},
		{"cut: all there", true, tree{"d1": dir, "f4": {Data: cur()}, "f3": f3}, true},
		{"cut: only what was acked", true, tree{"d1": dir, "d1/f2": {Data: acked}}, true},
		{"cut: unacked append as zeros", true, tree{"d1": dir, "d1/f2": {Data: with(append(acked[:5000:5000], make([]byte, 3000)...), 4000, crashdata.Data(seed, 11, 2000))}}, true},
		{"cut: msynced bytes of the unacked append lost", true, tree{"d1": dir, "d1/f2": {Data: append(acked[:5000:5000], make([]byte, 3000)...)}}, false},
		{"cut: the msynced range lost", true, tree{"d1": dir, "d1/f2": {Data: crashdata.Data(seed, 4, 5000)}}, false},
		{"cut: a fsynced byte lost", true, tree{"d1": dir, "d1/f2": {Data: with(append([]byte{}, acked...), 10, []byte{0})}}, false},
		{"cut: fsynced size lost", true, tree{"d1": dir, "d1/f2": {Data: acked[:4999]}}, false},
		{"cut: fsynced file gone", true, tree{"d1": dir, "f3": f3}, false},
		{"cut: under both names", true, tree{"d1": dir, "d1/f2": {Data: acked}, "f4": {Data: acked}}, false},
		{"cut: junk in an unacked byte", true, tree{"d1": dir, "f4": {Data: with(cur(), 7000, []byte{^cur()[7000]})}}, false},
	} {
		rep := m.Check(c.tree, c.powerCut)
		if ok := len(rep.Problems) == 0; ok != c.ok {
			t.Errorf("%s: ok %v, want %v; problems:\n%s", c.name, ok, c.ok, strings.Join(rep.Problems, "\n"))
		}
	}
}
