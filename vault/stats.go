package vault

import (
	"container/heap"
	"sync"
	"time"
)

// Stats are the vault's counts for monitoring (the daemon's metrics): how
// many records are in each state, and when the next one expires. They are
// kept up to date by every change of the index (index()), so that reading
// them does not walk the records and does not take the index's lock: O(1),
// plus the amortized O(log N) of dropping the expiries that passed or went
// stale since the last read.
type Stats struct {
	Active  int // active and not past not_after
	Expired int // active but past not_after (psk sweep destroys their keys)
	Revoked int // revoked, swept or finalized-and-revoked: no main key
	// NextExpiry is the earliest not_after still ahead among the active
	// records; zero when none has one.
	NextExpiry time.Time
}

// stateStats is what Stats is computed from. It has a lock of its own:
// index() updates it under v.mu (lock order v.mu, then stateStats.mu), and
// Stats reads it without v.mu, so a scrape never holds up a derivation.
type stateStats struct {
	mu      sync.Mutex
	byState map[State]int
	// expiring holds the active records that have a not_after, earliest
	// first. A record replaced since it was pushed (records are never
	// edited in place: a change replaces the pointer) is in dead until it
	// is dropped, when it comes to the top or at a rebuild.
	expiring expiryHeap
	dead     map[*PSK]struct{}
	// expired are the active records seen past their not_after, until
	// they change.
	expired map[*PSK]struct{}
}

// update accounts for old being replaced by next (either may be nil).
func (s *stateStats) update(old, next *PSK) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.byState == nil {
		s.byState, s.dead, s.expired = map[State]int{}, map[*PSK]struct{}{}, map[*PSK]struct{}{}
	}
	if old != nil {
		s.byState[old.State]--
		if _, ok := s.expired[old]; ok {
			delete(s.expired, old)
		} else if expires(old) {
			s.dead[old] = struct{}{}
		}
	}
	if next != nil {
		s.byState[next.State]++
		if expires(next) {
			heap.Push(&s.expiring, next)
		}
	}
}

// expires reports whether p belongs in the expiry heap.
func expires(p *PSK) bool { return p.State == StateActive && !p.NotAfter.IsZero() }

// Stats returns the counts of the records by state and the next expiry.
func (v *Vault) Stats() Stats {
	now := v.now()
	s := &v.stats
	s.mu.Lock()
	defer s.mu.Unlock()
	for len(s.expiring) > 0 {
		top := s.expiring[0]
		if _, ok := s.dead[top]; ok {
			heap.Pop(&s.expiring)
			delete(s.dead, top)
			continue
		}
		if !now.Before(top.NotAfter) {
			heap.Pop(&s.expiring)
			s.expired[top] = struct{}{}
			continue
		}
		break
	}
	// Dead entries below the top (records rotated, revoked or deleted
	// while far from expiry) are dropped once they are half the heap:
	// O(N) once per O(N) changes.
	if len(s.expiring) > 64 && 2*len(s.dead) > len(s.expiring) {
		kept := s.expiring[:0]
		for _, p := range s.expiring {
			if _, ok := s.dead[p]; !ok {
				kept = append(kept, p)
			}
		}
		clear(s.expiring[len(kept):])
		s.expiring = kept
		clear(s.dead)
		heap.Init(&s.expiring)
	}
	st := Stats{Active: s.byState[StateActive] - len(s.expired), Expired: len(s.expired), Revoked: s.byState[StateRevoked]}
	if len(s.expiring) > 0 {
		st.NextExpiry = s.expiring[0].NotAfter
	}
	return st
}

// expiryHeap is a min-heap of records by not_after.
type expiryHeap []*PSK

func (h expiryHeap) Len() int           { return len(h) }
func (h expiryHeap) Less(i, j int) bool { return h[i].NotAfter.Before(h[j].NotAfter) }
func (h expiryHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *expiryHeap) Push(x any)        { *h = append(*h, x.(*PSK)) }
func (h *expiryHeap) Pop() any {
	old := *h
	p := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	return p
}
