package fs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/mmapfs/mmapfs/backing"
	"github.com/mmapfs/mmapfs/fs/inject"
	"github.com/mmapfs/mmapfs/fs/wire"
)

// ControlName is the name of the control file at the root of every mount:
// a client writes a request into it (wire.ControlPowerCut,
// wire.ControlPowerCutDryRun, wire.ControlTrace, and the fault-injection
// requests wire.ControlInjectAdd, ControlInjectList and
// ControlInjectClear) and reads the answer (a
// wire.ControlReply, as JSON) back from the same descriptor. Like the
// stats file it is not in the store and readdir does not list it. Only
// root and the user running the daemon may open it.
const ControlName = ".mmapfs-control"

// requestError is a refused control request: msg is the answer's error
// (one sentence, no errno appended), err its cause if any, errno what the
// write of the request returns.
type requestError struct {
	msg   string
	err   error
	errno syscall.Errno
}

func (e *requestError) Error() string { return e.msg }

func (e *requestError) Unwrap() []error {
	if e.err == nil {
		return []error{e.errno}
	}
	return []error{e.err, e.errno}
}

// controlIno is the control file's inode number, next to the stats file's.
const controlIno = ^uint64(0) - 2

// cutGrace is how long the mount stays up after a power cut for the client
// that asked to read the answer, if it does not close its descriptor.
const cutGrace = 10 * time.Second

// powerCut is a mount's state of the power cut.
type powerCut struct {
	once sync.Once
	done chan struct{} // closed when the mount is to be dropped
}

func (p *powerCut) drop() { p.once.Do(func() { close(p.done) }) }

// isVirtual reports whether name, at the root, is one of the daemon's own
// files.
func isVirtual(name string) bool { return name == StatsName || name == ControlName }

// controlNode is the control file.
type controlNode struct {
	virtualFile
}

func (n *Node) controlInode(ctx context.Context, out *fuse.EntryOut) *gofs.Inode {
	cn := &controlNode{virtualFile{m: n.m, ino: controlIno, perm: 0o600}}
	return n.newVirtual(ctx, cn, &cn.virtualFile, out)
}

var _ = (gofs.NodeSetattrer)((*controlNode)(nil))

// Setattr ignores a truncate to 0 (what `echo powercut > FILE` asks for)
// and refuses anything else.
func (cn *controlNode) Setattr(ctx context.Context, f gofs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if sz, ok := in.GetSize(); ok && sz == 0 && in.Valid&^(fuse.FATTR_SIZE|fuse.FATTR_FH|fuse.FATTR_LOCKOWNER|fuse.FATTR_MTIME|fuse.FATTR_CTIME|fuse.FATTR_MTIME_NOW) == 0 {
		cn.fill(&out.Attr)
		return 0
	}
	return syscall.EPERM
}

var _ = (gofs.NodeOpener)((*controlNode)(nil))

// Open lets root and the daemon's own user in.
func (cn *controlNode) Open(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	c, ok := fuse.FromContext(ctx)
	if !ok || (c.Uid != 0 && c.Uid != uint32(os.Getuid())) {
		return nil, 0, syscall.EACCES
	}
	return &controlHandle{m: cn.m}, fuse.FOPEN_DIRECT_IO, 0
}

// controlHandle is one descriptor of the control file.
type controlHandle struct {
	m *mountState // read only

	// mu guards reply and cut.
	mu    sync.Mutex
	reply []byte // the answer to the last request
	cut   bool   // this descriptor cut the power
}

var _ = (gofs.FileWriter)((*controlHandle)(nil))

// Write takes one request. A request that fails still leaves its answer
// (with the error's message) to read.
func (h *controlHandle) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	req := strings.Join(strings.Fields(string(data)), " ")
	var r wire.ControlReply
	var err error
	if path, ok := tracePath(string(data)); ok {
		r, err = h.m.traceRequest(req, path)
	} else {
		r, err = h.m.control(req)
	}
	if err != nil {
		r.Error = err.Error()
	}
	out, jerr := json.MarshalIndent(r, "", "  ")
	if jerr != nil {
		return 0, h.m.errno("control", ControlName, fmt.Errorf("encoding the answer to %q: %w", req, jerr))
	}
	h.mu.Lock()
	h.reply = append(out, '\n')
	h.cut = h.cut || (err == nil && req == wire.ControlPowerCut)
	h.mu.Unlock()
	if err != nil {
		return 0, h.m.errno("control", ControlName, err)
	}
	return uint32(len(data)), 0
}

