package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/mmapfs/mmapfs/fs/wire"
)

// cutReport is a cut of four files: a had bytes put back, b and c were
// only cut to their synced size, d was removed since it was closed.
func cutReport(done bool) *wire.ControlReply {
	rep := &wire.CutReport{Done: done, Files: []wire.CutFile{
		{Name: "a", Restored: 10000, Ranges: []wire.RiskRange{{Off: 0, Len: 10000}}, Size: 10000, Synced: 10000},
		{Name: "b", Size: 5, Synced: 0, Cutoff: 5},
		{Name: "c", Size: 4, Synced: 0, Cutoff: 4},
		{Name: "d", Size: 3, Synced: 0, Cutoff: 3, Gone: true},
	}, Restored: 10000, Cutoff: 12}
	return &wire.ControlReply{Request: wire.ControlPowerCut, Simulation: true, Report: rep}
}

// TestPrintCutCounts: the summary counts each kind of file apart.
func TestPrintCutCounts(t *testing.T) {
	t.Parallel()
	for _, done := range []bool{false, true} {
		var out bytes.Buffer
		if err := printCut(&out, "/m", cutReport(done)); err != nil {
			t.Fatal(err)
		}
		want := "would put back 9.8 KiB in 1 file to the last synced content; would cut 9 B off 2 files past the last synced size; 1 file was removed since it was written: nothing to put back\n"
		if done {
			want = strings.ReplaceAll(want, "would ", "")
		}
		if !strings.HasSuffix(out.String(), "\n"+want) {
			t.Errorf("done=%v: summary is not %q:\n%s", done, want, out.String())
		}
		if !strings.Contains(out.String(), "d (closed) (gone)  -") {
			t.Errorf("done=%v: the gone file is listed with bytes:\n%s", done, out.String())
		}
	}
}
