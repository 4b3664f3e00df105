package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	bolt "go.etcd.io/bbolt"
	"golang.org/x/sys/unix"

	"github.com/mmapfs/mmapfs/fs/wire"

	"github.com/mmapfs/mmapfs/internal/procstat"
)

// validWorkloads names the workloads an experiment takes, for errors.
const validWorkloads = "valid workloads: logger-pwrite[:sync=N,retry=N], logger-mmap[:sync=N,retry=N], " +
	"sqlite-wal[:synchronous=FULL|NORMAL|OFF], sqlite-rollback[:synchronous=FULL|NORMAL|OFF], " +
	"bbolt, lmdb, lmdb:writemap, fio:JOBFILE, or -- COMMAND [ARGS...] alone (with --check COMMAND)"

// What a workload's Done counts.
const (
	unitRecords = "records"
	unitRows    = "rows"
	unitBytes   = "B" // bytes written through the mount, from its stats
)

// A workload is what an experiment runs on each run's mount, and the
// check of what survived the cut.
type workload interface {
	// Name is the workload as the command line names it.
	Name() string
	// Unit is what Progress's done counts.
	Unit() string
	// Prepare checks, before the first run, what every run needs (a
	// tool on the PATH).
	Prepare() error
	// Start starts the workload on the mount mnt, which writes for d
	// (if the workload has a length of its own, it ignores d). scratch
	// is a directory of the run outside the mount.
	Start(mnt, scratch string, d time.Duration) (running, error)
	// Check judges what survived in the remounted mnt, given the run
	// (r, after Kill) and what it acknowledged.
	Check(ctx context.Context, mnt string, r running, acked int64) (checkResult, error)
}

// running is a workload under way.
type running interface {
	// Done is closed when the workload ends on its own.
	Done() <-chan struct{}
	// Freeze is the moment of the cut: the workload makes no more
	// progress, and closes nothing (a crash closes nothing). It returns
	// when the workload stopped: its end if it had ended, else the
	// moment it was stopped (not the time Freeze took after it).
	Freeze() time.Time
	// Progress is the work done and the part of it acknowledged (synced
	// records, committed rows), read after Freeze.
	Progress() (done, acked int64)
	// Kill ends what is left of the workload after the cut (processes,
	// descriptors, mappings) and returns the error it failed with before
	// the cut, if it did.
	Kill() error
}

// checkResult is a workload's verdict on what survived a cut.
type checkResult struct {
	kept      int64 // acknowledged units found again
	ackedLost int64 // acknowledged units not found
	torn      int64 // damaged records after the last intact one (loggers)
	// text is the check column's start: the acknowledged units kept of
	// those acknowledged, then the integrity check.
	text string
	ok   bool // what the workload promises held
	// promised says the workload promises its acknowledged units
	// survive (SQLite's synchronous=OFF does not).
	promised bool
	retried  int64  // failed syncs tried again (the loggers' retry=)
	retryErr string // the first of them
	// txFailed counts the failed transactions the workload went on
	// after, txFirstErr and txLastErr are the first and the last one's
	// errors, and txAfter the commits after the first.
	txFailed   int64
	txFirstErr string
	txLastErr  string
	txAfter    int64
}

// parseWorkload parses a built-in workload: NAME or NAME:PARAMS.
func parseWorkload(s string) (workload, error) {
	name, param, hasParam := strings.Cut(s, ":")
	switch name {
	case "logger-pwrite", "logger-mmap":
		l := &loggerWorkload{mmap: name == "logger-mmap", every: 16}
		err := parseParams(name, param, map[string]func(string) error{
			"sync": func(v string) error {
				n, err := strconv.Atoi(v)
				if err != nil || n < 1 {
					return fmt.Errorf("sync=%s: want a number of records, 1 or more", v)
				}
				l.every = n
				return nil
			},
			"retry": func(v string) error {
				n, err := strconv.Atoi(v)
				if err != nil || n < 0 {
					return fmt.Errorf("retry=%s: want how many times a failed sync is tried again, 0 or more", v)
				}
				l.retry = n
				return nil
			},
		})
		return l, err
	case "sqlite-wal", "sqlite-rollback":
		q := &sqliteWorkload{wal: name == "sqlite-wal", sync: "FULL"}
		err := parseParams(name, param, map[string]func(string) error{
			"synchronous": func(v string) error {
				switch u := strings.ToUpper(v); u {
				case "FULL", "NORMAL", "OFF":
					q.sync = u
					return nil
				}
				return fmt.Errorf("synchronous=%s: want FULL, NORMAL or OFF", v)
			},
		})
		return q, err
	case "bbolt":
		if hasParam {
			return nil, fmt.Errorf("workload %s: bbolt takes no parameters; %s", s, validWorkloads)
		}
		return &bboltWorkload{}, nil
	case "lmdb":
		switch {
		case !hasParam:
			return &lmdbWorkload{}, nil
		case param == "writemap":
			return &lmdbMapWorkload{}, nil
		}
		return nil, fmt.Errorf("workload %s: unknown parameter %q: lmdb takes one, writemap (lmdb:writemap: MDB_WRITEMAP, through python3-lmdb; plain lmdb is lmdb-utils' mdb_load, without it); %s", s, param, validWorkloads)
	case "fio":
		if param == "" {
			return nil, fmt.Errorf("workload %s: name the fio job file (fio:JOBFILE); %s", s, validWorkloads)
		}
		abs, err := filepath.Abs(param)
		if err != nil {
			return nil, fmt.Errorf("workload %s: %w", s, err)
		}
		st, err := os.Stat(abs)
		if err != nil {
			return nil, fmt.Errorf("workload %s: the fio job file: %w", s, err)
		}
		if !st.Mode().IsRegular() {
			return nil, fmt.Errorf("workload %s: the fio job file %s is not a regular file", s, param)
		}
		return &fioWorkload{job: abs, name: s}, nil
	}
	return nil, fmt.Errorf("unknown workload %q; %s", s, validWorkloads)
}

// parseParams applies a workload's comma-separated KEY=VALUE parameters.
func parseParams(name, params string, keys map[string]func(string) error) error {
	if params == "" {
		return nil
	}
	for _, kv := range strings.Split(params, ",") {
		k, v, ok := strings.Cut(kv, "=")
		set, known := keys[k]
		if !ok || !known {
			var valid []string
			for k := range keys {
				valid = append(valid, k+"=VALUE")
			}
			slices.Sort(valid)
			return fmt.Errorf("workload %s:%s: unknown parameter %q (%s takes %s); %s", name, params, kv, name, strings.Join(valid, ","), validWorkloads)
		}
		if err := set(v); err != nil {
			return fmt.Errorf("workload %s:%s: %w", name, params, err)
		}
	}
	return nil
}

