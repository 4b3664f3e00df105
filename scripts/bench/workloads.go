package main

// The workloads, and running one of them once on a mounted filesystem.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"
)

type workload struct {
	Name  string
	Title string
	Unit  string
	// Target is issue 5's acceptance bar for mmapfs (ratio to native); 0: none.
	Target float64
	Kind   string // "fio" or "go"
}

// workloads in the order they run on each mount. The read workloads share
// the files read.0 and read.1, laid out (and read once) before the first.
var workloads = []workload{
	{"seqwrite", "seq write 1 MiB", "MiB/s", 0.50, "fio"},
	{"randwrite", "random write 4 KiB", "IOPS", 0, "fio"},
	{"mmap-randwrite", "mmap random write 4 KiB", "IOPS", 0.50, "fio"},
	{"fsync-write", "4 KiB write + fsync", "IOPS", 0, "fio"},
	{"seqread-warm", "seq read 1 MiB, warm", "MiB/s", 0.90, "fio"},
	{"randread-1", "random read 4 KiB, 1 job", "IOPS", 0.80, "fio"},
	{"randread-2", "random read 4 KiB, 2 jobs", "IOPS", 0, "fio"},
	{"mmap-randread", "mmap random read 4 KiB", "IOPS", 0.90, "fio"},
	{"randread-daemon", "random read 4 KiB, served by the daemon, 1 job", "IOPS", 0, "fio"},
	{"seqread-cold", "seq read 1 MiB, cold", "MiB/s", 0, "fio"},
	{"createstat", "create+stat+unlink", "ops/s", 0.20, "go"},
	{"logger-pwrite", "512 B pwrite logger", "MiB/s", 0.80, "go"},
	{"logger-mmap", "512 B mmap logger", "MiB/s", 0.95, "go"},
}

// issueLoopback is issue 5's figure for go-fuse loopback without
// passthrough (ratio to native), for reference.
var issueLoopback = map[string]float64{
	"seqwrite": 0.15, "seqread-warm": 0.46, "randread-1": 0.21, "mmap-randread": 0.35,
	"mmap-randwrite": 0.02, "createstat": 0.08, "logger-pwrite": 0.008, "logger-mmap": 1.0,
}

func workloadByName(n string) (workload, bool) {
	for _, w := range workloads {
		if w.Name == n {
			return w, true
		}
	}
	return workload{}, false
}

type settings struct {
	size       int64         // bytes per fio job file
	runtime    time.Duration // per time-based fio job
	files      int           // createstat files
	fileBytes  int64         // createstat bytes per file
	records    int           // logger records
	recordSize int64
	region     int64
	self       string // the bench binary, for workers
	fio        string
}

