package ktrace

import (
	"errors"
	"fmt"
)

// The kinds of failure an *Error carries (errors.Is(err, ErrNotRoot)).
var (
	// ErrNotRoot: tracefs and its instances are root's.
	ErrNotRoot = errors.New("mmapfs trace needs root")
	// ErrNoTracefs: tracefs is not mounted and could not be mounted.
	ErrNoTracefs = errors.New("no tracefs")
	// ErrNoEvent: the kernel lacks a tracepoint the trace needs.
	ErrNoEvent = errors.New("missing tracepoint")
	// ErrFilter: the kernel refused an event filter.
	ErrFilter = errors.New("filter refused")
	// ErrClosed: the instance was closed.
	ErrClosed = errors.New("trace instance closed")
)

// Error is a failure of Open, Run or Close: Msg says what failed and on
// what (the tracefs file, the event), Err why (one of the kinds above
// and/or the system call's error), Hint what would fix it.
type Error struct {
	Kind error // ErrNotRoot, ErrNoTracefs, ErrNoEvent, ErrFilter, ErrClosed or nil
	Msg  string
	Err  error // the cause (a *fs.PathError, a syscall.Errno), or nil
	Hint string
}

// Error is Msg, the cause and the hint: "what: cause (hint)".
func (e *Error) Error() string {
	s := e.Msg
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	if e.Hint != "" {
		s += " (" + e.Hint + ")"
	}
	return s
}

// Unwrap returns the kind and the cause, for errors.Is and errors.As.
func (e *Error) Unwrap() []error {
	var errs []error
	if e.Kind != nil {
		errs = append(errs, e.Kind)
	}
	if e.Err != nil {
		errs = append(errs, e.Err)
	}
	return errs
}

func errorf(kind, cause error, hint, format string, args ...any) *Error {
	return &Error{Kind: kind, Msg: fmt.Sprintf(format, args...), Err: cause, Hint: hint}
}
