package wire

import "sync/atomic"

// Counters count figures as they happen (calls, bytes, errors with the
// last one's message), safe for concurrent use: the measuring side of
// the list for whoever counts events rather than looking up levels. Make
// them with NewCounters.
type Counters struct {
	n    []atomic.Int64           // by ID
	last []atomic.Pointer[string] // by ID: the last error's message
}

// NewCounters returns counters of every figure of the list, all 0.
func NewCounters() *Counters {
	return &Counters{n: make([]atomic.Int64, len(list)), last: make([]atomic.Pointer[string], len(list))}
}

// Add adds n to id (which may be negative, for a gauge).
func (c *Counters) Add(id ID, n int64) { c.n[id].Add(n) }

// Load returns id's count now.
func (c *Counters) Load(id ID) int64 { return c.n[id].Load() }

// Fail counts one error of id and keeps its message as the last one.
func (c *Counters) Fail(id ID, err error) {
	c.n[id].Add(1)
	msg := err.Error()
	c.last[id].Store(&msg)
}

// Report sets in v every figure c counted (those it never counted are
// left as they are), with the last error's message.
func (c *Counters) Report(v *Values) {
	for i := range c.n {
		id := ID(i)
		if n := c.n[i].Load(); n != 0 {
			v.Set(id, n)
		}
		if msg := c.last[i].Load(); msg != nil {
			v.SetLastError(id, *msg)
		}
	}
}
