//go:build cgo

package pkcs11

import (
	"crypto/rand"
	"sync"
	"testing"
	"time"

	p11 "github.com/miekg/pkcs11"

	"github.com/pskvault/pskvault/importer"
	"github.com/pskvault/pskvault/vault"
)

// All benchmarks run against the same SoftHSM2 token in one process:
//
//	go test -run '^$' -bench . -benchtime 2s ./backends/pkcs11/
//
// Each reports ops/s; the "8" variants run 8 goroutines sharing one
// backend (its default pool of 8 sessions) or, for raw, 8 own sessions.

func benchKey(b *testing.B, be *Backend, h importer.Hash) vault.KeyRef {
	prk := make([]byte, h.Size())
	rand.Read(prk)
	handle, err := be.StoreKey(bg, vault.StoreRequest{PRK: prk, Hash: h, Label: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	key := vault.KeyRef{Handle: handle, Hash: h}
	b.Cleanup(func() { be.DeleteKey(bg, key) })
	return key
}

// data is one HKDF-Expand block input for a SHA-256 EPSK, TLS 1.3 target.
var benchData = make([]byte, 2+1+17+1+32+1) // HkdfLabel || 0x01 for the first block

func reportRate(b *testing.B, start time.Time) {
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "ops/s")
}

// BenchmarkRawSign is the floor: C_SignInit + C_Sign on one session with
// the token object already found.
func BenchmarkRawSign(b *testing.B) {
	be := openToken(b, "")
	key := benchKey(b, be, importer.SHA256)
	s := rawSession(b, be)
	obj := findByHandle(b, be, s, key.Handle)
	mech := []*p11.Mechanism{p11.NewMechanism(p11.CKM_SHA256_HMAC, nil)}
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		if err := be.p.SignInit(s, mech, obj); err != nil {
			b.Fatal(err)
		}
		if _, err := be.p.Sign(s, benchData); err != nil {
			b.Fatal(err)
		}
	}
	reportRate(b, start)
}

// BenchmarkRawSign8 is raw C_SignInit + C_Sign from 8 goroutines, each on
// its own session: the token's ceiling for concurrent HMAC.
func BenchmarkRawSign8(b *testing.B) {
	be := openToken(b, "")
	key := benchKey(b, be, importer.SHA256)
	mech := []*p11.Mechanism{p11.NewMechanism(p11.CKM_SHA256_HMAC, nil)}
	var sessions []p11.SessionHandle
	var obj p11.ObjectHandle
	for g := 0; g < 8; g++ {
		s := rawSession(b, be)
		sessions = append(sessions, s)
		obj = findByHandle(b, be, s, key.Handle)
	}
	b.ResetTimer()
	start := time.Now()
	run8(b, func(g, n int) error {
		for i := 0; i < n; i++ {
			if err := be.p.SignInit(sessions[g], mech, obj); err != nil {
				return err
			}
			if _, err := be.p.Sign(sessions[g], benchData); err != nil {
				return err
			}
		}
		return nil
	})
	reportRate(b, start)
}

// BenchmarkHMAC is Backend.HMAC (pool, handle decoding, object cache,
// length check) from one goroutine.
func BenchmarkHMAC(b *testing.B) {
	for _, h := range []importer.Hash{importer.SHA256, importer.SHA384} {
		b.Run(h.String(), func(b *testing.B) {
			be := openToken(b, "")
			key := benchKey(b, be, h)
			b.ResetTimer()
			start := time.Now()
			for i := 0; i < b.N; i++ {
				if _, err := be.HMAC(bg, key, benchData); err != nil {
					b.Fatal(err)
				}
			}
			reportRate(b, start)
		})
	}
}

// BenchmarkHMAC8 is Backend.HMAC from 8 goroutines sharing one backend.
func BenchmarkHMAC8(b *testing.B) {
	be := openToken(b, "")
	key := benchKey(b, be, importer.SHA256)
	b.ResetTimer()
	start := time.Now()
	run8(b, func(_, n int) error {
		for i := 0; i < n; i++ {
			if _, err := be.HMAC(bg, key, benchData); err != nil {
				return err
			}
		}
		return nil
	})
	reportRate(b, start)
}

// BenchmarkDerive is a whole RFC 9258 derivation through the backend
// (SHA-256 EPSK, TLS 1.3, HKDF_SHA256: one HMAC block; SHA-256 EPSK with a
// SHA-384 target: two).
func BenchmarkDerive(b *testing.B) {
	be := openToken(b, "")
	key := benchKey(b, be, importer.SHA256)
	for _, kdf := range []importer.KDF{importer.HKDFSHA256, importer.HKDFSHA384} {
		b.Run(kdf.String(), func(b *testing.B) {
			id := importer.Identity{External: []byte("client-1"), Context: []byte("ctx"), Protocol: importer.TLS13, KDF: kdf}
			mac := func(d []byte) ([]byte, error) { return be.HMAC(bg, key, d) }
			b.ResetTimer()
			start := time.Now()
			for i := 0; i < b.N; i++ {
				plan, err := importer.NewPlan(importer.SHA256, id)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := plan.Expand(mac); err != nil {
					b.Fatal(err)
				}
			}
			reportRate(b, start)
		})
	}
}

// run8 splits b.N operations over 8 goroutines.
func run8(b *testing.B, fn func(g, n int) error) {
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := 0; g < 8; g++ {
		n := b.N / 8
		if g < b.N%8 {
			n++
		}
		wg.Add(1)
		go func(g, n int) {
			defer wg.Done()
			if err := fn(g, n); err != nil {
				errs <- err
			}
		}(g, n)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
}
