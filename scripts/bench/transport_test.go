package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// fakeReport is a small results set: every filesystem of a run with both
// transports, the workloads of issue 17's targets, three runs each.
func fakeReport(t *testing.T) *report {
	t.Helper()
	wls := []string{"fsync-write", "randread-daemon", "createstat", "randread-1"}
	runs := map[string]map[string][]float64{
		kNative:              {"fsync-write": {4400, 4500, 4600}, "randread-daemon": {640000, 650000, 660000}, "createstat": {80000, 81000, 82000}, "randread-1": {640000, 650000, 660000}},
		kLoopback:            {"fsync-write": {2700, 2800, 2900}, "randread-daemon": {600000, 610000, 620000}, "createstat": {7400, 7500, 7600}, "randread-1": {600000, 610000, 620000}},
		kLoopbackNP:          {"fsync-write": {2400, 2450, 2500}, "randread-daemon": {30000, 31000, 32000}, "createstat": {7200, 7250, 7300}, "randread-1": {80000, 81000, 82000}},
		kMmapfs:              {"fsync-write": {2800, 2850, 2900}, "randread-daemon": {20000, 21000, 22000}, "createstat": {7000, 7300, 7600}, "randread-1": {580000, 590000, 600000}},
		"mmapfs+cache":       {"createstat": {8100, 8400, 8500}},
		kMmapfsURing:         {"fsync-write": {2950, 3000, 3100}, "randread-daemon": {40000, 42000, 43000}, "createstat": {15500, 16000, 16500}, "randread-1": {500000, 520000, 540000}},
		"mmapfs-uring+cache": {"createstat": {17000, 17500, 18000}},
	}
	r := &report{Date: "2026-12-01 20:00 UTC", Workloads: wls, Figures: map[string]map[string]*figure{},
		Costs: map[string]float64{kNative: 61, kMmapfsURing: 75.4}}
	for _, c := range []fsConfig{
		{Name: kNative, Kind: kNative},
		{Name: kLoopback, Kind: kLoopback},
		{Name: kLoopbackNP, Kind: kLoopbackNP},
		{Name: kMmapfs, Kind: kMmapfs, Transport: "dev"},
		{Name: kMmapfsURing, Kind: kMmapfsURing, Transport: "uring"},
		{Name: "mmapfs+cache", Kind: kMmapfsBest, Flags: cache(), Transport: "dev"},
		{Name: "mmapfs-uring+cache", Kind: kMmapfsBestURing, Flags: cache(), Transport: "uring"},
	} {
		r.Figures[c.Name] = map[string]*figure{}
		for w, v := range runs[c.Name] {
			c.Workloads = append(c.Workloads, w)
			wl, _ := workloadByName(w)
			f := &figure{FS: c.Name, Workload: w, Unit: wl.Unit, Runs: v}
			f.finish()
			r.Figures[c.Name][w] = f
		}
		r.Configs = append(r.Configs, c)
	}
	r.Figures[kMmapfs]["randread-daemon"].Extra = []map[string]float64{{"ios": 63000}}
	r.Figures[kMmapfs]["randread-daemon"].Ops = map[string]opDelta{"read": {Count: 63007}}
	r.pickBest()
	return r
}

// row is the line of md's table whose first cell is first, under the
// heading that starts with section.
func row(t *testing.T, md, section, first string) []string {
	t.Helper()
	i := strings.Index(md, "# "+section)
	if i < 0 {
		t.Fatalf("no section %q in:\n%s", section, md)
	}
	rest := md[i:]
	if j := strings.Index(rest, "\n#"); j >= 0 {
		rest = rest[:j]
	}
	for _, l := range strings.Split(rest, "\n") {
		cells := strings.Split(strings.Trim(l, "|"), "|")
		if len(cells) > 1 && strings.TrimSpace(cells[0]) == first {
			for k := range cells {
				cells[k] = strings.TrimSpace(cells[k])
			}
			return cells
		}
	}
	t.Fatalf("no row %q in section %q:\n%s", first, section, rest)
	return nil
}