// txLog is what a transactional workload (SQLite, bbolt, LMDB) did with
// its transactions, numbered from 1 in order: each one either committed
// (acknowledged) or failed. A failed one is reported and the workload
// goes on with the next, as an application would (the error goes to its
// caller, and the next request is a new transaction): whether the
// database lets it is part of what a run shows.
type txLog struct {
	mu        sync.Mutex // guards the fields below
	committed int64
	failed    []int64 // the failed transactions' numbers, in order
	firstErr  string  // the first failure's error
	lastErr   string  // the last failure's error
	after     int64   // commits after the first failure
}

// commit counts a committed transaction.
func (l *txLog) commit() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.committed++
	if len(l.failed) > 0 {
		l.after++
	}
}

// fail counts transaction i as failed with err.
func (l *txLog) fail(i int64, err string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.failed) == 0 {
		l.firstErr = err
	}
	l.lastErr = err
	l.failed = append(l.failed, i)
}

// txSummary is a txLog read after the workload ended.
type txSummary struct {
	committed int64
	failed    map[int64]bool
	nFailed   int64
	firstErr  string
	lastErr   string
	after     int64
}

func (l *txLog) summary() txSummary {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := txSummary{committed: l.committed, failed: make(map[int64]bool, len(l.failed)), nFailed: int64(len(l.failed)), firstErr: l.firstErr, lastErr: l.lastErr, after: l.after}
	for _, i := range l.failed {
		s.failed[i] = true
	}
	return s
}

// last is the number of the last transaction that finished (committed
// or failed): one under way at the cut is neither.
func (s txSummary) last() int64 { return s.committed + s.nFailed }

// acked reports whether transaction i committed.
func (s txSummary) acked(i int64) bool { return i >= 1 && i <= s.last() && !s.failed[i] }

// failPause is how long a transactional workload waits after a failed
// transaction before the next: a database that fails every one (LMDB
// after a fatal error) would otherwise spin.
const failPause = time.Millisecond

// txRunning is a running workload with a txLog.
type txRunning interface{ txs() *txLog }

// txsOf is r's transactions, or an empty log for a workload without.
func txsOf(r running) txSummary {
	if t, ok := r.(txRunning); ok {
		return t.txs().summary()
	}
	return (&txLog{}).summary()
}

// fillTx puts the transactions' failures into c (the check's program
// part reports them).
func (c *checkResult) fillTx(s txSummary) {
	c.txFailed, c.txFirstErr, c.txLastErr, c.txAfter = s.nFailed, s.firstErr, s.lastErr, s.after
}

// freezeWait bounds how long Freeze waits for a workload to stop: one
// blocked in a slow sync (an injected delay) is cut where it is.
const freezeWait = 5 * time.Second

// goRun runs a workload's loop in a goroutine of the experiment.
type goRun struct {
	stop atomic.Bool // set by Freeze: the loop returns before its next step
	// cut is set once the power cut may come while the loop still runs
	// (Freeze gave up waiting for it, or Kill): an error it meets then
	// is the cut's doing. One it meets while Freeze waits is its own.
	cut atomic.Bool
	units
	done    chan struct{} // closed when the loop has returned
	err     error         // the loop's error (a failure before the cut); read after done
	ended   time.Time     // when the loop returned; read after done
	release func() error  // closes what the loop used, after the cut
}

// units counts what a workload run has done and acknowledged, and its
// transactions; goRun and procRun count alike.
type units struct {
	n, acked atomic.Int64
	tx       txLog
}

func (u *units) txs() *txLog { return &u.tx }

// commit counts a committed transaction: done and acknowledged.
func (u *units) commit() {
	u.tx.commit()
	u.n.Add(1)
	u.acked.Add(1)
}

// Progress returns the units done and acknowledged so far.
func (u *units) Progress() (int64, int64) { return u.n.Load(), u.acked.Load() }

// failTx counts transaction i as failed with err, unless the cut may
// have come (then the failure is the cut's doing).
func (g *goRun) failTx(i int64, err error) {
	if !g.cut.Load() {
		g.tx.fail(i, err.Error())
	}
}

// startGo runs loop in a goroutine. A fault on a mapping in the loop is
// its error, not the experiment's death.
func startGo(loop func(g *goRun) error, release func() error) *goRun {
	g := &goRun{done: make(chan struct{}), release: release}
	go func() {
		defer close(g.done)
		debug.SetPanicOnFault(true)
		defer func() {
			if p := recover(); p != nil {
				g.err = fmt.Errorf("fault on a mapping of the mount: %v", p)
			}
		}()
		defer func() { g.ended = time.Now() }()
		if err := loop(g); err != nil && !g.cut.Load() {
			g.err = err
		}
	}()
	return g
}

func (g *goRun) Done() <-chan struct{} { return g.done }

func (g *goRun) Freeze() time.Time {
	now := time.Now()
	g.stop.Store(true)
	t := time.NewTimer(freezeWait)
	defer t.Stop()
	select {
	case <-g.done:
		// It stopped at its next step, or had ended: the work done
		// until then is its own (a step under way counts).
		return g.ended
	case <-t.C:
		g.cut.Store(true) // cut where it is
		return now
	}
}

// endAfterOutput closes ended once read is closed (the workload's output
// was read to its end, or to its last word), or, if the process exits
// first, once read is closed after all or a second has passed: the lines
// the process wrote before it exited are still in the pipe, and each may
// acknowledge a unit the check must count.
func endAfterOutput(ended chan<- struct{}, read, exited <-chan struct{}) {
	select {
	case <-read:
	case <-exited:
		select {
		case <-read:
		case <-time.After(time.Second):
		}
	}
	close(ended)
}

// errStuck is Kill's error for a workload that did not stop.
var errStuck = fmt.Errorf("the workload was still in a system call on the mount %v after it was told to stop", killWait)

// killWait bounds how long Kill waits for a loop blocked in a system
// call on the mount (after a cut it fails at once; on Ctrl-C one stuck in
// an injected delay is left to the mount's end).
const killWait = 10 * time.Second

func (g *goRun) Kill() error {
	g.cut.Store(true)
	g.stop.Store(true)
	t := time.NewTimer(killWait)
	defer t.Stop()
	select {
	case <-g.done:
	case <-t.C:
		// Its descriptors stay open (it uses them) until the mount
		// ends and the call fails; the mount's end is forced then.
		return errStuck
	}
	if g.release != nil {
		// Closing descriptors of a dropped mount fails: that is the
		// cut's doing, not the workload's failure.
		_ = g.release()
	}
	return g.err
}

// The logger's records: 512 bytes, the literature's size.
const (
	recordSize  = 512
	recordMagic = "MLOG"
	// mmapLogSize is the pre-grown size of logger-mmap's file: the
	// logger stops when it is full.
	mmapLogSize = 64 << 20
	// logName is the loggers' file in the mount.
	logName = "log"
)

