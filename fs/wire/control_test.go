package wire

import "testing"

func TestSummarize(t *testing.T) {
	t.Parallel()
	rep := &CutReport{Files: []CutFile{
		{Name: "both", Restored: 4096, Cutoff: 100},
		{Name: "put back", Restored: 8192},
		{Name: "cut", Cutoff: 7},
		{Name: "gone", Restored: 4096, Cutoff: 9, Gone: true},
	}}
	got := Summarize(rep)
	want := CutSummary{Files: 4, PutBackFiles: 2, PutBackBytes: 12288, CutFiles: 2, CutBytes: 107, GoneFiles: 1}
	if got != want {
		t.Errorf("Summarize = %+v, want %+v", got, want)
	}
	if s := got.String(false); s != "would put back 12.0 KiB in 2 files to the last synced content; would cut 107 B off 2 files past the last synced size; 1 file was removed since it was written: nothing to put back" {
		t.Errorf("String(false) = %q", s)
	}
	if s := (CutSummary{}).String(true); s != "nothing: every write was synced" {
		t.Errorf("empty: %q", s)
	}
	if s := (CutSummary{Files: 1}).String(true); s != "give 1 file back its last synced size" {
		t.Errorf("resized only: %q", s)
	}
}

func TestBinarySize(t *testing.T) {
	for n, want := range map[int64]string{0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 1536: "1.5 KiB", 10 << 20: "10.0 MiB", 3 << 30: "3.0 GiB"} {
		if got := BinarySize(n); got != want {
			t.Errorf("BinarySize(%d) = %q, want %q", n, got, want)
		}
	}
}