func TestTransportTable(t *testing.T) {
	md := fakeReport(t).markdown()
	sec := "The transports"
	cs := row(t, md, sec, "create+stat+unlink")
	want := []string{"create+stat+unlink", "ops/s", "7300 [7000–7600]", "16000 [15500–16500]", "2.19", "faster",
		"8400 [8100–8500] (cache)", "17500 [17000–18000] (cache)", "2.08", "faster"}
	if strings.Join(cs, "|") != strings.Join(want, "|") {
		t.Errorf("create+stat+unlink row:\n got %q\nwant %q", cs, want)
	}
	rr := row(t, md, sec, "random read 4 KiB, 1 job")
	if rr[4] != "0.88" || rr[5] != "**slower**" {
		t.Errorf("random read row %q: want uring/dev 0.88, slower beyond the spread", rr)
	}
	fw := row(t, md, sec, "4 KiB write + fsync")
	if fw[4] != "1.05" || fw[5] != "faster" {
		t.Errorf("fsync row %q: want 1.05, faster (2950 > 2900)", fw)
	}
	// The main table has the uring columns.
	main := row(t, md, "mmapfs benchmark", "create+stat+unlink")
	if main[7] != "16000 (0.20 / 2.21)" || main[8] != "17500 (0.22 / 2.41)" {
		t.Errorf("main table row %q: want the uring defaults and best columns", main)
	}
}

func TestTargets17(t *testing.T) {
	r := fakeReport(t)
	md := r.markdown()
	sec := "Issue 17's targets"
	if c := row(t, md, sec, "create+stat+unlink: uring ≥ 2× dev"); c[2] != "2.19" || c[3] != "yes" {
		t.Errorf("2x target row %q", c)
	}
	// 16000 against mmapfs+cache's 8400, the loopbacks' and the defaults':
	// the least ratio is to mmapfs+cache.
	if c := row(t, md, sec, "create+stat+unlink: uring above every FUSE filesystem of the run"); c[2] != "1.90 (the least)" || c[3] != "yes" || !strings.Contains(c[1], "mmapfs+cache 8400") {
		t.Errorf("above-every-FUSE row %q", c)
	}
	if c := row(t, md, sec, "4 KiB write + fsync: uring reaches go-fuse loopback with passthrough"); c[2] != "1.07" || c[3] != "yes" || !strings.Contains(c[1], "spread faster") {
		t.Errorf("fsync target row %q", c)
	}
	if c := row(t, md, sec, "4 KiB random reads served by the daemon, 1 job: uring ≥ 1.5× dev"); c[2] != "2.00" || c[3] != "yes" {
		t.Errorf("daemon reads row %q", c)
	}
	c := row(t, md, sec, "every workload: uring not slower than dev beyond the run's spread")
	if c[3] != "**no**" || !strings.Contains(c[1], "1 of 4 slower beyond the spread: random read 4 KiB, 1 job: uring 520000 [500000–540000], dev 590000 [580000–600000]") || c[2] != "0.88 (the lowest)" {
		t.Errorf("no-slower row %q", c)
	}
	if !strings.Contains(md, "mmapfs: 63007 READs for 63000 reads (1.00 a read)") {
		t.Errorf("no READs-per-read line in:\n%s", md)
	}
	// One run each (-quick): no spread, no answer.
	q := fakeReport(t)
	for _, fs := range []string{kMmapfs, kMmapfsURing} {
		for _, f := range q.Figures[fs] {
			f.Runs = []float64{f.Median}
			f.finish()
		}
	}
	if c := row(t, q.markdown(), sec, "every workload: uring not slower than dev beyond the run's spread"); c[3] != "–" || !strings.HasPrefix(c[1], "one run, no spread") {
		t.Errorf("no-slower row of a single run %q", c)
	}
	// Below 2x and below a rival, and slower nowhere: the answers turn.
	set := func(fs, w string, v ...float64) {
		f := r.Figures[fs][w]
		f.Runs = v
		f.finish()
	}
	set(kMmapfsURing, "createstat", 7400, 7450, 7500)
	set(kMmapfsURing, "randread-1", 585000, 590000, 600000)
	r.pickBest()
	md = r.markdown()
	if c := row(t, md, sec, "create+stat+unlink: uring ≥ 2× dev"); c[3] != "**no**" {
		t.Errorf("2x target row %q: want no", c)
	}
	if c := row(t, md, sec, "create+stat+unlink: uring above every FUSE filesystem of the run"); c[3] != "**no**" {
		t.Errorf("above-every-FUSE row %q: want no (loopback 7500 > 7450)", c)
	}
	if c := row(t, md, sec, "every workload: uring not slower than dev beyond the run's spread"); c[3] != "yes" || !strings.HasPrefix(c[1], "4 workloads; none slower") {
		t.Errorf("no-slower row %q: want yes", c)
	}
	if c := row(t, md, "The transports", "random read 4 KiB, 1 job"); c[5] != "within" {
		t.Errorf("random read row %q: want within the spread", c)
	}
}

