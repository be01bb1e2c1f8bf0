package vault

import (
	"container/heap"
	"time"
)

// Stats are the vault's counts for monitoring (the daemon's metrics): how
// many records are in each state, and when the next one expires. They are
// kept up to date by every change of the index (index(), under v.mu), so
// that reading them does not walk the records: O(1), plus the amortized
// O(log N) of dropping the expiries that passed or went stale since the
// last read.
type Stats struct {
	Active  int // active and not past not_after
	Expired int // active but past not_after (psk sweep destroys their keys)
	Revoked int // revoked, swept or finalized-and-revoked: no main key
	// NextExpiry is the earliest not_after still ahead among the active
	// records; zero when none has one.
	NextExpiry time.Time
}

// stateStats is what Stats is computed from, guarded by v.mu.
type stateStats struct {
	byState map[State]int
	// expiring holds the active records that have a not_after, earliest
	// first. Records are never edited in place (a change replaces the
	// pointer), so an entry whose pointer is no longer the index's record
	// is stale and dropped when it comes to the top (or at a rebuild).
	expiring expiryHeap
	// expired are the active records seen past their not_after, until
	// they change (index() drops them).
	expired map[*PSK]struct{}
}

// update accounts for old being replaced by next (either may be nil).
func (s *stateStats) update(old, next *PSK) {
	if s.byState == nil {
		s.byState, s.expired = map[State]int{}, map[*PSK]struct{}{}
	}
	if old != nil {
		s.byState[old.State]--
		delete(s.expired, old)
	}
	if next != nil {
		s.byState[next.State]++
		if next.State == StateActive && !next.NotAfter.IsZero() {
			heap.Push(&s.expiring, next)
		}
	}
}

// Stats returns the counts of the records by state and the next expiry.
func (v *Vault) Stats() Stats {
	now := v.now()
	v.mu.Lock() // it prunes the heap: a short write section
	defer v.mu.Unlock()
	s := &v.stats
	live := func(p *PSK) bool { return v.psks[string(p.Identity)] == p }
	for len(s.expiring) > 0 {
		top := s.expiring[0]
		if !live(top) {
			heap.Pop(&s.expiring)
			continue
		}
		if !now.Before(top.NotAfter) {
			heap.Pop(&s.expiring)
			if s.expired == nil {
				s.expired = map[*PSK]struct{}{}
			}
			s.expired[top] = struct{}{}
			continue
		}
		break
	}
	// Stale entries below the top (records rotated, revoked or deleted
	// while far from expiry) are dropped once they outnumber the live
	// ones: O(N) once per O(N) changes.
	if len(s.expiring) > 64 && len(s.expiring) > 2*s.byState[StateActive] {
		kept := s.expiring[:0]
		for _, p := range s.expiring {
			if live(p) {
				kept = append(kept, p)
			}
		}
		clear(s.expiring[len(kept):])
		s.expiring = kept
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
