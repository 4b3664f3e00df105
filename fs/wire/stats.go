package wire

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// Snapshot is what the stats file (.mmapfs-stats) holds: the figures of the list
// (Figures) and the rest of what a mount reports. Scripts depend on the
// top-level keys policy, unsynced_bytes, oldest_unsynced_seconds,
// msync_calls, msync_bytes, mappings, mapped_bytes, resident_bytes and ops
// (with count per op): keep them stable.
type Snapshot struct {
	Policy   string
	Switches Switches
	BDI      *BDI // nil when the mount's bdi could not be read
	// BDISources says where the figures of the mount's and the store's
	// backing devices came from; nil from a daemon without them.
	BDISources *BDISources
	Store      string
	// AtRisk lists the files with unsynced writes, oldest first (at
	// most AtRiskListed).
	AtRisk []RiskFile
	// PowerCut is the power-cut simulation's figures; nil without
	// --powercut-sim.
	PowerCut     *PowerCutStats
	MsyncLatency Latency
	Ops          map[string]OpStats // by FUSE op, lower case; ops never served are left out
	// Inject lists the mount's fault-injection rules with their
	// counters; empty (and left out of the stats file) without rules.
	Inject []InjectRule
	// Transport is how the daemon receives its requests; nil from a
	// daemon older than the field.
	Transport *Transport
	Figures   Values
}

// Transport is how a mount's requests reach the daemon (mmapfs mount
// --transport): over /dev/fuse ("dev") or over io_uring ("uring"), with
// the queues of the latter.
type Transport struct {
	Name   string  `json:"name"`
	Queues []Queue `json:"queues,omitempty"` // uring only: one per possible CPU
}

// Queue is one io_uring queue of a mount: the requests the kernel queued
// on one CPU.
type Queue struct {
	Queue    int    `json:"queue"`    // the queue's index: the CPU its requests come from
	Entries  int    `json:"entries"`  // ring entries registered, each a thread of the daemon
	Pinned   int    `json:"pinned"`   // of those, the threads pinned to the queue's CPU (off it while they serve a stream of large READs)
	Requests uint64 `json:"requests"` // requests served
	Busy     int32  `json:"busy"`     // entries serving a request now: the queue depth in use
	MaxBusy  int32  `json:"max_busy"` // the most entries that served at once
	Away     uint64 `json:"away"`     // large READs served off the queue's CPU (they are readahead: the reader goes on meanwhile)
}

// InjectRule is one fault-injection rule of a mount (mmapfs mount
// --inject, mmapfs inject) and what it has done.
type InjectRule struct {
	ID       int        `json:"id"`
	Rule     string     `json:"rule"`           // as given
	Seed     int64      `json:"seed,omitempty"` // the seed prob= draws with (seed=, or the mount's)
	Calls    int64      `json:"calls"`          // calls that matched op= and path=
	Hits     int64      `json:"hits"`           // calls the rule acted on
	LastHit  *time.Time `json:"last_hit,omitempty"`
	LastPath string     `json:"last_path,omitempty"` // the file of the last hit
}

// AtRiskListed bounds the files the stats list as at risk.
const AtRiskListed = 100

// PowerCutStats are the power-cut simulation's figures.
type PowerCutStats struct {
	SavedBytes    int64  `json:"saved_bytes"`   // last synced page content kept (its memory cost)
	Files         int    `json:"files"`         // files a cut now would change
	Cut           bool   `json:"cut"`           // the power was cut: files can no longer change
	RecordErrors  int64  `json:"record_errors"` // descriptors of closed files' records that failed to close
	LastRecordErr string `json:"last_record_error,omitempty"`
}

