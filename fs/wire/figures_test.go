package wire

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestFiguresList: every figure of the list can go where its fields put
// it: keys unique, a nested object's figures consecutive, Prometheus names
// as Prometheus wants them, a shared metric with one help and one label
// name, --watch columns unique, a Part whose verb takes what its Unit
// gives.
func TestFiguresList(t *testing.T) {
	t.Parallel()
	keys := map[string]bool{}
	closed := map[string]bool{} // nested objects whose figures have ended
	group := ""
	metrics := map[string]Figure{}
	columns := map[int]string{}
	for i, f := range Figures() {
		if f.Key == "" || f.Help == "" || !strings.HasSuffix(f.Help, ".") {
			t.Errorf("figure %d (%q): a key and a help sentence are required", i, f.Key)
		}
		if keys[f.Key] || (f.Last != "" && keys[f.Last]) {
			t.Errorf("%s: key used twice", f.Key)
		}
		keys[f.Key] = true
		if f.Last != "" {
			keys[f.Last] = true
		}
		parent, _, nested := strings.Cut(f.Key, ".")
		if group != "" && (!nested || parent != group) {
			closed[group] = true
			group = ""
		}
		if nested {
			if closed[parent] {
				t.Errorf("%s: the figures of %s are not consecutive", f.Key, parent)
			}
			group = parent
		}
		if f.Metric != "" {
			if strings.HasSuffix(f.Metric, "_total") != (f.Kind == Counter) {
				t.Errorf("%s: metric %s: a counter's name ends in _total, a gauge's does not", f.Key, f.Metric)
			}
			if prev, ok := metrics[f.Metric]; ok {
				if prev.Help != f.Help || prev.Label[0] != f.Label[0] || f.Label[0] == "" || prev.Label[1] == f.Label[1] || prev.Kind != f.Kind || prev.Unit != f.Unit {
					t.Errorf("%s: metric %s shared with %s without one help, kind, unit and label name, and its own label value", f.Key, f.Metric, prev.Key)
				}
			}
			metrics[f.Metric] = f
		}
		if f.Watch.At > 0 {
			if other, ok := columns[f.Watch.At]; ok {
				t.Errorf("%s: --watch column %d is %s's too", f.Key, f.Watch.At, other)
			}
			columns[f.Watch.At] = f.Key
			if f.Watch.Title == "" {
				t.Errorf("%s: a --watch column without a title", f.Key)
			}
		}
		if f.Part != "" {
			arg := map[Unit]any{Count: int64(1), Bytes: "1 B", Seconds: 1.5}[f.Unit]
			if s := fmt.Sprintf(f.Part, arg); strings.Contains(s, "%!") {
				t.Errorf("%s: part %q does not take a %T: %q", f.Key, f.Part, arg, s)
			}
		}
		if f.Quiet && f.Row == "" {
			t.Errorf("%s: quiet, but in no row", f.Key)
		}
	}
	for at := 1; at <= len(columns); at++ {
		if _, ok := columns[at]; !ok {
			t.Errorf("--watch columns %v: %d missing", columns, at)
		}
	}
}

// TestSnapshotJSON: figures go to their keys (nested ones into their
// object, seconds as seconds, a last error beside its count and only when
// there is one) and come back from them; a key the file lacks is 0.
func TestSnapshotJSON(t *testing.T) {
	t.Parallel()
	var s Snapshot
	s.Figures.Set(Remaps, 7)
	s.Figures.Set(OldestUnsynced, int64(2500*time.Millisecond))
	s.Figures.Set(MajorFaults, 3)
	s.Figures.Set(PassErrors, 2)
	s.Figures.SetLastError(PassErrors, "syncfs: EIO")
	raw, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	var top map[string]any
	if err := json.Unmarshal(raw, &top); err != nil {
		t.Fatalf("%v\n%s", err, raw)
	}
	pf, _ := top["daemon_page_faults"].(map[string]any)
	if top["remaps"] != 7.0 || top["oldest_unsynced_seconds"] != 2.5 || pf["major"] != 3.0 || pf["minor"] != 0.0 ||
		top["last_pass_error"] != "syncfs: EIO" || top["at_risk"] != nil {
		t.Errorf("encoded:\n%s", raw)
	}
	if _, ok := top["last_evict_error"]; ok || !strings.Contains(string(raw), `"periodic_pass_errors":2,"last_pass_error":"syncfs: EIO"`) {
		t.Errorf("last errors not beside their counts, or written when there are none:\n%s", raw)
	}
	var back Snapshot
	if err := json.Unmarshal(raw, &back); err != nil {
		t.Fatal(err)
	}
	for i := range Figures() {
		if id := ID(i); back.Figures.Get(id) != s.Figures.Get(id) || back.Figures.LastError(id) != s.Figures.LastError(id) {
			t.Errorf("%s: %d %q back, want %d %q", id.Figure().Key, back.Figures.Get(id), back.Figures.LastError(id), s.Figures.Get(id), s.Figures.LastError(id))
		}
	}
	var old Snapshot
	if err := json.Unmarshal([]byte(`{"policy":"fsync","remaps":4}`), &old); err != nil || old.Policy != "fsync" || old.Figures.Get(Remaps) != 4 || old.Figures.Get(Faults) != 0 {
		t.Errorf("a file with few keys: %v, %+v", err, old)
	}
	for _, bad := range []string{`{"remaps":"x"}`, `{"remaps":1.5}`, `{"daemon_page_faults":3}`, `{"uptime_seconds":"1s"}`, `{"last_pass_error":1}`, `[]`} {
		if err := json.Unmarshal([]byte(bad), &old); err == nil {
			t.Errorf("%s decoded", bad)
		}
	}
}

// TestCounters: counts and last errors reach the Values; figures never
// counted keep what they had.
func TestCounters(t *testing.T) {
	t.Parallel()
	c := NewCounters()
	c.Add(Mappings, 3)
	c.Add(Mappings, -1)
	c.Fail(PassErrors, fmt.Errorf("first"))
	c.Fail(PassErrors, fmt.Errorf("syncfs: EIO"))
	var v Values
	v.Set(BytesRead, 9)
	c.Report(&v)
	if v.Get(Mappings) != 2 || c.Load(Mappings) != 2 || v.Get(PassErrors) != 2 || v.LastError(PassErrors) != "syncfs: EIO" || v.Get(BytesRead) != 9 || v.LastError(EvictErrors) != "" {
		t.Errorf("mappings %d, pass errors %d (%q), bytes read %d", v.Get(Mappings), v.Get(PassErrors), v.LastError(PassErrors), v.Get(BytesRead))
	}
}
