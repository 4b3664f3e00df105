package integration

// What the crash tests (crash_test.go, powercut_test.go) share: building
// and running the writer (crashwriter/), reading back its log, and the
// model that says what a file tree may hold after a crash.

import (
	"bytes"
	"fmt"
	"github.com/mmapfs/mmapfs/integration/crashwriter/crashdata"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

const crashwriterPkg = "github.com/mmapfs/mmapfs/integration/crashwriter"

var crashwriter struct {
	once sync.Once
	path string
	err  error
}

// crashwriterBin builds the writer once per run, next to the daemon (the
// directory TestMain removes at the end). It is built without -race: it
// is the client, not the code under test, and it should be quick.
func crashwriterBin(t testing.TB) string {
	t.Helper()
	crashwriter.once.Do(func() {
		goTool, err := exec.LookPath("go")
		if err != nil {
			crashwriter.err = err
			return
		}
		root, err := repoRoot(goTool)
		if err != nil {
			crashwriter.err = err
			return
		}
		out := filepath.Join(filepath.Dir(binPath), "crashwriter")
		cmd := exec.Command(goTool, "build", "-o", out, crashwriterPkg)
		cmd.Dir = root
		if b, err := cmd.CombinedOutput(); err != nil {
			crashwriter.err = fmt.Errorf("go build %s: %v\n%s", crashwriterPkg, err, b)
			return
		}
		crashwriter.path = out
	})
	if crashwriter.err != nil {
		t.Fatal(crashwriter.err)
	}
	return crashwriter.path
}

// writerProc is a running crashwriter.
type writerProc struct {
	cmd   *exec.Cmd
	out   syncBuffer
	errb  syncBuffer
	stdin io.WriteCloser
	done  chan struct{}
	err   error
}

// startWriter runs the writer in dir with seed. It goes through the
// trampoline like the daemon, so that it inherits no descriptor of another
// test's mount.
func startWriter(t testing.TB, dir string, seed uint64, args ...string) *writerProc {
	t.Helper()
	bin := crashwriterBin(t)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	w := &writerProc{done: make(chan struct{})}
	argv := append([]string{bin, "-dir", dir, "-seed", strconv.FormatUint(seed, 10)}, args...)
	w.cmd = exec.Command(self, argv...)
	w.cmd.Env = append(os.Environ(), trampolineEnv+"=1")
	w.cmd.Stdout = &w.out
	w.cmd.Stderr = &w.errb
	w.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	w.cmd.WaitDelay = time.Second
	if w.stdin, err = w.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	if err := w.cmd.Start(); err != nil {
		t.Fatalf("start crashwriter: %v", err)
	}
	go func() {
		w.err = w.cmd.Wait()
		close(w.done)
	}()
	t.Cleanup(func() { // in case the test failed half way
		w.stdin.Close()
		select {
		case <-w.done:
		case <-time.After(killTimeout):
			w.cmd.Process.Kill()
			<-w.done
		}
	})
	return w
}

// waitFor waits up to timeout for a line of output.
func (w *writerProc) waitFor(line string, timeout time.Duration) bool {
	has := func() bool {
		out := w.out.String()
		return strings.HasPrefix(out, line+"\n") || strings.Contains(out, "\n"+line+"\n")
	}
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if has() {
			return true
		}
		select {
		case <-w.done:
			return has()
		case <-time.After(time.Millisecond):
		}
	}
	return false
}

// started waits until the writer runs, so that the crash comes after a
// delay from then, not from the start of its process.
func (w *writerProc) started(t testing.TB) {
	t.Helper()
	if !w.waitFor("START", 10*time.Second) {
		t.Fatalf("the writer did not start: %s%s", w.out.String(), w.errb.String())
	}
}

