package main

// The scaling curves: how the cost of each filesystem grows with client
// threads, files in a directory, file size and files held open. Each
// group of curves lays out one store (natively, once), then mounts it
// under every filesystem in turn, on a fresh mountpoint and daemon for
// every point, so that no point inherits the kernel's or the daemon's
// caches from the one before.

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// The curve groups; also the names -only accepts ("curves": all four).
const (
	cgThreads   = "curve-threads"
	cgDirSize   = "curve-dirsize"
	cgFileSize  = "curve-filesize"
	cgOpenFiles = "curve-openfiles"
	cgAll       = "curves"
)

var curveGroups = []string{cgThreads, cgDirSize, cgFileSize, cgOpenFiles}

// curveMmapfs are the mmapfs configurations of every curve, beside native
// and go-fuse's loopback without passthrough: mmapfs on its defaults and
// on the fastest switch set of the workloads the curves run (the
// candidate "cache": the exclusive profile, best for random reads and
// create+stat+unlink in the main table). Change the list here; for
// another preset, e.g.
//
//	{Name: "mmapfs+kernel-defaults", Kind: kMmapfsBest, Flags: []string{"--profile", "kernel-defaults"}},
//
// A configuration naming a flag the binary lacks is skipped (and said so).
// Kind kMmapfs is "-only mmapfs", kMmapfsBest is "-only mmapfs-best".
var curveMmapfs = []fsConfig{
	{Name: kMmapfs, Kind: kMmapfs},
	{Name: "mmapfs+cache", Kind: kMmapfsBest, Flags: cache()},
}

// curveExtra are measured on one group of curves only: on the threads
// curves, the fast set with MADV_RANDOM on the daemon's mappings (a miss
// in a mapping then reads its page, not the 128 KiB the kernel reads
// around a fault), and mmapfs on its defaults under --transport uring
// (issue 17: a queue per CPU, the request served on the CPU of the
// thread that made it); on the files-held-open curve, mmapfs without its bound
// on resident blobs, to show what the bound is for (one descriptor and one
// mapping per open file).
var curveExtra = map[string][]fsConfig{
	cgThreads: {
		{Name: "mmapfs+cache+random", Kind: kMmapfsBest, Flags: cache("--madvise", "random")},
		{Name: kMmapfsURing, Kind: kMmapfsURing, Transport: "uring"},
	},
	cgOpenFiles: {{Name: "mmapfs+unbounded", Kind: kMmapfsBest, Flags: []string{"--max-resident", "-1"}}},
}

// curveSizes are the points of the curves.
type curveSizes struct {
	Threads      []int         `json:"threads"`
	ReadFile     int64         `json:"read_file_bytes"`
	ReadRuntime  time.Duration `json:"read_runtime_ns"`
	CSPerThread  int           `json:"createstat_files_per_thread"`
	CSBytes      int64         `json:"createstat_file_bytes"`
	DirFiles     []int         `json:"dir_files"`
	DirOps       int           `json:"dir_ops"`
	FileSizes    []int64       `json:"file_sizes"`
	FilesPerSize int           `json:"files_per_size"`
	OpenFiles    []int         `json:"open_files"`
	PerClient    int           `json:"open_files_per_client"`
}

func curveSizesFor(quick bool, rt time.Duration) curveSizes {
	if quick {
		return curveSizes{
			Threads: []int{1, 4, 16}, ReadFile: 256 << 20, ReadRuntime: 500 * time.Millisecond,
			CSPerThread: 100, CSBytes: 1024,
			DirFiles: []int{1000, 10000}, DirOps: 200,
			FileSizes: []int64{1 << 20, 1 << 30, 64 << 30}, FilesPerSize: 4,
			OpenFiles: []int{500, 3000}, PerClient: 1000,
		}
	}
	return curveSizes{
		Threads: []int{1, 2, 4, 8, 16}, ReadFile: 4 << 30, ReadRuntime: rt,
		CSPerThread: 1000, CSBytes: 1024,
		DirFiles: []int{1000, 10000, 100000}, DirOps: 1000,
		FileSizes: []int64{1 << 20, 16 << 20, 256 << 20, 4 << 30, 64 << 30}, FilesPerSize: 16,
		// 17,500 a client: a process may hold 20,000 descriptors here, and
		// root cannot raise that.
		OpenFiles: []int{1000, 10000, 20000, 40000, 70000}, PerClient: 17500,
	}
}

