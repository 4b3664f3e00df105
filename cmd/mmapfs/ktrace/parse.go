package ktrace

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
)

// lineType is what one line of the trace pipe is.
type lineType int

const (
	lineEvent lineType = iota + 1 // an event, parsed into the Event
	lineLost                      // "CPU:N [LOST M EVENTS]"
)

// internMax bounds each of the parser's string tables; a table that
// fills is emptied and refilled, so a long trace of many short-lived
// tasks costs memory in proportion to the tasks alive at once.
const internMax = 4096

// parser turns lines of a trace pipe (the text format of
// kernel/trace/trace_output.c with the instance's options: irq-info,
// record-tgid, no latency format) into Events. It is used by one
// goroutine at a time (Run's); it has no lock.
type parser struct {
	pageShift uint   // the events print page offsets as index<<PAGE_SHIFT
	procRoot  string // "/proc"; where "<...>" comms are looked up

	strs      map[string]string // interned comms, bdi names, reasons, syscall names
	procTasks map[int]task      // pid → what /proc says of a "<...>" task
	wbStart   map[int]int64     // pid → nr_pages of that task's last writeback_start

	// Set by a lineLost line.
	lostCPU int
	lost    uint64
}

func newParser() *parser {
	shift := uint(0)
	for 1<<shift < os.Getpagesize() {
		shift++
	}
	return &parser{
		pageShift: shift,
		procRoot:  "/proc",
		strs:      make(map[string]string),
		procTasks: make(map[int]task),
		wbStart:   make(map[int]int64),
	}
}

// intern returns b as a string, allocating only the first time it sees it.
func (p *parser) intern(b []byte) string {
	if s, ok := p.strs[string(b)]; ok {
		return s
	}
	if len(p.strs) >= internMax {
		clear(p.strs)
	}
	s := string(b)
	p.strs[s] = s
	return s
}

// unknownComm is how the kernel prints a task whose comm it did not save.
const unknownComm = "<...>"

// task is what /proc says of a task the kernel printed as "<...>".
type task struct {
	comm string
	tgid int
}

// procTask is the comm and tgid of task pid from /proc (cached), or
// "<...>" and 0 when the task is gone.
func (p *parser) procTask(pid int) task {
	if t, ok := p.procTasks[pid]; ok {
		return t
	}
	// When the task is gone the kernel's "<...>" is all there is; it
	// is cached like a name so that a burst of its events does not
	// each try /proc.
	t := task{comm: unknownComm}
	dir := p.procRoot + "/" + strconv.Itoa(pid)
	if b, err := os.ReadFile(dir + "/comm"); err == nil {
		t.comm = p.intern(bytes.TrimSuffix(b, []byte("\n")))
		if b, err := os.ReadFile(dir + "/status"); err == nil {
			if _, v, ok := bytes.Cut(b, []byte("\nTgid:\t")); ok {
				if n, _, ok := cutUint(v); ok {
					t.tgid = int(n)
				}
			}
		}
	}
	if len(p.procTasks) >= internMax {
		clear(p.procTasks)
	}
	p.procTasks[pid] = t
	return t
}

// parseLine parses one line of the trace pipe, without its newline, into
// ev (every field is set anew). A lost-events line sets p.lostCPU and
// p.lost instead.
func (p *parser) parseLine(line []byte, ev *Event) (lineType, error) {
	if rest, ok := bytes.CutPrefix(line, []byte("CPU:")); ok {
		return p.parseLost(line, rest)
	}
	*ev = Event{}
	body, err := p.parseHeader(line, ev)
	if err != nil {
		return 0, err
	}
	if err := p.parseBody(body, ev); err != nil {
		return 0, fmt.Errorf("%w in trace line %q", err, line)
	}
	return lineEvent, nil
}

