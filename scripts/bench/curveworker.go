package main

// The workers of the scaling curves (curves.go), each run as its own
// process on the filesystem under test (-worker NAME), like worker.go's.

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math/rand"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// curveWorker runs the curve worker name with the worker's flags, or says
// it is not one (false).
func curveWorker(name string, args []string) (workerResult, bool, error) {
	fl := flag.NewFlagSet("worker "+name, flag.ExitOnError)
	_ = fl.String("worker", "", "workload")
	dir := fl.String("dir", "", "directory to work in")
	n := fl.Int("n", 0, "files")
	k := fl.Int("k", 0, "dirops: operations of each kind")
	threads := fl.Int("threads", 1, "cs-threads: client threads")
	size := fl.Int64("size", 0, "cs-threads: bytes written to each file")
	list := fl.String("list", "", "holdopen: file naming the files to open, one relative name a line")
	offset := fl.Int64("offset", 0, "holdopen: where the first read of each file starts")
	reread := fl.Int64("reread", -1, "holdopen: where the read of each file on a \"reread\" line starts")
	switch name {
	case "cs-threads", "dirops", "holdopen":
	default:
		return workerResult{}, false, nil
	}
	_ = fl.Parse(args)
	var res workerResult
	var err error
	switch name {
	case "cs-threads":
		res, err = createStatThreads(*dir, *threads, *n, *size)
	case "dirops":
		res, err = dirOps(*dir, *n, *k)
	case "holdopen":
		err = holdOpen(*dir, *list, *offset, *reread, os.Stdin, os.Stdout)
	}
	return res, true, err
}

// createStatThreads runs threads OS threads, each creating (with size
// bytes written), stating and unlinking n files in a directory of its own
// (cs.T), all started together; the figure is the 3·threads·n operations
// over the time from the start to the last thread's end.
func createStatThreads(dir string, threads, n int, size int64) (workerResult, error) {
	data := make([]byte, size)
	start := make(chan struct{})
	errs := make([]error, threads)
	var ready, done sync.WaitGroup
	for t := 0; t < threads; t++ {
		d := filepath.Join(dir, fmt.Sprintf("cs.%d", t))
		if err := os.Mkdir(d, 0o755); err != nil {
			return workerResult{}, err
		}
		ready.Add(1)
		done.Add(1)
		go func(t int, d string) {
			defer done.Done()
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			names := make([]string, n)
			for i := range names {
				names[i] = filepath.Join(d, fmt.Sprintf("f%06d", i))
			}
			ready.Done()
			<-start
			errs[t] = createStatUnlink(names, data)
		}(t, d)
	}
	ready.Wait()
	t0 := time.Now()
	close(start)
	done.Wait()
	el := time.Since(t0).Seconds()
	for t, err := range errs {
		if err != nil {
			return workerResult{}, fmt.Errorf("thread %d: %w", t, err)
		}
		_ = os.Remove(filepath.Join(dir, fmt.Sprintf("cs.%d", t)))
	}
	ops := float64(3 * threads * n)
	return workerResult{Value: ops / el, Unit: "ops/s", Extra: map[string]float64{"seconds": el, "us_per_op_per_thread": el * 1e6 * float64(threads) / ops}}, nil
}

func createStatUnlink(names []string, data []byte) error {
	for _, p := range names {
		fd, err := unix.Open(p, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_CLOEXEC, 0o644)
		if err != nil {
			return fmt.Errorf("create %s: %w", p, err)
		}
		if len(data) > 0 {
			if _, err := unix.Write(fd, data); err != nil {
				unix.Close(fd)
				return fmt.Errorf("write %s: %w", p, err)
			}
		}
		if err := unix.Close(fd); err != nil {
			return fmt.Errorf("close %s: %w", p, err)
		}
	}
	var st unix.Stat_t
	for _, p := range names {
		if err := unix.Stat(p, &st); err != nil {
			return fmt.Errorf("stat %s: %w", p, err)
		}
		if st.Size != int64(len(data)) {
			return fmt.Errorf("stat %s: size %d, want %d", p, st.Size, len(data))
		}
	}
	for _, p := range names {
		if err := unix.Unlink(p); err != nil {
			return fmt.Errorf("unlink %s: %w", p, err)
		}
	}
	return nil
}

// curveFileName is the name of file i of a directory filled by fillDir.
func curveFileName(i int) string { return fmt.Sprintf("f%06d", i) }