// runOnce runs w once in m.dir and returns its figure, and extra figures.
func runOnce(ctx context.Context, s settings, m *mountedFS, w workload) (float64, map[string]float64, error) {
	if err := syncAll(ctx); err != nil {
		return 0, nil, err
	}
	dir := m.dir
	switch w.Name {
	case "createstat":
		return runWorker(ctx, s, "createstat", dir, "-n", strconv.Itoa(s.files), "-size", strconv.FormatInt(s.fileBytes, 10))
	case "logger-pwrite", "logger-mmap":
		defer os.Remove(filepath.Join(dir, "logger"))
		return runWorker(ctx, s, w.Name, dir, "-n", strconv.Itoa(s.records), "-size", strconv.FormatInt(s.recordSize, 10), "-region", strconv.FormatInt(s.region, 10),
			"-seconds", strconv.FormatFloat(s.runtime.Seconds(), 'g', -1, 64))
	}
	rt := strconv.FormatInt(s.runtime.Milliseconds(), 10) + "ms"
	size := strconv.FormatInt(s.size, 10)
	args := []string{"--output-format=json", "--group_reporting", "--directory=" + dir, "--name=" + w.Name, "--ioengine=psync", "--size=" + size}
	timed := []string{"--time_based", "--runtime=" + rt}
	var write string // the file a write workload leaves, removed after
	switch w.Name {
	case "seqwrite":
		write = "seqw.0"
		args = append(args, "--rw=write", "--bs=1M", "--invalidate=0", "--filename_format=seqw.$jobnum")
		args = append(args, timed...)
	case "randwrite":
		// Into a file laid out (written, then read) by the prep worker, like
		// the read files: fio's own layout leaves it out of the page cache,
		// and every first write to a page would then wait for the disk.
		if _, _, err := runWorker(ctx, s, "prep", dir, "-prefix", "rw", "-size", size); err != nil {
			return 0, nil, fmt.Errorf("laying out rw.0: %v", err)
		}
		if err := syncAll(ctx); err != nil {
			return 0, nil, err
		}
		write = "rw.0"
		args = append(args, "--rw=randwrite", "--bs=4k", "--norandommap", "--randrepeat=0", "--invalidate=0", "--filename_format=rw.$jobnum")
		args = append(args, timed...)
	case "mmap-randwrite":
		if _, _, err := runWorker(ctx, s, "prep", dir, "-prefix", "mrw", "-size", size); err != nil {
			return 0, nil, fmt.Errorf("laying out mrw.0: %v", err)
		}
		if err := syncAll(ctx); err != nil {
			return 0, nil, err
		}
		write = "mrw.0"
		args = append(args, "--ioengine=mmap", "--rw=randwrite", "--bs=4k", "--norandommap", "--randrepeat=0", "--invalidate=0", "--filename_format=mrw.$jobnum")
		args = append(args, timed...)
	case "fsync-write":
		write = "fsync.0"
		fs := s.size
		if fs > 64<<20 {
			fs = 64 << 20
		}
		args = append(args, "--size="+strconv.FormatInt(fs, 10), "--rw=write", "--bs=4k", "--fsync=1", "--invalidate=0", "--filename_format=fsync.$jobnum")
		args = append(args, timed...)
	case "seqread-warm":
		args = append(args, "--rw=read", "--bs=1M", "--invalidate=0", "--filename_format=read.$jobnum")
		args = append(args, timed...)
	case "randread-1", "randread-2":
		jobs := "1"
		if w.Name == "randread-2" {
			jobs = "2"
		}
		args = append(args, "--rw=randread", "--bs=4k", "--invalidate=0", "--norandommap", "--randrepeat=0", "--numjobs="+jobs, "--filename_format=read.$jobnum")
		args = append(args, timed...)
	case "mmap-randread":
		args = append(args, "--ioengine=mmap", "--rw=randread", "--bs=4k", "--invalidate=0", "--norandommap", "--randrepeat=0", "--filename_format=read.$jobnum")
		args = append(args, timed...)
	case "randread-daemon":
		args = append(args, daemonReadArgs(m.cfg.Kind, rt)...)
	case "seqread-cold":
		if err := dropCaches(ctx); err != nil {
			return 0, nil, err
		}
		args = append(args, "--rw=read", "--bs=1M", "--filename_format=read.$jobnum")
	default:
		return 0, nil, fmt.Errorf("unknown workload %s", w.Name)
	}
	if write != "" {
		defer os.Remove(filepath.Join(dir, write))
	}
	limit := s.runtime + 3*time.Minute
	out, err := runCmd(ctx, limit, s.fio, args...)
	if err != nil {
		return 0, nil, err
	}
	return parseFio(out, w)
}

type fioOut struct {
	Jobs []struct {
		Error int        `json:"error"`
		Read  fioDirStat `json:"read"`
		Write fioDirStat `json:"write"`
		Sync  struct {
			LatNs struct {
				Mean float64 `json:"mean"`
			} `json:"lat_ns"`
		} `json:"sync"`
	} `json:"jobs"`
}

type fioDirStat struct {
	BwBytes  float64 `json:"bw_bytes"`
	IOPS     float64 `json:"iops"`
	TotalIOs float64 `json:"total_ios"`
	LatNs    struct {
		Mean float64 `json:"mean"`
	} `json:"lat_ns"`
}

