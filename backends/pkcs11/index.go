//go:build cgo

package pkcs11

import (
	"bytes"
	"context"
	"errors"
	"fmt"

	p11 "github.com/miekg/pkcs11"

	"github.com/pskvault/pskvault/vault"
)

// The object index maps CKA_ID to object handle for the token's generic
// secrets, so that the first use of a key after a start does not search
// the token. A search is no cheaper than a scan on the token pskvault is
// tested with: SoftHSM2's C_FindObjectsInit visits every object of the
// token whatever the template (re-checking each object's file, and
// decrypting each private object's CKA_ID to compare it), ~40 µs per
// object, so one search per key made a key's first use O(N) — 91 ms
// with 1,968 objects (docs/BENCHMARKS.md, "PKCS#11 first use at scale").
//
// So the backend enumerates the token once per generation of its session
// pool (at Open, and again after every reset, in the background): one
// C_FindObjectsInit for CKO_SECRET_KEY/CKK_GENERIC_SECRET, C_FindObjects in
// batches, one C_GetAttributeValue(CKA_ID) per object. Keys (the vault's
// reconciliation at start) joins the enumeration running, or starts one,
// instead of listing the token a second time, so a daemon's start pays for
// one enumeration, as before this index existed.
//
// Object handles are only valid in the login and C_Initialize they were
// found in: reset (session loss, logout, token away and back, module
// re-initialized) empties the index and starts a new enumeration; until it
// is complete a key missing from the index is looked for with a targeted
// search, as before. An entry the enumeration made is verified (verifyKey,
// and its CKA_ID read back) at its first use, so a handle that now names
// another object is never used; C_SignInit failing with
// CKR_KEY_HANDLE_INVALID or CKR_OBJECT_HANDLE_INVALID drops the entry and
// looks again. Destroying a key drops its entry first. An ID two objects
// share is marked, and such a key is always looked up with a search (which
// refuses to guess).

// entry is what the index knows of one CKA_ID.
type entry struct {
	obj      p11.ObjectHandle
	verified bool // verifyKey passed for obj in this generation
	dup      bool // more than one generic secret has this ID
}

// objIndex is the backend's index; all of it is guarded by Backend.cmu.
type objIndex struct {
	m map[[idLen]byte]entry
	// gen is the session-pool generation the handles belong to.
	gen uint64
	// complete: m held every generic secret on the token when the last
	// enumeration of gen finished, and every change this backend made
	// since. A miss then still gets a targeted search (a key another
	// program made), but Keys can answer from m.
	complete bool
	// warm is the enumeration of gen in flight, or nil.
	warm *warmup
	// touched are the IDs put or dropped while warm runs: its results
	// for them are older than what m holds.
	touched map[[idLen]byte]struct{}
	// wk maps a wrapping key's name ("label \"x\"" or "CKA_ID hex"), as
	// ImportWrapped names it, to the one AES key a search found for it.
	wk map[string]p11.ObjectHandle
}

// warmup is one enumeration of the token.
type warmup struct {
	gen    uint64
	done   chan struct{}
	cancel context.CancelFunc
	err    error // set before done is closed
}

// errSuperseded ends an enumeration that a reset or Close overtook.
var errSuperseded = errors.New("PKCS#11 object enumeration superseded by a session reset")

func idKey(id []byte) (k [idLen]byte) {
	copy(k[:], id)
	return k
}

// indexPut records obj, verified, as the object with CKA_ID id.
func (b *Backend) indexPut(id []byte, obj p11.ObjectHandle) {
	k := idKey(id)
	b.cmu.Lock()
	b.idx.m[k] = entry{obj: obj, verified: true}
	if b.idx.warm != nil {
		b.idx.touched[k] = struct{}{}
	}
	b.cmu.Unlock()
}

// indexDrop forgets id.
func (b *Backend) indexDrop(id []byte) {
	k := idKey(id)
	b.cmu.Lock()
	delete(b.idx.m, k)
	if b.idx.warm != nil {
		b.idx.touched[k] = struct{}{}
	}
	b.cmu.Unlock()
}

