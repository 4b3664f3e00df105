package fs

import (
	"context"
	"errors"
	"fmt"
	"path"
	"syscall"
	"time"

	"github.com/mmapfs/mmapfs/backing"
	"github.com/mmapfs/mmapfs/fs/inject"
)

// Fault injection (fs/inject has the rules; Options.Inject gives them at
// mount, the control file adds and clears them while mounted). The node
// and handle methods ask m.inject before they serve a request, once
// m.inj.Active() says there are rules: with none, a request pays that one
// atomic load. The store asks through Options.Store.Inject (storeInject)
// before its msyncs and its copies to and from a mapping. An injected
// error is logged here, rate-limited, with its rule (never through
// m.errno, which would log every one).

// injectedError is an error a rule made up.
type injectedError struct {
	rule  string // "#1 op=fsync,errno=EIO"
	errno syscall.Errno
}

func (e *injectedError) Error() string {
	return fmt.Sprintf("injected by rule %s: %v", e.rule, e.errno)
}

func (e *injectedError) Unwrap() error { return e.errno }

// injectedErrno returns the errno of an error a rule made (found anywhere
// in err's chain), so that it reaches the client without m.errno logging
// it a second time.
func injectedErrno(err error) (syscall.Errno, bool) {
	var ie *injectedError
	if errors.As(err, &ie) {
		return ie.errno, true
	}
	return 0, false
}

// inject decides on the request op on the file at rel (n bytes for read
// and write), logs what fired, and sleeps its delay (cut short, EINTR, if
// the request is interrupted). It returns the decision and the errno to
// fail the request with (0: serve it, as the decision says). Call it only
// when m.inj.Active().
func (m *mountState) inject(ctx context.Context, op, rel string, n int64) (inject.Decision, syscall.Errno) {
	d := m.inj.Decide(op, rel, n)
	for _, line := range d.Logs {
		m.log.Print(line)
	}
	if d.Delay > 0 {
		t := time.NewTimer(d.Delay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return d, syscall.EINTR
		}
	}
	return d, d.Errno
}

// injectErr is inject for a request whose rules can only fail or delay
// it (every op but read and write): the errno to fail it with, or 0.
func (m *mountState) injectErr(ctx context.Context, op, rel string) syscall.Errno {
	_, errno := m.inject(ctx, op, rel, 0)
	return errno
}

// injectNode is injectErr for a request on n itself, or on its child
// named child ("" for n itself); it computes the path only when there
// are rules.
func (n *Node) injectNode(ctx context.Context, op, child string) syscall.Errno {
	if !n.m.inj.Active() {
		return 0
	}
	rel := n.rel()
	if child != "" {
		rel = path.Join(rel, child)
	}
	return n.m.injectErr(ctx, op, rel)
}

// storeInject is the store's hook (backing.Options.Inject) for set,
// logging through m: the errno of a rule that fires, as an
// *injectedError (wrapped in a *backing.WritebackLost for fsyncgate).
func storeInject(set *inject.Set, logf func(string, ...any)) func(op, name string, n int64) error {
	return func(op, name string, n int64) error {
		if !set.Active() {
			return nil
		}
		d := set.Decide(op, name, n)
		for _, line := range d.Logs {
			logf("%s", line)
		}
		if d.Delay > 0 {
			time.Sleep(d.Delay)
		}
		if d.Errno == 0 {
			return nil
		}
		err := &injectedError{rule: d.Rule, errno: d.Errno}
		if d.Fsyncgate {
			return &backing.WritebackLost{Err: err}
		}
		return err
	}
}

// newInjectSet parses the rules of opts into the mount's set, refusing
// the first bad one.
func newInjectSet(opts Options, seed int64) (*inject.Set, error) {
	set := inject.NewSet(seed, opts.Store.PowerCutSim)
	if opts.WritebackCache {
		set.WritebackCache()
	}
	for _, text := range opts.Inject {
		r, err := inject.Parse(text)
		if err == nil {
			_, err = set.Add(r)
		}
		if err != nil {
			return nil, fmt.Errorf("--inject: %w", err)
		}
	}
	return set, nil
}