func parseFio(out []byte, w workload) (float64, map[string]float64, error) {
	// fio may print notes before the JSON.
	if i := bytes.IndexByte(out, '{'); i > 0 {
		out = out[i:]
	}
	var fo fioOut
	if err := json.Unmarshal(out, &fo); err != nil {
		return 0, nil, fmt.Errorf("fio output: %v", err)
	}
	if len(fo.Jobs) == 0 {
		return 0, nil, fmt.Errorf("fio output: no jobs")
	}
	j := fo.Jobs[0]
	if j.Error != 0 {
		return 0, nil, fmt.Errorf("fio: job error %d", j.Error)
	}
	st := j.Read
	if j.Write.IOPS > 0 {
		st = j.Write
	}
	extra := map[string]float64{"lat_mean_us": st.LatNs.Mean / 1000, "ios": st.TotalIOs}
	if j.Sync.LatNs.Mean > 0 {
		extra["fsync_lat_mean_us"] = j.Sync.LatNs.Mean / 1000
	}
	switch w.Unit {
	case "MiB/s":
		extra["iops"] = st.IOPS
		return st.BwBytes / (1 << 20), extra, nil
	default:
		extra["mib_s"] = st.BwBytes / (1 << 20)
		return st.IOPS, extra, nil
	}
}

// daemonReadArgs are fio's arguments of randread-daemon on a filesystem
// of kind k: 4 KiB random reads of read.0, 1 job, each one a READ the
// daemon serves from the store's page cache. On a FUSE mount the mount's
// cached pages of the file are dropped first (--invalidate=1:
// POSIX_FADV_DONTNEED on the mount's file, which leaves the store's
// pages, warm since the layout, where they are), and the job reads each
// 4 KiB block once, in random order (fio's random map), until the end of
// the file or the runtime: no read finds a page an earlier one brought
// into the mount's cache, and fio's POSIX_FADV_RANDOM keeps the kernel
// from reading ahead, so every read is one READ of 4 KiB. That is the
// page cache dropped for the mount rather than --direct-io, so that one
// job runs unchanged on every FUSE filesystem: the loopbacks have no
// --direct-io, and a client's O_DIRECT would make the loopback read
// the store with O_DIRECT, from the disk. On native, which has no daemon,
// the job is randread-1's (time based, the page cache kept): the limit,
// a 4 KiB copy from the page cache, which is what each READ costs the
// daemon before the round trip.
func daemonReadArgs(k, rt string) []string {
	if k == kNative {
		return []string{"--rw=randread", "--bs=4k", "--invalidate=0", "--norandommap", "--randrepeat=0", "--numjobs=1", "--filename_format=read.$jobnum",
			"--time_based", "--runtime=" + rt}
	}
	return []string{"--rw=randread", "--bs=4k", "--invalidate=1", "--randrepeat=0", "--numjobs=1", "--filename_format=read.$jobnum", "--runtime=" + rt}
}

func runWorker(ctx context.Context, s settings, name, dir string, args ...string) (float64, map[string]float64, error) {
	a := append([]string{"-worker", name, "-dir", dir}, args...)
	out, err := runCmd(ctx, 5*time.Minute, s.self, a...)
	if err != nil {
		return 0, nil, err
	}
	var r workerResult
	if err := json.Unmarshal(out, &r); err != nil {
		return 0, nil, fmt.Errorf("worker output %q: %v", out, err)
	}
	return r.Value, r.Extra, nil
}

// runCmd runs a client in its own process group, killed (the group, by its
// PID) when ctx ends or limit passes.
func runCmd(ctx context.Context, limit time.Duration, bin string, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	cmd := exec.Command(bin, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			return nil, fmt.Errorf("%s: %v: %s", filepath.Base(bin), err, firstLines(stderr.String()+stdout.String(), 5))
		}
		return stdout.Bytes(), nil
	case <-ctx.Done():
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		select {
		case <-done:
		case <-time.After(30 * time.Second):
		}
		return nil, fmt.Errorf("%s: %v (killed)", filepath.Base(bin), ctx.Err())
	}
}

func firstLines(s string, n int) string {
	lines := bytes.SplitN([]byte(s), []byte("\n"), n+1)
	if len(lines) > n {
		lines = lines[:n]
	}
	return string(bytes.Join(lines, []byte(" | ")))
}

func syncAll(ctx context.Context) error {
	_, err := runCmd(ctx, 5*time.Minute, "sync")
	return err
}

func dropCaches(ctx context.Context) error {
	if err := syncAll(ctx); err != nil {
		return err
	}
	return os.WriteFile("/proc/sys/vm/drop_caches", []byte("3\n"), 0)
}
