package fs

import (
	"context"
	"errors"
	"fmt"
	"path"
	"sync"
	"sync/atomic"
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

// inject decides on the request op on the file at rel (n bytes for a
// write; a read's are counted once served, injectServed), logs what
// fired, and sleeps its delay (cut short, EINTR, if the request is
// interrupted; a rule's part of it cut short if the rule is cleared). It
// returns the decision and the errno to fail the request with (0: serve
// it, as the decision says). Call it only when m.inj.Active().
func (m *mountState) inject(ctx context.Context, op, rel string, n int64) (inject.Decision, syscall.Errno) {
	d := m.inj.Decide(op, rel, n)
	for _, line := range d.Logs {
		m.log.Print(line)
	}
	if !sleepWaits(ctx.Done(), d.Waits) {
		return d, syscall.EINTR
	}
	return d, d.Errno
}

// sleepWaits serves the delays of a decision in turn, each until it is
// over or its rule is cleared; it returns false, early, when done is
// closed (nil: never).
func sleepWaits(done <-chan struct{}, waits []inject.Wait) bool {
	for _, w := range waits {
		if w.For <= 0 {
			continue
		}
		t := time.NewTimer(w.For)
		select {
		case <-t.C:
		case <-w.Cleared:
			t.Stop()
		case <-done:
			t.Stop()
			return false
		}
	}
	return true
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
// logging through logf: it matches the rules against the blob's path
// now (its owner's, blobOwner), returns a rule's delay as the wait the
// store serves without the blob's lock (ended early when the rule is
// cleared, as at the mount's end), and the errno of a rule that fires
// as an *injectedError (wrapped in a *backing.WritebackLost for
// fsyncgate).
func storeInject(set *inject.Set, logf func(string, ...any)) func(op string, b *backing.Blob, n int64) (func(), error) {
	return func(op string, b *backing.Blob, n int64) (func(), error) {
		if !set.Active() {
			return nil, nil
		}
		d := set.Decide(op, b.Path(), n)
		for _, line := range d.Logs {
			logf("%s", line)
		}
		var wait func()
		if d.Delay > 0 {
			wait = func() { sleepWaits(nil, d.Waits) }
		}
		if d.Errno == 0 {
			return wait, nil
		}
		err := &injectedError{rule: d.Rule, errno: d.Errno}
		if d.Fsyncgate {
			return wait, &backing.WritebackLost{Err: err}
		}
		return wait, err
	}
}

// blobOwner is a node as the owner of its Blob (backing.Owner): the
// store's fault-injection rules match the node's path now, and the pages
// a lost writeback put back are dropped from the kernel's cache of it.
type blobOwner struct {
	n *Node
	b *backing.Blob
}

// Path is the node's path now.
func (o blobOwner) Path() string { return o.n.rel() }

// Invalidate drops [off, off+n) from the kernel's cache of the node
// (FUSE_NOTIFY_INVAL_INODE), so that a client reads what the store holds
// now, not the content a lost writeback lost; and takes the file's
// auto-cache stamp away first (the put-back copied into dirty pages, so
// the mtime did not change), so that the next open drops the cache even
// if the notification fails. A node the kernel has forgotten has nothing
// cached (ENOENT).
//
// The notification is sent from a goroutine of its own: Invalidate may
// run inside a request (a WRITE under the write-through policy, or the
// kernel's writeback under the writeback cache) for which the kernel
// holds the very pages the invalidation must lock, and it would wait for
// the reply the request has not sent yet. So that the goroutine cannot
// let a client read the lost content after all, it is registered
// (putBacks) before Invalidate returns, and what must come after it
// waits for it where that cannot deadlock:
//   - the fsync (or the close policy's flush) that reports the loss
//     replies only once it is delivered (WaitPutBack, called by the
//     store's reportedAs): the kernel holds no page of the file locked
//     across an FSYNC or a FLUSH (it waits for its writeback first, and
//     holds the inode lock, which keeps writes out), so the invalidation
//     only waits for the READs in flight, which the daemon serves;
//   - an open of the file replies only once it is delivered
//     (openCacheFlags), so that a new open and read after a WRITE that
//     lost the writeback, or after the fsync, never meets the lost pages
//     (under --keep-cache nothing else would drop them).
func (o blobOwner) Invalidate(off, n int64) {
	m := o.n.m
	id, known := o.fileID()
	if known {
		m.cache.forget(id)
	} else {
		m.cache.forgetAll() // which file it is is not known: trust no stamp
	}
	done := m.cache.putBacks.start(id)
	go func() {
		defer done()
		if errno := o.n.NotifyContent(off, n); errno != 0 && errno != syscall.ENOENT {
			m.log.Printf("inject: %q: dropping bytes %d-%d put back by a lost writeback from the kernel's cache: %v", o.n.rel(), off, off+n, errno)
		}
	}()
}

// WaitPutBack waits for the put-back invalidations of the file sent by
// Invalidate to be delivered (backing.PutBackWaiter), at most
// putBackWait.
func (o blobOwner) WaitPutBack() {
	if !o.n.m.cache.putBacks.any() {
		return
	}
	id, _ := o.fileID()
	o.n.m.cache.putBacks.wait(id, o.n.m.log.Printf, o.n.rel())
}

// fileID is the store file of the owner's Blob, and whether its fstat
// told it (fileID{} if not).
func (o blobOwner) fileID() (fileID, bool) {
	var st syscall.Stat_t
	if err := o.b.Fd(func(fd int) error { return syscall.Fstat(fd, &st) }); err != nil {
		return fileID{}, false
	}
	return fileID{dev: st.Dev, ino: st.Ino}, true
}

// putBackWait bounds a wait for a put-back's invalidation: it waits only
// for requests the daemon serves (see blobOwner.Invalidate), so it ends
// within their time; the bound turns a case the reasoning there missed
// into a delay and a log line rather than a request stuck for ever.
const putBackWait = 10 * time.Second

// putBacks are the put-back invalidations sent (Invalidate's goroutines)
// and not yet delivered, per store file (fileID{}: one whose file its
// fstat could not tell, which every wait waits for).
type putBacks struct {
	count atomic.Int64 // the invalidations pending, over every file
	mu    sync.Mutex
	files map[fileID]*putBackFile // guarded by mu
}

// putBackFile is one file's pending invalidations: done is closed when
// the last of them (n, guarded by putBacks.mu) is delivered.
type putBackFile struct {
	n    int
	done chan struct{}
}

// start registers an invalidation of the file id and returns the
// function that marks it delivered.
func (p *putBacks) start(id fileID) func() {
	p.mu.Lock()
	if p.files == nil {
		p.files = make(map[fileID]*putBackFile)
	}
	f := p.files[id]
	if f == nil {
		f = &putBackFile{done: make(chan struct{})}
		p.files[id] = f
	}
	f.n++
	p.count.Add(1)
	p.mu.Unlock()
	return func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		p.count.Add(-1)
		if f.n--; f.n == 0 {
			close(f.done)
			delete(p.files, id)
		}
	}
}

// any says whether an invalidation is pending at all: one atomic load,
// what an open pays when no writeback was lost.
func (p *putBacks) any() bool { return p.count.Load() > 0 }

// wait waits, at most putBackWait, for the invalidations of the file id
// (and of unknown files) pending now to be delivered; past the bound it
// logs, through logf, naming the file rel, and returns.
func (p *putBacks) wait(id fileID, logf func(string, ...any), rel string) {
	p.mu.Lock()
	var chans []chan struct{}
	for _, k := range []fileID{id, {}} {
		if f := p.files[k]; f != nil {
			chans = append(chans, f.done)
		}
	}
	p.mu.Unlock()
	if len(chans) == 0 {
		return
	}
	t := time.NewTimer(putBackWait)
	defer t.Stop()
	for _, c := range chans {
		select {
		case <-c:
		case <-t.C:
			logf("inject: %q: the kernel has not taken the invalidation of the pages a lost writeback put back after %v; going on without it (a client may read the lost content from its cache)", rel, putBackWait)
			return
		}
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