// Switches are the mount's settings, as the stats report them.
type Switches struct {
	Profile           string  `json:"profile,omitempty"` // mmapfs mount --profile; the switches below are what it set, with the flags given
	KeepCache         bool    `json:"keep_cache"`
	AutoCache         bool    `json:"auto_cache"` // --auto-cache (in force only without keep_cache and direct_io)
	AutoInvalData     bool    `json:"auto_inval_data"`
	DirectIO          bool    `json:"direct_io"`
	WritebackCache    bool    `json:"writeback_cache"`
	AttrTimeoutSecs   float64 `json:"attr_timeout_seconds"`
	EntryTimeoutSecs  float64 `json:"entry_timeout_seconds"`
	MaxWrite          int     `json:"max_write"` // in force: --max-write, or 128 KiB for 0, within the kernel's bound
	MaxReadahead      int     `json:"max_readahead"`
	ReadOnly          bool    `json:"read_only"`
	AllowOther        bool    `json:"allow_other"`
	Madvise           string  `json:"madvise"`
	Populate          bool    `json:"populate"`
	Preallocate       bool    `json:"preallocate"`
	UnsafeIgnoreFsync bool    `json:"unsafe_ignore_fsync"`
}

// BDI are a mount's backing-device settings, as the kernel has them.
type BDI struct {
	Device      string `json:"device"` // major:minor of the mount
	MaxRatio    int    `json:"max_ratio"`
	StrictLimit int    `json:"strict_limit"`
	ReadaheadKB int    `json:"read_ahead_kb"`
	MaxBytes    int64  `json:"max_bytes"`
}

// BDISources says where the bdi figures (mount_bdi.*, store_bdi.*,
// dirty_thresholds.*) came from.
type BDISources struct {
	Mount BDISource `json:"mount"`
	Store BDISource `json:"store"`
}

// The sources of a device's bdi figures.
const (
	// SourceDebugfs: every figure, from /sys/kernel/debug/bdi/DEV/stats.
	SourceDebugfs = "debugfs"
	// SourceVmstat: debugfs could not be read; the system's thresholds
	// are from /proc/vmstat and the device's figures are 0.
	SourceVmstat = "vmstat"
	// SourceNone: the device has no bdi (tmpfs, overlayfs...): it writes
	// back to no device, and its figures are 0.
	SourceNone = "none"
)

// BDISource is where one device's bdi figures came from.
type BDISource struct {
	Device string `json:"device,omitempty"` // the bdi's name in /sys/class/bdi (major:minor); "" for none
	Source string `json:"source"`           // SourceDebugfs, SourceVmstat or SourceNone
	Note   string `json:"note,omitempty"`   // why not debugfs, or why no bdi
}

// Latency summarizes a latency histogram, in microseconds. Quantiles are
// upper bounds: the edge of the power-of-two bucket they fall in.
type Latency struct {
	Count  int64   `json:"count"`
	MeanUs float64 `json:"mean_us"`
	P50Us  float64 `json:"p50_us"`
	P90Us  float64 `json:"p90_us"`
	P99Us  float64 `json:"p99_us"`
}

// OpStats are one FUSE op's figures.
type OpStats struct {
	Count  int64 `json:"count"`
	Errors int64 `json:"errors"`
	Latency
}

// after places the parts of a Snapshot that are not figures among the
// figures' keys of the stats file: each follows the figure it is keyed
// by. Policy, switches, bdi and store come first, ops last.
var after = map[ID][]string{
	OldestUnsynced: {"at_risk", "powercut_sim"},
	MsyncBytes:     {"msync_latency"},
}

// part returns the value of the non-figure key k of s, and whether it
// is written (the omitempty ones are not, when empty).
func (s *Snapshot) part(k string) (any, bool) {
	switch k {
	case "policy":
		return s.Policy, true
	case "switches":
		return s.Switches, true
	case "bdi":
		return s.BDI, s.BDI != nil
	case "bdi_sources":
		return s.BDISources, s.BDISources != nil
	case "store":
		return s.Store, true
	case "at_risk":
		return s.AtRisk, true
	case "powercut_sim":
		return s.PowerCut, s.PowerCut != nil
	case "msync_latency":
		return s.MsyncLatency, true
	case "ops":
		return s.Ops, true
	case "inject":
		return s.Inject, len(s.Inject) > 0
	case "transport":
		return s.Transport, s.Transport != nil
	}
	panic("wire: no part " + k)
}