// indexGet returns id's entry.
func (b *Backend) indexGet(id []byte) (entry, bool) {
	b.cmu.Lock()
	e, ok := b.idx.m[idKey(id)]
	b.cmu.Unlock()
	return e, ok
}

// wrappingKey returns the AES wrapping key that tmpl (class, key type, and
// label or CKA_ID) names: the handle an earlier import found in this
// generation, after reading the same attributes back from it, or else the
// one object a search finds (a wrapped import per search made provisioning
// runs O(N) per key on SoftHSM2).
func (b *Backend) wrappingKey(s p11.SessionHandle, tmpl []*p11.Attribute, name string) (p11.ObjectHandle, error) {
	b.cmu.Lock()
	obj, ok := b.idx.wk[name]
	b.cmu.Unlock()
	if ok {
		if b.matches(s, obj, tmpl) {
			return obj, nil
		}
		b.wkDrop(name)
	}
	wks, err := b.findPrivate(s, tmpl, 2)
	if err != nil {
		return 0, err
	}
	switch len(wks) {
	case 0:
		return 0, fmt.Errorf("%w: no AES wrapping key with %s on token %q", vault.ErrKeyNotFound, name, b.token.Label)
	case 1:
	default:
		return 0, fmt.Errorf("several AES keys with %s on token %q; name the wrapping key by wrapping-key-id", name, b.token.Label)
	}
	b.cmu.Lock()
	b.idx.wk[name] = wks[0]
	b.cmu.Unlock()
	return wks[0], nil
}

// matches reports whether obj still has every attribute of tmpl, read
// back from the token.
func (b *Backend) matches(s p11.SessionHandle, obj p11.ObjectHandle, tmpl []*p11.Attribute) bool {
	q := make([]*p11.Attribute, len(tmpl))
	for i, a := range tmpl {
		q[i] = p11.NewAttribute(a.Type, nil)
	}
	got, err := b.p.GetAttributeValue(s, obj, q)
	if err != nil || len(got) != len(tmpl) {
		return false
	}
	for i, a := range tmpl {
		if got[i].Type != a.Type || !bytes.Equal(got[i].Value, a.Value) {
			return false
		}
	}
	return true
}

func (b *Backend) wkDrop(name string) {
	b.cmu.Lock()
	delete(b.idx.wk, name)
	b.cmu.Unlock()
}

// indexEntry returns id's entry and whether the index is complete.
func (b *Backend) indexEntry(id []byte) (entry, bool, bool) {
	b.cmu.Lock()
	defer b.cmu.Unlock()
	e, ok := b.idx.m[idKey(id)]
	return e, ok, b.idx.complete
}

// markVerified notes that obj, id's entry, passed verifyKey.
func (b *Backend) markVerified(id []byte, obj p11.ObjectHandle) {
	k := idKey(id)
	b.cmu.Lock()
	if e, ok := b.idx.m[k]; ok && e.obj == obj {
		e.verified = true
		b.idx.m[k] = e
	}
	b.cmu.Unlock()
}

// indexReset empties the index for generation gen and stops the
// enumeration in flight. Callers hold mu exclusively.
func (b *Backend) indexReset(gen uint64) {
	b.cmu.Lock()
	if w := b.idx.warm; w != nil {
		w.cancel()
	}
	b.idx = objIndex{m: map[[idLen]byte]entry{}, gen: gen, wk: map[string]p11.ObjectHandle{}}
	b.cmu.Unlock()
}

// stopWarmup cancels the enumeration in flight, so that it gives up its
// session and shared lock; reset and Close call it before taking mu.
func (b *Backend) stopWarmup() {
	b.cmu.Lock()
	if w := b.idx.warm; w != nil {
		w.cancel()
	}
	b.cmu.Unlock()
}

// warmupFor returns the enumeration of the current generation in flight,
// starting one when none is. Callers hold mu shared or exclusively (so
// b.gen is stable).
func (b *Backend) warmupFor() *warmup {
	b.cmu.Lock()
	defer b.cmu.Unlock()
	if w := b.idx.warm; w != nil && w.gen == b.gen {
		return w
	}
	ctx, cancel := context.WithCancel(context.Background())
	w := &warmup{gen: b.gen, done: make(chan struct{}), cancel: cancel}
	b.idx.warm = w
	b.idx.touched = map[[idLen]byte]struct{}{}
	go b.runWarmup(ctx, w)
	return w
}