// finish closes the writer's stdin and waits up to timeout for it to exit.
// A writer that does not is stuck on the mount: it is killed, and the
// error says where it was.
func (w *writerProc) finish(timeout time.Duration) error {
	w.stdin.Close()
	select {
	case <-w.done:
	case <-time.After(timeout):
		stacks := threadStacks(w.cmd.Process.Pid)
		w.cmd.Process.Kill()
		<-w.done
		return fmt.Errorf("the writer did not exit within %v of the crash; its threads were:\n%s", timeout, stacks)
	}
	if w.err != nil {
		return fmt.Errorf("writer: %v\n%s", w.err, w.errb.String())
	}
	return nil
}

// crashCall is one system call of the writer.
type crashCall struct {
	seq    int
	op     string
	args   []string
	status byte   // 'D' succeeded, 'E' failed, 0 no outcome
	err    string // for 'E'
}

func (c *crashCall) String() string {
	s := fmt.Sprintf("call %d %s %s", c.seq, c.op, strings.Join(c.args, " "))
	switch c.status {
	case 'D':
		return s + ": ok"
	case 'E':
		return s + ": " + c.err
	}
	return s + ": in flight"
}

// parseCrashLog reads the writer's output. An incomplete last line is
// ignored.
func parseCrashLog(out string) ([]*crashCall, error) {
	var calls []*crashCall
	lines := strings.Split(out, "\n")
	lines = lines[:len(lines)-1] // "" after the last newline, or an incomplete line
	for _, line := range lines {
		f := strings.Fields(line)
		if len(f) == 0 || f[0] == "IDLE" || f[0] == "START" {
			continue
		}
		if len(f) < 2 {
			return nil, fmt.Errorf("writer output: bad line %q", line)
		}
		seq, err := strconv.Atoi(f[1])
		if err != nil {
			return nil, fmt.Errorf("writer output: bad line %q", line)
		}
		switch f[0] {
		case "B":
			if len(f) < 3 || seq != len(calls)+1 {
				return nil, fmt.Errorf("writer output: bad line %q", line)
			}
			calls = append(calls, &crashCall{seq: seq, op: f[2], args: f[3:]})
		case "D", "E":
			if seq != len(calls) || calls[seq-1].status != 0 {
				return nil, fmt.Errorf("writer output: outcome of a call not in flight: %q", line)
			}
			calls[seq-1].status = f[0][0]
			if f[0] == "E" {
				calls[seq-1].err = strings.Join(f[2:], " ")
			}
		default:
			return nil, fmt.Errorf("writer output: bad line %q", line)
		}
	}
	return calls, nil
}

// crashWrite is one write to a file, by pwrite or through a mapping.
type crashWrite struct {
	off  int
	data []byte
}

// crashFile is what the model knows of one file of the writer.
type crashFile struct {
	id      int
	created bool   // the create succeeded (else it was in flight)
	path    string // its name after the calls that succeeded
	// names are the names it may have after a power cut: its last durable
	// name first (if durable), then the newer ones.
	names   []string
	durable bool            // names[0] is durable
	pending map[string]bool // directories to fsync before path is durable
	synced  bool            // an fsync or fdatasync of it succeeded

	cur    []byte       // content after the writes that succeeded
	writes []crashWrite // every write, including one in flight or failed
	// For each byte that an fsync, fdatasync or msync acknowledged: its
	// value then (ackVal) and how many writes had been made then (ackAt,
	// -1 for a byte never acknowledged).
	ackVal    []byte
	ackAt     []int32
	ackedSize int // size when the last fsync or fdatasync succeeded
	maxSize   int // largest size any write (even one that failed) may have given it
}

func (f *crashFile) apply(w crashWrite) {
	if end := w.off + len(w.data); end > len(f.cur) {
		f.cur = append(f.cur, make([]byte, end-len(f.cur))...)
	}
	copy(f.cur[w.off:], w.data)
}

