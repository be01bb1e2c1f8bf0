package vault

import (
	"crypto/sha256"
	"encoding/binary"
	"sync"
	"time"
)

// changes wakes watchers of the vault: every change of a record or of the
// access lists closes the current channel and starts a new one.
type changes struct {
	mu sync.Mutex
	ch chan struct{}
}

func (c *changes) wait() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ch == nil {
		c.ch = make(chan struct{})
	}
	return c.ch
}

func (c *changes) notify() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ch != nil {
		close(c.ch)
		c.ch = nil
	}
}

// Changed returns a channel that is closed at the next change of any
// record (create, import, rotate, revoke, finalize, delete, sweep) or of
// the access lists. Take it before reading the state it guards
// (View), so that a change made in between is not missed.
func (v *Vault) Changed() <-chan struct{} { return v.changes.wait() }

// View is a digest of what caller c may derive now: every PSK c may
// derive that is active and unexpired, with everything about it that
// changes which keys c is handed and under which policy (identity, nodes,
// hash, targets, not-after, generation and lineage, RFC 9257 policy,
// finalized targets). PSKs c may not derive do not enter it, so the
// digest moves only when c's own view does. next is the earliest future
// instant at which the view changes by the clock alone (a not-after of a
// PSK in it); zero when there is none.
func (v *Vault) View(c *Caller) (digest [32]byte, next time.Time, err error) {
	now := v.now()
	h := sha256.New()
	var n [8]byte
	field := func(b []byte) {
		binary.BigEndian.PutUint64(n[:], uint64(len(b)))
		h.Write(n[:])
		h.Write(b)
	}
	str := func(s string) { field([]byte(s)) }
	flag := func(b bool) {
		if b {
			str("1")
		} else {
			str("0")
		}
	}
	err = v.EachDerivable(c, func(p *PSK) bool { // ordered by identity
		if p.State != StateActive || !p.DeletePending.IsZero() || p.Expired(now) {
			return true
		}
		if !p.NotAfter.IsZero() && (next.IsZero() || p.NotAfter.Before(next)) {
			next = p.NotAfter
		}
		str("psk")
		field(p.Identity)
		str(p.Hash.String())
		str(p.ClientNode)
		str(p.ServerNode)
		for _, g := range p.Group {
			str(g)
		}
		str("targets")
		for _, t := range p.Targets {
			str(t.String())
		}
		str(p.NotAfter.UTC().Format(time.RFC3339Nano))
		binary.BigEndian.PutUint64(n[:], uint64(max(p.Generation, 1)))
		h.Write(n[:])
		field(p.RotatedFrom)
		field(p.RotatedTo)
		flag(p.PSKKE)
		flag(p.EarlyData)
		flag(p.NodeContext)
		flag(p.LowEntropy)
		str(p.FinalizedAt.UTC().Format(time.RFC3339Nano))
		for _, s := range p.Finalized {
			str(s.Target.String())
			field(s.Context)
		}
		// Which role c may derive in (a group PSK's) changes its keys too.
		flag(v.allows(c, p, "client"))
		flag(v.allows(c, p, "server"))
		return true
	})
	h.Sum(digest[:0])
	return digest, next, err
}