// makeRecord returns record seq: the magic, its sequence number, bytes
// that depend on it, and the CRC-32 of all that in its last 4 bytes.
func makeRecord(seq uint64) []byte {
	r := make([]byte, recordSize)
	copy(r, recordMagic)
	binary.LittleEndian.PutUint64(r[4:], seq)
	for i := 12; i < recordSize-4; i++ {
		r[i] = byte(seq*131 + uint64(i))
	}
	binary.LittleEndian.PutUint32(r[recordSize-4:], crc32.ChecksumIEEE(r[:recordSize-4]))
	return r
}

// validRecord reports whether r is record seq, whole.
func validRecord(r []byte, seq uint64) bool {
	return len(r) == recordSize && string(r[:4]) == recordMagic &&
		binary.LittleEndian.Uint64(r[4:]) == seq &&
		binary.LittleEndian.Uint32(r[recordSize-4:]) == crc32.ChecksumIEEE(r[:recordSize-4])
}

// logScan is what a reader of a log recovers.
type logScan struct {
	kept  int64 // records at the start, whole and in order: what a reader recovers
	torn  int64 // slots after them that hold something but not their record (a partial write, a stale page, garbage)
	after int64 // whole records in their place after the first damaged or missing one: written, but past the gap a reader stops at
}

// scanLog reads log as a reader of it would: the records from the start
// while they are whole and in order, then what lies past the first gap.
func scanLog(log []byte) logScan {
	var s logScan
	for ; int(s.kept+1)*recordSize <= len(log) && validRecord(log[s.kept*recordSize:(s.kept+1)*recordSize], uint64(s.kept)); s.kept++ {
	}
	for off := s.kept * recordSize; off < int64(len(log)); off += recordSize {
		end := min(off+recordSize, int64(len(log)))
		switch slot := log[off:end]; {
		case allZero(slot):
		case validRecord(slot, uint64(off/recordSize)):
			s.after++
		default:
			s.torn++
		}
	}
	return s
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// loggerWorkload is logger-pwrite and logger-mmap.
type loggerWorkload struct {
	mmap  bool
	every int // records between syncs
	// retry is how many times a failed sync is tried again before the
	// logger gives up (the PostgreSQL pattern that fsyncgate defeats: a
	// retry that succeeds is taken as the records being safe).
	retry int
	// retried counts the syncs of the current run that failed and were
	// tried again, retryErr keeps the first one's error; reset by Start.
	retried  atomic.Int64
	retryErr atomic.Pointer[string]
}

func (l *loggerWorkload) Name() string {
	kind := "pwrite"
	if l.mmap {
		kind = "mmap"
	}
	name := fmt.Sprintf("logger-%s:sync=%d", kind, l.every)
	if l.retry > 0 {
		name += fmt.Sprintf(",retry=%d", l.retry)
	}
	return name
}

// sync calls do (the sync that what names), trying it again up to
// l.retry times when it fails.
func (l *loggerWorkload) sync(what string, do func() error) error {
	err := do()
	for i := 0; err != nil && i < l.retry; i++ {
		if l.retried.Add(1) == 1 {
			msg := fmt.Sprintf("%s: %v", what, err)
			l.retryErr.Store(&msg)
		}
		err = do()
	}
	return err
}

func (l *loggerWorkload) Unit() string   { return unitRecords }
func (l *loggerWorkload) Prepare() error { return nil }

func (l *loggerWorkload) Start(mnt, _ string, d time.Duration) (running, error) {
	l.retried.Store(0)
	l.retryErr.Store(nil)
	path := filepath.Join(mnt, logName)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, err
	}
	if !l.mmap {
		return startGo(func(g *goRun) error { return l.pwriteLoop(g, f, d) }, f.Close), nil
	}
	// The file is laid out and its size synced first: what the log
	// risks is then its records only.
	if err := f.Truncate(mmapLogSize); err != nil {
		return nil, errors.Join(err, f.Close())
	}
	if err := f.Sync(); err != nil {
		return nil, errors.Join(err, f.Close())
	}
	mem, err := unix.Mmap(int(f.Fd()), 0, mmapLogSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return nil, errors.Join(fmt.Errorf("mmap of %s: %w", path, err), f.Close())
	}
	release := func() error { return errors.Join(unix.Munmap(mem), f.Close()) }
	return startGo(func(g *goRun) error { return l.mmapLoop(g, mem, d) }, release), nil
}

// pwriteLoop appends records with pwrite and fsyncs every l.every. One
// pwrite(2) per record, as a C logger writes (os.File.WriteAt would
// retry a short write): a short one is its failure.
func (l *loggerWorkload) pwriteLoop(g *goRun, f *os.File, d time.Duration) error {
	deadline := time.Now().Add(d)
	fd := int(f.Fd())
	for seq := uint64(0); !g.stop.Load() && time.Now().Before(deadline); seq++ {
		n, err := unix.Pwrite(fd, makeRecord(seq), int64(seq)*recordSize)
		if err != nil {
			return fmt.Errorf("pwrite of record %d: %w", seq, err)
		}
		if n < recordSize {
			return fmt.Errorf("pwrite of record %d: short write, %d of %d bytes", seq, n, recordSize)
		}
		g.n.Store(int64(seq) + 1)
		if (seq+1)%uint64(l.every) == 0 {
			what := fmt.Sprintf("fsync after record %d", seq)
			if err := l.sync(what, func() error { return fsyncFd(fd) }); err != nil {
				return fmt.Errorf("%s: %w", what, err)
			}
			g.acked.Store(int64(seq) + 1)
		}
	}
	return nil
}

// fsyncFd is fsync(2) of fd, again after EINTR (a signal of the Go
// runtime), as os.File.Sync does; its error is the errno alone, without
// the file's (temporary) path.
func fsyncFd(fd int) error {
	for {
		if err := unix.Fsync(fd); err != syscall.EINTR {
			return err
		}
	}
}

// mmapLoop writes records through the mapping and msyncs (MS_SYNC) what
// it wrote since the last msync every l.every records.
func (l *loggerWorkload) mmapLoop(g *goRun, mem []byte, d time.Duration) error {
	deadline := time.Now().Add(d)
	page := int64(os.Getpagesize())
	var synced int64 // bytes covered by the last msync
	for seq := uint64(0); !g.stop.Load() && time.Now().Before(deadline); seq++ {
		off := int64(seq) * recordSize
		if off+recordSize > int64(len(mem)) {
			return nil // full
		}
		copy(mem[off:], makeRecord(seq))
		g.n.Store(int64(seq) + 1)
		if (seq+1)%uint64(l.every) == 0 {
			from := synced / page * page
			what := fmt.Sprintf("msync after record %d", seq)
			if err := l.sync(what, func() error { return unix.Msync(mem[from:off+recordSize], unix.MS_SYNC) }); err != nil {
				return fmt.Errorf("%s: %w", what, err)
			}
			synced = off + recordSize
			g.acked.Store(int64(seq) + 1)
		}
	}
	return nil
}