func (z curveSizes) describe() string {
	return fmt.Sprintf("threads %v: 4 KiB random reads for %s in a %d MiB file, create+stat+unlink of %d files of %d B a thread; "+
		"directories of %v files, %d operations of each kind; file sizes %s, %d files each; files held open %v, at most %d a client process",
		z.Threads, z.ReadRuntime, z.ReadFile>>20, z.CSPerThread, z.CSBytes, z.DirFiles, z.DirOps, fmtSizes(z.FileSizes), z.FilesPerSize, z.OpenFiles, z.PerClient)
}

// curvePoint is one point of one curve on one filesystem.
type curvePoint struct {
	Curve    string             `json:"curve"`
	FS       string             `json:"filesystem"`
	Switches string             `json:"switches"`
	X        float64            `json:"x"`
	Values   map[string]float64 `json:"values,omitempty"`
	Error    string             `json:"error,omitempty"`
}

// curveRun is the state of one run of the curves.
type curveRun struct {
	ctx    context.Context
	s      settings
	z      curveSizes
	base   string // this run's directory of stores, lists, mountpoints
	bins   binaries
	logDir string
	points []curvePoint
	notes  []string
	// group is the group being measured; costs, the seconds spent per
	// "GROUP FILESYSTEM" (its points' mounts and clients) and per "GROUP"
	// (all of it, with the layouts).
	group string
	costs map[string]float64
}

// curveConfigs are the filesystems of the curves that -only selects (nil:
// all); extra, those of one group only (curveExtra).
func curveConfigs(selFS map[string]bool, have map[string]bool) (cfgs []fsConfig, extra map[string][]fsConfig, notes []string) {
	pick := func(c fsConfig) bool {
		if selFS != nil && !selFS[c.Kind] {
			return false
		}
		if isMmapfsKind(c.Kind) {
			if c.Transport != "" && !have["transport"] {
				notes = append(notes, fmt.Sprintf("curves: %s skipped: this mmapfs has no --transport", c.Name))
				return false
			}
			if ok, missing := supported(candidate{Name: c.Name, Flags: c.Flags}, have); !ok {
				notes = append(notes, fmt.Sprintf("curves: %s skipped: this mmapfs has no %s", c.Name, missing))
				return false
			}
		}
		return true
	}
	for _, c := range append([]fsConfig{{Name: kNative, Kind: kNative}, {Name: kLoopbackNP, Kind: kLoopbackNP}}, curveMmapfs...) {
		if pick(c) {
			cfgs = append(cfgs, c)
		}
	}
	extra = map[string][]fsConfig{}
	for _, g := range curveGroups {
		for _, c := range curveExtra[g] {
			if pick(c) {
				extra[g] = append(extra[g], c)
			}
		}
	}
	return cfgs, extra, notes
}

