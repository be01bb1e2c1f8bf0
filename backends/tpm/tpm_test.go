package tpm

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-tpm/tpm2"

	"github.com/pskvault/pskvault/importer"
	"github.com/pskvault/pskvault/internal/swtpmsim"
	"github.com/pskvault/pskvault/vault"
	"github.com/pskvault/pskvault/vault/backendtest"
)

// openSim starts a fresh swtpm and opens the backend on it.
func openSim(t testing.TB, opts ...swtpmsim.Option) (*Backend, *swtpmsim.Sim) {
	t.Helper()
	sim := swtpmsim.Start(t, opts...)
	b, err := Open(context.Background(), sim.URI())
	if err != nil {
		t.Fatalf("Open(%s): %v", sim.URI(), err)
	}
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return b, sim
}

// newPRK returns a random EPSK and its PRK.
func newPRK(t testing.TB, h importer.Hash) (epsk, prk []byte) {
	t.Helper()
	epsk = make([]byte, 32)
	rand.Read(epsk)
	prk, err := importer.Extract(h, epsk)
	if err != nil {
		t.Fatal(err)
	}
	return epsk, prk
}

func store(t testing.TB, b *Backend, h importer.Hash, params map[string]string) (vault.KeyRef, []byte) {
	t.Helper()
	_, prk := newPRK(t, h)
	handle, err := b.StoreKey(context.Background(), vault.StoreRequest{PRK: bytes.Clone(prk), Hash: h, Label: "test", Params: params})
	if err != nil {
		t.Fatalf("StoreKey: %v", err)
	}
	return vault.KeyRef{Handle: handle, Hash: h}, prk
}

func checkHMAC(t testing.TB, b *Backend, key vault.KeyRef, prk, data []byte) {
	t.Helper()
	got, err := b.HMAC(context.Background(), key, data)
	if err != nil {
		t.Fatalf("HMAC: %v", err)
	}
	want, _ := importer.SoftwareMAC(key.Hash, prk)(data)
	if !bytes.Equal(got, want) {
		t.Fatal("TPM HMAC differs from crypto/hmac")
	}
}

func TestConformanceTCP(t *testing.T) {
	b, _ := openSim(t)
	backendtest.Run(t, b)
}

func TestConformanceUnixSocket(t *testing.T) {
	b, _ := openSim(t, swtpmsim.UnixSocket())
	backendtest.Run(t, b)
}

func TestInfo(t *testing.T) {
	b, _ := openSim(t)
	info := b.Info()
	if info.Name != "tpm" || info.Hardware || !info.Supports(importer.SHA256) || !info.Supports(importer.SHA384) {
		t.Fatalf("Info = %+v", info)
	}
	if !strings.Contains(info.Description, "swtpm") {
		t.Errorf("Description %q does not say swtpm", info.Description)
	}
}

// More keys than the raw swtpm's 3 transient slots, derived concurrently:
// the LRU cache must flush and reload without mixing keys up.
func TestMoreKeysThanSlotsConcurrent(t *testing.T) {
	b, _ := openSim(t)
	const nKeys = 9
	type kp struct {
		ref  vault.KeyRef
		epsk []byte
	}
	keys := make([]kp, nKeys)
	for i := range keys {
		h := importer.SHA256
		if i%3 == 2 {
			h = importer.SHA384
		}
		epsk, prk := newPRK(t, h)
		handle, err := b.StoreKey(context.Background(), vault.StoreRequest{PRK: prk, Hash: h, Label: fmt.Sprint(i)})
		if err != nil {
			t.Fatalf("StoreKey %d: %v", i, err)
		}
		keys[i] = kp{vault.KeyRef{Handle: handle, Hash: h}, epsk}
	}
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for g := 0; g < 12; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 15; i++ {
				k := keys[(g*7+i)%nKeys]
				id := importer.Identity{External: []byte(fmt.Sprintf("client-%d", g)), Context: []byte("ctx"), Protocol: importer.TLS13, KDF: importer.HKDFSHA384}
				plan, err := importer.NewPlan(k.ref.Hash, id)
				if err != nil {
					errs <- err
					return
				}
				got, err := plan.Expand(func(d []byte) ([]byte, error) { return b.HMAC(context.Background(), k.ref, d) })
				if err != nil {
					errs <- err
					return
				}
				_, want, _ := importer.Import(k.ref.Hash, k.epsk, id)
				if !bytes.Equal(got, want) {
					errs <- fmt.Errorf("goroutine %d: derivation differs from the in-memory importer", g)
					return
				}
			}
		}(g)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