func (l *loggerWorkload) Check(_ context.Context, mnt string, r running, acked int64) (checkResult, error) {
	data, err := os.ReadFile(filepath.Join(mnt, logName))
	if errors.Is(err, os.ErrNotExist) {
		data, err = nil, nil // created and never synced: nothing survived
	}
	if err != nil {
		return checkResult{}, err
	}
	sc := scanLog(data)
	c := checkResult{kept: min(sc.kept, acked), ackedLost: max(acked-sc.kept, 0), torn: sc.torn, promised: true}
	c.ok = c.ackedLost == 0
	written, _ := r.Progress()
	c.text = fmt.Sprintf("records %d/%d acked kept, %d/%d written intact, %d torn", c.kept, acked, sc.kept, written, sc.torn)
	if sc.after > 0 {
		c.text += fmt.Sprintf(", %d whole past the gap", sc.after)
	}
	c.retried = l.retried.Load()
	if e := l.retryErr.Load(); e != nil {
		c.retryErr = *e
	}
	return c, nil
}

// bboltWorkload puts one key per bbolt transaction.
type bboltWorkload struct{}

const (
	bboltName   = "bbolt.db"
	bboltBucket = "t"
)

func (*bboltWorkload) Name() string   { return "bbolt" }
func (*bboltWorkload) Unit() string   { return unitRows }
func (*bboltWorkload) Prepare() error { return nil }

func bboltKey(i uint64) []byte { return binary.BigEndian.AppendUint64(nil, i) }

func (*bboltWorkload) Start(mnt, _ string, d time.Duration) (running, error) {
	db, err := bolt.Open(filepath.Join(mnt, bboltName), 0o644, &bolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("bbolt: %w", err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists([]byte(bboltBucket))
		return err
	}); err != nil {
		return nil, errors.Join(fmt.Errorf("bbolt: creating the bucket: %w", err), db.Close())
	}
	val := bytes.Repeat([]byte("mmapfs-experiment "), 56) // about 1000 bytes, as SQLite's rows
	loop := func(g *goRun) error {
		deadline := time.Now().Add(d)
		for i := uint64(1); !g.stop.Load() && time.Now().Before(deadline); i++ {
			if err := db.Update(func(tx *bolt.Tx) error {
				return tx.Bucket([]byte(bboltBucket)).Put(bboltKey(i), val)
			}); err != nil {
				g.failTx(int64(i), fmt.Errorf("bbolt: transaction %d: %w", i, err))
				time.Sleep(failPause)
				continue
			}
			g.commit()
		}
		return nil
	}
	return startGo(loop, db.Close), nil
}

func (*bboltWorkload) Check(_ context.Context, mnt string, r running, acked int64) (checkResult, error) {
	path := filepath.Join(mnt, bboltName)
	c := checkResult{ackedLost: acked, promised: true}
	txs := txsOf(r)
	c.fillTx(txs)
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		c.text = fmt.Sprintf("keys 0/%d acked kept, no database", acked)
		c.ok = acked == 0
		return c, nil
	}
	db, err := bolt.Open(path, 0o444, &bolt.Options{ReadOnly: true, Timeout: 5 * time.Second})
	if err != nil {
		c.text = fmt.Sprintf("keys 0/%d acked kept, open: %v", acked, err)
		return c, nil
	}
	var problems []string
	verr := db.View(func(tx *bolt.Tx) error {
		for err := range tx.Check() {
			problems = append(problems, err.Error())
		}
		b := tx.Bucket([]byte(bboltBucket))
		if b == nil {
			return nil
		}
		return b.ForEach(func(k, _ []byte) error {
			if len(k) == 8 && txs.acked(int64(binary.BigEndian.Uint64(k))) {
				c.kept++
			}
			return nil
		})
	})
	if cerr := db.Close(); verr == nil {
		verr = cerr
	}
	if verr != nil {
		problems = append(problems, verr.Error())
	}
	c.ackedLost = acked - c.kept
	integrity := "Tx.Check ok"
	if len(problems) > 0 {
		integrity = fmt.Sprintf("Tx.Check: %s, the first: %s", wire.Plural(len(problems), "problem", "problems"), problems[0])
	}
	c.ok = len(problems) == 0 && c.ackedLost == 0
	c.text = fmt.Sprintf("keys %d/%d acked kept, %s", c.kept, acked, integrity)
	return c, nil
}

// lmdbWorkload commits one key per LMDB transaction: each is a run of
// lmdb-utils' mdb_load (which opens the environment, puts the key,
// commits with its sync, and exits), acknowledged when it exits 0.
type lmdbWorkload struct {
	load, dump string // the tools, found by Prepare
}

const (
	lmdbDir     = "lmdb"
	lmdbMapSize = 256 << 20
)

func (*lmdbWorkload) Name() string { return "lmdb" }
func (*lmdbWorkload) Unit() string { return unitRows }

func (w *lmdbWorkload) Prepare() error {
	for _, t := range []struct {
		name string
		path *string
	}{{"mdb_load", &w.load}, {"mdb_dump", &w.dump}} {
		p, err := exec.LookPath(t.name)
		if err != nil {
			return fmt.Errorf("workload lmdb needs %s (Debian: apt-get install lmdb-utils): %w", t.name, err)
		}
		*t.path = p
	}
	return nil
}

// lmdbKey is the key of transaction i: keys sort as their numbers do.
func lmdbKey(i int64) string { return fmt.Sprintf("k%010d", i) }

func (w *lmdbWorkload) Start(mnt, _ string, d time.Duration) (running, error) {
	env := filepath.Join(mnt, lmdbDir)
	if err := os.Mkdir(env, 0o755); err != nil {
		return nil, err
	}
	val := strings.Repeat("mmapfs-experiment-", 56) // about 1000 bytes, as SQLite's rows
	loop := func(g *goRun) error {
		deadline := time.Now().Add(d)
		for i := int64(1); !g.stop.Load() && time.Now().Before(deadline); i++ {
			cmd := exec.Command(w.load, env)
			cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
			cmd.Stdin = strings.NewReader(fmt.Sprintf("VERSION=3\nformat=print\ntype=btree\nmapsize=%d\nHEADER=END\n %s\n %s\nDATA=END\n", lmdbMapSize, lmdbKey(i), val))
			if out, err := cmd.CombinedOutput(); err != nil {
				g.failTx(i, fmt.Errorf("mdb_load of transaction %d: %w: %s", i, err, firstLine(string(out))))
				time.Sleep(failPause)
				continue
			}
			g.commit()
		}
		return nil
	}
	return startGo(loop, nil), nil
}

