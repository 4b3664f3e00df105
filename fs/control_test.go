package fs

import (
	"errors"
	"syscall"
	"testing"

	"github.com/mmapfs/mmapfs/backing"
)

func TestSummarize(t *testing.T) {
	t.Parallel()
	rep := &backing.CutReport{Files: []backing.CutFile{
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

// TestRequestError: a refused request's message is one sentence without
// an errno appended, and the errno and the cause are still in its chain.
func TestRequestError(t *testing.T) {
	t.Parallel()
	err := error(&requestError{"mounted without --powercut-sim", backing.ErrNoSim, syscall.EINVAL})
	if err.Error() != "mounted without --powercut-sim" {
		t.Errorf("message %q", err)
	}
	var e syscall.Errno
	if !errors.As(err, &e) || e != syscall.EINVAL || !errors.Is(err, backing.ErrNoSim) {
		t.Errorf("chain: errno %v, ErrNoSim %v", e, errors.Is(err, backing.ErrNoSim))
	}
}
