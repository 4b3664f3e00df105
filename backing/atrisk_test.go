package backing

import (
	"testing"
	"time"

	"github.com/mmapfs/mmapfs/fs/wire"
)

func TestAtRisk(t *testing.T) {
	s := newStore(t)
	ps := int64(pageSize)
	a := openBlob(t, s, "a")
	if _, err := a.WriteAt([]byte("x"), 0); err != nil { // page 0, extends
		t.Fatal(err)
	}
	time.Sleep(2 * time.Millisecond)
	b := openBlob(t, s, "b")
	for _, off := range []int64{0, ps, 5 * ps} { // pages 0-1 and 5
		if _, err := b.WriteAt([]byte("y"), off); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Release(a); err != nil { // a closed, still owing page 0
		t.Fatal(err)
	}
	risk := s.AtRisk(0)
	if len(risk) != 2 || risk[0].Name != "a" || risk[1].Name != "b" {
		t.Fatalf("at risk: %+v, want a (older) then b", risk)
	}
	if r := risk[0]; r.Open || r.Bytes != ps || !r.Size || len(r.Ranges) != 1 || r.Ranges[0] != (wire.RiskRange{Off: 0, Len: ps}) {
		t.Errorf("a: %+v", r)
	}
	want := []wire.RiskRange{{Off: 0, Len: 2 * ps}, {Off: 5 * ps, Len: ps}}
	if r := risk[1]; !r.Open || r.Bytes != 3*ps || len(r.Ranges) != 2 || r.Ranges[0] != want[0] || r.Ranges[1] != want[1] {
		t.Errorf("b: %+v, want ranges %v", r, want)
	}
	if got := s.AtRisk(1); len(got) != 1 || got[0].Name != "a" {
		t.Errorf("AtRisk(1) = %+v", got)
	}
	if err := b.Sync(); err != nil {
		t.Fatal(err)
	}
	if got := s.AtRisk(0); len(got) != 1 || got[0].Name != "a" {
		t.Errorf("after b's sync: %+v", got)
	}
	if err := s.Release(b); err != nil {
		t.Fatal(err)
	}
	if err := s.Sync(); err != nil {
		t.Fatal(err)
	}
	if got := s.AtRisk(0); len(got) != 0 {
		t.Errorf("after a store sync: %+v", got)
	}
}

func TestAtRiskManyRanges(t *testing.T) {
	s := newStore(t)
	b := openBlob(t, s, "f")
	defer s.Release(b)
	for i := int64(0); i < maxRiskRanges+5; i++ {
		if _, err := b.WriteAt([]byte("z"), 2*i*int64(pageSize)); err != nil {
			t.Fatal(err)
		}
	}
	r := s.AtRisk(0)[0]
	if len(r.Ranges) != maxRiskRanges || r.More != 5 {
		t.Errorf("%d ranges listed and %d more, want %d and 5", len(r.Ranges), r.More, maxRiskRanges)
	}
}
