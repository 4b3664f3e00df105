package fs

import (
	"container/list"
	"errors"
	"sync"
	"syscall"
)

// dirCache holds O_PATH descriptors of directories of the mount, so that a
// namespace request costs one system call (statx, unlinkat, ...) instead
// of opening its parent beneath the store root, acting and closing it
// again. A descriptor is of the directory's inode: it follows the
// directory across renames, as the node does, and it was opened beneath
// the store root without following a symlink. The cache is bounded (the
// daemon's descriptors are few) and least recently used entries go first;
// an entry in use is never closed under its user. No system call runs
// under mu: descriptors are opened before it is taken and closed after
// it is let go.
type dirCache struct {
	max int // read only

	// mu guards m, lru and every entry's refs and gone.
	mu  sync.Mutex
	m   map[*Node]*dirEntry
	lru list.List // of *dirEntry, most recently used first
}

type dirEntry struct {
	node *Node
	fd   int // read only
	refs int
	gone bool // out of the cache; closed when refs reaches 0
	elem *list.Element
}

func newDirCache(max int) *dirCache {
	return &dirCache{max: max, m: make(map[*Node]*dirEntry)}
}

// get returns a descriptor of n's directory, opening it with open on a
// miss, and a function to call when done with it. open runs without c.mu
// held; if another request cached the directory meanwhile, its
// descriptor is used and this one closed.
func (c *dirCache) get(n *Node, open func() (int, error)) (int, func() error, error) {
	c.mu.Lock()
	if e := c.m[n]; e != nil {
		e.refs++
		c.lru.MoveToFront(e.elem)
		c.mu.Unlock()
		return e.fd, func() error { return c.put(e) }, nil
	}
	c.mu.Unlock()
	fd, err := open()
	if err != nil {
		return -1, nil, err
	}
	c.mu.Lock()
	if e := c.m[n]; e != nil { // opened meanwhile by another request
		e.refs++
		c.lru.MoveToFront(e.elem)
		c.mu.Unlock()
		return e.fd, func() error { return c.put(e) }, syscall.Close(fd)
	}
	e := &dirEntry{node: n, fd: fd, refs: 1}
	e.elem = c.lru.PushFront(e)
	c.m[n] = e
	closing := c.trimLocked()
	c.mu.Unlock()
	return fd, func() error { return c.put(e) }, closeAll(closing)
}

// put gives back a descriptor from get.
func (c *dirCache) put(e *dirEntry) error {
	c.mu.Lock()
	e.refs--
	last := e.gone && e.refs == 0
	c.mu.Unlock()
	if last {
		return syscall.Close(e.fd)
	}
	return nil
}

// trimLocked drops least recently used entries past max and returns the
// descriptors no one uses any more, for the caller to close once it has
// let go of c.mu. c.mu must be held.
func (c *dirCache) trimLocked() []int {
	var closing []int
	for el := c.lru.Back(); el != nil && len(c.m) > c.max; {
		prev := el.Prev()
		if fd, ok := c.dropLocked(el.Value.(*dirEntry)); ok {
			closing = append(closing, fd)
		}
		el = prev
	}
	return closing
}

// dropLocked takes e out of the cache. It returns e's descriptor and
// true if no one uses it (the caller closes it, outside c.mu); else its
// last user's put closes it. c.mu must be held.
func (c *dirCache) dropLocked(e *dirEntry) (int, bool) {
	if e.gone {
		return -1, false
	}
	e.gone = true
	delete(c.m, e.node)
	c.lru.Remove(e.elem)
	return e.fd, e.refs == 0
}

// forget drops n's entry, if any: the kernel forgot the node.
func (c *dirCache) forget(n *Node) error {
	c.mu.Lock()
	var closing []int
	if e := c.m[n]; e != nil {
		if fd, ok := c.dropLocked(e); ok {
			closing = append(closing, fd)
		}
	}
	c.mu.Unlock()
	return closeAll(closing)
}

// close drops every entry (at unmount).
func (c *dirCache) close() error {
	c.mu.Lock()
	var closing []int
	for _, e := range c.m {
		if fd, ok := c.dropLocked(e); ok {
			closing = append(closing, fd)
		}
	}
	c.mu.Unlock()
	return closeAll(closing)
}

// closeAll closes fds, and returns every error.
func closeAll(fds []int) error {
	var errs []error
	for _, fd := range fds {
		if err := syscall.Close(fd); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