// parseLost parses "CPU:1 [LOST 41472 EVENTS]".
func (p *parser) parseLost(line, rest []byte) (lineType, error) {
	cpu, rest, ok := cutUint(rest)
	if ok {
		rest, ok = bytes.CutPrefix(rest, []byte(" [LOST "))
	}
	var n uint64
	if ok {
		n, rest, ok = cutUint(rest)
	}
	if !ok || !bytes.Equal(rest, []byte(" EVENTS]")) {
		return 0, fmt.Errorf("malformed lost-events line %q", line)
	}
	p.lostCPU, p.lost = int(cpu), n
	return lineLost, nil
}

// parseHeader parses the task, CPU and time of
//
//	"            bash-9333    (   9333) [001] .....  9947.467604: sys_close -> 0x0"
//
// and returns the rest from the event name on. The comm is printed
// right-aligned in 16 columns and is at most 15 bytes, so the '-' before
// the pid is at column 16 whatever the comm holds (spaces, dashes).
func (p *parser) parseHeader(line []byte, ev *Event) ([]byte, error) {
	dash := 16
	if len(line) <= dash || line[dash] != '-' {
		dash = findPidDash(line)
		if dash < 0 {
			return nil, fmt.Errorf("no task-pid in trace line %q", line)
		}
	}
	comm := bytes.TrimLeft(line[:dash], " ")
	pid, rest, ok := cutUint(line[dash+1:])
	if !ok {
		return nil, fmt.Errorf("no pid in trace line %q", line)
	}
	ev.Pid = int(pid)
	unknown := string(comm) == unknownComm
	if !unknown {
		ev.Comm = p.intern(comm)
	}
	rest = bytes.TrimLeft(rest, " ")
	if len(rest) > 0 && rest[0] == '(' { // record-tgid: "(   9333)" or "(-------)"
		end := bytes.IndexByte(rest, ')')
		if end < 0 {
			return nil, fmt.Errorf("unterminated tgid in trace line %q", line)
		}
		if t, _, ok := cutUint(bytes.TrimLeft(rest[1:end], " ")); ok {
			ev.Tgid = int(t)
		}
		rest = bytes.TrimLeft(rest[end+1:], " ")
	}
	if len(rest) == 0 || rest[0] != '[' {
		return nil, fmt.Errorf("no [cpu] in trace line %q", line)
	}
	cpu, rest, ok := cutUint(rest[1:])
	if !ok || len(rest) == 0 || rest[0] != ']' {
		return nil, fmt.Errorf("no [cpu] in trace line %q", line)
	}
	ev.CPU = int(cpu)
	rest = bytes.TrimLeft(rest[1:], " ")
	// The irq-info flags ("d..2."), then the timestamp "9947.467604:".
	tok, after := cutSpace(rest)
	if len(tok) == 0 || tok[len(tok)-1] != ':' {
		tok, after = cutSpace(bytes.TrimLeft(after, " "))
	}
	t, ok := parseTimestamp(bytes.TrimSuffix(tok, []byte(":")))
	if !ok {
		return nil, fmt.Errorf("no timestamp in trace line %q", line)
	}
	ev.Time = t
	if unknown {
		pt := p.procTask(ev.Pid)
		ev.Comm = pt.comm
		if ev.Tgid == 0 {
			ev.Tgid = pt.tgid
		}
	}
	return bytes.TrimLeft(after, " "), nil
}

// findPidDash finds the '-' of "comm-pid" when the comm is not printed in
// 16 columns: the first '-' followed by digits, spaces and '(' or '['.
func findPidDash(line []byte) int {
	for i := 0; i < len(line); i++ {
		if line[i] != '-' {
			continue
		}
		_, rest, ok := cutUint(line[i+1:])
		rest = bytes.TrimLeft(rest, " ")
		if ok && len(rest) > 0 && (rest[0] == '(' || rest[0] == '[') {
			return i
		}
	}
	return -1
}