// ack records that bytes [lo, hi) as they are now are durable.
func (f *crashFile) ack(lo, hi int) {
	for len(f.ackAt) < hi {
		f.ackAt = append(f.ackAt, -1)
		f.ackVal = append(f.ackVal, 0)
	}
	copy(f.ackVal[lo:hi], f.cur[lo:hi])
	for i := lo; i < hi; i++ {
		f.ackAt[i] = int32(len(f.writes))
	}
}

type crashDir struct {
	name    string
	durable bool // mkdir succeeded and its parent was fsynced after
	created bool // mkdir succeeded (else it was in flight)
}

// crashModel is what the writer's log says about its tree.
type crashModel struct {
	seed  uint64
	calls []*crashCall
	files map[int]*crashFile
	dirs  map[string]*crashDir
	// last is the last call, if it did not succeed: it may or may not have
	// happened, in part.
	last  *crashCall
	lastW *crashWrite // its data, if it is a write
	lastF *crashFile  // its file, if it has one

	acks, syncedBytes int // acknowledged fsync/fdatasync/msync/dirsync, bytes they covered
}

func buildCrashModel(seed uint64, calls []*crashCall) (*crashModel, error) {
	m := &crashModel{seed: seed, calls: calls, files: map[int]*crashFile{},
		dirs: map[string]*crashDir{".": {name: ".", durable: true, created: true}}}
	for i, c := range calls {
		ok := c.status == 'D'
		if !ok && i != len(calls)-1 {
			return nil, fmt.Errorf("%v is not the last call", c)
		}
		if !ok {
			m.last = c
		}
		if err := m.apply(c, ok); err != nil {
			return nil, fmt.Errorf("%v: %v", c, err)
		}
	}
	return m, nil
}

func (m *crashModel) file(arg string) (*crashFile, error) {
	id, err := strconv.Atoi(arg)
	if err != nil {
		return nil, err
	}
	f := m.files[id]
	if f == nil {
		return nil, fmt.Errorf("unknown file %d", id)
	}
	return f, nil
}

func atoiArgs(args []string) ([]int, error) {
	var out []int
	for _, a := range args {
		n, err := strconv.Atoi(a)
		if err != nil {
			return nil, err
		}
		out = append(out, n)
	}
	return out, nil
}

// apply adds a call to the model: as done if ok, else as the last call,
// which may or may not have happened.
func (m *crashModel) apply(c *crashCall, ok bool) error {
	need := map[string]int{"mkdir": 1, "create": 2, "open": 2, "close": 1, "write": 3, "mmapw": 3,
		"fsync": 1, "fdatasync": 1, "fsyncdir": 1, "rename": 3}
	n, known := need[c.op]
	if !known || len(c.args) != n {
		return fmt.Errorf("bad call")
	}
	switch c.op {
	case "mkdir":
		m.dirs[c.args[0]] = &crashDir{name: c.args[0], created: ok}
	case "create":
		id, err := strconv.Atoi(c.args[0])
		if err != nil {
			return err
		}
		p := c.args[1]
		f := &crashFile{id: id, created: ok, path: p, names: []string{p}, pending: map[string]bool{path.Dir(p): true}}
		m.files[id] = f
		m.lastF = f
	case "open", "close":
		f, err := m.file(c.args[0])
		if err != nil {
			return err
		}
		m.lastF = f
	case "write", "mmapw":
		f, err := m.file(c.args[0])
		if err != nil {
			return err
		}
		n, err := atoiArgs(c.args[1:])
		if err != nil {
			return err
		}
		w := crashWrite{off: n[0], data: crashdata.Data(m.seed, c.seq, n[1])}
		f.writes = append(f.writes, w)
		f.maxSize = max(f.maxSize, w.off+len(w.data))
		m.lastF = f
		if !ok {
			m.lastW = &w
			return nil
		}
		f.apply(w)
		if c.op == "mmapw" {
			f.ack(w.off, w.off+len(w.data))
			m.acks++
			m.syncedBytes += len(w.data)
		}
	case "fsync", "fdatasync":
		f, err := m.file(c.args[0])
		if err != nil {
			return err
		}
		m.lastF = f
		if ok {
			f.ack(0, len(f.cur))
			f.ackedSize = len(f.cur)
			f.synced = true
			m.acks++
			m.syncedBytes += len(f.cur)
		}
	case "fsyncdir":
		if !ok {
			return nil
		}
		d := c.args[0]
		m.acks++
		for _, sub := range m.dirs {
			if sub.created && path.Dir(sub.name) == d {
				sub.durable = true
			}
		}
		for _, f := range m.files {
			delete(f.pending, d)
			if f.created && len(f.pending) == 0 {
				f.durable = true
				f.names = []string{f.path}
			}
		}
	case "rename":
		f, err := m.file(c.args[0])
		if err != nil {
			return err
		}
		m.lastF = f
		oldp, newp := c.args[1], c.args[2]
		if oldp != f.path {
			return fmt.Errorf("file %d is %s, not %s", f.id, f.path, oldp)
		}
		f.names = append(f.names, newp)
		if ok {
			f.path = newp
			f.pending[path.Dir(oldp)] = true
			f.pending[path.Dir(newp)] = true
		}
	}
	return nil
}

