package inject

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"path"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/mmapfs/mmapfs/fs/wire"
)

// LoggedHits is how many hits of a rule are logged one by one; past them
// a hit is logged only when the rule's hit count reaches a power of ten
// (100, 1000, ...), with the count, so that a hot rule does not flood the
// log.
const LoggedHits = 10

// ErrNeedsSim refuses an fsyncgate rule on a mount without the power-cut
// simulation, which keeps the synced content the lost pages go back to.
var ErrNeedsSim = errors.New("fsyncgate puts the lost pages back to their last synced content, which only the power-cut simulation keeps: mount with --powercut-sim")

// Set is the rules of one mount and their counters. The zero value is not
// usable; a nil *Set has no rules.
type Set struct {
	n    atomic.Int32 // len(rules), for Active without the lock
	seed int64        // the seed of a prob= rule without seed= (with its id mixed in); read only
	sim  bool         // the mount keeps synced content (fsyncgate may be used); read only
	wbc  bool         // the mount has the writeback cache (short= refused); set before any Add
	now  func() time.Time

	// mu guards the fields below and every counter of every entry.
	mu     sync.Mutex
	rules  []*entry // in id order
	nextID int
}

// entry is one rule of a Set with its counters (guarded by Set.mu).
type entry struct {
	*Rule
	id       int
	seed     int64
	rng      *rand.Rand // nil without prob=
	calls    int64      // matching calls (op and path)
	bytes    int64      // bytes of matching calls
	hits     int64
	lastHit  time.Time
	lastPath string
	// gone is closed when the rule is cleared, to end the delays it
	// gave that are still being served (Decision.Waits). Read only.
	gone chan struct{}
}

// NewSet returns an empty set. seed seeds the prob= rules given without
// seed= (the mount passes its start time); sim says the mount runs the
// power-cut simulation, which fsyncgate needs.
func NewSet(seed int64, sim bool) *Set {
	return &Set{seed: seed, sim: sim, now: time.Now, nextID: 1}
}

// ErrShortWritebackCache refuses a short= rule on a mount with the
// writeback cache.
var ErrShortWritebackCache = errors.New("a short READ on a mount with --writeback-cache makes the kernel zero the rest of the page and keep it, and a later partial write of that page writes the zeros to the file: short= is refused there (mount without --writeback-cache, or with --direct-io)")

// WritebackCache tells the set that its mount has the kernel's writeback
// cache, so that short= rules are refused. Call it before any Add.
func (s *Set) WritebackCache() { s.wbc = true }

// Active reports whether the set has any rule: one atomic load, the only
// cost of fault injection to a request when no rule is set.
func (s *Set) Active() bool { return s != nil && s.n.Load() > 0 }

// Add checks r against the mount (ErrNeedsSim) and adds it; it returns
// the rule's id.
func (s *Set) Add(r *Rule) (int, error) {
	if r.Fsyncgate && !s.sim {
		return 0, &RuleError{Rule: r.Text, Part: "fsyncgate", Msg: ErrNeedsSim.Error()}
	}
	if r.Short >= 0 && s.wbc {
		return 0, &RuleError{Rule: r.Text, Part: fmt.Sprintf("short=%d", r.Short), Msg: ErrShortWritebackCache.Error()}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	e := &entry{Rule: r, id: s.nextID, gone: make(chan struct{})}
	s.nextID++
	if r.Prob > 0 {
		e.seed = r.Seed
		if !r.HasSeed {
			e.seed = s.seed + int64(e.id)
		}
		e.rng = rand.New(rand.NewPCG(uint64(e.seed), 0x6d6d6170667321)) // "mmapfs!"
	}
	s.rules = append(s.rules, e)
	s.n.Store(int32(len(s.rules)))
	return e.id, nil
}

// Clear removes the rule with id, or every rule for id 0, and returns how
// many it removed; an id the set does not have is an error that lists the
// ids it has.
func (s *Set) Clear(id int) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if id == 0 {
		n := len(s.rules)
		for _, e := range s.rules {
			close(e.gone)
		}
		s.rules = nil
		s.n.Store(0)
		return n, nil
	}
	for i, e := range s.rules {
		if e.id == id {
			close(e.gone)
			s.rules = append(s.rules[:i:i], s.rules[i+1:]...)
			s.n.Store(int32(len(s.rules)))
			return 1, nil
		}
	}
	ids := make([]string, len(s.rules))
	for i, e := range s.rules {
		ids[i] = fmt.Sprint(e.id)
	}
	if len(ids) == 0 {
		return 0, fmt.Errorf("no rule %d: the mount has no rules", id)
	}
	return 0, fmt.Errorf("no rule %d: the mount's rules are %s", id, strings.Join(ids, ", "))
}