func (w *lmdbWorkload) Check(ctx context.Context, mnt string, r running, acked int64) (checkResult, error) {
	c := checkResult{ackedLost: acked, promised: true}
	txs := txsOf(r)
	c.fillTx(txs)
	env := filepath.Join(mnt, lmdbDir)
	if _, err := os.Stat(filepath.Join(env, "data.mdb")); errors.Is(err, os.ErrNotExist) {
		c.text = fmt.Sprintf("keys 0/%d acked kept, no database", acked)
		c.ok = acked == 0
		return c, nil
	}
	cmd := exec.CommandContext(ctx, w.dump, "-p", env)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if ctx.Err() != nil {
		return c, ctx.Err()
	}
	if err != nil {
		c.text = fmt.Sprintf("keys 0/%d acked kept, mdb_dump: %v: %s", acked, err, firstLine(stderr.String()))
		return c, nil
	}
	// After HEADER=END, a key line and a value line per record, each
	// indented by a space, until DATA=END.
	data, inData, isKey := 0, false, true
	for _, line := range strings.Split(stdout.String(), "\n") {
		switch {
		case line == "HEADER=END":
			inData = true
		case line == "DATA=END":
			inData = false
		case inData && isKey:
			if k := strings.TrimPrefix(line, " "); len(k) == 11 && k[0] == 'k' {
				if n, err := strconv.ParseInt(k[1:], 10, 64); err == nil && txs.acked(n) {
					c.kept++
				}
			}
			data++
			isKey = false
		case inData:
			isKey = true
		}
	}
	c.ackedLost = acked - c.kept
	c.ok = c.ackedLost == 0
	c.text = fmt.Sprintf("keys %d/%d acked kept, mdb_dump ok (%d in the database)", c.kept, acked, data)
	return c, nil
}

// lmdbMapWorkload commits one key per LMDB transaction with
// MDB_WRITEMAP: python3-lmdb writes the database through a MAP_SHARED
// mapping of data.mdb in the mount and msyncs it at each commit, a
// client mapping writer (lmdb-utils' tools have no switch for it). A
// transaction is acknowledged when its commit has returned.
type lmdbMapWorkload struct {
	py string // a python3 that imports lmdb, found by Prepare
}

func (*lmdbMapWorkload) Name() string { return "lmdb:writemap" }
func (*lmdbMapWorkload) Unit() string { return unitRows }

// lmdbWritemapSize is the map size of lmdb:writemap: with
// MDB_WRITEMAP, LMDB grows data.mdb to it.
const lmdbWritemapSize = 32 << 20

// pythonImportWait bounds the probe of a python3 for the lmdb module.
const pythonImportWait = 30 * time.Second

func (w *lmdbMapWorkload) Prepare() error {
	// Debian's python3 first: python3-lmdb is built for it, and a
	// python3 earlier on the PATH (a pyenv one) may not have it.
	var cands, why []string
	if _, err := os.Stat("/usr/bin/python3"); err == nil {
		cands = append(cands, "/usr/bin/python3")
	}
	if p, err := exec.LookPath("python3"); err == nil && p != "/usr/bin/python3" {
		cands = append(cands, p)
	}
	for _, py := range cands {
		ctx, cancel := context.WithTimeout(context.Background(), pythonImportWait)
		out, err := exec.CommandContext(ctx, py, "-c", "import lmdb").CombinedOutput()
		cancel()
		if err == nil {
			w.py = py
			return nil
		}
		why = append(why, fmt.Sprintf("%s: %v: %s", py, err, lastLine(string(out))))
	}
	if len(cands) == 0 {
		why = append(why, "no python3 on the PATH")
	}
	return fmt.Errorf("workload lmdb:writemap needs python3 with the lmdb module (Debian: apt-get install python3-lmdb): %s", strings.Join(why, "; "))
}

// lmdbMapWriter is lmdb:writemap's writer: argv ENV MAPSIZE SECONDS
// PAUSE. It prints "ack N" once transaction N has committed, or "fail N:
// ERROR" if it failed (and goes on with the next after PAUSE seconds),
// and "done" at the end, and
// then keeps the environment open until it is killed (a crash closes
// nothing). If the environment does not open, it says so on stderr and
// exits 1.
const lmdbMapWriter = `
import sys, time
import lmdb
env_dir, map_size, seconds, failPause = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
val = b"mmapfs-experiment-" * 56
try:
    env = lmdb.open(env_dir, map_size=map_size, writemap=True, sync=True, metasync=True)
except lmdb.Error as e:
    print("open: %s" % e, file=sys.stderr, flush=True)
    sys.exit(1)
print("ready", flush=True)
deadline = time.monotonic() + seconds
i = 0
while time.monotonic() < deadline:
    i += 1
    try:
        with env.begin(write=True) as txn:
            txn.put(b"k%010d" % i, val)
    except lmdb.Error as e:
        print("fail %d: %s" % (i, e), flush=True)
        time.sleep(failPause)
        continue
    print("ack %d" % i, flush=True)
print("done", flush=True)
while True:
    time.sleep(3600)
`

// lmdbMapChecker is lmdb:writemap's check: argv ENV LAST. It opens the
// environment read-only, reads keys 1 to LAST and then every entry, and
// prints "entries N" and a line "keys I J ..." of the keys found whole,
// or the error on stderr (and exits 1).
const lmdbMapChecker = `
import sys
import lmdb
env_dir, last = sys.argv[1], int(sys.argv[2])
val = b"mmapfs-experiment-" * 56
try:
    env = lmdb.open(env_dir, readonly=True, lock=False)
except lmdb.Error as e:
    print("open: %s" % e, file=sys.stderr, flush=True)
    sys.exit(1)
found = []
entries = 0
try:
    with env.begin() as txn:
        for i in range(1, last + 1):
            if txn.get(b"k%010d" % i) == val:
                found.append(i)
        for k, v in txn.cursor():
            entries += 1
except lmdb.Error as e:
    print("read: %s (after %d keys)" % (e, len(found)), file=sys.stderr, flush=True)
    sys.exit(1)
print("entries %d" % entries)
print("keys " + " ".join(str(i) for i in found), flush=True)
`

// lmdbMapRun is a running lmdb:writemap writer.
type lmdbMapRun struct {
	*procRun
	stderr *bytes.Buffer
	ended  chan struct{} // closed when the writer said done, or ended
}

// Done says the workload is over: the writer has committed its last
// transaction (it still runs, its environment open), or it ended.
func (r *lmdbMapRun) Done() <-chan struct{} { return r.ended }