// dirDurable reports whether directory d and all its parents are durable.
func (m *crashModel) dirDurable(d string) bool {
	for {
		if d == "." {
			return true
		}
		e := m.dirs[d]
		if e == nil || !e.durable {
			return false
		}
		d = path.Dir(d)
	}
}

// treeEntry is one name found under a tree after the crash.
type treeEntry struct {
	dir  bool
	data []byte
}

// readTree reads every file and directory under root, by relative path.
func readTree(root string) (map[string]treeEntry, error) {
	tree := map[string]treeEntry{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil || rel == "." {
			return err
		}
		if d.IsDir() {
			tree[rel] = treeEntry{dir: true}
			return nil
		}
		if !d.Type().IsRegular() {
			return fmt.Errorf("%s: not a regular file (%v)", rel, d.Type())
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		tree[rel] = treeEntry{data: b}
		return nil
	})
	return tree, err
}

// diffTrees describes how two trees differ ("" if they do not).
func diffTrees(a, b map[string]treeEntry) string {
	var out []string
	for name, ea := range a {
		eb, ok := b[name]
		switch {
		case !ok:
			out = append(out, name+": missing")
		case ea.dir != eb.dir:
			out = append(out, name+": a directory in one and a file in the other")
		case !bytes.Equal(ea.data, eb.data):
			out = append(out, name+": "+diffBytes(eb.data, ea.data))
		}
	}
	for name := range b {
		if _, ok := a[name]; !ok {
			out = append(out, name+": extra")
		}
	}
	sort.Strings(out)
	return strings.Join(out, "\n")
}

// crashReport is the outcome of checking a tree against the model.
type crashReport struct {
	problems []string
	// lost counts acknowledged data found missing: acked bytes that do not
	// hold what was acked (or written since), acked sizes cut short, files
	// whose creation was acknowledged and that are gone.
	lost         int
	notes        []string // allowed, but worth a line in the log
	files        int
	bytesChecked int
}

func (r *crashReport) addf(format string, args ...any) {
	r.problems = append(r.problems, fmt.Sprintf(format, args...))
}

