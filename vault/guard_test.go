package vault

import (
	"context"
	"errors"
	"testing"
	"time"
)

// TestGuardStalledRead: a read stuck past its deadline answers
// ErrBackendUnavailable by the deadline, every read after it fails at once
// while it is stuck, and reads work again once it returns. (The end-to-end version runs against a stopped swtpm:
// cmd/pskvault TestStalledTPM.)
func TestGuardStalledRead(t *testing.T) {
	var g backendGuard
	release := make(chan struct{})
	late := []byte("late result")
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	t0 := time.Now()
	_, err := g.read(ctx, OpHMAC, func(context.Context) ([]byte, error) {
		<-release
		return late, nil
	})
	if !errors.Is(err, ErrBackendUnavailable) || time.Since(t0) > time.Second {
		t.Fatalf("stuck read: %v after %v, want ErrBackendUnavailable at its deadline", err, time.Since(t0))
	}
	called := false
	ctx2, cancel2 := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel2()
	t0 = time.Now()
	_, err = g.read(ctx2, OpHMAC, func(context.Context) ([]byte, error) { called = true; return nil, nil })
	if !errors.Is(err, ErrBackendUnavailable) || !errors.Is(err, errStalled) || called || time.Since(t0) > 100*time.Millisecond {
		t.Fatalf("read behind a stuck one: %v (called %v) after %v, want errStalled at once", err, called, time.Since(t0))
	}
	if err := g.change(ctx2, OpStore, func() error { called = true; return nil }); !errors.Is(err, errStalled) || called {
		t.Fatalf("change behind a stuck read: %v (called %v)", err, called)
	}
	close(release)
	deadline := time.Now().Add(5 * time.Second)
	for {
		b, err := g.read(ctx2, OpHMAC, func(context.Context) ([]byte, error) { return []byte("ok"), nil })
		if err == nil && string(b) == "ok" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("reads after the stuck one returned: %v", err)
		}
		time.Sleep(time.Millisecond)
	}
	// A cancelled caller (client hung up) gets an answer at once too.
	ctx3, cancel3 := context.WithCancel(context.Background())
	block := make(chan struct{})
	defer close(block)
	go func() { time.Sleep(20 * time.Millisecond); cancel3() }()
	if _, err := g.read(ctx3, OpHMAC, func(context.Context) ([]byte, error) { <-block; return nil, nil }); !errors.Is(err, context.Canceled) || !errors.Is(err, ErrBackendUnavailable) {
		t.Fatalf("cancelled read: %v", err)
	}
}