// run measures the selected curve groups on the base configurations and
// each group's extra ones, into cr.points.
func (cr *curveRun) run(groups map[string]bool, base []fsConfig, extra map[string][]fsConfig) {
	for _, g := range curveGroups {
		if !groups[g] || cr.ctx.Err() != nil {
			continue
		}
		dir := filepath.Join(cr.base, g)
		if err := os.MkdirAll(filepath.Join(dir, "store"), 0o755); err != nil {
			cr.notes = append(cr.notes, fmt.Sprintf("%s: %v", g, err))
			continue
		}
		// The directories each point makes in the store land in block
		// groups of their own (see spreadDir): a create in a group where an
		// earlier point unlinked would pay for those unlinks.
		spreadDir(filepath.Join(dir, "store"))
		cfgs := append(append([]fsConfig(nil), base...), extra[g]...)
		cr.group = g
		t0 := time.Now()
		var err error
		switch g {
		case cgThreads:
			err = cr.threads(dir, cfgs)
		case cgDirSize:
			err = cr.dirSize(dir, cfgs)
		case cgFileSize:
			err = cr.fileSize(dir, cfgs)
		case cgOpenFiles:
			err = cr.openFiles(dir, cfgs)
		}
		if err != nil {
			cr.notes = append(cr.notes, fmt.Sprintf("%s: %v", g, err))
			fmt.Printf("%s: %v\n", g, err)
		}
		// The store is the run's; nothing is mounted on it any more.
		_ = os.RemoveAll(dir)
		if cr.costs != nil {
			cr.costs[g] += time.Since(t0).Seconds()
		}
	}
}

// point records p (and prints it).
func (cr *curveRun) point(curve string, c fsConfig, x float64, v map[string]float64, err error) {
	p := curvePoint{Curve: curve, FS: c.Name, Switches: strings.Join(c.Flags, " "), X: x, Values: v}
	if err != nil {
		p.Error = err.Error()
	}
	cr.points = append(cr.points, p)
	def, _ := curveDefByName(curve)
	var b strings.Builder
	for _, m := range def.Metrics {
		if val, ok := v[m.Key]; ok {
			fmt.Fprintf(&b, " %s %s", m.Key, fmtNum(val))
		}
	}
	if err != nil {
		fmt.Fprintf(&b, " ERROR %v", err)
	}
	fmt.Printf("%-18s %-18s %10s%s\n", curve, c.Name, def.fmtX(x), b.String())
}

// withMount mounts store under c on a fresh mountpoint, runs f, unmounts.
func (cr *curveRun) withMount(c fsConfig, store string, f func(m *mountedFS) error) error {
	mnt, err := os.MkdirTemp(filepath.Dir(store), "mnt-")
	if err != nil {
		return err
	}
	_ = os.Remove(mnt) // mountOn makes it
	if cr.costs != nil {
		t0 := time.Now()
		defer func() { cr.costs[cr.group+" "+c.Name] += time.Since(t0).Seconds() }()
	}
	m, err := mountOn(cr.ctx, c, store, mnt, cr.bins, cr.logDir)
	if err != nil {
		return err
	}
	defer m.unmount()
	return f(m)
}

// threads: 4 KiB random reads of one file not in the page cache, and
// create+stat+unlink, against client threads.
func (cr *curveRun) threads(dir string, cfgs []fsConfig) error {
	store := filepath.Join(dir, "store")
	file := filepath.Join(store, "rr.dat")
	if err := layOut(file, cr.z.ReadFile); err != nil {
		return err
	}
	rr := workload{Name: "threads-randread", Unit: "IOPS"}
	for _, c := range cfgs {
		for _, t := range cr.z.Threads {
			if cr.ctx.Err() != nil {
				return cr.ctx.Err()
			}
			// Not in the page cache: the store's file dropped (its pages are
			// mapped by no one, the last daemon is gone), and a fresh mount
			// (a new FUSE inode, whose page cache starts empty).
			before, err := dropFile(file)
			if err != nil {
				return err
			}
			var rv, cv map[string]float64
			var rerr, cerr error
			err = cr.withMount(c, store, func(m *mountedFS) error {
				args := []string{"--output-format=json", "--group_reporting", "--name=threads-randread", "--thread",
					"--filename=" + filepath.Join(m.dir, "rr.dat"), "--size=" + strconv.FormatInt(cr.z.ReadFile, 10),
					"--ioengine=psync", "--rw=randread", "--bs=4k", "--invalidate=0", "--norandommap", "--randrepeat=0",
					"--numjobs=" + strconv.Itoa(t), "--time_based", "--runtime=" + strconv.FormatInt(cr.z.ReadRuntime.Milliseconds(), 10) + "ms"}
				out, err := runCmd(cr.ctx, cr.z.ReadRuntime+3*time.Minute, cr.s.fio, args...)
				if err == nil {
					var iops float64
					iops, rv, err = parseFio(out, rr)
					if err == nil {
						rv["iops"] = iops
						rv["cached_before_pct"] = before * 100
						if after, e := residentFraction(file); e == nil {
							rv["cached_after_pct"] = after * 100
							// Bytes the run brought into the store's page
							// cache per byte the clients read: the read
							// amplification, while the file is far from
							// all cached (an underestimate near 100%).
							if asked := iops * cr.z.ReadRuntime.Seconds() * 4096; asked > 0 {
								rv["read_amplification"] = (after - before) * float64(cr.z.ReadFile) / asked
							}
						}
						if st := daemonSample(m); st != nil {
							rv["rss_mib"] = st["rss_mib"]
						}
					}
				}
				rerr = err
				if err := syncAll(cr.ctx); err != nil {
					return err
				}
				var v float64
				v, cv, cerr = runWorker(cr.ctx, cr.s, "cs-threads", m.dir, "-threads", strconv.Itoa(t),
					"-n", strconv.Itoa(cr.z.CSPerThread), "-size", strconv.FormatInt(cr.z.CSBytes, 10))
				if cerr == nil {
					cv["ops_per_s"] = v
				}
				return nil
			})
			if err != nil {
				rerr, cerr = err, err
			}
			cr.point("threads-randread", c, float64(t), rv, rerr)
			cr.point("threads-createstat", c, float64(t), cv, cerr)
		}
	}
	return nil
}

