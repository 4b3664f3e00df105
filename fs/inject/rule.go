package inject

import (
	"fmt"
	"path"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Ops are the requests a rule can name with op=: the FUSE ops the node
// tree serves (truncate is a SETATTR with a size, setattr one without),
// then the daemon's own work on the store (msync, fault).
var Ops = []string{
	"read", "write", "fsync", "flush", "open", "create", "tmpfile", "truncate", "setattr",
	"fallocate", "copy_file_range", "lseek", "getattr", "lookup", "readdir", "readlink",
	"unlink", "rmdir", "rename", "mkdir", "mknod", "symlink", "link",
	"setxattr", "getxattr", "listxattr", "removexattr", "statfs",
	"msync", "fault",
}

// byteOps are the ops whose calls carry a byte count (after= counts it).
var byteOps = []string{"read", "write", "msync", "fault"}

// Keys are the keys of a rule, in the order the help lists them.
var Keys = []string{"op", "path", "nth", "after", "prob", "seed", "times", "errno", "delay", "torn", "short", "fsyncgate"}

// MaxDelay bounds delay=: a request delayed longer holds the client (and
// one of the daemon's serving threads) for longer than a test should.
const MaxDelay = 10 * time.Minute

// Forms lists the valid forms of a rule, for refusals.
const Forms = "op=OP (required), path=GLOB, nth=N, after=BYTES, prob=P (0<P<=1), seed=S, times=K, " +
	"and one action: errno=NAME, delay=D or delay=D1-D2, torn=K or torn=K:ERRNO (op=write), short=K (op=read); " +
	"fsyncgate (with op=msync and errno=)"

// Rule is one parsed rule. The zero values of the optional fields mean
// "not given".
type Rule struct {
	Text string // the rule as given

	Op   string // one of Ops
	Path string // a path.Match glob; "" matches every file

	Nth      int64   // only the Nth matching call (0: every call)
	After    int64   // only once this many bytes of matching calls have passed
	HasAfter bool    // after= was given
	Prob     float64 // the chance that a matching call fires (0: always)
	Seed     int64   // the generator's seed for prob=
	HasSeed  bool    // seed= was given
	Times    int64   // fires at most this many times (0: no bound)

	// The action: exactly one of Errno (alone, or with Fsyncgate),
	// DelayMin/DelayMax, Torn, Short.
	Errno              syscall.Errno
	DelayMin, DelayMax time.Duration
	Torn               int64 // bytes of the write that reach the file; -1: not torn
	TornErrno          syscall.Errno
	Short              int64 // most bytes a read returns; -1: not short
	Fsyncgate          bool
}

// RuleError is a rule refused by Parse: the rule, the part that is wrong
// and why.
type RuleError struct {
	Rule string // the rule as given
	Part string // the key=value (or key) that is wrong; "" for the rule as a whole
	Msg  string // what is wrong, and the accepted forms
}

func (e *RuleError) Error() string { return fmt.Sprintf("rule %q: %s", e.Rule, e.Detail()) }

// Detail is the error without the rule: the part that is wrong and why.
func (e *RuleError) Detail() string {
	if e.Part == "" {
		return e.Msg
	}
	return e.Part + ": " + e.Msg
}

// errnoNames maps errno names (EIO) to their values.
var errnoNames = func() map[string]syscall.Errno {
	m := make(map[string]syscall.Errno)
	for e := syscall.Errno(1); e < 4096; e++ {
		if name := unix.ErrnoName(e); name != "" {
			m[name] = e
		}
	}
	return m
}()

// commonErrnos are the errno names a refusal suggests.
const commonErrnos = "EIO, ENOSPC, EDQUOT, EROFS, EPERM, EACCES, ENOENT, EEXIST, EINTR, EAGAIN, EFBIG, ENAMETOOLONG, or any other errno(3) name"

// Parse parses and checks one rule. A refused rule is a *RuleError.
func Parse(text string) (*Rule, error) {
	r := &Rule{Text: text, Torn: -1, Short: -1}
	bad := func(part, format string, args ...any) error {
		return &RuleError{Rule: text, Part: part, Msg: fmt.Sprintf(format, args...)}
	}
	if strings.TrimSpace(text) == "" {
		return nil, bad("", "empty; want %s", Forms)
	}
	seen := map[string]string{}
	var actions []string
	for _, part := range strings.Split(text, ",") {
		key, val, hasVal := strings.Cut(part, "=")
		if part == "" {
			return nil, bad("", "an empty part (two commas, or a comma at an end); write key=value parts separated by single commas")
		}
		if strings.ContainsAny(part, " \t\n") {
			return nil, bad(part, "no spaces in a rule")
		}
		if !slices.Contains(Keys, key) {
			return nil, bad(part, "unknown key %q: want one of %s", key, strings.Join(Keys, ", "))
		}
		if prev, dup := seen[key]; dup {
			return nil, bad(part, "%s given twice (first %s)", key, prev)
		}
		seen[key] = part
		if key == "fsyncgate" {
			if hasVal {
				return nil, bad(part, "fsyncgate takes no value: write fsyncgate")
			}
			r.Fsyncgate = true
			continue
		}
		if !hasVal || val == "" {
			return nil, bad(part, "%s needs a value (%s=...)", key, key)
		}
		var err error
		switch key {
		case "op":
			if !slices.Contains(Ops, val) {
				return nil, bad("", "op %q: want one of %s", val, strings.Join(Ops, ", "))
			}
			r.Op = val
		case "path":
			val = strings.TrimLeft(val, "/") // relative to the mount root either way
			if _, err := path.Match(val, ""); err != nil {
				return nil, bad(part, "not a glob path.Match takes: %v", err)
			}
			r.Path = val
		case "nth":
			if r.Nth, err = strconv.ParseInt(val, 10, 64); err != nil || r.Nth < 1 {
				return nil, bad(part, "want a whole number, 1 or more (nth=3: only the third matching call)")
			}
		case "times":
			if r.Times, err = strconv.ParseInt(val, 10, 64); err != nil || r.Times < 1 {
				return nil, bad(part, "want a whole number, 1 or more (times=2: fire at most twice)")
			}
		case "after":
			if r.After, err = ParseBytes(val); err != nil {
				return nil, bad(part, "%v", err)
			}
			r.HasAfter = true
		case "prob":
			if r.Prob, err = strconv.ParseFloat(val, 64); err != nil || !(r.Prob > 0 && r.Prob <= 1) {
				return nil, bad(part, "want a probability, more than 0 and at most 1 (prob=0.25)")
			}
		case "seed":
			if r.Seed, err = strconv.ParseInt(val, 10, 64); err != nil {
				return nil, bad(part, "want a whole number (seed=42)")
			}
			r.HasSeed = true
		case "errno":
			if r.Errno, err = parseErrno(val); err != nil {
				return nil, bad(part, "%v", err)
			}
			actions = append(actions, "errno")
		case "delay":
			if r.DelayMin, r.DelayMax, err = parseDelay(val); err != nil {
				return nil, bad(part, "%v", err)
			}
			actions = append(actions, "delay")
		case "torn":
			k, e, hasErrno := strings.Cut(val, ":")
			if r.Torn, err = ParseBytes(k); err != nil {
				return nil, bad(part, "%v (torn=K or torn=K:ERRNO)", err)
			}
			if hasErrno {
				if r.TornErrno, err = parseErrno(e); err != nil {
					return nil, bad(part, "%v (torn=K:ERRNO)", err)
				}
			} else if r.Torn == 0 {
				return nil, bad(part, "torn=0 writes nothing and reports 0 bytes written, which a client retries forever: give torn=0:ERRNO, or errno=")
			}
			actions = append(actions, "torn")
		case "short":
			if r.Short, err = ParseBytes(val); err != nil {
				return nil, bad(part, "%v", err)
			}
			actions = append(actions, "short")
		}
	}
	if r.Op == "" {
		return nil, bad("", "op= is required: want op=OP, OP one of %s", strings.Join(Ops, ", "))
	}
	switch {
	case len(actions) == 0:
		return nil, bad("", "no action: give one of errno=NAME, delay=D, torn=K (op=write), short=K (op=read)")
	case len(actions) > 1:
		return nil, bad("", "two actions: %s and %s; a rule does one thing (give two rules for both)", actions[0], actions[1])
	}
	switch {
	case r.Torn >= 0 && r.Op != "write":
		return nil, bad(seen["torn"], "torn= is for op=write only")
	case r.Short >= 0 && r.Op != "read":
		return nil, bad(seen["short"], "short= is for op=read only")
	case r.Fsyncgate && r.Op != "msync":
		return nil, bad("fsyncgate", "fsyncgate is for op=msync only (op=msync,errno=EIO,fsyncgate)")
	case r.Fsyncgate && r.Errno == 0:
		return nil, bad("fsyncgate", "fsyncgate needs errno= (op=msync,errno=EIO,fsyncgate): the failed msync reports that error once")
	case r.HasAfter && !slices.Contains(byteOps, r.Op):
		return nil, bad(seen["after"], "after= counts bytes: for op=%s only", strings.Join(byteOps, ", op="))
	case r.HasSeed && r.Prob == 0:
		return nil, bad(seen["seed"], "seed= is for prob=: give prob=P too")
	}
	return r, nil
}

// parseErrno reads an errno name (EIO, or eio).
func parseErrno(s string) (syscall.Errno, error) {
	if e, ok := errnoNames[strings.ToUpper(s)]; ok {
		if e == syscall.ENOSYS {
			// The kernel takes ENOSYS from a FUSE daemon as "this op
			// is not implemented" and stops sending it for the life of
			// the mount (fsync and flush then succeed without reaching
			// the daemon): a rule must not change the mount for good.
			return 0, fmt.Errorf("ENOSYS is refused: the kernel would take it as the op not being implemented, stop sending it for the life of the mount and (for fsync and flush) report success; use EOPNOTSUPP or EIO")
		}
		return e, nil
	}
	return 0, fmt.Errorf("unknown errno %q: want a name such as %s", s, commonErrnos)
}

// parseDelay reads D or D1-D2.
func parseDelay(s string) (time.Duration, time.Duration, error) {
	lo, hi, isRange := strings.Cut(s, "-")
	const forms = "want a duration such as 200ms, or a range 5ms-50ms, at most 10m"
	d1, err := time.ParseDuration(lo)
	if err != nil || d1 < 0 {
		return 0, 0, fmt.Errorf("%q is not a duration: %s", lo, forms)
	}
	d2 := d1
	if isRange {
		if d2, err = time.ParseDuration(hi); err != nil || d2 < 0 {
			return 0, 0, fmt.Errorf("%q is not a duration: %s", hi, forms)
		}
		if d2 < d1 {
			return 0, 0, fmt.Errorf("the range %s-%s ends before it starts: %s", lo, hi, forms)
		}
	}
	if d2 > MaxDelay {
		return 0, 0, fmt.Errorf("%v is longer than %v: %s", d2, MaxDelay, forms)
	}
	return d1, d2, nil
}

// byteUnits are the suffixes ParseBytes takes, longest first.
var byteUnits = []struct {
	suffix string
	mult   int64
}{
	{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40},
	{"K", 1e3}, {"M", 1e6}, {"G", 1e9}, {"T", 1e12}, {"B", 1},
}

// ParseBytes reads a byte count: a whole number with an optional suffix,
// K, M, G, T (powers of 1000) or KiB, MiB, GiB, TiB (powers of 1024).
func ParseBytes(s string) (int64, error) {
	num, mult := s, int64(1)
	for _, u := range byteUnits {
		if n, ok := strings.CutSuffix(s, u.suffix); ok {
			num, mult = n, u.mult
			break
		}
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n < 0 || n > (1<<62)/mult {
		return 0, fmt.Errorf("%q is not a byte count: want a whole number of bytes, 0 or more, with K, M, G (1000s) or KiB, MiB, GiB (1024s) if you like (512, 4KiB, 1M)", s)
	}
	return n * mult, nil
}

// Describe says what the rule does when it fires, for the log.
func (r *Rule) Describe() string {
	switch {
	case r.Fsyncgate:
		return unix.ErrnoName(r.Errno) + ", and the pages are lost (fsyncgate)"
	case r.Errno != 0:
		return unix.ErrnoName(r.Errno)
	case r.Torn >= 0 && r.TornErrno != 0:
		return fmt.Sprintf("torn after %d bytes, then %s", r.Torn, unix.ErrnoName(r.TornErrno))
	case r.Torn >= 0:
		return fmt.Sprintf("torn after %d bytes", r.Torn)
	case r.Short >= 0:
		return fmt.Sprintf("short read of at most %d bytes", r.Short)
	default:
		return "delayed"
	}
}