// control serves one request.
func (m *mountState) control(req string) (wire.ControlReply, error) {
	st := m.store
	r := wire.ControlReply{Request: req, Simulation: st.Options().PowerCutSim}
	if args, ok := cutWord(req, "inject"); ok {
		return m.injectRequest(r, args)
	}
	var err error
	switch req {
	case wire.ControlPowerCutDryRun:
		if !r.Simulation {
			r.AtRisk = st.AtRisk(0)
			return r, nil
		}
		var rep wire.CutReport
		rep, err = st.PowerCutPlan()
		r.Report = &rep
	case wire.ControlPowerCut:
		var rep wire.CutReport
		rep, err = st.PowerCut()
		if errors.Is(err, backing.ErrNoSim) {
			return r, &requestError{fmt.Sprintf("mounted without --powercut-sim, so no synced content was kept to put back: mount the store again with --powercut-sim to simulate a power cut, or write %q to list what a real one could lose", wire.ControlPowerCutDryRun), err, syscall.EINVAL}
		}
		if rep.Done {
			r.Report = &rep
			m.log.Printf("power cut: %s; dropping the mount once %s is closed", wire.Summarize(&rep).String(true), ControlName)
			time.AfterFunc(cutGrace, m.cut.drop)
		}
	default:
		return r, &requestError{fmt.Sprintf("unknown request %q (want %q, %q, %q, %q, %q or %q)", req, wire.ControlPowerCut, wire.ControlPowerCutDryRun, wire.ControlTrace+" /path/to/socket",
			wire.ControlInjectAdd+" RULE...", wire.ControlInjectList, wire.ControlInjectClear+" [ID]"), nil, syscall.EINVAL}
	}
	if r.Report != nil {
		sum := wire.Summarize(r.Report)
		r.Summary = &sum
	}
	return r, err
}

// tracePath returns the socket path of a request to trace
// (wire.ControlTrace, a space, the path), as written: only the space
// before it and the white space at its end (echo's newline) are not the
// path's.
func tracePath(data string) (string, bool) {
	rest, ok := strings.CutPrefix(strings.TrimLeft(data, " \t\n"), wire.ControlTrace)
	if !ok || (rest != "" && rest[0] != ' ' && rest[0] != '\t' && rest[0] != '\n') {
		return "", false
	}
	return strings.TrimRight(strings.TrimLeft(rest, " \t"), " \t\n"), true
}

var _ = (gofs.FileReader)((*controlHandle)(nil))

// Read returns the answer to the last request.
func (h *controlHandle) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return readAt(h.reply, dest, off), 0
}

var _ = (gofs.FileReleaser)((*controlHandle)(nil))

// Release drops the mount if this descriptor cut the power.
func (h *controlHandle) Release(ctx context.Context) syscall.Errno {
	h.mu.Lock()
	cut := h.cut
	h.mu.Unlock()
	if cut {
		h.m.cut.drop()
	}
	return 0
}

// cutWord returns the words of req after its first word, if that is word.
func cutWord(req, word string) ([]string, bool) {
	f := strings.Fields(req)
	if len(f) == 0 || f[0] != word {
		return nil, false
	}
	return f[1:], true
}

// injectRequest serves the fault-injection requests (wire.ControlInjectAdd,
// ControlInjectList, ControlInjectClear; args are the words after
// "inject"). Every answer lists the rules as they are after it.
func (m *mountState) injectRequest(r wire.ControlReply, args []string) (wire.ControlReply, error) {
	usage := fmt.Sprintf("want %q, %q or %q", wire.ControlInjectAdd+" RULE...", wire.ControlInjectList, wire.ControlInjectClear+" [ID]")
	verb := ""
	if len(args) > 0 {
		verb, args = args[0], args[1:]
	}
	var err error
	switch verb {
	case "add":
		if len(args) == 0 {
			return r, &requestError{"inject add: no rule given; " + usage, nil, syscall.EINVAL}
		}
		rules := make([]*inject.Rule, len(args))
		for i, text := range args {
			if rules[i], err = inject.Parse(text); err != nil {
				return r, &requestError{"inject add: " + err.Error() + "; nothing was added", err, syscall.EINVAL}
			}
			if rules[i].Fsyncgate && !r.Simulation {
				return r, &requestError{fmt.Sprintf("inject add: rule %q: fsyncgate: %v; nothing was added", text, inject.ErrNeedsSim), inject.ErrNeedsSim, syscall.EINVAL}
			}
		}
		for _, rule := range rules {
			id, aerr := m.inj.Add(rule)
			if aerr != nil {
				// Checked above: only a mount without the simulation
				// refuses a rule, and fsyncgate was refused then.
				return r, &requestError{"inject add: " + aerr.Error(), aerr, syscall.EINVAL}
			}
			r.InjectAdded = append(r.InjectAdded, id)
			m.log.Printf("inject: rule #%d %q added", id, rule.Text)
		}
	case "list":
		if len(args) > 0 {
			return r, &requestError{"inject list takes nothing after it; " + usage, nil, syscall.EINVAL}
		}
	case "clear":
		id := 0
		switch {
		case len(args) > 1:
			return r, &requestError{"inject clear takes at most one id; " + usage, nil, syscall.EINVAL}
		case len(args) == 1:
			if id, err = strconv.Atoi(args[0]); err != nil || id < 1 {
				return r, &requestError{fmt.Sprintf("inject clear %s: not a rule id (a whole number from inject list)", args[0]), nil, syscall.EINVAL}
			}
		}
		n, cerr := m.inj.Clear(id)
		if cerr != nil {
			return r, &requestError{"inject clear: " + cerr.Error(), cerr, syscall.ENOENT}
		}
		r.InjectCleared = n
		m.log.Printf("inject: %s cleared", wire.Plural(n, "rule", "rules"))
	default:
		return r, &requestError{fmt.Sprintf("unknown inject request %q; %s", strings.Join(append([]string{"inject", verb}, args...), " "), usage), nil, syscall.EINVAL}
	}
	r.Inject = m.inj.List()
	if r.Inject == nil {
		r.Inject = []wire.InjectRule{}
	}
	return r, nil
}