func TestCostTable(t *testing.T) {
	md := fakeReport(t).markdown()
	if c := row(t, md, "What each part of the run cost", "mmapfs-uring"); c[1] != "4" || c[2] != "1m15s" {
		t.Errorf("cost row %q", c)
	}
	if c := row(t, md, "What each part of the run cost", "all"); c[2] != "2m16s" {
		t.Errorf("total row %q", c)
	}
	cr := &curveReport{Configs: []fsConfig{{Name: kNative}, {Name: kMmapfsURing}},
		Costs: map[string]float64{cgThreads: 300, cgThreads + " " + kMmapfsURing: 70, cgThreads + " " + kNative: 50, cgDirSize: 10}}
	cmd := cr.markdown()
	i, j, k := strings.Index(cmd, "| curve-threads | **all**"), strings.Index(cmd, "| curve-threads | native | 50s |"), strings.Index(cmd, "| curve-threads | mmapfs-uring | 1m10s |")
	if i < 0 || j < i || k < j || !strings.Contains(cmd, "| curve-dirsize | **all** (with the layouts) | 10s |") {
		t.Errorf("curve costs out of order or missing:\n%s", cmd)
	}
}

// An old results-raw.json (no transport, no uring rows) renders with
// the uring cells as "–" and says why.
func TestRerenderOldResults(t *testing.T) {
	old := `{"date":"2026-12-01 18:45 UTC","settings":"median of 3 runs","workloads":["createstat","fsync-write"],
	"configs":[{"Name":"native","Kind":"native","Flags":null,"Workloads":["createstat","fsync-write"]},
	           {"Name":"mmapfs","Kind":"mmapfs","Flags":null,"Workloads":["createstat","fsync-write"]}],
	"figures":{"native":{"createstat":{"runs":[80000,81000,82000],"median":81000,"min":80000,"max":82000,"spread":0.02},
	                     "fsync-write":{"runs":[4400,4500,4600],"median":4500,"min":4400,"max":4600,"spread":0.04}},
	           "mmapfs":{"createstat":{"runs":[7000,7300,7600],"median":7300,"min":7000,"max":7600,"spread":0.08},
	                     "fsync-write":{"runs":[2800,2850,2900],"median":2850,"min":2800,"max":2900,"spread":0.04}}}}`
	dir := t.TempDir()
	raw := filepath.Join(dir, "results-raw.json")
	if err := os.WriteFile(raw, []byte(old), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "out")
	if st := rerender(raw, out, 0.30); st != 0 {
		t.Fatalf("rerender: status %d", st)
	}
	b, err := os.ReadFile(filepath.Join(out, "results.md"))
	if err != nil {
		t.Fatal(err)
	}
	md := string(b)
	if !strings.Contains(md, "This run has no uring rows") {
		t.Errorf("no word on the missing uring rows:\n%s", md)
	}
	if c := row(t, md, "The transports", "create+stat+unlink"); c[2] != "7300 [7000–7600]" || c[3] != "–" || c[4] != "–" || c[5] != "–" {
		t.Errorf("old run's transport row %q", c)
	}
	if c := row(t, md, "Issue 17's targets", "create+stat+unlink: uring ≥ 2× dev"); c[2] != "–" || c[3] != "–" {
		t.Errorf("old run's target row %q", c)
	}
	if c := row(t, md, "mmapfs benchmark", "create+stat+unlink"); c[7] != "–" || c[8] != "–" {
		t.Errorf("old run's main row %q", c)
	}
	// Why the rows are missing, when the run said so.
	r := fakeReport(t)
	r.URingWhy = "this mmapfs has no --transport"
	if md := r.markdown(); !strings.Contains(md, "The uring rows were not measured in this run: this mmapfs has no --transport.") {
		t.Errorf("no reason for the missing rows")
	}
	// The transport survives results-raw.json.
	var back report
	jb, _ := json.Marshal(fakeReport(t))
	if err := json.Unmarshal(jb, &back); err != nil {
		t.Fatal(err)
	}
	for _, c := range back.Configs {
		if c.Name == kMmapfsURing && c.Transport != "uring" {
			t.Errorf("%s: transport %q after JSON", c.Name, c.Transport)
		}
	}
}

