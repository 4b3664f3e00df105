package main

// The Go workloads. Each runs in its own process (the bench binary re-executed
// with -worker NAME), so that a client stuck on a mount can be killed by its
// PID and the bench itself never touches a mount's data.

import (
	"encoding/binary"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// workerResult is what a worker prints on stdout, as JSON.
type workerResult struct {
	Value float64            `json:"value"`
	Unit  string             `json:"unit"`
	Extra map[string]float64 `json:"extra,omitempty"`
}

func workerMain(args []string) {
	if res, ok, err := curveWorker(args[1], args); ok {
		if err != nil {
			fmt.Fprintf(os.Stderr, "worker %s: %v\n", args[1], err)
			os.Exit(1)
		}
		if args[1] != "holdopen" { // it has said what it had to
			_ = json.NewEncoder(os.Stdout).Encode(res)
		}
		os.Exit(0)
	}
	fl := flag.NewFlagSet("worker", flag.ExitOnError)
	name := fl.String("worker", "", "workload")
	dir := fl.String("dir", "", "directory to work in")
	n := fl.Int("n", 0, "files or records")
	size := fl.Int64("size", 0, "bytes per file (prep, createstat) or per record (logger)")
	region := fl.Int64("region", 150*1024, "logger region in bytes")
	files := fl.Int("files", 1, "prep: files to lay out")
	prefix := fl.String("prefix", "read", "prep: the files are PREFIX.0, PREFIX.1, ...")
	seconds := fl.Float64("seconds", 0, "logger: stop after this long if the records are not all written (0: no limit)")
	_ = fl.Parse(args)
	var res workerResult
	var err error
	switch *name {
	case "prep":
		res, err = prep(*dir, *prefix, *files, *size)
	case "createstat":
		res, err = createStat(*dir, *n, *size)
	case "logger-pwrite":
		res, err = loggerPwrite(*dir, *n, *size, *region, secondsDur(*seconds))
	case "logger-mmap":
		res, err = loggerMmap(*dir, *n, *size, *region, secondsDur(*seconds))
	default:
		err = fmt.Errorf("unknown worker %q", *name)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "worker %s: %v\n", *name, err)
		os.Exit(1)
	}
	_ = json.NewEncoder(os.Stdout).Encode(res)
	os.Exit(0)
}

// prep lays out PREFIX.0 .. PREFIX.(files-1) of size bytes each (the files
// of the read and random write workloads, named as fio's filename_format
// PREFIX.$jobnum) and
// reads them once, so that the page cache is warm.
func prep(dir, prefix string, files int, size int64) (workerResult, error) {
	buf := make([]byte, 1<<20)
	for i := range buf {
		buf[i] = byte(i*7 + i>>9)
	}
	start := time.Now()
	for j := 0; j < files; j++ {
		p := filepath.Join(dir, fmt.Sprintf("%s.%d", prefix, j))
		f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
		if err != nil {
			return workerResult{}, err
		}
		for off := int64(0); off < size; off += int64(len(buf)) {
			b := buf
			if size-off < int64(len(b)) {
				b = b[:size-off]
			}
			binary.LittleEndian.PutUint64(b, uint64(off))
			if _, err := f.Write(b); err != nil {
				f.Close()
				return workerResult{}, err
			}
		}
		if err := f.Close(); err != nil {
			return workerResult{}, err
		}
	}
	for j := 0; j < files; j++ {
		f, err := os.Open(filepath.Join(dir, fmt.Sprintf("%s.%d", prefix, j)))
		if err != nil {
			return workerResult{}, err
		}
		for {
			n, err := f.Read(buf)
			if n == 0 || err != nil {
				break
			}
		}
		f.Close()
	}
	return workerResult{Value: time.Since(start).Seconds(), Unit: "s"}, nil
}

