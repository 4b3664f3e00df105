package wire

import "time"

// Values are the figures' values, by ID: what a Snapshot reports and
// what the store hands the FUSE side. The zero Values has every figure 0.
type Values struct {
	n    []int64  // by ID; Seconds in nanoseconds
	last []string // by ID: the last error's message, for figures with Last
}

// Get returns the value of id (nanoseconds for Seconds).
func (v Values) Get(id ID) int64 {
	if int(id) < len(v.n) {
		return v.n[id]
	}
	return 0
}

// Set sets the value of id (nanoseconds for Seconds).
func (v *Values) Set(id ID, n int64) {
	if v.n == nil {
		v.n = make([]int64, len(list))
	}
	v.n[id] = n
}

// SetSince sets id, in Seconds, to the time since t, or to 0 if t is
// zero.
func (v *Values) SetSince(id ID, t time.Time) {
	if t.IsZero() {
		v.Set(id, 0)
		return
	}
	v.Set(id, int64(time.Since(t)))
}

// Float returns the value of id as Prometheus and --watch show it:
// seconds for Seconds, the value itself otherwise.
func (v Values) Float(id ID) float64 {
	if id.Figure().Unit == Seconds {
		return time.Duration(v.Get(id)).Seconds()
	}
	return float64(v.Get(id))
}

// LastError returns the message of the last error id counts ("" for
// none).
func (v Values) LastError(id ID) string {
	if int(id) < len(v.last) {
		return v.last[id]
	}
	return ""
}

// SetLastError sets the message of the last error id counts.
func (v *Values) SetLastError(id ID, msg string) {
	if v.last == nil {
		v.last = make([]string, len(list))
	}
	v.last[id] = msg
}