// check compares tree (the writer's directory after the crash) with the
// model. After a SIGKILL of the daemon (powerCut false) it must hold
// exactly what the calls that succeeded did, give or take the last call.
// After a power cut it must hold at least what was acknowledged: bytes
// acked by fsync, fdatasync or msync (or written after the ack), sizes
// acked by fsync or fdatasync, and the files and directories whose name
// was made durable by an fsync of the file and of its directory.
func (m *crashModel) check(tree map[string]treeEntry, powerCut bool) *crashReport {
	r := &crashReport{}
	claimed := map[string]bool{}

	dirNames := slices.Sorted(func(yield func(string) bool) {
		for n := range m.dirs {
			if !yield(n) {
				return
			}
		}
	})
	for _, name := range dirNames {
		d := m.dirs[name]
		if name == "." {
			continue
		}
		claimed[name] = true
		e, found := tree[name]
		must := d.created
		if powerCut {
			must = m.dirDurable(name)
		}
		switch {
		case found && !e.dir:
			r.addf("%s: a file, want the directory the writer made", name)
		case !found && must:
			r.lost++
			if powerCut {
				r.addf("%s: directory missing; its mkdir and an fsync of its parent succeeded", name)
			} else {
				r.addf("%s: directory missing; its mkdir succeeded", name)
			}
		}
	}

	ids := make([]int, 0, len(m.files))
	for id := range m.files {
		ids = append(ids, id)
	}
	sort.Ints(ids)
	for _, id := range ids {
		f := m.files[id]
		var candidates []string
		var must bool
		if powerCut {
			candidates = f.names
			must = f.durable && f.synced && m.dirDurable(path.Dir(f.names[0]))
		} else {
			candidates = []string{f.path}
			if m.last != nil && m.lastF == f && m.last.op == "rename" {
				candidates = f.names[len(f.names)-2:]
			}
			must = f.created
		}
		var found []string
		for _, n := range candidates {
			claimed[n] = true
			if e, ok := tree[n]; ok && !e.dir {
				found = append(found, n)
			} else if ok {
				r.addf("%s: a directory, want file %d", n, f.id)
			}
		}
		switch {
		case len(found) == 0 && must:
			r.lost++
			if powerCut {
				r.addf("file %d (%s): missing; it was fsynced, and its name made durable by an fsync of its directory (names it may have: %s)",
					f.id, f.names[0], strings.Join(candidates, " "))
			} else {
				r.addf("file %d: missing, want it at %s", f.id, strings.Join(candidates, " or "))
			}
			continue
		case len(found) == 0:
			continue
		case len(found) > 1:
			r.addf("file %d: found under %d names, %s; a rename left both", f.id, len(found), strings.Join(found, " and "))
		}
		r.files++
		got := tree[found[0]].data
		r.bytesChecked += len(got)
		if powerCut {
			m.checkPowerCut(r, f, found[0], got)
		} else {
			m.checkKill(r, f, found[0], got)
		}
	}

	names := make([]string, 0, len(tree))
	for n := range tree {
		if !claimed[n] {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	for _, n := range names {
		r.addf("%s: not made by the writer (or not under this name)", n)
	}
	return r
}

// checkKill: after a SIGKILL of the daemon, every write that succeeded is
// in the blob; the last call may or may not have happened, in part.
func (m *crashModel) checkKill(r *crashReport, f *crashFile, name string, got []byte) {
	lo, hi := len(f.cur), len(f.cur)
	var lw *crashWrite
	if m.lastF == f && m.lastW != nil {
		lw = m.lastW
		hi = max(hi, lw.off+len(lw.data))
	}
	if len(got) < lo || len(got) > hi {
		r.lost++
		r.addf("file %d (%s): %d bytes, want %d (every write that returned is in the blob)%s",
			f.id, name, len(got), lo, m.lastNote(f))
	}
	bad, first, zeros := 0, -1, 0
	for i, c := range got {
		if i < lo && c == f.cur[i] {
			continue
		}
		if lw != nil && i >= lw.off && i < lw.off+len(lw.data) && c == lw.data[i-lw.off] {
			continue
		}
		if lw != nil && i >= lo && c == 0 {
			// The file was extended for the interrupted write, which
			// had not copied its data yet.
			zeros++
			continue
		}
		if first < 0 {
			first = i
		}
		bad++
	}
	if zeros > 0 {
		r.notes = append(r.notes, fmt.Sprintf("file %d (%s): %d bytes, zeros where the interrupted %v would have extended it (want %d to %d bytes of its data)",
			f.id, name, len(got), m.last, lo, hi))
	}
	if bad > 0 {
		r.lost += bad
		want := byte(0)
		if first < lo {
			want = f.cur[first]
		}
		r.addf("file %d (%s): %d bytes differ from what the writes that returned wrote; first at offset %d: %#02x, want %#02x%s%s",
			f.id, name, bad, first, got[first], want, m.lastNote(f), m.writesAt(f, first))
	}
}

// checkPowerCut: after a power cut, what was acknowledged holds.
func (m *crashModel) checkPowerCut(r *crashReport, f *crashFile, name string, got []byte) {
	if len(got) < f.ackedSize {
		r.lost++
		r.addf("file %d (%s): %d bytes, but an fsync acknowledged %d", f.id, name, len(got), f.ackedSize)
	}
	if len(got) > f.maxSize {
		r.addf("file %d (%s): %d bytes, more than any write made it (%d)", f.id, name, len(got), f.maxSize)
	}
	lostN, lostFirst, junkN, junkFirst := 0, -1, 0, -1
	for i, c := range got {
		if i < len(f.cur) && c == f.cur[i] {
			continue // the latest value: always allowed
		}
		from, acked := 0, false
		if i < len(f.ackAt) && f.ackAt[i] >= 0 {
			from, acked = int(f.ackAt[i]), true
			if c == f.ackVal[i] {
				continue
			}
		} else if c == 0 {
			continue // never acknowledged: may not have reached the disk
		}
		allowed := false
		for _, w := range f.writes[from:] {
			if i >= w.off && i < w.off+len(w.data) && w.data[i-w.off] == c {
				allowed = true
				break
			}
		}
		if allowed {
			continue
		}
		if acked {
			if lostFirst < 0 {
				lostFirst = i
			}
			lostN++
		} else {
			if junkFirst < 0 {
				junkFirst = i
			}
			junkN++
		}
	}
	if lostN > 0 {
		r.lost += lostN
		r.addf("file %d (%s): %d acknowledged bytes lost; first at offset %d: %#02x, acknowledged %#02x%s",
			f.id, name, lostN, lostFirst, got[lostFirst], f.ackVal[lostFirst], m.writesAt(f, lostFirst))
	}
	if junkN > 0 {
		r.addf("file %d (%s): %d bytes hold what was never written there; first at offset %d: %#02x%s",
			f.id, name, junkN, junkFirst, got[junkFirst], m.writesAt(f, junkFirst))
	}
}

// lastNote describes the last call if it concerns f.
func (m *crashModel) lastNote(f *crashFile) string {
	if m.last != nil && m.lastF == f {
		return fmt.Sprintf(" (the last call, %v)", m.last)
	}
	return ""
}

// writesAt lists the calls that wrote offset off of f, for messages.
func (m *crashModel) writesAt(f *crashFile, off int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "\n\tcalls on file %d touching offset %d:", f.id, off)
	id := strconv.Itoa(f.id)
	n := 0
	for _, c := range m.calls {
		if len(c.args) == 0 || c.args[0] != id {
			continue
		}
		switch c.op {
		case "write", "mmapw":
			a, _ := atoiArgs(c.args[1:])
			if off < a[0] || off >= a[0]+a[1] {
				continue
			}
		case "fsync", "fdatasync", "rename", "create":
		default:
			continue
		}
		if n++; n > 40 {
			b.WriteString("\n\t...")
			break
		}
		fmt.Fprintf(&b, "\n\t%v", c)
	}
	return b.String()
}

// summary is a one-line account of a writer's log.
func (m *crashModel) summary() string {
	s := fmt.Sprintf("%d calls, %d files, %d dirs, %d acknowledged syncs", len(m.calls), len(m.files), len(m.dirs)-1, m.acks)
	if m.last != nil {
		s += fmt.Sprintf("; last %v", m.last)
	}
	return s
}

// tailLog returns the last n lines of the writer's output.
func tailLog(out string, n int) string {
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