func (w *lmdbMapWorkload) Start(mnt, _ string, d time.Duration) (running, error) {
	env := filepath.Join(mnt, lmdbDir)
	if err := os.Mkdir(env, 0o755); err != nil {
		return nil, err
	}
	cmd := exec.Command(w.py, "-c", lmdbMapWriter, env, strconv.Itoa(lmdbWritemapSize), strconv.FormatFloat(d.Seconds(), 'f', -1, 64), strconv.FormatFloat(failPause.Seconds(), 'f', -1, 64))
	// A pipe of its own, not StdoutPipe: Wait (called as soon as the
	// process ends) would close that before its last lines are read.
	out, pw, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	cmd.Stdout = pw
	stderr := &bytes.Buffer{}
	cmd.Stderr = &lockedWriter{w: stderr}
	p, err := startProc(cmd)
	pw.Close() // the writer has its own
	if err != nil {
		return nil, errors.Join(err, out.Close())
	}
	read := make(chan struct{}) // the writer said done, or its output ended
	ended := make(chan struct{})
	go endAfterOutput(ended, read, p.done)
	go func() {
		defer close(read)
		defer out.Close()
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			line := sc.Text()
			if line == "done" {
				return
			}
			if n, ok := strings.CutPrefix(line, "ack "); ok {
				if _, err := strconv.ParseInt(n, 10, 64); err == nil {
					p.commit()
				}
			}
			if rest, ok := strings.CutPrefix(line, "fail "); ok {
				n, msg, _ := strings.Cut(rest, ": ")
				if i, err := strconv.ParseInt(n, 10, 64); err == nil {
					p.failTx(i, fmt.Sprintf("python3-lmdb: transaction %d: %s", i, msg))
				}
			}
		}
		// Its output ended without "done": it failed (its stderr says
		// how), or the cut came.
		p.setFail(errors.New("python3-lmdb: it ended"))
	}()
	return &lmdbMapRun{procRun: p, stderr: stderr, ended: ended}, nil
}

func (r *lmdbMapRun) Kill() error {
	failure, group := r.procRun.kill()
	if failure != nil {
		if msg := firstLine(r.stderr.String()); msg != "" {
			failure = fmt.Errorf("python3-lmdb: %s", msg) // what lmdb said
		}
	}
	return errors.Join(failure, group)
}

func (w *lmdbMapWorkload) Check(ctx context.Context, mnt string, r running, acked int64) (checkResult, error) {
	c := checkResult{ackedLost: acked, promised: true}
	txs := txsOf(r)
	c.fillTx(txs)
	env := filepath.Join(mnt, lmdbDir)
	if _, err := os.Stat(filepath.Join(env, "data.mdb")); errors.Is(err, os.ErrNotExist) {
		c.text = fmt.Sprintf("keys 0/%d acked kept, no database", acked)
		c.ok = acked == 0
		return c, nil
	}
	cmd := exec.CommandContext(ctx, w.py, "-c", lmdbMapChecker, env, strconv.FormatInt(txs.last(), 10))
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if ctx.Err() != nil {
		return c, ctx.Err()
	}
	var ee *exec.ExitError
	switch {
	case err != nil && !errors.As(err, &ee):
		return c, fmt.Errorf("python3-lmdb: %w", err)
	case err != nil:
		c.text = fmt.Sprintf("keys 0/%d acked kept, %s", acked, firstLine(stderr.String()))
		return c, nil
	}
	var entries int64
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[1], "keys") {
		return c, fmt.Errorf("python3-lmdb check: its output %q: want an entries line and a keys line", stdout.String())
	}
	if _, err := fmt.Sscanf(lines[0], "entries %d", &entries); err != nil {
		return c, fmt.Errorf("python3-lmdb check: its output %q: %w", lines[0], err)
	}
	for _, f := range strings.Fields(lines[1])[1:] {
		if i, err := strconv.ParseInt(f, 10, 64); err == nil && txs.acked(i) {
			c.kept++
		}
	}
	c.ackedLost = acked - c.kept
	c.ok = c.ackedLost == 0
	c.text = fmt.Sprintf("keys %d/%d acked kept, read ok (%d in the database)", c.kept, acked, entries)
	return c, nil
}

// procRun is a workload run by a process of its own, in its own process
// group (killed should the experiment die). Freeze and Kill signal the
// whole group, so that what the process started in the background (and
// left running when it ended) is stopped and killed with it.
type procRun struct {
	cmd         *exec.Cmd
	pgid        int           // the group: the process's pid
	done        chan struct{} // closed once the process has been waited for
	frozen      atomic.Bool
	exitedOnOwn atomic.Bool // it had ended when Freeze came
	err         error       // what Wait returned; read after done
	exited      time.Time   // when Wait returned; read after done

	units
	mu     sync.Mutex // guards fail, failAt
	fail   error      // the driver's own error before the cut
	failAt time.Time  // when the driver met it: where the workload stopped
}

// startProc starts cmd as a workload process.
func startProc(cmd *exec.Cmd) (*procRun, error) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	p := &procRun{cmd: cmd, done: make(chan struct{})}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", cmd.Path, err)
	}
	p.pgid = cmd.Process.Pid
	go func() {
		p.err = cmd.Wait()
		p.exited = time.Now()
		close(p.done)
	}()
	return p, nil
}

func (p *procRun) Done() <-chan struct{} { return p.done }

// failTx counts transaction i as failed with err, unless the process was
// frozen (then it is the cut's doing).
func (p *procRun) failTx(i int64, err string) {
	if !p.frozen.Load() {
		p.tx.fail(i, err)
	}
}

// signalGroup sends sig to the process group; a group with no process
// left (ESRCH) is no error.
func (p *procRun) signalGroup(sig syscall.Signal) error {
	if err := syscall.Kill(-p.pgid, sig); err != nil && err != syscall.ESRCH {
		return fmt.Errorf("signalling the workload's process group %d: %w", p.pgid, err)
	}
	return nil
}

// groupGone reports whether no process of the group is left, but
// zombies (dead, waiting for their new parent to reap them).
func (p *procRun) groupGone() bool {
	if syscall.Kill(-p.pgid, 0) == syscall.ESRCH {
		return true
	}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return false
	}
	for _, e := range ents {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		st, err := procstat.Read(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue // gone meanwhile
		}
		if st.Pgrp == p.pgid && !st.Gone() {
			return false
		}
	}
	return true
}

// Freeze stops the process group where it is (SIGSTOP), even if the
// process has ended (what it left in the background stops too), and
// gives the acknowledgements it wrote before a moment to be read.
func (p *procRun) Freeze() time.Time {
	now := time.Now()
	ended := false
	select {
	case <-p.done:
		ended = true
		p.exitedOnOwn.Store(true)
	default:
	}
	// Stopped first, then marked: a driver that saw the mark first
	// could end the process's work (close its input) before the stop.
	_ = p.signalGroup(syscall.SIGSTOP)
	p.frozen.Store(true)
	if ended {
		return p.exited
	}
	time.Sleep(50 * time.Millisecond)
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.fail != nil && p.failAt.Before(now) {
		return p.failAt // the driver had stopped at its error
	}
	return now
}

