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
// an entry in use is never closed under its user.
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
// miss, and a function to call when done with it.
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
	defer c.mu.Unlock()
	if e := c.m[n]; e != nil { // opened meanwhile by another request
		e.refs++
		c.lru.MoveToFront(e.elem)
		return e.fd, func() error { return c.put(e) }, syscall.Close(fd)
	}
	e := &dirEntry{node: n, fd: fd, refs: 1}
	e.elem = c.lru.PushFront(e)
	c.m[n] = e
	err = c.trimLocked()
	return fd, func() error { return c.put(e) }, err
}

// put gives back a descriptor from get.
func (c *dirCache) put(e *dirEntry) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	e.refs--
	if e.gone && e.refs == 0 {
		return syscall.Close(e.fd)
	}
	return nil
}

// trimLocked drops least recently used entries past max. c.mu must be held.
func (c *dirCache) trimLocked() error {
	var errs []error
	for el := c.lru.Back(); el != nil && len(c.m) > c.max; {
		prev := el.Prev()
		errs = append(errs, c.dropLocked(el.Value.(*dirEntry)))
		el = prev
	}
	return errors.Join(errs...)
}

// dropLocked takes e out of the cache, closing it unless it is in use.
// c.mu must be held.
func (c *dirCache) dropLocked(e *dirEntry) error {
	if e.gone {
		return nil
	}
	e.gone = true
	delete(c.m, e.node)
	c.lru.Remove(e.elem)
	if e.refs == 0 {
		return syscall.Close(e.fd)
	}
	return nil
}

// forget drops n's entry, if any: the kernel forgot the node.
func (c *dirCache) forget(n *Node) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e := c.m[n]; e != nil {
		return c.dropLocked(e)
	}
	return nil
}

// close drops every entry (at unmount).
func (c *dirCache) close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	var errs []error
	for _, e := range c.m {
		errs = append(errs, c.dropLocked(e))
	}
	return errors.Join(errs...)
}
