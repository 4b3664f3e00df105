package wire

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// The requests the control file (.mmapfs-control) takes, one per write;
// the answer, a ControlReply as JSON, is read back from the same
// descriptor.
const (
	// ControlPowerCut cuts the power: the files get their last synced
	// content and size back, and once the descriptor that asked is
	// closed, the mount is dropped as a crash would drop it.
	ControlPowerCut = "powercut"
	// ControlPowerCutDryRun says what a power cut now would lose.
	ControlPowerCutDryRun = "powercut --dry-run"
	// ControlInjectAdd, then one or more fault-injection rules separated
	// by spaces, adds the rules (all, or none if one is bad).
	ControlInjectAdd = "inject add"
	// ControlInjectList lists the rules with their counters.
	ControlInjectList = "inject list"
	// ControlInjectClear, alone, removes every rule; with an id after it,
	// that rule.
	ControlInjectClear = "inject clear"
)

// ControlReply is the answer to a control request.
type ControlReply struct {
	Request string `json:"request"`
	Error   string `json:"error,omitempty"`
	// Simulation says whether the mount runs the power-cut simulation.
	Simulation bool `json:"simulation"`
	// Report is what the cut did, or would do (with the simulation).
	Report *CutReport `json:"report,omitempty"`
	// Summary counts Report's files by what the cut does to them.
	Summary *CutSummary `json:"summary,omitempty"`
	// AtRisk lists the unsynced writes (for a dry run without the
	// simulation: what a real power cut could lose; their synced content
	// is not kept, so the cut itself cannot be simulated).
	AtRisk []RiskFile `json:"at_risk,omitempty"`
	// Inject lists the fault-injection rules after an inject request.
	Inject []InjectRule `json:"inject,omitempty"`
	// InjectAdded are the ids of the rules an inject add added.
	InjectAdded []int `json:"inject_added,omitempty"`
	// InjectCleared counts the rules an inject clear removed.
	InjectCleared int `json:"inject_cleared,omitempty"`
}

// RiskRange is a byte range of a file written and not yet synced.
type RiskRange struct {
	Off int64 `json:"off"`
	Len int64 `json:"len"`
}

// RiskFile is what a power cut now would cost one file: the pages the
// daemon wrote into it and has not synced (whole pages), since when, and
// whether its size is not durable yet either.
type RiskFile struct {
	Name   string      `json:"name"`
	Open   bool        `json:"open"` // false: closed, its pages still owed
	Bytes  int64       `json:"bytes"`
	Since  time.Time   `json:"since"`
	Size   bool        `json:"size_unsynced"` // its size or allocation changed since the last sync
	Ranges []RiskRange `json:"ranges"`        // the first runs of pages, in order
	More   int         `json:"more_ranges,omitempty"`
}

// CutFile is what a power cut costs (or would cost) one file.
type CutFile struct {
	Name     string      `json:"name"`
	Open     bool        `json:"open"`           // false: closed, its record kept by the store
	Restored int64       `json:"restored_bytes"` // bytes put back to their last synced content
	Ranges   []RiskRange `json:"ranges"`         // those bytes, the first runs
	More     int         `json:"more_ranges,omitempty"`
	Size     int64       `json:"size"`            // the size before the cut
	Synced   int64       `json:"synced_size"`     // the size after it: the last synced size
	Cutoff   int64       `json:"truncated_bytes"` // bytes past the synced size, lost with it
	Gone     bool        `json:"gone,omitempty"`  // the file no longer exists: nothing to put back
}

// CutReport is what a power cut did, or what a plan says it would do.
type CutReport struct {
	Done     bool      `json:"done"` // false for a plan (a dry run)
	Files    []CutFile `json:"files"`
	Restored int64     `json:"restored_bytes"`
	Cutoff   int64     `json:"truncated_bytes"`
}

// Add lists f and counts its bytes; a file that is gone has nothing left
// to put back or cut, so its bytes (as the plan saw them) do not count.
func (r *CutReport) Add(f CutFile) {
	r.Files = append(r.Files, f)
	if f.Gone {
		return
	}
	r.Restored += f.Restored
	r.Cutoff += f.Cutoff
}

// Sort orders the files by name (and lists none as [], not null).
func (r *CutReport) Sort() {
	if r.Files == nil {
		r.Files = []CutFile{}
	}
	slices.SortFunc(r.Files, func(a, b CutFile) int { return strings.Compare(a.Name, b.Name) })
}

// CutSummary counts the files of a power-cut report by what the cut does
// to each. A file can be both put back and cut (rewritten below its
// synced size and extended past it); a file removed since it was closed
// counts as gone only, since nothing of it is left to put back or cut.
type CutSummary struct {
	Files        int   `json:"files"`          // every file of the report
	PutBackFiles int   `json:"put_back_files"` // files with bytes put back to their last synced content
	PutBackBytes int64 `json:"put_back_bytes"` // those bytes
	CutFiles     int   `json:"cut_files"`      // files cut to their (shorter) last synced size
	CutBytes     int64 `json:"cut_bytes"`      // the bytes past those sizes, cut off
	GoneFiles    int   `json:"gone_files"`     // files removed since: nothing to put back
}

// Summarize counts the files of r by what the cut does to them.
func Summarize(r *CutReport) CutSummary {
	s := CutSummary{Files: len(r.Files)}
	for _, f := range r.Files {
		switch {
		case f.Gone:
			s.GoneFiles++
			continue
		case f.Restored > 0:
			s.PutBackFiles++
			s.PutBackBytes += f.Restored
		}
		if f.Cutoff > 0 {
			s.CutFiles++
			s.CutBytes += f.Cutoff
		}
	}
	return s
}

// String says what the cut did (done) or would do, in one sentence.
func (s CutSummary) String(done bool) string {
	would := "would "
	if done {
		would = ""
	}
	var parts []string
	if s.PutBackFiles > 0 {
		parts = append(parts, fmt.Sprintf("%sput back %s in %s to the last synced content", would, BinarySize(s.PutBackBytes), Plural(s.PutBackFiles, "file", "files")))
	}
	if s.CutFiles > 0 {
		parts = append(parts, fmt.Sprintf("%scut %s off %s past the last synced size", would, BinarySize(s.CutBytes), Plural(s.CutFiles, "file", "files")))
	}
	if s.GoneFiles > 0 {
		parts = append(parts, fmt.Sprintf("%s removed since it was written: nothing to put back", Plural(s.GoneFiles, "file was", "files were")))
	}
	if n := s.Files - s.PutBackFiles - s.CutFiles - s.GoneFiles; len(parts) == 0 && n > 0 {
		parts = append(parts, fmt.Sprintf("%sgive %s back its last synced size", would, Plural(n, "file", "files")))
	}
	if len(parts) == 0 {
		return "nothing: every write was synced"
	}
	return strings.Join(parts, "; ")
}

// Plural renders n things, as one or many.
func Plural(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %s", n, many)
}

// BinarySize renders n bytes in binary units (1.5 KiB).
func BinarySize(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