// setFail keeps the driver's first error, unless the process was frozen
// (then it is the cut's doing).
func (p *procRun) setFail(err error) {
	if p.frozen.Load() {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.fail == nil {
		p.fail, p.failAt = err, time.Now()
	}
}

// groupWait bounds how long Kill waits for the killed group's last
// processes (ones the experiment cannot wait for: the process's
// children left behind are not its own) to be gone.
const groupWait = 5 * time.Second

// Kill kills the process group (the process, and what it left in the
// background even if it has ended) and returns the workload's failure
// before the cut: the driver's error, or the process's exit status if it
// ended on its own with one.
func (p *procRun) Kill() error { return errors.Join(p.kill()) }

// kill is Kill's work: it returns the workload's failure and, apart,
// what went wrong killing its group.
func (p *procRun) kill() (failure, group error) {
	var errs []error
	exitedBefore := false
	select {
	case <-p.done:
		exitedBefore = true
	default:
	}
	if err := p.signalGroup(syscall.SIGKILL); err != nil {
		errs = append(errs, err)
	}
	t := time.NewTimer(killWait)
	defer t.Stop()
	select {
	case <-p.done:
		for deadline := time.Now().Add(groupWait); !p.groupGone(); time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				errs = append(errs, fmt.Errorf("the workload's process group %d still has processes %v after SIGKILL: %w", p.pgid, groupWait, errStuck))
				break
			}
		}
	case <-t.C:
		// In a system call on the mount that SIGKILL cannot end (a
		// hung request): the mount's forced end frees it.
		errs = append(errs, fmt.Errorf("%s (pid %d) did not die of SIGKILL: %w", filepath.Base(p.cmd.Path), p.cmd.Process.Pid, errStuck))
		return nil, errors.Join(errs...)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case p.fail != nil:
		failure = p.fail
	case exitedBefore && p.err != nil:
		failure = fmt.Errorf("%s: %w", filepath.Base(p.cmd.Path), p.err)
	}
	return failure, errors.Join(errs...)
}

// sqliteWorkload commits one row per transaction with the sqlite3 CLI.
type sqliteWorkload struct {
	wal  bool
	sync string // FULL, NORMAL, OFF
	bin  string // the sqlite3 CLI, found by Prepare
}

const sqliteName = "db.sqlite"

func (q *sqliteWorkload) Name() string {
	if q.wal {
		return "sqlite-wal:synchronous=" + q.sync
	}
	return "sqlite-rollback:synchronous=" + q.sync
}

func (q *sqliteWorkload) Unit() string { return unitRows }

func (q *sqliteWorkload) Prepare() error {
	bin, err := exec.LookPath("sqlite3")
	if err != nil {
		return fmt.Errorf("workload %s needs the sqlite3 CLI (Debian: apt-get install sqlite3): %w", q.Name(), err)
	}
	q.bin = bin
	return nil
}

// sqliteRun is a running sqliteWorkload.
type sqliteRun struct {
	*procRun
	in    io.Closer     // the CLI's input, open until Kill: closing it would end the CLI, which closes the database first
	out   io.Closer     // the read end of the CLI's output (stdout and stderr, in one pipe)
	ended chan struct{} // closed when the driver has sent its last transaction, or the CLI ended
}

// Done says the workload is over: the driver has sent its last
// transaction (the CLI still runs, its database open, as a crash would
// find it), or the CLI ended.
func (r *sqliteRun) Done() <-chan struct{} { return r.ended }

// sqliteErrorRE matches the CLI's error lines: "Runtime error near line
// N: MESSAGE" (or "Error: near line N: MESSAGE").
var sqliteErrorRE = regexp.MustCompile(`^(?:Runtime error|Parse error|Error:) near line \d+: `)

func (q *sqliteWorkload) Start(mnt, _ string, d time.Duration) (running, error) {
	// No -bail: a failed statement is printed and the CLI goes on, as an
	// application goes on after a failed transaction. Its errors and its
	// output share one pipe, so that an error comes before the line the
	// statement after it prints.
	cmd := exec.Command(q.bin, "-batch", filepath.Join(mnt, sqliteName))
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		return nil, errors.Join(err, in.Close())
	}
	cmd.Stdout, cmd.Stderr = pw, pw
	p, err := startProc(cmd)
	pw.Close() // the CLI has its own
	if err != nil {
		return nil, errors.Join(err, in.Close(), pr.Close())
	}
	r := &sqliteRun{procRun: p, in: in, out: pr, ended: make(chan struct{})}
	mode := "DELETE"
	if q.wal {
		mode = "WAL"
	}
	driven := make(chan struct{})
	go endAfterOutput(r.ended, driven, p.done)
	go func() {
		defer close(driven)
		rd := bufio.NewReader(pr)
		say := func(format string, a ...any) bool {
			if _, err := fmt.Fprintf(in, format, a...); err != nil {
				p.setFail(fmt.Errorf("sqlite3: writing to it: %w", err))
				return false
			}
			return true
		}
		// until reads the CLI's lines up to want (what a SELECT after
		// the statements prints) and returns the errors it printed
		// before it; false if the CLI ended first.
		until := func(want string) ([]string, bool) {
			var errs []string
			for {
				line, err := rd.ReadString('\n')
				got := strings.TrimSpace(line)
				if got == want {
					return errs, true
				}
				if got != "" {
					errs = append(errs, sqliteErrorRE.ReplaceAllString(got, ""))
				}
				if err != nil {
					what := "it ended"
					if !errors.Is(err, io.EOF) {
						what = err.Error()
					}
					if len(errs) > 0 {
						what += " after: " + errs[len(errs)-1]
					}
					p.setFail(fmt.Errorf("sqlite3: %s", what))
					return errs, false
				}
			}
		}
		if !say(".timeout 5000\nPRAGMA journal_mode=%s;\nPRAGMA synchronous=%s;\nCREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, v BLOB);\nSELECT 'ready';\n", mode, q.sync) {
			return
		}
		if errs, ok := until("ready"); !ok {
			return
		} else if len(errs) != 1 || errs[0] != strings.ToLower(mode) {
			p.setFail(fmt.Errorf("sqlite3: setting up the database: %s", strings.Join(errs, "; ")))
			return
		}
		deadline := time.Now().Add(d)
		for i := int64(1); !p.frozen.Load() && time.Now().Before(deadline); i++ {
			// One statement a line: the CLI runs a line's statements
			// until the first that fails, and the SELECT must run.
			if !say("BEGIN;\nINSERT INTO t VALUES(%d, randomblob(1000));\nCOMMIT;\nSELECT 'ack %d';\n", i, i) {
				return
			}
			errs, ok := until(fmt.Sprintf("ack %d", i))
			if !ok {
				return
			}
			if len(errs) == 0 {
				p.commit()
				continue
			}
			// A failed COMMIT may leave the transaction open (SQLite
			// rolls back on its own after some errors only): rolled
			// back, and an error that nothing was open is no matter.
			p.failTx(i, "sqlite3: "+errs[0])
			if !say("ROLLBACK;\nSELECT 'rolled back %d';\n", i) {
				return
			}
			if _, ok := until(fmt.Sprintf("rolled back %d", i)); !ok {
				return
			}
		}
		// The CLI's input stays open: its end would make the CLI close
		// the database (a checkpoint, and a close the policies see)
		// before the cut, which a crash does not do.
	}()
	return r, nil
}

func (r *sqliteRun) Kill() error {
	failure, group := r.procRun.kill()
	r.in.Close()  // the CLI is gone: nothing reads it any more
	r.out.Close() // nor writes it
	return errors.Join(failure, group)
}