func TestHandleAndBlobHoldNoKey(t *testing.T) {
	b, _ := openSim(t)
	for _, h := range []importer.Hash{importer.SHA256, importer.SHA384} {
		epsk, prk := newPRK(t, h)
		handle, err := b.StoreKey(context.Background(), vault.StoreRequest{PRK: bytes.Clone(prk), Hash: h, Label: "x"})
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(handle, prk) || bytes.Contains(handle, epsk) {
			t.Fatal("key handle contains the PRK or EPSK in clear")
		}
		pub, err := b.ParentPublic(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		blob, err := Wrap(pub, h, prk)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(blob, prk) || bytes.Contains(blob, epsk) {
			t.Fatal("wrapped blob contains the PRK or EPSK in clear")
		}
	}
}

func extendPCR(t *testing.T, b *Backend, pcr int) {
	t.Helper()
	err := b.run(context.Background(), "test extend", func() error {
		_, err := tpm2.PCRExtend{
			PCRHandle: tpm2.AuthHandle{Handle: tpm2.TPMHandle(pcr), Auth: tpm2.PasswordAuth(nil)},
			Digests:   tpm2.TPMLDigestValues{Digests: []tpm2.TPMTHA{{HashAlg: tpm2.TPMAlgSHA256, Digest: bytes.Repeat([]byte{0x42}, 32)}}},
		}.Execute(b.link)
		return err
	})
	if err != nil {
		t.Fatalf("PCRExtend(%d): %v", pcr, err)
	}
}

func TestPCRBoundKeyRefusedAfterExtend(t *testing.T) {
	b, _ := openSim(t)
	bound, prk := store(t, b, importer.SHA256, map[string]string{"pcrs": "7,11"})
	other, otherPRK := store(t, b, importer.SHA384, map[string]string{"pcrs": "7"})
	checkHMAC(t, b, bound, prk, []byte("before"))
	checkHMAC(t, b, other, otherPRK, []byte("before"))

	extendPCR(t, b, 11)

	_, err := b.HMAC(context.Background(), bound, []byte("after"))
	if !errors.Is(err, vault.ErrKeyPolicy) {
		t.Fatalf("HMAC after extending PCR 11 = %v, want ErrKeyPolicy", err)
	}
	if !strings.Contains(err.Error(), "PCRs 7,11") || !strings.Contains(err.Error(), "PCR 11 changed") {
		t.Errorf("error does not name the PCRs: %v", err)
	}
	if strings.Contains(err.Error(), "TPM_RC") {
		t.Errorf("error leaks a raw TPM return code: %v", err)
	}
	// A key bound only to PCR 7 still works.
	checkHMAC(t, b, other, otherPRK, []byte("after"))
}

func TestBadPCRParams(t *testing.T) {
	b, _ := openSim(t)
	for _, v := range []string{"", "x", "24", "-1", "7,7"} {
		_, prk := newPRK(t, importer.SHA256)
		_, err := b.StoreKey(context.Background(), vault.StoreRequest{PRK: prk, Hash: importer.SHA256, Params: map[string]string{"pcrs": v}})
		if err == nil {
			t.Errorf("pcrs=%q accepted", v)
		}
	}
}

func TestWrappedImportRoundTrip(t *testing.T) {
	b, _ := openSim(t)
	pub, err := b.ParentPublic(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range []importer.Hash{importer.SHA256, importer.SHA384} {
		epsk, prk := newPRK(t, h)
		blob, err := Wrap(pub, h, prk)
		if err != nil {
			t.Fatalf("Wrap: %v", err)
		}
		handle, err := b.ImportWrapped(context.Background(), blob, h, nil)
		if err != nil {
			t.Fatalf("ImportWrapped: %v", err)
		}
		key := vault.KeyRef{Handle: handle, Hash: h}
		id := importer.Identity{External: []byte("peer"), Context: []byte("ctx"), Protocol: importer.TLS13, KDF: importer.HKDFSHA256}
		plan, _ := importer.NewPlan(h, id)
		got, err := plan.Expand(func(d []byte) ([]byte, error) { return b.HMAC(context.Background(), key, d) })
		if err != nil {
			t.Fatal(err)
		}
		_, want, _ := importer.Import(h, epsk, id)
		if !bytes.Equal(got, want) {
			t.Fatal("wrapped key derives differently from the in-memory importer")
		}
		if _, err := b.ImportWrapped(context.Background(), blob, h, map[string]string{"pcrs": "7"}); !errors.Is(err, vault.ErrUnsupported) {
			t.Errorf("ImportWrapped with pcrs = %v, want ErrUnsupported", err)
		}
		if _, err := b.ImportWrapped(context.Background(), blob, h, map[string]string{"bogus": "1"}); err == nil {
			t.Error("ImportWrapped accepted an unknown parameter")
		}
	}
}

func TestWrappedForAnotherTPMRefused(t *testing.T) {
	b, _ := openSim(t)
	other, _ := openSim(t)
	pub, err := other.ParentPublic(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	_, prk := newPRK(t, importer.SHA256)
	blob, err := Wrap(pub, importer.SHA256, prk)
	if err != nil {
		t.Fatal(err)
	}
	_, err = b.ImportWrapped(context.Background(), blob, importer.SHA256, nil)
	if err == nil || !strings.Contains(err.Error(), "parent-pub") {
		t.Fatalf("ImportWrapped of a blob for another TPM = %v", err)
	}
	// Tampered blob for the right TPM: the TPM's integrity check refuses it.
	mine, _ := b.ParentPublic(context.Background())
	blob, _ = Wrap(mine, importer.SHA256, prk)
	blob[len(blob)-80] ^= 1
	if _, err := b.ImportWrapped(context.Background(), blob, importer.SHA256, nil); err == nil {
		t.Fatal("tampered wrapped blob accepted")
	}
}

func TestSwtpmRestart(t *testing.T) {
	b, sim := openSim(t)
	key, prk := store(t, b, importer.SHA256, nil)
	key2, prk2 := store(t, b, importer.SHA384, map[string]string{"pcrs": "7"})
	checkHMAC(t, b, key, prk, []byte("before"))
	if err := sim.Restart(); err != nil {
		t.Fatal(err)
	}
	checkHMAC(t, b, key, prk, []byte("after restart"))
	checkHMAC(t, b, key2, prk2, []byte("after restart"))

	if err := sim.Stop(); err != nil {
		t.Fatal(err)
	}
	_, err := b.HMAC(context.Background(), key, []byte("down"))
	if !errors.Is(err, vault.ErrBackendUnavailable) {
		t.Fatalf("HMAC with swtpm down = %v, want ErrBackendUnavailable", err)
	}
	if err := sim.Restart(); err != nil {
		t.Fatal(err)
	}
	checkHMAC(t, b, key, prk, []byte("back up"))
}

// A daemon that dies without Close leaves its objects loaded in a raw
// swtpm; the next one must still work.
func TestOrphansFlushed(t *testing.T) {
	b, sim := openSim(t)
	for i := 0; i < 3; i++ {
		store(t, b, importer.SHA256, nil)
	}
	b.sem <- struct{}{}
	b.link.Close() // crash: no flush, no shutdown
	b.link = nil
	<-b.sem
	b2, err := Open(context.Background(), sim.URI())
	if err != nil {
		t.Fatal(err)
	}
	defer b2.Close()
	key, prk := store(t, b2, importer.SHA256, nil)
	checkHMAC(t, b2, key, prk, []byte("x"))
}

func TestLongData(t *testing.T) {
	b, _ := openSim(t)
	key, prk := store(t, b, importer.SHA384, nil)
	data := make([]byte, 3000)
	rand.Read(data)
	checkHMAC(t, b, key, prk, data)
	checkHMAC(t, b, key, prk, data[:1024])
	checkHMAC(t, b, key, prk, data[:1025])
}

func TestBadHandles(t *testing.T) {
	b, _ := openSim(t)
	key, _ := store(t, b, importer.SHA256, nil)
	ctx := context.Background()
	if _, err := b.HMAC(ctx, vault.KeyRef{Handle: key.Handle, Hash: importer.SHA384}, []byte("x")); !errors.Is(err, vault.ErrKeyNotFound) {
		t.Errorf("wrong hash: %v", err)
	}
	for i := 0; i < len(key.Handle); i += 7 {
		h := bytes.Clone(key.Handle)
		h[i] ^= 0x80
		if _, err := b.HMAC(ctx, vault.KeyRef{Handle: h, Hash: importer.SHA256}, []byte("x")); err == nil {
			t.Errorf("handle with byte %d flipped still works", i)
		}
	}
	if _, err := b.HMAC(ctx, vault.KeyRef{Handle: key.Handle[:20], Hash: importer.SHA256}, []byte("x")); !errors.Is(err, vault.ErrKeyNotFound) {
		t.Errorf("truncated handle: %v", err)
	}
}

func TestRandom(t *testing.T) {
	b, _ := openSim(t)
	r, err := b.Random(context.Background(), 100)
	if err != nil || len(r) != 100 || bytes.Equal(r[:32], make([]byte, 32)) {
		t.Fatalf("Random = %x, %v", r, err)
	}
}

func TestOpenErrors(t *testing.T) {
	ctx := context.Background()
	_, err := Open(ctx, "tpm:device=/nonexistent/tpm")
	if !errors.Is(err, vault.ErrBackendUnavailable) || !strings.Contains(err.Error(), "/nonexistent/tpm") {
		t.Errorf("absent device: %v", err)
	}
	_, err = Open(ctx, "tpm:swtpm=127.0.0.1:1")
	if !errors.Is(err, vault.ErrBackendUnavailable) || !strings.Contains(err.Error(), "127.0.0.1:1") {
		t.Errorf("absent swtpm: %v", err)
	}
	_, err = Open(ctx, "tpm:device=/dev/null")
	if !errors.Is(err, vault.ErrBackendUnavailable) {
		t.Errorf("/dev/null as TPM: %v", err)
	}
}

func TestParseURI(t *testing.T) {
	for _, tc := range []struct {
		uri  string
		want Config
		ok   bool
	}{
		{"tpm", Config{MaxLoaded: 16}, true},
		{"tpm:device=/dev/tpmrm0", Config{Device: "/dev/tpmrm0", MaxLoaded: 16}, true},
		{"tpm:swtpm=127.0.0.1:2321", Config{SwtpmTCP: "127.0.0.1:2321", MaxLoaded: 16}, true},
		{"tpm:swtpm-unix=/run/s.sock,persist-srk", Config{SwtpmUnix: "/run/s.sock", PersistSRK: true, MaxLoaded: 16}, true},
		{"tpm:max-loaded=2", Config{MaxLoaded: 2}, true},
		{"tpm:persist-srk=false", Config{MaxLoaded: 16}, true},
		{"tpm:bogus=1", Config{}, false},
		{"tpm:device=", Config{}, false},
		{"tpm:device=/a,swtpm=b:1", Config{}, false},
		{"tpm:device=/a,device=/b", Config{}, false},
		{"tpm:max-loaded=0", Config{}, false},
		{"tpm:persist-srk=maybe", Config{}, false},
		{"tpm:", Config{}, true},
		{"soft", Config{}, false},
	} {
		got, err := ParseURI(tc.uri)
		if (err == nil) != tc.ok {
			t.Errorf("ParseURI(%q) error = %v, want ok=%v", tc.uri, err, tc.ok)
			continue
		}
		if tc.ok && tc.uri != "tpm:" && got != tc.want {
			t.Errorf("ParseURI(%q) = %+v, want %+v", tc.uri, got, tc.want)
		}
	}
}

func TestRegistered(t *testing.T) {
	found := false
	for _, s := range vault.Backends() {
		found = found || s == "tpm"
	}
	if !found {
		t.Fatal("scheme tpm not registered")
	}
}

// Close must leave nothing loaded (go-tpm-tools' CheckedClose discipline).
func TestCloseLeavesNoHandles(t *testing.T) {
	b, sim := openSim(t)
	store(t, b, importer.SHA256, nil)
	store(t, b, importer.SHA384, map[string]string{"pcrs": "7"})
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := b.HMAC(context.Background(), vault.KeyRef{Handle: []byte("x"), Hash: importer.SHA256}, nil); err == nil || !strings.Contains(err.Error(), "closed") {
		t.Fatalf("HMAC after Close = %v", err)
	}
	probe := &Backend{cfg: Config{SwtpmTCP: sim.Addr()}}
	l, err := probe.dial()
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for _, first := range []uint32{0x80000000, 0x02000000, 0x03000000} {
		rsp, err := tpm2.GetCapability{Capability: tpm2.TPMCapHandles, Property: first, PropertyCount: 64}.Execute(l)
		if err != nil {
			t.Fatal(err)
		}
		hs, _ := rsp.CapabilityData.Data.Handles()
		for _, h := range hs.Handle {
			if uint32(h)>>24 == first>>24 {
				t.Errorf("handle 0x%08x still loaded after Close", uint32(h))
			}
		}
	}
}

// A persistent SRK with a non-empty auth value and DA protection: every
// refused authorization counts toward the TPM's dictionary-attack lockout,
// which would then block every DA-protected key of every program on the
// TPM. The backend tries the parent once, then refuses without asking the
// TPM again; it used to lock a swtpm out after three derivations.
func TestParentAuthFailureDoesNotLockOutTPM(t *testing.T) {
	b, sim := openSim(t)
	err := b.run(context.Background(), "setup", func() error {
		tmpl := tpm2.ECCSRKTemplate
		tmpl.ObjectAttributes.NoDA = false
		cp, err := tpm2.CreatePrimary{
			PrimaryHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)},
			InSensitive:   tpm2.TPM2BSensitiveCreate{Sensitive: &tpm2.TPMSSensitiveCreate{UserAuth: tpm2.TPM2BAuth{Buffer: []byte("not empty")}}},
			InPublic:      tpm2.New2B(tmpl),
		}.Execute(b.link)
		if err != nil {
			return err
		}
		defer b.link.flush(cp.ObjectHandle)
		_, err = tpm2.EvictControl{
			Auth:             tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)},
			ObjectHandle:     tpm2.NamedHandle{Handle: cp.ObjectHandle, Name: cp.Name},
			PersistentHandle: SRKHandle,
		}.Execute(b.link)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil { // swtpm serves one client at a time
		t.Fatal(err)
	}
	b2, err := Open(context.Background(), sim.URI())
	if err != nil {
		t.Fatal(err)
	}
	defer b2.Close()
	_, prk := newPRK(t, importer.SHA256)
	var last error
	for range 5 {
		_, last = b2.StoreKey(context.Background(), vault.StoreRequest{PRK: prk, Hash: importer.SHA256, Label: "test"})
		if last == nil {
			t.Fatal("StoreKey under a parent whose auth is not empty succeeded")
		}
	}
	b2.sem <- struct{}{}
	rsp, err := tpm2.GetCapability{Capability: tpm2.TPMCapTPMProperties, Property: uint32(tpm2.TPMPTLockoutCounter), PropertyCount: 1}.Execute(b2.link)
	<-b2.sem
	if err != nil {
		t.Fatal(err)
	}
	props, err := rsp.CapabilityData.Data.TPMProperties()
	if err != nil || len(props.TPMProperty) != 1 || props.TPMProperty[0].Property != tpm2.TPMPTLockoutCounter {
		t.Fatalf("read lockout counter: %v", err)
	}
	if n := props.TPMProperty[0].Value; n > 1 {
		t.Fatalf("the backend made %d failed authorizations toward DA lockout, want at most 1 (last error: %v)", n, last)
	}
	if !errors.Is(last, vault.ErrBackendUnavailable) || strings.Contains(last.Error(), "TPM_RC_LOCKOUT") {
		t.Fatalf("later attempts: %v", last)
	}
}