// parseTimestamp parses "9947.467604" (seconds of the trace clock) to ns.
func parseTimestamp(b []byte) (int64, bool) {
	sec, rest, ok := cutUint(b)
	if !ok || len(rest) < 2 || rest[0] != '.' {
		return 0, false
	}
	frac := rest[1:]
	var ns int64
	digits := 0
	for _, c := range frac {
		if c < '0' || c > '9' {
			return 0, false
		}
		if digits < 9 {
			ns = ns*10 + int64(c-'0')
			digits++
		}
	}
	for ; digits < 9; digits++ {
		ns *= 10
	}
	return int64(sec)*1e9 + ns, true
}

// parseBody parses "name: fields" (or a syscall's "sys_x(args)",
// "sys_x -> ret") into ev.
func (p *parser) parseBody(b []byte, ev *Event) error {
	end := bytes.IndexAny(b, ":( ")
	if end < 0 {
		return fmt.Errorf("no event name")
	}
	name, rest := b[:end], b[end:]
	if s, ok := bytes.CutPrefix(name, []byte("sys_")); ok && len(rest) > 0 && rest[0] != ':' {
		return p.parseSyscall(s, rest, ev)
	}
	rest = bytes.TrimPrefix(rest, []byte(": "))
	switch string(name) {
	case "fuse_request_send":
		ev.Kind = RequestSend
		return p.fields(rest, func(k string, v []byte) (ok bool) {
			switch k {
			case "connection":
				ev.Conn, ok = u32(v)
			case "req":
				ev.Unique, ok = parseUint(v)
			case "opcode":
				ev.Opcode, ok = u32(v)
			case "len":
				ev.Len, ok = u32(v)
			default:
				return true
			}
			return ok
		}, "connection", "req", "opcode", "len")
	case "fuse_request_end":
		ev.Kind = RequestEnd
		return p.fields(rest, func(k string, v []byte) (ok bool) {
			switch k {
			case "connection":
				ev.Conn, ok = u32(v)
			case "req":
				ev.Unique, ok = parseUint(v)
			case "len":
				ev.Len, ok = u32(v)
			case "error":
				var n int64
				n, ok = parseInt(v)
				ev.Error = int32(n)
			default:
				return true
			}
			return ok
		}, "connection", "req", "len", "error")
	case "page_cache_sync_ra", "page_cache_async_ra":
		ev.Kind = SyncReadahead
		if name[len("page_cache_")] == 'a' {
			ev.Kind = AsyncReadahead
		}
		return p.fields(rest, func(k string, v []byte) (ok bool) {
			switch k {
			case "dev":
				ev.Dev, ok = parseDev(v)
			case "ino":
				ev.Ino, ok = parseHex(v)
			case "index":
				ev.Index, ok = parseUint(v)
			case "req_count":
				ev.ReqCount, ok = parseUint(v)
			case "order":
				ev.Order, ok = u32(v)
			case "size":
				ev.Size, ok = u32(v)
			case "async_size":
				ev.AsyncSize, ok = u32(v)
			case "ra_pages":
				ev.RAPages, ok = u32(v)
			case "mmap_miss":
				ev.MmapMiss, ok = u32(v)
			case "prev_pos":
				ev.PrevPos, ok = parseInt(v)
			default:
				return true
			}
			return ok
		}, "dev", "ino", "index", "req_count", "order", "size", "async_size", "ra_pages", "mmap_miss", "prev_pos")
	case "mm_filemap_fault":
		ev.Kind = Fault
		ev.Pages = 1
		return p.fields(rest, func(k string, v []byte) (ok bool) {
			switch k {
			case "dev":
				ev.Dev, ok = parseDev(v)
			case "ino":
				ev.Ino, ok = parseHex(v)
			case "ofs":
				var ofs uint64
				ofs, ok = parseUint(v)
				ev.Index = ofs >> p.pageShift
			default:
				return true
			}
			return ok
		}, "dev", "ino", "ofs")
	case "mm_filemap_add_to_page_cache", "mm_filemap_delete_from_page_cache":
		ev.Kind = PageAdd
		if name[len("mm_filemap_")] == 'd' {
			ev.Kind = PageDelete
		}
		err := p.fields(rest, func(k string, v []byte) (ok bool) {
			switch k {
			case "dev":
				ev.Dev, ok = parseDev(v)
			case "ino":
				ev.Ino, ok = parseHex(v)
			case "ofs":
				var ofs uint64
				ofs, ok = parseUint(v)
				ev.Index = ofs >> p.pageShift
			case "order":
				ev.Order, ok = u32(v)
			default:
				return true
			}
			return ok
		}, "dev", "ino", "ofs", "order")
		if ev.Order < 32 {
			ev.Pages = 1 << ev.Order
		}
		return err
	case "balance_dirty_pages":
		ev.Kind = Throttle
		return p.fields(rest, func(k string, v []byte) (ok bool) {
			switch k {
			case "bdi":
				ev.BDI, ok = p.intern(bytes.TrimSuffix(v, []byte(":"))), true
			case "limit":
				ev.Limit, ok = parseUint(v)
			case "setpoint":
				ev.Setpoint, ok = parseUint(v)
			case "dirty":
				ev.Dirty, ok = parseUint(v)
			case "wb_setpoint":
				ev.WBSetpoint, ok = parseUint(v)
			case "wb_dirty":
				ev.WBDirty, ok = parseUint(v)
			// The kernel records these in ms: (jiffies)*1000/HZ
			// in include/trace/events/writeback.h.
			case "paused":
				ev.Paused, ok = msToNs(v)
			case "pause":
				ev.Pause, ok = msToNs(v)
			case "period":
				ev.Period, ok = msToNs(v)
			case "think":
				ev.Think, ok = msToNs(v)
			default:
				return true
			}
			return ok
		}, "bdi", "limit", "setpoint", "dirty", "wb_setpoint", "wb_dirty", "paused", "pause", "period", "think")
	case "writeback_start", "writeback_written":
		ev.Kind = WritebackStart
		if name[len("writeback_")] == 'w' {
			ev.Kind = WritebackEnd
		}
		err := p.fields(rest, func(k string, v []byte) (ok bool) {
			switch k {
			case "bdi":
				ev.BDI, ok = p.intern(bytes.TrimSuffix(v, []byte(":"))), true
			case "nr_pages":
				ev.NrPages, ok = parseInt(v)
			case "reason":
				ev.Reason, ok = p.intern(v), true
			default:
				return true
			}
			return ok
		}, "bdi", "nr_pages", "reason")
		if err != nil {
			return err
		}
		if ev.Kind == WritebackStart {
			if len(p.wbStart) >= internMax {
				clear(p.wbStart)
			}
			p.wbStart[ev.Pid] = ev.NrPages
		} else if start, ok := p.wbStart[ev.Pid]; ok {
			delete(p.wbStart, ev.Pid)
			if w := start - ev.NrPages; w > 0 && w <= 1<<32-1 {
				ev.Pages = uint32(w)
			}
		}
		return nil
	}
	return fmt.Errorf("unknown event %q", name)
}

