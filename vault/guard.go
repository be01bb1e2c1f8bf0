package vault

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// A stalled device (a TPM that stops answering, a token that hangs) must
// not hold every request: each request carries a deadline in its context,
// and the vault, not the backend, makes sure the caller gets an answer by
// then. Backends stay ignorant of it; those that can give up early on
// ctx (the TPM backend's queue does) still do.
//
// Reads (HMAC, Random: idempotent, their result is simply dropped) run on
// a goroutine of their own unless the backend is soft; the caller waits
// for the result or for its context, whichever comes first. A read still
// running past its request's deadline (whether its caller timed out or
// hung up) marks the backend stalled: until it returns, every new backend
// call fails at once with ErrBackendUnavailable instead of queueing behind
// it. Changes (StoreKey,
// DeleteKey, ImportWrapped) are refused while the backend is stalled, but
// once started they run to their end (an abandoned change could leave a
// key without its record, or a record without its key). The soft backend
// only computes, never stalls, and is called directly.

// backendGuard tracks the backend calls in flight on their own goroutines.
type backendGuard struct {
	direct bool // the backend only computes (soft): call it inline

	// down is set when the last call's answer was ErrBackendUnavailable
	// (a device removed, a swtpm stopped, a token gone) and cleared by
	// the next call the backend answers. With stalledSince it is what
	// BackendAvailable reports.
	down atomic.Bool
	// observe, when set (SetBackendObserver), sees every backend call.
	observe atomic.Pointer[BackendObserver]

	mu      sync.Mutex
	running map[*guardedCall]struct{}
}

// guardedCall is one call in flight, and the deadline of the request that
// made it (zero: none).
type guardedCall struct{ deadline time.Time }

var errStalled = errors.New("an earlier call to the backend is still running past its request's deadline (device stalled?)")

// stalledSince reports the deadline of the oldest call in flight past its
// deadline, whether or not its caller still waits for it.
func (g *backendGuard) stalledSince(now time.Time) (time.Time, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	var oldest time.Time
	for c := range g.running {
		if !c.deadline.IsZero() && now.After(c.deadline) && (oldest.IsZero() || c.deadline.Before(oldest)) {
			oldest = c.deadline
		}
	}
	return oldest, !oldest.IsZero()
}

func (g *backendGuard) ready(ctx context.Context) error {
	if since, stalled := g.stalledSince(time.Now()); stalled {
		return fmt.Errorf("%w: %w (since %s)", ErrBackendUnavailable, errStalled, since.UTC().Format(time.RFC3339))
	}
	if err := ctx.Err(); err != nil {
		return deadlineErr(err)
	}
	return nil
}

// deadlineErr turns a context's end into the answer the API gives for it.
func deadlineErr(err error) error {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return fmt.Errorf("%w: %w", ErrBackendUnavailable, err)
	}
	return err
}

// read runs op, a backend read whose result may be dropped, so that the
// caller has an answer by ctx's end. The result of a read given up on is
// wiped when it arrives.
func (g *backendGuard) read(ctx context.Context, name string, op func(context.Context) ([]byte, error)) ([]byte, error) {
	if err := g.ready(ctx); err != nil {
		return nil, err
	}
	if g.direct {
		// The soft backend's calls are in-process computations of a
		// microsecond or so: not timed (on a VM a clock read costs
		// 100-150 ns, docs/BENCHMARKS.md); the request's own duration
		// covers them.
		b, err := op(ctx)
		err = deadlineErr(err)
		g.finished(nil, name, time.Time{}, err)
		return b, err
	}
	obs := g.observe.Load()
	var start time.Time
	if obs != nil {
		start = time.Now()
	}
	type result struct {
		b   []byte
		err error
	}
	call := &guardedCall{}
	call.deadline, _ = ctx.Deadline()
	g.mu.Lock()
	if g.running == nil {
		g.running = map[*guardedCall]struct{}{}
	}
	g.running[call] = struct{}{}
	g.mu.Unlock()
	ch := make(chan result, 1)
	go func() {
		b, err := op(ctx)
		g.mu.Lock()
		delete(g.running, call)
		g.mu.Unlock()
		g.finished(obs, name, start, deadlineErr(err))
		ch <- result{b, err}
	}()
	select {
	case r := <-ch:
		return r.b, deadlineErr(r.err)
	case <-ctx.Done():
	}
	go func() {
		r := <-ch
		clear(r.b)
	}()
	return nil, fmt.Errorf("%w: no answer before the request's deadline: %w", ErrBackendUnavailable, ctx.Err())
}

