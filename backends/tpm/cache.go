package tpm

import (
	"container/list"

	"github.com/google/go-tpm/tpm2"
)

// objectCache keeps recently used keys loaded in the TPM and flushes the
// least recently used one when it is full or when the TPM runs out of
// transient object slots (raw swtpm has 3, one of them for the SRK).
// It is only touched while holding Backend.sem.
type objectCache struct {
	max   int
	items map[string]*list.Element // id -> *loaded
	lru   list.List                // front = most recent
}

type loaded struct {
	id     string
	key    *keyBlob
	handle tpm2.TPMHandle
	name   tpm2.TPM2BName
}

func newObjectCache(max int) *objectCache {
	return &objectCache{max: max, items: map[string]*list.Element{}}
}

func (c *objectCache) get(id string) *loaded {
	e := c.items[id]
	if e == nil {
		return nil
	}
	c.lru.MoveToFront(e)
	return e.Value.(*loaded)
}

func (c *objectCache) add(o *loaded) {
	c.items[o.id] = c.lru.PushFront(o)
}

func (c *objectCache) len() int { return c.lru.Len() }

// evictOldest flushes the least recently used object; false when empty.
func (c *objectCache) evictOldest(l *link) bool {
	e := c.lru.Back()
	if e == nil {
		return false
	}
	o := e.Value.(*loaded)
	c.lru.Remove(e)
	delete(c.items, o.id)
	l.flush(o.handle)
	return true
}

// remove flushes one object if it is loaded.
func (c *objectCache) remove(l *link, id string) {
	if e := c.items[id]; e != nil {
		c.lru.Remove(e)
		delete(c.items, id)
		if l != nil {
			l.flush(e.Value.(*loaded).handle)
		}
	}
}

func (c *objectCache) flushAll(l *link) {
	for c.evictOldest(l) {
	}
}

// forget drops everything without talking to the TPM (the link is gone,
// and its objects with it).
func (c *objectCache) forget() {
	c.items = map[string]*list.Element{}
	c.lru.Init()
}
