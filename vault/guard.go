package vault

import (
	"context"
	"errors"
	"fmt"
	"sync"
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
func (g *backendGuard) read(ctx context.Context, op func(context.Context) ([]byte, error)) ([]byte, error) {
	if err := g.ready(ctx); err != nil {
		return nil, err
	}
	if g.direct {
		b, err := op(ctx)
		return b, deadlineErr(err)
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
func (g *backendGuard) change(ctx context.Context, op func() error) error {
	if err := g.ready(ctx); err != nil {
		return err
	}
	return deadlineErr(op())
}

// hmac is the backend's HMAC under the guard.
func (v *Vault) hmac(ctx context.Context, key KeyRef, data []byte) ([]byte, error) {
	return v.guard.read(ctx, func(ctx context.Context) ([]byte, error) { return v.backend.HMAC(ctx, key, data) })
}

// BackendStalled reports whether a backend call is running past its
// request's deadline (new calls fail at once until it returns), and since
// when.
func (v *Vault) BackendStalled() (bool, time.Time) {
	since, stalled := v.guard.stalledSince(time.Now())
	return stalled, since
}