// dirSize: create, stat, readdir and unlink in directories of 1k, 10k,
// 100k files. Each filesystem gets directories of its own, filled
// natively just before and removed after: this ext4 has no journal, and
// a create in a block group where files were unlinked in the last minute
// steps over each of them (ext4's recently_deleted), so a filesystem
// measured after another one's unlinks in the same directory would pay
// for them.
func (cr *curveRun) dirSize(dir string, cfgs []fsConfig) error {
	store := filepath.Join(dir, "store")
	for ci, c := range cfgs {
		for _, n := range cr.z.DirFiles {
			if cr.ctx.Err() != nil {
				return cr.ctx.Err()
			}
			d := fmt.Sprintf("d%d.%d", n, ci)
			if err := fillDir(filepath.Join(store, d), n, nil); err != nil {
				return err
			}
			if err := syncAll(cr.ctx); err != nil {
				return err
			}
			var v map[string]float64
			var werr error
			err := cr.withMount(c, store, func(m *mountedFS) error {
				before := readOps(m)
				_, v, werr = runWorker(cr.ctx, cr.s, "dirops", filepath.Join(m.dir, d), "-n", strconv.Itoa(n), "-k", strconv.Itoa(cr.z.DirOps))
				if werr == nil {
					if st := daemonSample(m); st != nil {
						v["rss_mib"], v["rss_anon_mib"] = st["rss_mib"], st["rss_anon_mib"]
					}
					for op, o := range opsDelta(before, readOps(m)) {
						switch op {
						case "lookup", "create", "readdirplus", "readdir", "unlink", "getattr":
							v["daemon_"+op+"_us"] = o.MeanUs
							v["daemon_"+op+"_n"] = o.Count
						}
					}
				}
				return nil
			})
			if err != nil {
				werr = err
			}
			if err := os.RemoveAll(filepath.Join(store, d)); err != nil {
				return err
			}
			cr.point("dirsize", c, float64(n), v, werr)
		}
	}
	return nil
}