// MarshalJSON writes the stats file: the keys in the order of the list.
func (s Snapshot) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	var err error
	key := func(k string) {
		if b.Len() > 1 && b.Bytes()[b.Len()-1] != '{' {
			b.WriteByte(',')
		}
		b.WriteString(strconv.Quote(k))
		b.WriteByte(':')
	}
	value := func(v any) {
		raw, jerr := json.Marshal(v)
		if jerr != nil && err == nil {
			err = jerr
		}
		b.Write(raw)
	}
	parts := func(ks ...string) {
		for _, k := range ks {
			if v, ok := s.part(k); ok {
				key(k)
				value(v)
			}
		}
	}
	parts("policy", "switches", "bdi", "bdi_sources", "store")
	group := ""
	for i, f := range list {
		id := ID(i)
		parent, name, nested := strings.Cut(f.Key, ".")
		if !nested {
			name = f.Key
		}
		if group != "" && (!nested || parent != group) {
			b.WriteByte('}')
			group = ""
		}
		if nested && group == "" {
			key(parent)
			b.WriteByte('{')
			group = parent
		}
		key(name)
		if f.Unit == Seconds {
			value(s.Figures.Float(id))
		} else {
			b.WriteString(strconv.FormatInt(s.Figures.Get(id), 10))
		}
		if f.Last != "" {
			if msg := s.Figures.LastError(id); msg != "" {
				key(f.Last)
				value(msg)
			}
		}
		if group == "" {
			parts(after[id]...)
		}
	}
	if group != "" {
		b.WriteByte('}')
	}
	parts("ops", "inject", "transport")
	b.WriteByte('}')
	return b.Bytes(), err
}

// snapshotParts are the keys of the stats file that are not figures.
type snapshotParts struct {
	Policy       string             `json:"policy"`
	Switches     Switches           `json:"switches"`
	BDI          *BDI               `json:"bdi"`
	BDISources   *BDISources        `json:"bdi_sources"`
	Store        string             `json:"store"`
	AtRisk       []RiskFile         `json:"at_risk"`
	PowerCut     *PowerCutStats     `json:"powercut_sim"`
	MsyncLatency Latency            `json:"msync_latency"`
	Ops          map[string]OpStats `json:"ops"`
	Inject       []InjectRule       `json:"inject"`
	Transport    *Transport         `json:"transport"`
}

// UnmarshalJSON reads a stats file. A figure the file lacks (from a
// daemon older than the list) is 0.
func (s *Snapshot) UnmarshalJSON(data []byte) error {
	var p snapshotParts
	if err := json.Unmarshal(data, &p); err != nil {
		return err
	}
	*s = Snapshot{Policy: p.Policy, Switches: p.Switches, BDI: p.BDI, BDISources: p.BDISources, Store: p.Store, AtRisk: p.AtRisk,
		PowerCut: p.PowerCut, MsyncLatency: p.MsyncLatency, Ops: p.Ops, Inject: p.Inject, Transport: p.Transport}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(data, &top); err != nil {
		return err
	}
	groups := map[string]map[string]json.RawMessage{}
	for i, f := range list {
		id := ID(i)
		obj, name := top, f.Key
		if parent, child, nested := strings.Cut(f.Key, "."); nested {
			g, ok := groups[parent]
			if !ok {
				if raw, found := top[parent]; found {
					if err := json.Unmarshal(raw, &g); err != nil {
						return fmt.Errorf("%s: %w", parent, err)
					}
				}
				groups[parent] = g
			}
			obj, name = g, child
		}
		if raw, ok := obj[name]; ok {
			if f.Unit == Seconds {
				var secs float64
				if err := json.Unmarshal(raw, &secs); err != nil {
					return fmt.Errorf("%s: %w", f.Key, err)
				}
				s.Figures.Set(id, int64(math.Round(secs*float64(time.Second))))
			} else {
				var n int64
				if err := json.Unmarshal(raw, &n); err != nil {
					return fmt.Errorf("%s: %w", f.Key, err)
				}
				s.Figures.Set(id, n)
			}
		}
		if raw, ok := top[f.Last]; ok && f.Last != "" {
			var msg string
			if err := json.Unmarshal(raw, &msg); err != nil {
				return fmt.Errorf("%s: %w", f.Last, err)
			}
			s.Figures.SetLastError(id, msg)
		}
	}
	return nil
}