// Has reports whether a rule names op.
func (s *Set) Has(op string) bool {
	if !s.Active() {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, e := range s.rules {
		if e.Op == op {
			return true
		}
	}
	return false
}

// List returns the rules with their counters, in id order.
func (s *Set) List() []wire.InjectRule {
	if s == nil {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]wire.InjectRule, 0, len(s.rules))
	for _, e := range s.rules {
		r := wire.InjectRule{ID: e.id, Rule: e.Text, Seed: e.seed, Calls: e.calls, Hits: e.hits, LastPath: e.lastPath}
		if !e.lastHit.IsZero() {
			t := e.lastHit
			r.LastHit = &t
		}
		out = append(out, r)
	}
	return out
}

// Decision is what the rules say about one call. The zero Decision (with
// Torn and Short -1, as Decide returns it) serves the call as usual.
type Decision struct {
	Delay     time.Duration // sleep this long first: the sum of Waits
	Waits     []Wait        // the delays, rule by rule, each cut short when its rule is cleared
	Errno     syscall.Errno // then fail with this (0: do not)
	Torn      int64         // write only the first Torn bytes (-1: all)
	TornErrno syscall.Errno // after a torn write, fail with this (0: return the short count)
	Short     int64         // return at most Short bytes (-1: all)
	Fsyncgate bool          // with Errno: the pages the failed msync was to write are lost
	Rule      string        // the rule of the action (not of a delay), as given, with its id: "#2 op=write,torn=1"
	// Logs are the lines to log for the rules that fired (rate-limited,
	// see LoggedHits); the caller logs them.
	Logs []string
}

// Wait is one rule's delay of a call: sleep For, or until Cleared is
// closed (the rule was cleared: Clear, and the mount's end), whichever
// comes first.
type Wait struct {
	For     time.Duration
	Cleared <-chan struct{}
}

// Acts reports whether the decision changes anything.
func (d Decision) Acts() bool {
	return d.Delay > 0 || d.Errno != 0 || d.Torn >= 0 || d.Short >= 0
}

// Decide counts one call of op on the file at p (relative to the mount
// root) carrying n bytes (write, msync, fault; 0 otherwise, and for a
// read, whose bytes Served counts once it is served) against every rule
// and says what to do with it.
func (s *Set) Decide(op, p string, n int64) Decision {
	d := Decision{Torn: -1, Short: -1}
	if !s.Active() {
		return d
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	acted := false
	for _, e := range s.rules {
		if e.Op != op || (e.Path != "" && !matchPath(e.Path, p)) {
			continue
		}
		e.calls++
		before := e.bytes
		e.bytes += n
		switch {
		case e.Nth > 0 && e.calls != e.Nth:
			continue
		case e.HasAfter && before < e.After:
			continue
		case e.Times > 0 && e.hits >= e.Times:
			continue
		case e.rng != nil && e.rng.Float64() >= e.Prob:
			continue
		}
		isDelay := e.Errno == 0 && e.Torn < 0 && e.Short < 0
		if !isDelay && acted {
			continue // the first rule that acts decides; this one does not fire
		}
		e.hits++
		e.lastHit = s.now()
		e.lastPath = p
		var what string
		if isDelay {
			dl := e.DelayMin
			if span := e.DelayMax - e.DelayMin; span > 0 {
				dl += time.Duration(rand.Int64N(int64(span) + 1))
			}
			d.Delay += dl
			d.Waits = append(d.Waits, Wait{For: dl, Cleared: e.gone})
			what = fmt.Sprintf("delayed %v", dl)
		} else {
			acted = true
			d.Errno, d.Torn, d.TornErrno, d.Short, d.Fsyncgate = e.Errno, e.Torn, e.TornErrno, e.Short, e.Fsyncgate
			d.Rule = fmt.Sprintf("#%d %s", e.id, e.Text)
			what = e.Describe()
		}
		if line := e.logLine(op, p, what); line != "" {
			d.Logs = append(d.Logs, line)
		}
	}
	return d
}

// Served counts n bytes served by a call of op on the file at p that
// Decide was asked about with no bytes: a read, whose bytes (for after=)
// are known only once it is served (a read at the end of the file
// serves fewer than it asks for).
func (s *Set) Served(op, p string, n int64) {
	if n <= 0 || !s.Active() {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, e := range s.rules {
		if e.Op == op && (e.Path == "" || matchPath(e.Path, p)) {
			e.bytes += n
		}
	}
}

// logLine is the log line of the rule's latest hit, or "" when the rate
// limit holds it back (see LoggedHits). Set.mu must be held.
func (e *entry) logLine(op, p, what string) string {
	name := p
	if name == "" {
		name = "/"
	}
	line := fmt.Sprintf("inject: rule #%d %q: %s %q: %s", e.id, e.Text, op, name, what)
	switch {
	case e.hits < LoggedHits:
		return line
	case e.hits == LoggedHits:
		return line + fmt.Sprintf(" (hit %d; further hits of this rule are logged at 100, 1000, ... hits)", e.hits)
	}
	for k := int64(100); k > 0 && k <= e.hits; k *= 10 {
		if k == e.hits {
			return line + fmt.Sprintf(" (hit %d)", e.hits)
		}
	}
	return ""
}

// matchPath matches p against the glob g (whose syntax Parse checked).
func matchPath(g, p string) bool {
	ok, _ := path.Match(g, p)
	return ok
}