// fileSize: open+first read (4 KiB in the middle of the file) and the
// daemon's memory, against file size; the files are sparse but for those
// 4 KiB.
func (cr *curveRun) fileSize(dir string, cfgs []fsConfig) error {
	store := filepath.Join(dir, "store")
	for _, size := range cr.z.FileSizes {
		var names []string
		for i := 0; i < cr.z.FilesPerSize; i++ {
			n := fmt.Sprintf("s%d.%d", size, i)
			if err := sparseFile(filepath.Join(store, n), size); err != nil {
				return err
			}
			names = append(names, n)
		}
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("list-%d", size)), []byte(strings.Join(names, "\n")+"\n"), 0o644); err != nil {
			return err
		}
	}
	if err := syncAll(cr.ctx); err != nil {
		return err
	}
	for _, c := range cfgs {
		for _, size := range cr.z.FileSizes {
			if cr.ctx.Err() != nil {
				return cr.ctx.Err()
			}
			var v map[string]float64
			err := cr.withMount(c, store, func(m *mountedFS) error {
				var err error
				v, err = cr.hold(m, []string{filepath.Join(dir, fmt.Sprintf("list-%d", size))}, midOffset(size), -1)
				return err
			})
			cr.point("filesize", c, float64(size), v, err)
		}
	}
	return nil
}

// openFiles: open+first read and the daemon's memory against files held
// open, from several client processes (each under its descriptor limit).
func (cr *curveRun) openFiles(dir string, cfgs []fsConfig) error {
	store := filepath.Join(dir, "store")
	most := 0
	for _, n := range cr.z.OpenFiles {
		if n > most {
			most = n
		}
	}
	name := func(i int) string { return fmt.Sprintf("d%03d/%s", i/1000, curveFileName(i%1000)) }
	for d := 0; d*1000 < most; d++ {
		k := most - d*1000
		if k > 1000 {
			k = 1000
		}
		if err := fillDir(filepath.Join(store, fmt.Sprintf("d%03d", d)), k, nil); err != nil {
			return err
		}
		for i := 0; i < k; i++ {
			if err := heldFile(filepath.Join(store, fmt.Sprintf("d%03d", d), curveFileName(i))); err != nil {
				return err
			}
		}
	}
	if err := syncAll(cr.ctx); err != nil {
		return err
	}
	// The clients' lists, one per client per point.
	lists := map[int][]string{}
	for _, n := range cr.z.OpenFiles {
		for start, c := 0, 0; start < n; start, c = start+cr.z.PerClient, c+1 {
			end := start + cr.z.PerClient
			if end > n {
				end = n
			}
			var b strings.Builder
			for i := start; i < end; i++ {
				b.WriteString(name(i) + "\n")
			}
			p := filepath.Join(dir, fmt.Sprintf("list-%d.%d", n, c))
			if err := os.WriteFile(p, []byte(b.String()), 0o644); err != nil {
				return err
			}
			lists[n] = append(lists[n], p)
		}
	}
	for _, c := range cfgs {
		for _, n := range cr.z.OpenFiles {
			if cr.ctx.Err() != nil {
				return cr.ctx.Err()
			}
			var v map[string]float64
			err := cr.withMount(c, store, func(m *mountedFS) error {
				var err error
				v, err = cr.hold(m, lists[n], 0, openFileReread)
				return err
			})
			cr.point("openfiles", c, float64(n), v, err)
		}
	}
	return nil
}