// createStat creates n files of size bytes (open O_CREAT|O_EXCL, write,
// close), stats each, and unlinks each; the figure is the 3n operations
// over the whole time.
func createStat(dir string, n int, size int64) (workerResult, error) {
	d := filepath.Join(dir, "cs")
	if err := os.Mkdir(d, 0o755); err != nil {
		return workerResult{}, err
	}
	data := make([]byte, size)
	names := make([]string, n)
	for i := range names {
		names[i] = filepath.Join(d, fmt.Sprintf("f%06d", i))
	}
	t0 := time.Now()
	for _, p := range names {
		fd, err := unix.Open(p, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_CLOEXEC, 0o644)
		if err != nil {
			return workerResult{}, fmt.Errorf("create %s: %w", p, err)
		}
		if len(data) > 0 {
			if _, err := unix.Write(fd, data); err != nil {
				unix.Close(fd)
				return workerResult{}, fmt.Errorf("write %s: %w", p, err)
			}
		}
		if err := unix.Close(fd); err != nil {
			return workerResult{}, fmt.Errorf("close %s: %w", p, err)
		}
	}
	t1 := time.Now()
	var st unix.Stat_t
	for _, p := range names {
		if err := unix.Stat(p, &st); err != nil {
			return workerResult{}, fmt.Errorf("stat %s: %w", p, err)
		}
		if st.Size != size {
			return workerResult{}, fmt.Errorf("stat %s: size %d, want %d", p, st.Size, size)
		}
	}
	t2 := time.Now()
	for _, p := range names {
		if err := unix.Unlink(p); err != nil {
			return workerResult{}, fmt.Errorf("unlink %s: %w", p, err)
		}
	}
	t3 := time.Now()
	_ = os.Remove(d)
	total := t3.Sub(t0).Seconds()
	return workerResult{
		Value: float64(3*n) / total,
		Unit:  "ops/s",
		Extra: map[string]float64{
			"create_per_s": float64(n) / t1.Sub(t0).Seconds(),
			"stat_per_s":   float64(n) / t2.Sub(t1).Seconds(),
			"unlink_per_s": float64(n) / t3.Sub(t2).Seconds(),
		},
	}, nil
}

// loggerFile creates the logger's file with its region written (zeros) and
// synced, outside the timed part.
func loggerFile(dir string, region int64) (int, error) {
	p := filepath.Join(dir, "logger")
	fd, err := unix.Open(p, unix.O_CREAT|unix.O_TRUNC|unix.O_RDWR|unix.O_CLOEXEC, 0o644)
	if err != nil {
		return -1, err
	}
	if _, err := unix.Pwrite(fd, make([]byte, region), 0); err != nil {
		unix.Close(fd)
		return -1, err
	}
	if err := unix.Fsync(fd); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

func loggerResult(n int, rec int64, d time.Duration) workerResult {
	s := d.Seconds()
	return workerResult{
		Value: float64(n) * float64(rec) / s / (1 << 20),
		Unit:  "MiB/s",
		Extra: map[string]float64{"records_per_s": float64(n) / s, "seconds": s, "records": float64(n)},
	}
}

func secondsDur(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }

// loggerCheck is how many records a logger writes between looks at the
// clock.
const loggerCheck = 256

// loggerPwrite writes n records of rec bytes with pwrite, wrapping around
// a region of region bytes (no fsync: the records are in the page cache),
// or as many as it writes in limit (0: no limit); the figure is a rate.
func loggerPwrite(dir string, n int, rec, region int64, limit time.Duration) (workerResult, error) {
	fd, err := loggerFile(dir, region)
	if err != nil {
		return workerResult{}, err
	}
	defer unix.Close(fd)
	slots := region / rec
	buf := make([]byte, rec)
	start := time.Now()
	i := 0
	for ; i < n; i++ {
		if limit > 0 && i%loggerCheck == 0 && i > 0 && time.Since(start) >= limit {
			break
		}
		binary.LittleEndian.PutUint64(buf, uint64(i))
		if _, err := unix.Pwrite(fd, buf, (int64(i)%slots)*rec); err != nil {
			return workerResult{}, fmt.Errorf("pwrite record %d: %w", i, err)
		}
	}
	return loggerResult(i, rec, time.Since(start)), nil
}

// loggerMmap writes n records of rec bytes into a MAP_SHARED mapping of the
// region, wrapping around (or as many as it writes in limit; 0: no limit),
// then msync(MS_SYNC)s the region once.
func loggerMmap(dir string, n int, rec, region int64, limit time.Duration) (workerResult, error) {
	fd, err := loggerFile(dir, region)
	if err != nil {
		return workerResult{}, err
	}
	defer unix.Close(fd)
	m, err := unix.Mmap(fd, 0, int(region), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return workerResult{}, err
	}
	defer unix.Munmap(m)
	slots := region / rec
	buf := make([]byte, rec)
	start := time.Now()
	i := 0
	for ; i < n; i++ {
		if limit > 0 && i%loggerCheck == 0 && i > 0 && time.Since(start) >= limit {
			break
		}
		binary.LittleEndian.PutUint64(buf, uint64(i))
		off := (int64(i) % slots) * rec
		copy(m[off:off+rec], buf)
	}
	if err := unix.Msync(m, unix.MS_SYNC); err != nil {
		return workerResult{}, fmt.Errorf("msync: %w", err)
	}
	return loggerResult(i, rec, time.Since(start)), nil
}
