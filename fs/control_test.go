package fs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/mmapfs/mmapfs/backing"
	"github.com/mmapfs/mmapfs/fs/inject"
	"github.com/mmapfs/mmapfs/fs/wire"
)

// TestRequestError: a refused request's message is one sentence without
// an errno appended, and the errno and the cause are still in its chain.
func TestRequestError(t *testing.T) {
	t.Parallel()
	err := error(&requestError{"mounted without --powercut-sim", backing.ErrNoSim, syscall.EINVAL})
	if err.Error() != "mounted without --powercut-sim" {
		t.Errorf("message %q", err)
	}
	var e syscall.Errno
	if !errors.As(err, &e) || e != syscall.EINVAL || !errors.Is(err, backing.ErrNoSim) {
		t.Errorf("chain: errno %v, ErrNoSim %v", e, errors.Is(err, backing.ErrNoSim))
	}
}

// ask writes req to a new descriptor of m's control file and reads the
// answer back, as a client does; it returns the handle (for Release), the
// write's errno and the answer.
func ask(t *testing.T, m *mountState, req string) (*controlHandle, syscall.Errno, wire.ControlReply) {
	t.Helper()
	h := &controlHandle{m: m}
	n, errno := h.Write(context.Background(), []byte(req), 0)
	if errno == 0 && n != uint32(len(req)) {
		t.Errorf("write of %q: %d bytes taken, want %d", req, n, len(req))
	}
	res, rerrno := h.Read(context.Background(), make([]byte, 1<<20), 0)
	if rerrno != 0 {
		t.Fatalf("read of the answer to %q: %v", req, rerrno)
	}
	raw, st := res.Bytes(make([]byte, 1<<20))
	if st != fuse.OK {
		t.Fatalf("answer to %q: %v", req, st)
	}
	var r wire.ControlReply
	if err := json.Unmarshal(raw, &r); err != nil {
		t.Fatalf("answer to %q is not a reply: %v\n%s", req, err, raw)
	}
	return h, errno, r
}

