// Package crashmodel says what a directory may hold after a crash, from
// the log of the crash writer (integration/crashwriter) that worked in it:
// after a SIGKILL of the daemon, exactly what the calls that succeeded
// did, give or take the last call; after a power cut, at least what was
// acknowledged (fsync, fdatasync, msync, the fsync of a directory) and
// nothing that was never written.
//
// ParseLog reads the writer's log, Build replays it into a Model, ReadTree
// reads the directory as it is after the crash and Model.Check compares
// the two into a Report. It is what the crash and power-cut tests
// (integration/crash_test.go, powercut_test.go) check with, and its own
// test checks the checker on a made-up log.
//
// It must never touch the directory it checks but to read it (ReadTree),
// never depend on how the writer was run or killed, and never drift from
// the writer: the log format is the one crashwriter's doc describes, and
// the bytes of every write are crashdata.Data, on both sides.
package crashmodel

import (
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/mmapfs/mmapfs/integration/crashwriter/crashdata"
)

// Call is one system call of the writer.
type Call struct {
	Seq    int      // its number, from 1
	Op     string   // mkdir, create, open, close, write, mmapw, fsync, fdatasync, fsyncdir, rename
	Args   []string // as the writer logged them
	Status byte     // 'D' succeeded, 'E' failed, 0 no outcome (in flight)
	Err    string   // for 'E': the error
	// Unproven marks an fsyncdir whose success proves nothing: it may
	// have been answered after the power cut (see the power-cut test).
	// Its names are not taken for durable; the calls after it count.
	Unproven bool
}

func (c *Call) String() string {
	s := fmt.Sprintf("call %d %s %s", c.Seq, c.Op, strings.Join(c.Args, " "))
	switch c.Status {
	case 'D':
		return s + ": ok"
	case 'E':
		return s + ": " + c.Err
	}
	return s + ": in flight"
}

// ParseLog reads the writer's output. An incomplete last line is
// ignored.
func ParseLog(out string) ([]*Call, error) {
	var calls []*Call
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
			calls = append(calls, &Call{Seq: seq, Op: f[2], Args: f[3:]})
		case "D", "E":
			if seq != len(calls) || calls[seq-1].Status != 0 {
				return nil, fmt.Errorf("writer output: outcome of a call not in flight: %q", line)
			}
			calls[seq-1].Status = f[0][0]
			if f[0] == "E" {
				calls[seq-1].Err = strings.Join(f[2:], " ")
			}
		default:
			return nil, fmt.Errorf("writer output: bad line %q", line)
		}
	}
	return calls, nil
}

// writeOp is one write to a file, by pwrite or through a mapping.
type writeOp struct {
	off  int
	data []byte
}

// fileState is what the model knows of one file of the writer.
type fileState struct {
	id      int
	created bool   // the create succeeded (else it was in flight)
	path    string // its name after the calls that succeeded
	// names are the names it may have after a power cut: its last durable
	// name first (if durable), then the newer ones.
	names   []string
	durable bool            // names[0] is durable
	pending map[string]bool // directories to fsync before path is durable
	synced  bool            // an fsync or fdatasync of it succeeded

	cur    []byte    // content after the writes that succeeded
	writes []writeOp // every write, including one in flight or failed
	// For each byte that an fsync, fdatasync or msync acknowledged: its
	// value then (ackVal) and how many writes had been made then (ackAt,
	// -1 for a byte never acknowledged).
	ackVal    []byte
	ackAt     []int32
	ackedSize int // size when the last fsync or fdatasync succeeded
	maxSize   int // largest size any write (even one that failed) may have given it
}

func (f *fileState) apply(w writeOp) {
	if end := w.off + len(w.data); end > len(f.cur) {
		f.cur = append(f.cur, make([]byte, end-len(f.cur))...)
	}
	copy(f.cur[w.off:], w.data)
}

// ack records that bytes [lo, hi) as they are now are durable.
func (f *fileState) ack(lo, hi int) {
	for len(f.ackAt) < hi {
		f.ackAt = append(f.ackAt, -1)
		f.ackVal = append(f.ackVal, 0)
	}
	copy(f.ackVal[lo:hi], f.cur[lo:hi])
	for i := lo; i < hi; i++ {
		f.ackAt[i] = int32(len(f.writes))
	}
}

type dirState struct {
	name    string
	durable bool // mkdir succeeded and its parent was fsynced after
	created bool // mkdir succeeded (else it was in flight)
}