// change runs op, a backend change, when the backend is not stalled.
func (g *backendGuard) change(ctx context.Context, name string, op func() error) error {
	if err := g.ready(ctx); err != nil {
		return err
	}
	obs := g.observe.Load()
	var start time.Time
	if obs != nil && !g.direct {
		start = time.Now()
	} else {
		obs = nil
	}
	err := deadlineErr(op())
	g.finished(obs, name, start, err)
	return err
}

// finished notes a backend call's end: whether the backend answered
// (down), and its duration for the observer. A call cut short because its
// client hung up says nothing about the device.
func (g *backendGuard) finished(obs *BackendObserver, name string, start time.Time, err error) {
	switch {
	case err == nil:
		g.down.Store(false)
	case errors.Is(err, context.Canceled):
	case errors.Is(err, ErrBackendUnavailable):
		g.down.Store(true)
	default:
		g.down.Store(false) // an answer, even a refusal
	}
	if obs != nil {
		(*obs)(name, time.Since(start), err)
	}
}

// Backend operations, as BackendObserver names them.
const (
	OpHMAC   = "hmac"
	OpStore  = "store" // StoreKey and ImportWrapped
	OpDelete = "delete"
	OpRandom = "random"
)

// BackendObserver sees each call the vault makes to a hardware backend
// (TPM, PKCS#11; the soft backend's in-process calls are not timed): its
// operation (OpHMAC, ...), how long the backend took, and its error. It
// runs on the request's path and must be cheap.
type BackendObserver func(op string, took time.Duration, err error)

// SetBackendObserver makes f see every later backend call; nil stops it.
func (v *Vault) SetBackendObserver(f BackendObserver) {
	if f == nil {
		v.guard.observe.Store(nil)
		return
	}
	v.guard.observe.Store(&f)
}

// BackendAvailable reports whether the backend is taken to answer: no call
// is running past its request's deadline (BackendStalled), and the last
// call that ended was answered (not ErrBackendUnavailable: a device
// removed or unreachable). It calls nothing; ProbeBackend does.
func (v *Vault) BackendAvailable() bool {
	if _, stalled := v.guard.stalledSince(time.Now()); stalled {
		return false
	}
	return !v.guard.down.Load()
}

// ProbeBackend makes one cheap real call to the backend (8 random bytes
// from a TPM or token; nothing for the soft backend, which only computes)
// under the guard, so that it also updates BackendAvailable. The caller
// bounds it with ctx, and limits how often it runs.
func (v *Vault) ProbeBackend(ctx context.Context) error {
	if v.guard.direct {
		return nil
	}
	rs, ok := v.backend.(RandomSource)
	if !ok {
		return v.guard.ready(ctx)
	}
	b, err := v.guard.read(ctx, OpRandom, func(ctx context.Context) ([]byte, error) { return rs.Random(ctx, 8) })
	clear(b)
	return err
}

// hmac is the backend's HMAC under the guard.
func (v *Vault) hmac(ctx context.Context, key KeyRef, data []byte) ([]byte, error) {
	return v.guard.read(ctx, OpHMAC, func(ctx context.Context) ([]byte, error) { return v.backend.HMAC(ctx, key, data) })
}

// BackendStalled reports whether a backend call is running past its
// request's deadline (new calls fail at once until it returns), and since
// when.
func (v *Vault) BackendStalled() (bool, time.Time) {
	since, stalled := v.guard.stalledSince(time.Now())
	return stalled, since
}