// writeUnsynced writes data at the start of the store file name and keeps
// it unsynced.
func writeUnsynced(t *testing.T, m *mountState, name string, data []byte) {
	t.Helper()
	b, err := m.store.Open(name, syscall.O_RDWR|syscall.O_CREAT, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.WriteAt(data, 0); err != nil {
		t.Fatal(err)
	}
	if err := m.store.Release(b); err != nil {
		t.Fatal(err)
	}
}

// TestControlRequests: the control file takes exactly its two requests,
// written with any spacing (a trailing newline from echo, runs of
// blanks); anything else, an empty write or bytes that are not text
// included, is refused with EINVAL and an answer that names the request
// and the two it could have been.
func TestControlRequests(t *testing.T) {
	t.Parallel()
	m := testMountState(t, backing.Options{})
	for _, req := range []string{"powercut --dry-run", "powercut --dry-run\n", "  powercut \t --dry-run \n"} {
		_, errno, r := ask(t, m, req)
		if errno != 0 || r.Request != wire.ControlPowerCutDryRun || r.Error != "" || r.Simulation || r.Report != nil || r.Summary != nil || r.AtRisk != nil {
			t.Errorf("%q: errno %v, answer %+v; want a dry run that lists nothing", req, errno, r)
		}
	}
	for req, norm := range map[string]string{
		"":                     "",
		"\n":                   "",
		"powercut --dry-run x": "powercut --dry-run x",
		"powercut -n":          "powercut -n",
		"POWERCUT":             "POWERCUT",
		"powercut\x00":         "powercut\x00",
		"stats":                "stats",
	} {
		_, errno, r := ask(t, m, req)
		want := fmt.Sprintf("unknown request %q (want %q, %q, %q, %q, %q or %q)", norm, "powercut", "powercut --dry-run", "trace /path/to/socket", "inject add RULE...", "inject list", "inject clear [ID]")
		if errno != syscall.EINVAL || r.Error != want || r.Request != norm || r.Report != nil {
			t.Errorf("%q: errno %v, answer %+v; want EINVAL and %q", req, errno, r, want)
		}
	}
	// Bytes that are not UTF-8 are quoted in the error; the request
	// echoed back is JSON, where they become U+FFFD.
	_, errno, r := ask(t, m, "\xff\xfe")
	if want := `unknown request "\xff\xfe"`; errno != syscall.EINVAL || !strings.HasPrefix(r.Error, want) || r.Request != "\ufffd\ufffd" {
		t.Errorf("not UTF-8: errno %v, answer %+v; want EINVAL and %q", errno, r, want)
	}
}

// TestControlDryRunAtRisk: without the simulation a dry run lists the
// unsynced writes, as the stats do.
func TestControlDryRunAtRisk(t *testing.T) {
	t.Parallel()
	m := testMountState(t, backing.Options{})
	writeUnsynced(t, m, "f", []byte("hello"))
	_, errno, r := ask(t, m, "powercut --dry-run")
	if errno != 0 || r.Simulation || r.Report != nil || len(r.AtRisk) != 1 || r.AtRisk[0].Name != "f" || r.AtRisk[0].Bytes == 0 {
		t.Errorf("errno %v, answer %+v; want f at risk", errno, r)
	}
}

// TestControlPowerCutWithoutSim: a power cut on a mount without the
// simulation is refused with EINVAL, the answer says why and what to do
// instead, and the cause stays in the error's chain; nothing is cut.
func TestControlPowerCutWithoutSim(t *testing.T) {
	t.Parallel()
	m := testMountState(t, backing.Options{})
	h, errno, r := ask(t, m, "powercut\n")
	if errno != syscall.EINVAL || r.Request != "powercut" || r.Simulation || r.Report != nil {
		t.Errorf("errno %v, answer %+v; want EINVAL, no report", errno, r)
	}
	for _, want := range []string{"mounted without --powercut-sim", "--powercut-sim to simulate a power cut", `write "powercut --dry-run"`} {
		if !strings.Contains(r.Error, want) {
			t.Errorf("error %q lacks %q", r.Error, want)
		}
	}
	if _, err := m.control("powercut"); !errors.Is(err, backing.ErrNoSim) || !errors.Is(err, syscall.EINVAL) {
		t.Errorf("control(powercut) = %v; want ErrNoSim and EINVAL in its chain", err)
	}
	h.Release(context.Background())
	select {
	case <-m.cut.done:
		t.Errorf("a refused power cut drops the mount")
	default:
	}
}

// TestControlPowerCut: with the simulation, a dry run reports what a cut
// would do and cuts nothing; the cut reports what it did, refuses a
// second cut (EALREADY, with its answer), and drops the mount once the
// descriptor that asked is released, not before.
func TestControlPowerCut(t *testing.T) {
	t.Parallel()
	m := testMountState(t, backing.Options{PowerCutSim: true})
	writeUnsynced(t, m, "f", []byte("hello"))
	_, errno, r := ask(t, m, "powercut --dry-run")
	if errno != 0 || !r.Simulation || r.Report == nil || r.Report.Done || len(r.Report.Files) != 1 || r.Summary == nil || *r.Summary != wire.Summarize(r.Report) {
		t.Fatalf("dry run: errno %v, answer %+v; want a plan of f with its summary", errno, r)
	}
	h, errno, r := ask(t, m, "powercut")
	if errno != 0 || r.Error != "" || r.Report == nil || !r.Report.Done || len(r.Report.Files) != 1 || r.Report.Files[0].Name != "f" || r.Summary == nil {
		t.Fatalf("cut: errno %v, answer %+v; want f cut", errno, r)
	}
	select {
	case <-m.cut.done:
		t.Fatalf("the mount is dropped before the descriptor that asked is released")
	default:
	}
	_, errno, r = ask(t, m, "powercut")
	if errno != syscall.EALREADY || !strings.Contains(r.Error, "the power was cut already") {
		t.Errorf("second cut: errno %v, answer %+v; want EALREADY", errno, r)
	}
	h.Release(context.Background())
	select {
	case <-m.cut.done:
	case <-time.After(5 * time.Second):
		t.Errorf("the mount is not dropped after the descriptor that cut was released")
	}
}

// TestControlFileAccess: only root and the daemon's user may open the
// control file; it may be truncated to 0 (echo > FILE does) and nothing
// else may change it.
func TestControlFileAccess(t *testing.T) {
	t.Parallel()
	m := testMountState(t, backing.Options{})
	cn := &controlNode{virtualFile{m: m, ino: controlIno, perm: 0o600}}
	caller := func(uid uint32) context.Context {
		return fuse.NewContext(context.Background(), &fuse.Caller{Owner: fuse.Owner{Uid: uid}})
	}
	if _, _, errno := cn.Open(caller(uint32(os.Getuid())), syscall.O_RDWR); errno != 0 {
		t.Errorf("open as the daemon's user: %v", errno)
	}
	if _, _, errno := cn.Open(caller(0), syscall.O_RDWR); errno != 0 {
		t.Errorf("open as root: %v", errno)
	}
	if _, _, errno := cn.Open(caller(uint32(os.Getuid())+12345), syscall.O_RDWR); errno != syscall.EACCES {
		t.Errorf("open as another user: %v, want EACCES", errno)
	}
	if _, _, errno := cn.Open(context.Background(), syscall.O_RDWR); errno != syscall.EACCES {
		t.Errorf("open without a caller: %v, want EACCES", errno)
	}
	var out fuse.AttrOut
	trunc := &fuse.SetAttrIn{SetAttrInCommon: fuse.SetAttrInCommon{Valid: fuse.FATTR_SIZE | fuse.FATTR_MTIME_NOW | fuse.FATTR_CTIME, Size: 0}}
	if errno := cn.Setattr(context.Background(), nil, trunc, &out); errno != 0 || out.Mode != syscall.S_IFREG|0o600 {
		t.Errorf("truncate to 0: %v, mode %o", errno, out.Mode)
	}
	for name, in := range map[string]*fuse.SetAttrIn{
		"truncate to 1":      {SetAttrInCommon: fuse.SetAttrInCommon{Valid: fuse.FATTR_SIZE, Size: 1}},
		"chmod":              {SetAttrInCommon: fuse.SetAttrInCommon{Valid: fuse.FATTR_MODE, Mode: 0o666}},
		"truncate and chmod": {SetAttrInCommon: fuse.SetAttrInCommon{Valid: fuse.FATTR_SIZE | fuse.FATTR_MODE, Mode: 0o666}},
	} {
		if errno := cn.Setattr(context.Background(), nil, in, &out); errno != syscall.EPERM {
			t.Errorf("%s: %v, want EPERM", name, errno)
		}
	}
}

// TestControlInject: the inject requests add rules (all or none), list
// them with their counters and clear one or all; bad requests and bad
// rules are refused with EINVAL (an unknown id with ENOENT) and an answer
// that says what is wrong, changing nothing.
func TestControlInject(t *testing.T) {
	t.Parallel()
	m := testMountState(t, backing.Options{})
	m.inj = inject.NewSet(0, false)
	_, errno, r := ask(t, m, "inject add op=fsync,errno=EIO,times=1   op=write,torn=10\n")
	if errno != 0 || r.Error != "" || fmt.Sprint(r.InjectAdded) != "[1 2]" || len(r.Inject) != 2 || r.Inject[1].Rule != "op=write,torn=10" {
		t.Fatalf("add: errno %v, answer %+v", errno, r)
	}
	m.inj.Decide("fsync", "f", 0)
	_, errno, r = ask(t, m, "inject list")
	if errno != 0 || len(r.Inject) != 2 || r.Inject[0].Hits != 1 || r.Inject[0].LastPath != "f" || r.Inject[1].Hits != 0 {
		t.Fatalf("list: errno %v, answer %+v", errno, r)
	}
	for req, want := range map[string]string{
		"inject add op=fsync,errno=EIO op=wrte,errno=EIO": `inject add: rule "op=wrte,errno=EIO": op "wrte": want one of read, write`,
		"inject add op=msync,errno=EIO,fsyncgate":         `inject add: rule "op=msync,errno=EIO,fsyncgate": fsyncgate: fsyncgate puts the lost pages back to their last synced content, which only the power-cut simulation keeps: mount with --powercut-sim; nothing was added`,
		"inject add":       "inject add: no rule given",
		"inject":           `unknown inject request "inject "`,
		"inject remove 1":  `unknown inject request "inject remove 1"`,
		"inject list 1":    "inject list takes nothing after it",
		"inject clear x":   "inject clear x: not a rule id",
		"inject clear 1 2": "inject clear takes at most one id",
		"inject clear 9":   "inject clear: no rule 9: the mount's rules are 1, 2",
	} {
		_, errno, r := ask(t, m, req)
		if errno == 0 || !strings.HasPrefix(r.Error, want) {
			t.Errorf("%q: errno %v, error %q; want one starting %q", req, errno, r.Error, want)
		}
	}
	if l := m.inj.List(); len(l) != 2 {
		t.Fatalf("a refused request changed the rules: %+v", l)
	}
	_, errno, r = ask(t, m, "inject clear 1")
	if errno != 0 || r.InjectCleared != 1 || len(r.Inject) != 1 || r.Inject[0].ID != 2 {
		t.Fatalf("clear 1: errno %v, answer %+v", errno, r)
	}
	_, errno, r = ask(t, m, "inject clear")
	if errno != 0 || r.InjectCleared != 1 || len(r.Inject) != 0 || m.inj.Active() {
		t.Fatalf("clear: errno %v, answer %+v", errno, r)
	}
	// With the simulation, fsyncgate is taken.
	sm := testMountState(t, backing.Options{PowerCutSim: true})
	sm.inj = inject.NewSet(0, true)
	if _, errno, r := ask(t, sm, "inject add op=msync,errno=EIO,fsyncgate"); errno != 0 || len(r.InjectAdded) != 1 {
		t.Fatalf("fsyncgate with the simulation: errno %v, answer %+v", errno, r)
	}
}