// hold runs a holdopen client per list, one after the other, each
// holding its files while the next opens; with all of them holding, it
// samples the daemon; then it lets them close and exit. A client that
// could not open all its files ends the point there: the error says
// after how many.
//
// With reread 0 or more, it then has every client read 4 KiB of each file
// it holds at reread (beyond the kernel's readahead of the first read, so
// that each is a READ the daemon serves), one client after the other, and
// samples the daemon again (its values named reread_*).
func (cr *curveRun) hold(m *mountedFS, lists []string, offset, reread int64) (map[string]float64, error) {
	if err := syncAll(cr.ctx); err != nil {
		return nil, err
	}
	v := map[string]float64{}
	if st := daemonSample(m); st != nil {
		v["rss_mib_mounted"] = st["rss_mib"]
	}
	var clients []*holder
	defer func() {
		for _, h := range clients {
			h.release()
		}
	}()
	var opened int
	var sum, p50, p99, maxUs float64
	var ferr error
	for _, l := range lists {
		h, res, err := startHolder(cr.ctx, cr.s, m.dir, l, offset, reread)
		if h != nil {
			clients = append(clients, h)
		}
		if err != nil {
			ferr = err
			break
		}
		opened += res.Opened
		sum += res.MeanUs * float64(res.Opened)
		p50 += res.P50Us * float64(res.Opened) // a client's median, weighted
		if res.P99Us > p99 {
			p99 = res.P99Us
		}
		if res.MaxUs > maxUs {
			maxUs = res.MaxUs
		}
		if res.Error != "" {
			ferr = fmt.Errorf("after %d files open in all: %s", opened, res.Error)
			break
		}
	}
	v["opened"] = float64(opened)
	if opened > 0 {
		v["open_read_us"] = sum / float64(opened)
		v["open_read_p50_us"] = p50 / float64(opened)
		v["open_read_p99_us"] = p99
		v["open_read_max_us"] = maxUs
	}
	if st := daemonSample(m); st != nil {
		for k, x := range st {
			v[k] = x
		}
	}
	if ferr != nil || reread < 0 {
		return v, ferr
	}
	var n int
	sum, p99 = 0, 0
	for _, h := range clients {
		if _, err := io.WriteString(h.stdin, "reread\n"); err != nil {
			return v, fmt.Errorf("holdopen %s: %v", filepath.Base(h.list), err)
		}
		res, err := h.answer(cr.ctx, h.stderr)
		if err != nil {
			return v, err
		}
		n += res.Opened
		sum += res.MeanUs * float64(res.Opened)
		if res.P99Us > p99 {
			p99 = res.P99Us
		}
		if res.Error != "" {
			return v, fmt.Errorf("reread: %s", res.Error)
		}
	}
	if n > 0 {
		v["reread_us"] = sum / float64(n)
		v["reread_p99_us"] = p99
	}
	if st := daemonSample(m); st != nil {
		for k, x := range st {
			v["reread_"+k] = x
		}
	}
	return v, nil
}

// holder is a running holdopen client.
type holder struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	lines chan string // its stdout, a line at a time; closed at its end
	done  chan error
	list  string
	// stderr is what it has written to its stderr so far.
	stderr func() string
}

// answer waits for the client's next line and decodes it.
func (h *holder) answer(ctx context.Context, stderr func() string) (holdResult, error) {
	var res holdResult
	select {
	case l, ok := <-h.lines:
		if !ok {
			return res, fmt.Errorf("holdopen %s: no answer: %s", filepath.Base(h.list), firstLines(stderr(), 3))
		}
		if err := json.Unmarshal([]byte(l), &res); err != nil {
			return res, fmt.Errorf("holdopen %s: %q: %v", filepath.Base(h.list), l, err)
		}
		return res, nil
	case <-ctx.Done():
		return res, ctx.Err()
	case <-time.After(10 * time.Minute):
		return res, fmt.Errorf("holdopen %s: no answer in 10 minutes", filepath.Base(h.list))
	}
}

// startHolder starts a holdopen client on list and waits for its line.
func startHolder(ctx context.Context, s settings, dir, list string, offset, reread int64) (*holder, holdResult, error) {
	var res holdResult
	cmd := exec.Command(s.self, "-worker", "holdopen", "-dir", dir, "-list", list,
		"-offset", strconv.FormatInt(offset, 10), "-reread", strconv.FormatInt(reread, 10))
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	var stderr strings.Builder
	var mu sync.Mutex
	cmd.Stderr = writerFunc(func(b []byte) (int, error) {
		mu.Lock()
		defer mu.Unlock()
		return stderr.Write(b)
	})
	errText := func() string {
		mu.Lock()
		defer mu.Unlock()
		return stderr.String()
	}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, res, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, res, err
	}
	if err := cmd.Start(); err != nil {
		return nil, res, err
	}
	h := &holder{cmd: cmd, stdin: stdin, lines: make(chan string, 4), done: make(chan error, 1), list: list}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			h.lines <- sc.Text()
		}
		close(h.lines)
		h.done <- cmd.Wait()
	}()
	res, err = h.answer(ctx, errText)
	if err != nil {
		h.release()
		return nil, res, err
	}
	h.stderr = errText
	return h, res, nil
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(b []byte) (int, error) { return f(b) }