func TestOverlap(t *testing.T) {
	f := func(v ...float64) *figure { x := &figure{Runs: v}; x.finish(); return x }
	for _, c := range []struct {
		a, b *figure
		want int
		word string
	}{
		{f(10, 11, 12), f(7, 8, 9), 1, "faster"},
		{f(7, 8, 9), f(10, 11, 12), -1, "**slower**"},
		{f(7, 9, 10), f(9.5, 11, 12), 0, "within"},
		{f(10), f(5), 1, "one run"},
		{nil, f(5, 6), 0, "–"},
	} {
		if got := overlap(c.a, c.b); got != c.want {
			t.Errorf("overlap(%v, %v) = %d, want %d", c.a, c.b, got, c.want)
		}
		if got := spreadWord(c.a, c.b); got != c.word {
			t.Errorf("spreadWord(%v, %v) = %q, want %q", c.a, c.b, got, c.word)
		}
	}
}

func TestURingSwitch(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "enable_uring")
	// Off: on for the run, and put back.
	if err := os.WriteFile(p, []byte("N\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	u := &uringSwitch{}
	if err := u.enable(p); err != nil {
		t.Fatalf("enable with N: %v", err)
	}
	if b, _ := os.ReadFile(p); strings.TrimSpace(string(b)) != "1" {
		t.Fatalf("enable with N: the switch reads %q, want 1", b)
	}
	if err := u.restore(); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(p); string(b) != "N\n" {
		t.Fatalf("after restore: %q, want N", b)
	}
	// Twice is once; a later change by someone else is left alone.
	if err := os.WriteFile(p, []byte("Y\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := u.restore(); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(p); string(b) != "Y\n" {
		t.Fatalf("a second restore wrote %q", b)
	}
	// On: left alone, and restore writes nothing.
	u = &uringSwitch{}
	if err := u.enable(p); err != nil {
		t.Fatalf("enable with Y: %v", err)
	}
	if err := os.WriteFile(p, []byte("changed by someone else\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := u.restore(); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(p); string(b) != "changed by someone else\n" {
		t.Fatalf("restore after enable found Y wrote %q", b)
	}
	// Missing, or neither Y nor N: an error naming the file.
	if err := (&uringSwitch{}).enable(filepath.Join(dir, "none")); err == nil || !strings.Contains(err.Error(), "none does not exist") {
		t.Errorf("enable of a missing switch: %v", err)
	}
	q := filepath.Join(dir, "odd")
	if err := os.WriteFile(q, []byte("maybe\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := (&uringSwitch{}).enable(q); err == nil || !strings.Contains(err.Error(), `"maybe"`) {
		t.Errorf("enable of an odd switch: %v", err)
	}
}

func TestURingConfigs(t *testing.T) {
	wls := []string{"createstat", "fsync-write", "seqwrite", "randread-daemon"}
	have := map[string]bool{"transport": true, "profile": true, "writeback-cache": true, "max-write": true, "bdi-max-ratio": true, "bdi-strict-limit": true}
	uc := uringCandidates(wls, have)
	got := map[string][]string{}
	for _, c := range uc {
		if c.Kind != kMmapfsBestURing || c.Transport != "uring" {
			t.Errorf("%s: kind %s transport %q", c.Name, c.Kind, c.Transport)
		}
		got[c.Name] = c.Workloads
	}
	if strings.Join(got["mmapfs-uring+cache"], ",") != "createstat,fsync-write" || strings.Join(got["mmapfs-uring+wbc-cache-1m-bdi"], ",") != "seqwrite" || len(got) != 2 {
		t.Errorf("uring candidates %v", got)
	}
	delete(have, "writeback-cache")
	if uc := uringCandidates(wls, have); len(uc) != 1 {
		t.Errorf("a set the binary lacks a flag of is kept: %v", uc)
	}
	cfgs := []fsConfig{{Name: kNative, Kind: kNative}, {Name: kMmapfs, Kind: kMmapfs}, {Name: kMmapfsURing, Kind: kMmapfsURing, Transport: "uring"}}
	pinTransport(cfgs, map[string]bool{})
	if cfgs[1].Transport != "" {
		t.Errorf("pinned on a binary without --transport")
	}
	pinTransport(cfgs, have)
	if cfgs[0].Transport != "" || cfgs[1].Transport != "dev" || cfgs[2].Transport != "uring" {
		t.Errorf("pinned: %+v", cfgs)
	}
	if !wantsURing(cfgs, nil, nil, nil) || wantsURing(dropURing(cfgs), nil, nil, nil) {
		t.Errorf("wantsURing/dropURing on the workloads' configurations")
	}
	extra := map[string][]fsConfig{cgThreads: {{Name: kMmapfsURing, Transport: "uring"}}}
	if wantsURing(nil, nil, extra, map[string]bool{cgDirSize: true}) || !wantsURing(nil, nil, extra, map[string]bool{cgThreads: true}) {
		t.Errorf("wantsURing on the curves: only where the group runs")
	}
	sel, fs, _, err := parseOnly("createstat,mmapfs-uring,mmapfs-uring-best")
	if err != nil || !sel["createstat"] || !fs[kMmapfsURing] || !fs[kMmapfsBestURing] {
		t.Errorf("parseOnly: %v %v %v", sel, fs, err)
	}
	ccfgs, cextra, _ := curveConfigs(map[string]bool{kMmapfsURing: true}, have)
	if len(ccfgs) != 0 || len(cextra[cgThreads]) != 1 || cextra[cgThreads][0].Transport != "uring" {
		t.Errorf("curves under -only mmapfs-uring: %v %v", ccfgs, cextra)
	}
}

func TestDaemonReadArgs(t *testing.T) {
	nat := strings.Join(daemonReadArgs(kNative, "3000ms"), " ")
	if !strings.Contains(nat, "--time_based") || !strings.Contains(nat, "--invalidate=0") {
		t.Errorf("native: %s", nat)
	}
	for _, k := range []string{kLoopback, kLoopbackNP, kMmapfs, kMmapfsURing} {
		a := strings.Join(daemonReadArgs(k, "3000ms"), " ")
		// Each block once (fio's random map), the mount's pages dropped,
		// ended by the file's end or the runtime.
		if strings.Contains(a, "time_based") || strings.Contains(a, "norandommap") || !strings.Contains(a, "--invalidate=1") || !strings.Contains(a, "--runtime=3000ms") || !strings.Contains(a, "--numjobs=1") {
			t.Errorf("%s: %s", k, a)
		}
	}
}

func TestLoggerLimit(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for name, f := range map[string]func(string, int, int64, int64, time.Duration) (workerResult, error){
		"pwrite": loggerPwrite, "mmap": loggerMmap,
	} {
		start := time.Now()
		res, err := f(dir, 1<<40, 512, 150*1024, 100*time.Millisecond)
		took := time.Since(start)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if took > 5*time.Second || res.Extra["records"] <= 0 || res.Extra["seconds"] < 0.1 {
			t.Errorf("%s with a 100ms limit: %v, %v records in %v s", name, took, res.Extra["records"], res.Extra["seconds"])
		}
		// Without a limit, all the records.
		res, err = f(dir, 1000, 512, 150*1024, 0)
		if err != nil || res.Extra["records"] != 1000 {
			t.Errorf("%s without a limit: %v records, %v", name, res.Extra["records"], err)
		}
	}
}