func (b *Backend) runWarmup(ctx context.Context, w *warmup) {
	defer w.cancel()
	var found map[[idLen]byte]entry
	err := b.do(ctx, func(s p11.SessionHandle, _ bool) error {
		if b.gen != w.gen {
			return errSuperseded
		}
		var err error
		found, err = b.enumerate(ctx, s)
		return err
	})
	if err != nil && ctx.Err() != nil {
		err = fmt.Errorf("%w (%v)", errSuperseded, err)
	}
	b.cmu.Lock()
	if err == nil && b.idx.gen == w.gen && b.idx.warm == w {
		for k, e := range found {
			if old, ok := b.idx.m[k]; ok && !e.dup && old.obj == e.obj {
				found[k] = old // keeps its verification
			}
		}
		for k := range b.idx.touched {
			// Put or dropped since the search started: m knows better.
			if e, ok := b.idx.m[k]; ok {
				found[k] = e
			} else {
				delete(found, k)
			}
		}
		b.idx.m = found
		b.idx.complete = true
	} else if err == nil {
		err = errSuperseded
	}
	if b.idx.warm == w {
		b.idx.warm, b.idx.touched = nil, nil
	}
	w.err = err
	b.cmu.Unlock()
	close(w.done)
}

// awaitIndex waits, when id is not in the index (or id is nil), for the
// enumeration in flight (if any) to finish. A search of the token costs as much as the
// enumeration's own search and slows it down, on a token that serializes
// its object store as SoftHSM2 does (a search while the enumeration ran
// took 4 times as long as alone), and derives arriving together would
// each search: so a key's first use during an enumeration waits for it,
// and searches only if the key is still missing afterwards. It holds no
// lock and no session while it waits.
func (b *Backend) awaitIndex(ctx context.Context, id []byte) error {
	b.cmu.Lock()
	ok := false
	if id != nil {
		_, ok = b.idx.m[idKey(id)]
	}
	w := b.idx.warm
	b.cmu.Unlock()
	if ok || w == nil {
		return nil
	}
	select {
	case <-w.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// enumerateBatch is how many handles one C_FindObjects call asks for;
// readIDsChunk how many objects' CKA_IDs one cgo call reads (the
// enumeration checks between chunks whether reset or Close stopped it).
const (
	enumerateBatch = 4096
	readIDsChunk   = 512
)

// enumerate lists every generic secret on the token with its CKA_ID (of
// idLen bytes: pskvault's keys; others are left out), marking IDs that
// several objects share. It fails rather than return a short list: on a
// session that lost its login (private objects then just vanish) and on a
// token that no longer answers as itself.
func (b *Backend) enumerate(ctx context.Context, s p11.SessionHandle) (map[[idLen]byte]entry, error) {
	tmpl := []*p11.Attribute{
		p11.NewAttribute(p11.CKA_CLASS, p11.CKO_SECRET_KEY),
		p11.NewAttribute(p11.CKA_KEY_TYPE, p11.CKK_GENERIC_SECRET),
	}
	if err := b.findInit(s, tmpl); err != nil {
		return nil, err
	}
	var objs []p11.ObjectHandle
	for {
		batch, _, err := b.p.FindObjects(s, enumerateBatch)
		if err != nil {
			b.p.FindObjectsFinal(s)
			return nil, classify("C_FindObjects", err)
		}
		objs = append(objs, batch...)
		if len(batch) == 0 {
			break
		}
	}
	if err := b.p.FindObjectsFinal(s); err != nil {
		return nil, classify("C_FindObjectsFinal", err)
	}
	total := len(objs)
	found := make(map[[idLen]byte]entry, total)
	for len(objs) > 0 {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		chunk := objs[:min(len(objs), readIDsChunk)]
		objs = objs[len(chunk):]
		ids, errs := b.mod.ids.readIDs(b.p, s, chunk)
		for i, o := range chunk {
			if err := errs[i]; err != nil {
				if isRV(err, p11.CKR_OBJECT_HANDLE_INVALID) {
					continue // destroyed meanwhile
				}
				return nil, classify("C_GetAttributeValue(CKA_ID)", err)
			}
			if ids[i] == nil {
				continue // not an idLen-byte ID: not pskvault's
			}
			k := idKey(ids[i])
			if _, ok := found[k]; ok {
				found[k] = entry{dup: true}
				continue
			}
			found[k] = entry{obj: o}
		}
	}
	if total == 0 && b.loginExpected() {
		// A lost login hides private objects instead of failing.
		si, err := b.p.GetSessionInfo(s)
		if err != nil {
			return nil, classify("C_GetSessionInfo", err)
		}
		if si.State != p11.CKS_RW_USER_FUNCTIONS && si.State != p11.CKS_RO_USER_FUNCTIONS {
			return nil, classify("C_FindObjects (session not logged in)", p11.Error(p11.CKR_USER_NOT_LOGGED_IN))
		}
	}
	if err := b.confirmPresent(); err != nil {
		return nil, err
	}
	return found, nil
}

// readID reads obj's CKA_ID.
func readID(p *p11.Ctx, s p11.SessionHandle, obj p11.ObjectHandle) ([]byte, error) {
	a, err := p.GetAttributeValue(s, obj, []*p11.Attribute{p11.NewAttribute(p11.CKA_ID, nil)})
	if err != nil {
		return nil, err
	}
	if len(a) != 1 {
		return nil, nil
	}
	return a[0].Value, nil
}

// findInit is C_FindObjectsInit, counted (tests check that a key's first
// use does not search the token).
func (b *Backend) findInit(s p11.SessionHandle, tmpl []*p11.Attribute) error {
	b.finds.Add(1)
	if err := b.p.FindObjectsInit(s, tmpl); err != nil {
		return classify("C_FindObjectsInit", err)
	}
	return nil
}

// indexedKeys returns the handles of this vault's keys in a complete
// index of the current generation: the one there is (after checking that
// the token still answers as itself, as a listing would), or else the one
// the enumeration in flight — or one it starts — leaves. So the vault's
// reconciliation at start never lists the token a second time, whatever
// it did between Open and Keys. A reset while it waits starts it over (a
// few times at most).
func (b *Backend) indexedKeys(ctx context.Context) ([][]byte, error) {
	for attempt := 0; ; attempt++ {
		b.mu.RLock()
		if b.closed {
			b.mu.RUnlock()
			return nil, errClosed
		}
		gen := b.gen
		b.cmu.Lock()
		complete := b.idx.complete && b.idx.gen == gen
		b.cmu.Unlock()
		var w *warmup
		if !complete {
			w = b.warmupFor()
		}
		b.mu.RUnlock()
		if w != nil {
			select {
			case <-w.done:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
			if w.err != nil {
				if errors.Is(w.err, errSuperseded) && attempt < 3 {
					continue
				}
				return nil, w.err
			}
			gen = w.gen
		} else if err := b.do(ctx, func(p11.SessionHandle, bool) error { return b.confirmPresent() }); err != nil {
			return nil, err
		}
		var out [][]byte
		b.cmu.Lock()
		ok := b.idx.gen == gen && b.idx.complete
		if ok {
			for k := range b.idx.m {
				if h, ok := handleOfID(b.tag, k[:]); ok {
					out = append(out, h)
				}
			}
		}
		b.cmu.Unlock()
		if ok {
			return out, nil
		}
		if attempt >= 3 {
			return nil, fmt.Errorf("%w: the token's objects could not be listed: the session pool was reset during every attempt", errSuperseded)
		}
	}
}

// sameID reports whether obj's CKA_ID is id (an index entry made by an
// enumeration is checked this way at its first use).
func sameID(p *p11.Ctx, s p11.SessionHandle, obj p11.ObjectHandle, id []byte) (bool, error) {
	got, err := readID(p, s, obj)
	if err != nil {
		return false, err
	}
	return bytes.Equal(got, id), nil
}

// idxState is for tests: the index's generation, whether it is complete,
// and how many IDs it holds.
func (b *Backend) idxState() (gen uint64, complete bool, n int) {
	b.cmu.Lock()
	defer b.cmu.Unlock()
	return b.idx.gen, b.idx.complete, len(b.idx.m)
}