// release lets the client close its files and exit (it is killed, by its
// process group, if it has not within two minutes). Safe to call twice.
func (h *holder) release() {
	if h == nil || h.cmd == nil {
		return
	}
	_ = h.stdin.Close()
	go func() {
		for range h.lines { // what it says on its way out
		}
	}()
	select {
	case <-h.done:
	case <-time.After(2 * time.Minute):
		_ = syscall.Kill(-h.cmd.Process.Pid, syscall.SIGKILL)
		<-h.done
	}
	h.cmd = nil
}

// daemonSample reads the daemon's memory and descriptors and mappings from
// /proc, and for mmapfs some figures of its stats file; nil for native.
func daemonSample(m *mountedFS) map[string]float64 {
	pid := m.pid()
	if pid == 0 {
		return nil
	}
	v := map[string]float64{}
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid)); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			f := strings.Fields(l)
			if len(f) < 2 {
				continue
			}
			x, err := strconv.ParseFloat(f[1], 64)
			if err != nil {
				continue
			}
			switch f[0] {
			case "VmRSS:":
				v["rss_mib"] = x / 1024
			case "VmHWM:":
				v["hwm_mib"] = x / 1024
			case "RssAnon:": // the daemon's own memory: heap, stacks
				v["rss_anon_mib"] = x / 1024
			case "RssFile:": // page cache it maps: the blobs' pages, its binary
				v["rss_file_mib"] = x / 1024
			case "Threads:":
				v["threads"] = x
			}
		}
	}
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", pid)); err == nil {
		v["maps"] = float64(strings.Count(string(b), "\n"))
	}
	if ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid)); err == nil {
		v["fds"] = float64(len(ents))
	}
	if isMmapfsKind(m.cfg.Kind) {
		if b, err := os.ReadFile(filepath.Join(m.mnt, ".mmapfs-stats")); err == nil {
			var st map[string]any
			if json.Unmarshal(b, &st) == nil {
				for _, k := range []string{"mappings", "mapped_bytes", "resident_bytes", "open_blobs", "resident_blobs", "evictions", "reopens", "heap_alloc_bytes"} {
					if x, ok := st[k].(float64); ok {
						v["mmapfs_"+k] = x
					}
				}
			}
		}
	}
	return v
}

// layOut writes path with size bytes of data (not zeros, not sparse: a
// read has to come from the disk once it is out of the page cache) and
// syncs it.
func layOut(path string, size int64) error {
	if st, err := os.Stat(path); err == nil && st.Size() == size {
		return nil
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	buf := make([]byte, 1<<20)
	for i := range buf {
		buf[i] = byte(i*7 + i>>9)
	}
	for off := int64(0); off < size; off += int64(len(buf)) {
		b := buf
		if size-off < int64(len(b)) {
			b = b[:size-off]
		}
		binary.LittleEndian.PutUint64(b, uint64(off))
		if _, err := f.Write(b); err != nil {
			f.Close()
			return fmt.Errorf("laying out %s: %w", path, err)
		}
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("laying out %s: fsync: %w", path, err)
	}
	return f.Close()
}

// dropFile writes back and drops path's pages from the page cache
// (posix_fadvise POSIX_FADV_DONTNEED; pages someone maps stay) and
// returns the fraction still cached.
func dropFile(path string) (float64, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, err
	}
	err = unix.Fdatasync(fd)
	if err == nil {
		err = unix.Fadvise(fd, 0, 0, unix.FADV_DONTNEED)
	}
	unix.Close(fd)
	if err != nil {
		return 0, fmt.Errorf("dropping %s from the page cache: %w", path, err)
	}
	return residentFraction(path)
}