// dirOps measures, in dir holding the n files curveFileName(0..n-1): k
// creates of new empty files (open O_CREAT|O_EXCL, close), k stats of
// distinct existing files in a random order (on a fresh mount each is a
// LOOKUP), one whole readdir (getdents64 with glibc's 32 KiB buffer), and
// the unlinks of the k new files, which leaves dir as it was. Figures in
// µs per operation (per entry for readdir, and the whole readdir in ms).
func dirOps(dir string, n, k int) (workerResult, error) {
	if k > n {
		k = n
	}
	news := make([]string, k)
	for i := range news {
		news[i] = filepath.Join(dir, fmt.Sprintf("new%06d", i))
	}
	rnd := rand.New(rand.NewSource(int64(n)))
	perm := rnd.Perm(n)[:k]
	olds := make([]string, k)
	for i, j := range perm {
		olds[i] = filepath.Join(dir, curveFileName(j))
	}
	us := func(d time.Duration, ops int) float64 { return d.Seconds() * 1e6 / float64(ops) }
	t0 := time.Now()
	for _, p := range news {
		fd, err := unix.Open(p, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_CLOEXEC, 0o644)
		if err != nil {
			return workerResult{}, fmt.Errorf("create %s: %w", p, err)
		}
		if err := unix.Close(fd); err != nil {
			return workerResult{}, fmt.Errorf("close %s: %w", p, err)
		}
	}
	t1 := time.Now()
	var st unix.Stat_t
	for _, p := range olds {
		if err := unix.Stat(p, &st); err != nil {
			return workerResult{}, fmt.Errorf("stat %s: %w", p, err)
		}
	}
	t2 := time.Now()
	entries, err := readdirCount(dir)
	if err != nil {
		return workerResult{}, err
	}
	t3 := time.Now()
	if want := n + k; entries != want {
		return workerResult{}, fmt.Errorf("readdir %s: %d entries besides . and .., want %d (%d files, %d new)", dir, entries, want, n, k)
	}
	for _, p := range news {
		if err := unix.Unlink(p); err != nil {
			return workerResult{}, fmt.Errorf("unlink %s: %w", p, err)
		}
	}
	t4 := time.Now()
	return workerResult{Value: us(t1.Sub(t0), k), Unit: "µs/create", Extra: map[string]float64{
		"create_us":            us(t1.Sub(t0), k),
		"stat_us":              us(t2.Sub(t1), k),
		"readdir_us_per_entry": us(t3.Sub(t2), entries),
		"readdir_ms":           t3.Sub(t2).Seconds() * 1e3,
		"unlink_us":            us(t4.Sub(t3), k),
	}}, nil
}

// readdirCount reads dir to its end with getdents64 and counts the
// entries other than . and ..
func readdirCount(dir string) (int, error) {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, fmt.Errorf("opendir %s: %w", dir, err)
	}
	defer unix.Close(fd)
	buf := make([]byte, 32<<10)
	var names []string
	count := 0
	for {
		nb, err := unix.Getdents(fd, buf)
		if err != nil {
			return 0, fmt.Errorf("getdents %s: %w", dir, err)
		}
		if nb == 0 {
			return count, nil
		}
		var c int
		_, c, names = unix.ParseDirent(buf[:nb], -1, names[:0]) // without . and ..
		count += c
	}
}

// holdResult is what holdopen prints once it holds its files.
type holdResult struct {
	Opened int     `json:"opened"`
	Want   int     `json:"want"`
	Error  string  `json:"error,omitempty"`
	MeanUs float64 `json:"mean_us"`
	P50Us  float64 `json:"p50_us"`
	P99Us  float64 `json:"p99_us"`
	MaxUs  float64 `json:"max_us"`
}

// holdOpen opens (read-only) each file the list names under dir, reads
// 4 KiB of it at offset, and times each open+read; then it prints a
// holdResult as one JSON line, and holds the files open until its stdin
// ends, then closes them. It stops at the first failed open or read and
// says so in the result (the bench wants to know where a filesystem gives
// up). On each line "reread" on stdin it reads 4 KiB of every file it
// holds at reread, timing each, and prints a holdResult of that.
func holdOpen(dir, list string, offset, reread int64, in io.Reader, out io.Writer) error {
	b, err := os.ReadFile(list)
	if err != nil {
		return err
	}
	names := strings.Fields(string(b))
	fds := make([]int, 0, len(names))
	lat := make([]float64, 0, len(names))
	res := holdResult{Want: len(names)}
	buf := make([]byte, 4096)
	for _, name := range names {
		p := filepath.Join(dir, name)
		t0 := time.Now()
		fd, err := unix.Open(p, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			res.Error = fmt.Sprintf("open %s after %d open: %v", name, len(fds), err)
			break
		}
		fds = append(fds, fd)
		if _, err := unix.Pread(fd, buf, offset); err != nil {
			res.Error = fmt.Sprintf("read %s after %d open: %v", name, len(fds)-1, err)
			break
		}
		lat = append(lat, time.Since(t0).Seconds()*1e6)
	}
	res.Opened = len(fds)
	res.latencies(lat)
	if err := say(out, res); err != nil {
		return err
	}
	defer func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	}()
	sc := bufio.NewScanner(in)
	for sc.Scan() {
		if sc.Text() != "reread" || reread < 0 {
			continue
		}
		r := holdResult{Want: len(fds)}
		lat = lat[:0]
		for i, fd := range fds {
			t0 := time.Now()
			if _, err := unix.Pread(fd, buf, reread); err != nil {
				r.Error = fmt.Sprintf("reread %s: %v", names[i], err)
				break
			}
			lat = append(lat, time.Since(t0).Seconds()*1e6)
		}
		r.Opened = len(lat)
		r.latencies(lat)
		if err := say(out, r); err != nil {
			return err
		}
	}
	return nil
}

// latencies sets the mean and percentiles of r from lat (sorting it).
func (r *holdResult) latencies(lat []float64) {
	if len(lat) == 0 {
		return
	}
	sum := 0.0
	for _, v := range lat {
		sum += v
	}
	r.MeanUs = sum / float64(len(lat))
	sort.Float64s(lat)
	r.P50Us = lat[len(lat)/2]
	r.P99Us = lat[len(lat)*99/100]
	r.MaxUs = lat[len(lat)-1]
}

// say prints r as one JSON line.
func say(out io.Writer, r holdResult) error {
	line, _ := json.Marshal(r)
	_, err := fmt.Fprintf(out, "%s\n", line)
	return err
}