// parseSyscall parses "fsync(fd: 3)", "sync()" and "fsync -> 0x0" (name
// without "sys_").
func (p *parser) parseSyscall(name, rest []byte, ev *Event) error {
	ev.Syscall = p.intern(name)
	if r, ok := bytes.CutPrefix(rest, []byte(" -> ")); ok {
		ev.Kind = SyscallExit
		ret, ok := parseUint(r)
		if !ok {
			return fmt.Errorf("bad return value %q", r)
		}
		ev.Ret = int64(ret)
		return nil
	}
	if len(rest) == 0 || rest[0] != '(' {
		return fmt.Errorf("bad syscall event")
	}
	ev.Kind = SyscallEnter
	args := rest[1:]
	if args, ok := bytes.CutSuffix(args, []byte(")")); !ok {
		return fmt.Errorf("unterminated syscall arguments")
	} else if len(args) == 0 {
		return nil
	}
	_, v, ok := bytes.Cut(args, []byte(": "))
	if !ok {
		return fmt.Errorf("bad syscall arguments")
	}
	if i := bytes.IndexAny(v, ",)"); i >= 0 {
		v = v[:i]
	}
	if ev.Arg, ok = parseUint(v); !ok {
		return fmt.Errorf("bad syscall argument %q", v)
	}
	return nil
}