// residentFraction is the fraction of path's pages in the page cache
// (cachestat(2), Linux 6.5).
func residentFraction(path string) (float64, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, err
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return 0, err
	}
	if st.Size == 0 {
		return 0, nil
	}
	var cs unix.Cachestat_t
	if err := unix.Cachestat(uint(fd), &unix.CachestatRange{Off: 0, Len: uint64(st.Size)}, &cs, 0); err != nil {
		return 0, fmt.Errorf("cachestat %s: %w", path, err)
	}
	pg := uint64(os.Getpagesize())
	return float64(cs.Cache) / float64((uint64(st.Size)+pg-1)/pg), nil
}

// fillDir makes dir with the n files curveFileName(0..n-1), empty or with
// content(i), if it does not hold them already.
func fillDir(dir string, n int, content func(i int) []byte) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for i := 0; i < n; i++ {
		p := filepath.Join(dir, curveFileName(i))
		fd, err := unix.Open(p, unix.O_CREAT|unix.O_WRONLY|unix.O_TRUNC|unix.O_CLOEXEC, 0o644)
		if err != nil {
			return fmt.Errorf("create %s: %w", p, err)
		}
		if content != nil {
			if _, err := unix.Write(fd, content(i)); err != nil {
				unix.Close(fd)
				return fmt.Errorf("write %s: %w", p, err)
			}
		}
		if err := unix.Close(fd); err != nil {
			return fmt.Errorf("close %s: %w", p, err)
		}
	}
	return nil
}

// The files of the files-held-open curve are heldFileSize bytes, with
// their second 4 KiB of data at openFileReread: past the kernel's first
// readahead on the mount (16 KiB for a 4 KiB read at 0), so that reading
// there is a READ request. They are small: under --madvise sequential or
// hugepage (and on the defaults before the daemon read in only what a
// READ asks) the daemon's first fault on a blob's mapping reads around it
// up to the store device's read_ahead_kb (8 MiB here), the whole of a
// small file, and 70,000 files of 1 MiB would fill the page cache (holes
// read as zero pages) several times.
const (
	heldFileSize   = 64 << 10
	openFileReread = 32 << 10
)

// heldFile makes path a sparse heldFileSize file with 4 KiB of data at 0
// and at openFileReread.
func heldFile(path string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	b := make([]byte, 4096)
	copy(b, filepath.Base(path)+"\n")
	for _, off := range []int64{0, openFileReread} {
		if _, err := f.WriteAt(b, off); err != nil {
			f.Close()
			return fmt.Errorf("write %s: %w", path, err)
		}
	}
	if err := f.Truncate(heldFileSize); err != nil {
		f.Close()
		return fmt.Errorf("truncate %s: %w", path, err)
	}
	return f.Close()
}

// midOffset is where the data of a sparseFile of size is: its middle page.
func midOffset(size int64) int64 { return (size / 2) &^ 4095 }

// sparseFile makes path a sparse file of size bytes holding data only in
// 4 KiB at midOffset(size).
func sparseFile(path string, size int64) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	b := make([]byte, 4096)
	copy(b, fmt.Sprintf("%s: 4 KiB at %d of %d\n", filepath.Base(path), midOffset(size), size))
	if err := f.Truncate(size); err != nil {
		f.Close()
		return fmt.Errorf("truncate %s to %d: %w", path, size, err)
	}
	if _, err := f.WriteAt(b, midOffset(size)); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	return f.Close()
}

func fmtSizes(s []int64) string {
	var o []string
	for _, x := range s {
		o = append(o, fmtBytes(float64(x)))
	}
	return "[" + strings.Join(o, " ") + "]"
}

func fmtBytes(x float64) string {
	switch {
	case x >= 1<<30:
		return fmt.Sprintf("%g GiB", x/(1<<30))
	case x >= 1<<20:
		return fmt.Sprintf("%g MiB", x/(1<<20))
	case x >= 1<<10:
		return fmt.Sprintf("%g KiB", x/(1<<10))
	}
	return fmt.Sprintf("%g B", x)
}