func (q *sqliteWorkload) Check(ctx context.Context, mnt string, r running, acked int64) (checkResult, error) {
	c := checkResult{ackedLost: acked}
	txs := txsOf(r)
	c.fillTx(txs)
	cmd := exec.CommandContext(ctx, q.bin, "-batch", filepath.Join(mnt, sqliteName))
	cmd.Stdin = strings.NewReader(fmt.Sprintf("PRAGMA integrity_check;\nSELECT 'row', id FROM t WHERE id <= %d;\n", txs.last()))
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if ctx.Err() != nil {
		return c, ctx.Err()
	}
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		return c, fmt.Errorf("sqlite3: %w", err)
	}
	var integrity []string
	for _, line := range strings.Split(strings.TrimSpace(stdout.String()), "\n") {
		if n, ok := strings.CutPrefix(line, "row|"); ok {
			if i, err := strconv.ParseInt(n, 10, 64); err == nil && txs.acked(i) {
				c.kept++
			}
			continue
		}
		if line != "" {
			integrity = append(integrity, line)
		}
	}
	verdict := strings.Join(integrity, "; ")
	switch {
	case len(integrity) == 1 && integrity[0] == "ok":
		verdict = "integrity ok"
	case len(integrity) == 0 && stderr.Len() > 0:
		verdict = "integrity: " + firstLine(stderr.String())
	default:
		verdict = "integrity: " + verdict
	}
	if e := firstLine(stderr.String()); e != "" && strings.Contains(e, "no such table") {
		verdict += " (no table: nothing was synced)"
	}
	c.ackedLost = acked - c.kept
	// Under synchronous=OFF, and NORMAL in WAL mode, SQLite does not
	// promise that a commit survives a power cut; the database must
	// still be intact.
	c.promised = !(q.sync == "OFF" || (q.wal && q.sync == "NORMAL"))
	c.ok = verdict == "integrity ok" || strings.HasPrefix(verdict, "integrity ok ")
	if c.promised && c.ackedLost > 0 {
		c.ok = false
	}
	c.text = fmt.Sprintf("rows %d/%d acked kept, %s", c.kept, acked, verdict)
	return c, nil
}

// fioWorkload runs a fio job file in the mount.
type fioWorkload struct {
	job  string // absolute
	name string
	bin  string
}

func (w *fioWorkload) Name() string { return w.name }
func (w *fioWorkload) Unit() string { return unitBytes }

func (w *fioWorkload) Prepare() error {
	bin, err := exec.LookPath("fio")
	if err != nil {
		return fmt.Errorf("workload %s needs fio (Debian: apt-get install fio): %w", w.name, err)
	}
	w.bin = bin
	return nil
}

// fioRun is a running fio; out is its JSON output file.
type fioRun struct {
	*procRun
	out    string
	stderr *bytes.Buffer
}

func (w *fioWorkload) Start(mnt, scratch string, _ time.Duration) (running, error) {
	out := filepath.Join(scratch, "fio.json")
	cmd := exec.Command(w.bin, "--output-format=json", "--output="+out, w.job)
	cmd.Dir = mnt // fio makes its files in the mount
	stderr := &bytes.Buffer{}
	cmd.Stderr = &lockedWriter{w: stderr}
	p, err := startProc(cmd)
	if err != nil {
		return nil, err
	}
	return &fioRun{procRun: p, out: out, stderr: stderr}, nil
}

func (r *fioRun) Kill() error {
	err := r.procRun.Kill()
	if err != nil {
		if msg := firstLine(r.stderr.String()); msg != "" {
			err = fmt.Errorf("%w: %s", err, msg)
		}
	}
	return err
}

func (w *fioWorkload) Check(_ context.Context, _ string, r running, _ int64) (checkResult, error) {
	fr, ok := r.(*fioRun)
	if !ok {
		return checkResult{}, fmt.Errorf("fio check of a run that is not fio's")
	}
	c := checkResult{ok: true}
	switch {
	case !fr.exitedOnOwn.Load():
		c.text = "cut before fio ended"
	case fr.err != nil:
		c.ok = false
		c.text = fmt.Sprintf("fio: %v: %s", fr.err, firstLine(fr.stderr.String()))
	default:
		c.text = "fio ok"
	}
	return c, nil
}

// commandWorkload runs a user's command, and --check after the remount.
type commandWorkload struct {
	argv  []string
	check string // a shell command; "" for none
}

func (w *commandWorkload) Name() string   { return strings.Join(w.argv, " ") }
func (w *commandWorkload) Unit() string   { return unitBytes }
func (w *commandWorkload) Prepare() error { return nil }

// commandRun is a running command; its output goes to log.
type commandRun struct {
	*procRun
	log string
}

func (w *commandWorkload) Start(mnt, scratch string, _ time.Duration) (running, error) {
	logPath := filepath.Join(scratch, "command.log")
	log, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer log.Close() // the child has its own descriptor
	cmd := exec.Command(w.argv[0], w.argv[1:]...)
	cmd.Env = append(os.Environ(), "MMAPFS_MNT="+mnt)
	cmd.Stdout, cmd.Stderr = log, log
	p, err := startProc(cmd)
	if err != nil {
		return nil, err
	}
	return &commandRun{procRun: p, log: logPath}, nil
}

func (r *commandRun) Kill() error {
	err := r.procRun.Kill()
	if err != nil {
		if out, rerr := os.ReadFile(r.log); rerr == nil {
			if last := lastLine(string(out)); last != "" {
				err = fmt.Errorf("%w: %s", err, last)
			}
		}
	}
	return err
}

func (w *commandWorkload) Check(ctx context.Context, mnt string, _ running, _ int64) (checkResult, error) {
	if w.check == "" {
		return checkResult{ok: true, text: "-"}, nil
	}
	cmd := exec.CommandContext(ctx, "/bin/sh", "-c", w.check)
	cmd.Env = append(os.Environ(), "MMAPFS_MNT="+mnt)
	// A child of the judge that keeps its output open must not hold the
	// experiment (and its mount) once the judge is gone.
	cmd.WaitDelay = 5 * time.Second
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if ctx.Err() != nil {
		return checkResult{}, ctx.Err()
	}
	status := 0
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		status = ee.ExitCode()
	case err != nil:
		return checkResult{}, fmt.Errorf("--check %s: %w", w.check, err)
	}
	text := fmt.Sprintf("exit %d", status)
	if l := firstLine(out.String()); l != "" {
		text += ": " + l
	}
	return checkResult{ok: status == 0, text: text}, nil
}

// firstLine is the first line of s that is not blank, trimmed.
func firstLine(s string) string {
	for _, l := range strings.Split(s, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			return l
		}
	}
	return ""
}

// lastLine is the last line of s that is not blank, trimmed.
func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}

// lockedWriter serializes writes to w (a process's stderr, read while it
// runs).
type lockedWriter struct {
	mu sync.Mutex // guards w
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