// fields calls set for each "key=value" or "key value" pair of b that
// names one of keys, and fails if set does or a key is missing. Tokens
// that are neither ("(FUSE_READ)") are skipped.
func (p *parser) fields(b []byte, set func(k string, v []byte) bool, keys ...string) error {
	var found uint32
	for len(b) > 0 {
		var tok []byte
		tok, b = cutSpace(b)
		if len(tok) == 0 {
			continue
		}
		k, v, eq := bytes.Cut(tok, []byte("="))
		idx := keyIndex(keys, k)
		if idx < 0 {
			continue
		}
		if !eq {
			v, b = cutSpace(b)
		}
		if !set(keys[idx], v) {
			return fmt.Errorf("bad value %q of %s", v, keys[idx])
		}
		found |= 1 << idx
	}
	if want := uint32(1)<<len(keys) - 1; found != want {
		for i, k := range keys {
			if found&(1<<i) == 0 {
				return fmt.Errorf("no field %s", k)
			}
		}
	}
	return nil
}

func keyIndex(keys []string, k []byte) int {
	for i, key := range keys {
		if string(k) == key {
			return i
		}
	}
	return -1
}

// cutSpace splits b at its first space.
func cutSpace(b []byte) (tok, rest []byte) {
	if i := bytes.IndexByte(b, ' '); i >= 0 {
		return b[:i], b[i+1:]
	}
	return b, nil
}

// cutUint parses the decimal digits at the start of b.
func cutUint(b []byte) (n uint64, rest []byte, ok bool) {
	i := 0
	for ; i < len(b) && b[i] >= '0' && b[i] <= '9'; i++ {
		d := uint64(b[i] - '0')
		if n > (1<<64-1-d)/10 {
			return 0, b, false
		}
		n = n*10 + d
	}
	return n, b[i:], i > 0
}

// parseUint parses a decimal or "0x" hexadecimal number.
func parseUint(b []byte) (uint64, bool) {
	if h, ok := bytes.CutPrefix(b, []byte("0x")); ok {
		return parseHex(h)
	}
	n, rest, ok := cutUint(b)
	return n, ok && len(rest) == 0
}

func parseHex(b []byte) (uint64, bool) {
	if len(b) == 0 || len(b) > 16 {
		return 0, false
	}
	var n uint64
	for _, c := range b {
		switch {
		case c >= '0' && c <= '9':
			n = n<<4 | uint64(c-'0')
		case c >= 'a' && c <= 'f':
			n = n<<4 | uint64(c-'a'+10)
		case c >= 'A' && c <= 'F':
			n = n<<4 | uint64(c-'A'+10)
		default:
			return 0, false
		}
	}
	return n, true
}

func parseInt(b []byte) (int64, bool) {
	neg := len(b) > 0 && b[0] == '-'
	if neg {
		b = b[1:]
	}
	n, ok := parseUint(b)
	if !ok || n > 1<<63 || (!neg && n == 1<<63) {
		return 0, false
	}
	if neg {
		return -int64(n), true
	}
	return int64(n), true
}

func u32(b []byte) (uint32, bool) {
	n, ok := parseUint(b)
	return uint32(n), ok && n <= 1<<32-1
}

// parseDev parses "254:0" into the kernel's major<<20|minor.
func parseDev(b []byte) (uint32, bool) {
	maj, rest, ok := cutUint(b)
	if !ok || len(rest) < 2 || rest[0] != ':' || maj >= 1<<12 {
		return 0, false
	}
	min, ok := parseUint(rest[1:])
	if !ok || min >= 1<<20 {
		return 0, false
	}
	return KernelDev(uint32(maj), uint32(min)), true
}

func msToNs(b []byte) (int64, bool) {
	n, ok := parseInt(b)
	return n * 1e6, ok
}