// Model is what the writer's log says about its tree.
type Model struct {
	seed  uint64
	calls []*Call
	files map[int]*fileState
	dirs  map[string]*dirState
	// last is the last call, if it did not succeed: it may or may not have
	// happened, in part.
	last  *Call
	lastW *writeOp   // its data, if it is a write
	lastF *fileState // its file, if it has one

	acks, syncedBytes int // acknowledged fsync/fdatasync/msync/dirsync, bytes they covered
}

// Build replays calls, the parsed log of a writer run with seed, into a
// model. Every call but the last must have succeeded.
func Build(seed uint64, calls []*Call) (*Model, error) {
	m := &Model{seed: seed, calls: calls, files: map[int]*fileState{},
		dirs: map[string]*dirState{".": {name: ".", durable: true, created: true}}}
	for i, c := range calls {
		ok := c.Status == 'D'
		if !ok && i != len(calls)-1 {
			return nil, fmt.Errorf("%v is not the last call", c)
		}
		if !ok {
			m.last = c
		}
		if err := m.apply(c, ok); err != nil {
			return nil, fmt.Errorf("%v: %w", c, err)
		}
	}
	return m, nil
}

func (m *Model) fileArg(arg string) (*fileState, error) {
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
func (m *Model) apply(c *Call, ok bool) error {
	need := map[string]int{"mkdir": 1, "create": 2, "open": 2, "close": 1, "write": 3, "mmapw": 3,
		"fsync": 1, "fdatasync": 1, "fsyncdir": 1, "rename": 3}
	n, known := need[c.Op]
	if !known || len(c.Args) != n {
		return fmt.Errorf("bad call")
	}
	switch c.Op {
	case "mkdir":
		m.dirs[c.Args[0]] = &dirState{name: c.Args[0], created: ok}
	case "create":
		id, err := strconv.Atoi(c.Args[0])
		if err != nil {
			return err
		}
		p := c.Args[1]
		f := &fileState{id: id, created: ok, path: p, names: []string{p}, pending: map[string]bool{path.Dir(p): true}}
		m.files[id] = f
		m.lastF = f
	case "open", "close":
		f, err := m.fileArg(c.Args[0])
		if err != nil {
			return err
		}
		m.lastF = f
	case "write", "mmapw":
		f, err := m.fileArg(c.Args[0])
		if err != nil {
			return err
		}
		n, err := atoiArgs(c.Args[1:])
		if err != nil {
			return err
		}
		w := writeOp{off: n[0], data: crashdata.Data(m.seed, c.Seq, n[1])}
		f.writes = append(f.writes, w)
		f.maxSize = max(f.maxSize, w.off+len(w.data))
		m.lastF = f
		if !ok {
			m.lastW = &w
			return nil
		}
		f.apply(w)
		if c.Op == "mmapw" {
			f.ack(w.off, w.off+len(w.data))
			m.acks++
			m.syncedBytes += len(w.data)
		}
	case "fsync", "fdatasync":
		f, err := m.fileArg(c.Args[0])
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
		if !ok || c.Unproven {
			return nil
		}
		d := c.Args[0]
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
		f, err := m.fileArg(c.Args[0])
		if err != nil {
			return err
		}
		m.lastF = f
		oldp, newp := c.Args[1], c.Args[2]
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

// Acks is how many calls acknowledged durability (fsync, fdatasync, an
// msync of a mapped write, an fsync of a directory).
func (m *Model) Acks() int { return m.acks }

// Last is the writer's last call if it did not succeed (it may or may not
// have happened, in part), else nil.
func (m *Model) Last() *Call { return m.last }

// dirDurable reports whether directory d and all its parents are durable.
func (m *Model) dirDurable(d string) bool {
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

// Tree is what a directory holds, by path relative to it ("d1/f2").
type Tree map[string]Entry

// Entry is one name found under a tree after the crash.
type Entry struct {
	Dir  bool   // a directory
	Data []byte // a regular file's content
}

// ReadTree reads every file and directory under root, by relative path.
func ReadTree(root string) (Tree, error) {
	tree := Tree{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil || rel == "." {
			return err
		}
		if d.IsDir() {
			tree[rel] = Entry{Dir: true}
			return nil
		}
		if !d.Type().IsRegular() {
			return fmt.Errorf("%s: not a regular file (%v)", rel, d.Type())
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		tree[rel] = Entry{Data: b}
		return nil
	})
	return tree, err
}

// Report is the outcome of checking a tree against the model.
type Report struct {
	Problems []string
	// lost counts acknowledged data found missing: acked bytes that do not
	// hold what was acked (or written since), acked sizes cut short, files
	// whose creation was acknowledged and that are gone.
	Lost         int
	Notes        []string // allowed, but worth a line in the log
	Files        int      // files found and checked
	BytesChecked int      // bytes of them read
}

func (r *Report) addf(format string, args ...any) {
	r.Problems = append(r.Problems, fmt.Sprintf(format, args...))
}

// Check compares tree (the writer's directory after the crash) with the
// model. After a SIGKILL of the daemon (powerCut false) it must hold
// exactly what the calls that succeeded did, give or take the last call.
// After a power cut it must hold at least what was acknowledged: bytes
// acked by fsync, fdatasync or msync (or written after the ack), sizes
// acked by fsync or fdatasync, and the files and directories whose name
// was made durable by an fsync of the file and of its directory.
func (m *Model) Check(tree Tree, powerCut bool) *Report {
	r := &Report{}
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
		case found && !e.Dir:
			r.addf("%s: a file, want the directory the writer made", name)
		case !found && must:
			r.Lost++
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
			if m.last != nil && m.lastF == f && m.last.Op == "rename" {
				candidates = f.names[len(f.names)-2:]
			}
			must = f.created
		}
		var found []string
		for _, n := range candidates {
			claimed[n] = true
			if e, ok := tree[n]; ok && !e.Dir {
				found = append(found, n)
			} else if ok {
				r.addf("%s: a directory, want file %d", n, f.id)
			}
		}
		switch {
		case len(found) == 0 && must:
			r.Lost++
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
		r.Files++
		got := tree[found[0]].Data
		r.BytesChecked += len(got)
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
func (m *Model) checkKill(r *Report, f *fileState, name string, got []byte) {
	lo, hi := len(f.cur), len(f.cur)
	var lw *writeOp
	if m.lastF == f && m.lastW != nil {
		lw = m.lastW
		hi = max(hi, lw.off+len(lw.data))
	}
	if len(got) < lo || len(got) > hi {
		r.Lost++
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
		r.Notes = append(r.Notes, fmt.Sprintf("file %d (%s): %d bytes, zeros where the interrupted %v would have extended it (want %d to %d bytes of its data)",
			f.id, name, len(got), m.last, lo, hi))
	}
	if bad > 0 {
		r.Lost += bad
		want := byte(0)
		if first < lo {
			want = f.cur[first]
		}
		r.addf("file %d (%s): %d bytes differ from what the writes that returned wrote; first at offset %d: %#02x, want %#02x%s%s",
			f.id, name, bad, first, got[first], want, m.lastNote(f), m.writesAt(f, first))
	}
}

// checkPowerCut: after a power cut, what was acknowledged holds.
func (m *Model) checkPowerCut(r *Report, f *fileState, name string, got []byte) {
	if len(got) < f.ackedSize {
		r.Lost++
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
		r.Lost += lostN
		r.addf("file %d (%s): %d acknowledged bytes lost; first at offset %d: %#02x, acknowledged %#02x%s",
			f.id, name, lostN, lostFirst, got[lostFirst], f.ackVal[lostFirst], m.writesAt(f, lostFirst))
	}
	if junkN > 0 {
		r.addf("file %d (%s): %d bytes hold what was never written there; first at offset %d: %#02x%s",
			f.id, name, junkN, junkFirst, got[junkFirst], m.writesAt(f, junkFirst))
	}
}

// lastNote describes the last call if it concerns f.
func (m *Model) lastNote(f *fileState) string {
	if m.last != nil && m.lastF == f {
		return fmt.Sprintf(" (the last call, %v)", m.last)
	}
	return ""
}

// writesAt lists the calls that wrote offset off of f, for messages.
func (m *Model) writesAt(f *fileState, off int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "\n\tcalls on file %d touching offset %d:", f.id, off)
	id := strconv.Itoa(f.id)
	n := 0
	for _, c := range m.calls {
		if len(c.Args) == 0 || c.Args[0] != id {
			continue
		}
		switch c.Op {
		case "write", "mmapw":
			a, _ := atoiArgs(c.Args[1:])
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

// Summary is a one-line account of a writer's log.
func (m *Model) Summary() string {
	s := fmt.Sprintf("%d calls, %d files, %d dirs, %d acknowledged syncs", len(m.calls), len(m.files), len(m.dirs)-1, m.acks)
	if m.last != nil {
		s += fmt.Sprintf("; last %v", m.last)
	}
	return s
}
