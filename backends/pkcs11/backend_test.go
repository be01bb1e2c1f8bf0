//go:build cgo

package pkcs11

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	p11 "github.com/miekg/pkcs11"

	"github.com/pskvault/pskvault/importer"
	"github.com/pskvault/pskvault/vault"
	"github.com/pskvault/pskvault/vault/backendtest"
)

var bg = context.Background()

func TestConformance(t *testing.T) {
	b := openToken(t, "")
	info := b.Info()
	if !info.Supports(importer.SHA256) || !info.Supports(importer.SHA384) {
		t.Fatalf("SoftHSM2 should support both hashes, got %v (problems: %v)", info.HashNames, b.caps.Problems)
	}
	backendtest.Run(t, b)
}

func TestRegisteredScheme(t *testing.T) {
	tok := needToken(t)
	be, err := vault.OpenBackend(bg, vault.BackendConfig{URI: tok.URI()})
	if err != nil {
		t.Fatal(err)
	}
	defer be.Close()
	if be.Info().Name != "pkcs11" {
		t.Fatalf("Info().Name = %q", be.Info().Name)
	}
}

func storeTestKey(t *testing.T, b *Backend, h importer.Hash) (handle, prk []byte) {
	t.Helper()
	epsk := make([]byte, 32)
	rand.Read(epsk)
	prk, _ = importer.Extract(h, epsk)
	in := append([]byte{}, prk...)
	handle, err := b.StoreKey(bg, vault.StoreRequest{PRK: in, Hash: h, Label: "test-" + h.String()})
	if err != nil {
		t.Fatalf("StoreKey: %v", err)
	}
	t.Cleanup(func() { b.DeleteKey(bg, vault.KeyRef{Handle: handle, Hash: h}) })
	return handle, prk
}

// rawSession opens a session outside the pool for checks behind its back.
func rawSession(t testing.TB, b *Backend) p11.SessionHandle {
	t.Helper()
	s, err := b.p.OpenSession(b.slot, p11.CKF_SERIAL_SESSION|p11.CKF_RW_SESSION)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.p.CloseSession(s) })
	return s
}

func findByHandle(t testing.TB, b *Backend, s p11.SessionHandle, handle []byte) p11.ObjectHandle {
	t.Helper()
	_, id, err := decodeHandle(handle)
	if err != nil {
		t.Fatal(err)
	}
	objs, err := findObjects(b.p, s, []*p11.Attribute{p11.NewAttribute(p11.CKA_ID, id)}, 2)
	if err != nil || len(objs) != 1 {
		t.Fatalf("find key object: %v, %d objects", err, len(objs))
	}
	return objs[0]
}

func TestKeyAttributes(t *testing.T) {
	b := openToken(t, "")
	for _, h := range []importer.Hash{importer.SHA256, importer.SHA384} {
		t.Run(h.String(), func(t *testing.T) {
			handle, prk := storeTestKey(t, b, h)
			if bytes.Contains(handle, prk) {
				t.Fatal("handle contains the PRK")
			}
			s := rawSession(t, b)
			obj := findByHandle(t, b, s, handle)
			want := map[uint]bool{
				p11.CKA_SENSITIVE: true, p11.CKA_EXTRACTABLE: false, p11.CKA_TOKEN: true, p11.CKA_PRIVATE: true,
				p11.CKA_SIGN: true, p11.CKA_VERIFY: false, p11.CKA_ENCRYPT: false, p11.CKA_DECRYPT: false,
				p11.CKA_WRAP: false, p11.CKA_UNWRAP: false, p11.CKA_DERIVE: false, p11.CKA_MODIFIABLE: false,
			}
			for attr, w := range want {
				v, ok := attrBool(b.p, s, obj, attr)
				if !ok || v != w {
					t.Errorf("attribute 0x%x = %v (readable %v), want %v", attr, v, ok, w)
				}
			}
			if n, ok := attrULong(b.p, s, obj, p11.CKA_VALUE_LEN); !ok || n != uint(h.Size()) {
				t.Errorf("CKA_VALUE_LEN = %d, want %d", n, h.Size())
			}
			a, err := b.p.GetAttributeValue(s, obj, []*p11.Attribute{p11.NewAttribute(p11.CKA_VALUE, nil)})
			if err == nil && len(a) == 1 && len(a[0].Value) > 0 {
				t.Fatal("CKA_VALUE of the PRK is readable")
			}
			if !isRV(err, p11.CKR_ATTRIBUTE_SENSITIVE) {
				t.Errorf("reading CKA_VALUE: %v, want CKR_ATTRIBUTE_SENSITIVE", err)
			}
			// Setting an attribute is refused (CKA_MODIFIABLE=false).
			if err := b.p.SetAttributeValue(s, obj, []*p11.Attribute{p11.NewAttribute(p11.CKA_EXTRACTABLE, true)}); err == nil {
				t.Error("C_SetAttributeValue(CKA_EXTRACTABLE=true) succeeded")
			}
			// C_WrapKey of the PRK under a wrapping key we control is refused.
			kek := make([]byte, 32)
			rand.Read(kek)
			wk, err := b.p.CreateObject(s, []*p11.Attribute{
				p11.NewAttribute(p11.CKA_CLASS, p11.CKO_SECRET_KEY), p11.NewAttribute(p11.CKA_KEY_TYPE, p11.CKK_AES),
				p11.NewAttribute(p11.CKA_TOKEN, false), p11.NewAttribute(p11.CKA_WRAP, true), p11.NewAttribute(p11.CKA_VALUE, kek),
			})
			if err != nil {
				t.Fatal(err)
			}
			defer b.p.DestroyObject(s, wk)
			for _, m := range []uint{p11.CKM_AES_KEY_WRAP_PAD, p11.CKM_AES_KEY_WRAP} {
				out, err := b.p.WrapKey(s, []*p11.Mechanism{p11.NewMechanism(m, nil)}, wk, obj)
				if err == nil {
					t.Fatalf("C_WrapKey(%s) of the PRK succeeded (%d bytes)", mechName(m), len(out))
				}
			}
			// The PRK cannot be copied into an extractable object either.
			if c, err := b.p.CopyObject(s, obj, []*p11.Attribute{p11.NewAttribute(p11.CKA_EXTRACTABLE, true)}); err == nil {
				b.p.DestroyObject(s, c)
				t.Fatal("C_CopyObject with CKA_EXTRACTABLE=true succeeded")
			}
		})
	}
}

func TestVerifyKeyRefusesWeakObject(t *testing.T) {
	b := openToken(t, "")
	s := rawSession(t, b)
	for _, c := range []struct {
		name string
		set  *p11.Attribute
		msg  string
	}{
		{"extractable", p11.NewAttribute(p11.CKA_EXTRACTABLE, true), "CKA_EXTRACTABLE"},
		{"not sensitive", p11.NewAttribute(p11.CKA_SENSITIVE, false), "CKA_SENSITIVE"},
		{"derive", p11.NewAttribute(p11.CKA_DERIVE, true), "CKA_DERIVE"},
	} {
		t.Run(c.name, func(t *testing.T) {
			tmpl := keyTemplate([]byte("weak"), "weak", false)
			for i, a := range tmpl {
				if a.Type == c.set.Type {
					tmpl[i] = c.set
				}
			}
			tmpl = append(tmpl, p11.NewAttribute(p11.CKA_VALUE, make([]byte, 32)))
			obj, err := b.p.CreateObject(s, tmpl)
			if err != nil {
				t.Fatal(err)
			}
			defer b.p.DestroyObject(s, obj)
			err = verifyKey(b.p, s, obj, 32)
			if !errors.Is(err, ErrInsecureKey) || !strings.Contains(err.Error(), c.msg) {
				t.Fatalf("verifyKey = %v, want ErrInsecureKey naming %s", err, c.msg)
			}
		})
	}
}

func TestWrongPIN(t *testing.T) {
	tok := needToken(t)
	dir := t.TempDir()
	wrong := filepath.Join(dir, "wrong.pin")
	os.WriteFile(wrong, []byte("not-the-pin-1234\n"), 0o600)
	uri := "pkcs11:token=" + tok.Label + "?module-path=" + tok.Module + "&pin-source=file:" + wrong
	_, err := Open(bg, uri)
	if err == nil {
		t.Fatal("Open with a wrong PIN succeeded")
	}
	if !errors.Is(err, ErrPIN) || !errors.Is(err, vault.ErrBackendUnavailable) {
		t.Fatalf("error does not wrap ErrPIN and ErrBackendUnavailable: %v", err)
	}
	for _, w := range []string{"refused the PIN", "CKR_PIN_INCORRECT", "does not retry"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not say %q", err, w)
		}
	}
	if strings.Contains(err.Error(), "not-the-pin") || strings.Contains(err.Error(), tok.PIN()) {
		t.Fatal("error contains a PIN")
	}
	// No lockout: the right PIN still works.
	b := openToken(t, "")
	if _, err := b.Random(bg, 8); err != nil {
		t.Fatal(err)
	}
}

func TestRefusedPINNeverRetried(t *testing.T) {
	b := openToken(t, "")
	handle, _ := storeTestKey(t, b, importer.SHA256)
	// Simulate the PIN being changed while the daemon runs: the next
	// re-login fails, and after that nothing tries again.
	dir := t.TempDir()
	wrong := filepath.Join(dir, "wrong.pin")
	os.WriteFile(wrong, []byte("changed-pin\n"), 0o600)
	waitIndexed(t, b) // see waitIndexed
	b.uri.PINSource = "file:" + wrong
	b.p.CloseAllSessions(b.slot) // logs the application out
	key := vault.KeyRef{Handle: handle, Hash: importer.SHA256}
	_, err := b.HMAC(bg, key, []byte("x"))
	if !errors.Is(err, ErrPIN) {
		t.Fatalf("HMAC after PIN change: %v, want ErrPIN", err)
	}
	logins := b.logins.Load()
	for i := 0; i < 3; i++ {
		time.Sleep(retryEvery + 10*time.Millisecond) // past the back-off: each attempt reads the PIN file again
		_, err2 := b.HMAC(bg, key, []byte("x"))
		if err2 == nil || err2.Error() != b.loginErr.Error() {
			t.Fatalf("attempt %d: %v, want the remembered login error", i, err2)
		}
	}
	if n := b.logins.Load() - logins; n != 0 {
		t.Fatalf("the refused PIN was presented %d more times", n)
	}
	ti, _ := b.p.GetTokenInfo(b.slot)
	if ti.Flags&(p11.CKF_USER_PIN_LOCKED|p11.CKF_USER_PIN_FINAL_TRY) != 0 {
		t.Fatal("token PIN is locked or at its final try")
	}
}

func TestPINSources(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		os.WriteFile(p, []byte(content), mode)
		os.Chmod(p, mode)
		return p
	}
	ok := write("ok", "1234\r\n", 0o600)
	pin, err := readPIN("file:" + ok)
	if err != nil || string(pin) != "1234" {
		t.Fatalf("readPIN = %q, %v", pin, err)
	}
	loose := write("loose", "1234", 0o644)
	if _, err := readPIN("file:" + loose); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("world-readable PIN file: %v", err)
	}
	empty := write("empty", "\n", 0o600)
	if _, err := readPIN("file:" + empty); err == nil || !strings.Contains(err.Error(), "empty") {
		t.Fatalf("empty PIN file: %v", err)
	}
	two := write("two", "1234\n5678\n", 0o600)
	if _, err := readPIN("file:" + two); err == nil {
		t.Fatal("two-line PIN file accepted")
	}
	if _, err := readPIN("file:" + filepath.Join(dir, "missing")); err == nil || !errors.Is(err, ErrPIN) {
		t.Fatalf("missing PIN file: %v", err)
	}
	t.Setenv("CREDENTIALS_DIRECTORY", dir)
	write("hsm-pin", "9999", 0o400)
	pin, err = readPIN("credential:hsm-pin")
	if err != nil || string(pin) != "9999" {
		t.Fatalf("credential: %q, %v", pin, err)
	}
	t.Setenv("CREDENTIALS_DIRECTORY", "")
	if _, err := readPIN("credential:hsm-pin"); err == nil || !strings.Contains(err.Error(), "CREDENTIALS_DIRECTORY") {
		t.Fatalf("credential without $CREDENTIALS_DIRECTORY: %v", err)
	}
}

func TestPlanLogin(t *testing.T) {
	cases := []struct {
		name    string
		flags   uint
		havePIN bool
		want    loginAction
		errMsg  string
	}{
		{"pin", p11.CKF_LOGIN_REQUIRED, true, loginWithPIN, ""},
		{"pin pad", p11.CKF_LOGIN_REQUIRED | p11.CKF_PROTECTED_AUTHENTICATION_PATH, false, loginPINPad, ""},
		{"pin pad but pin given", p11.CKF_LOGIN_REQUIRED | p11.CKF_PROTECTED_AUTHENTICATION_PATH, true, loginWithPIN, ""},
		{"no login needed", 0, false, loginNone, ""},
		{"pin missing", p11.CKF_LOGIN_REQUIRED, false, 0, "requires a PIN"},
		{"locked", p11.CKF_LOGIN_REQUIRED | p11.CKF_USER_PIN_LOCKED, true, 0, "locked"},
		{"final try", p11.CKF_LOGIN_REQUIRED | p11.CKF_USER_PIN_FINAL_TRY, true, 0, "one PIN try left"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := planLogin(c.flags, "tok", c.havePIN)
			if c.errMsg != "" {
				if err == nil || !strings.Contains(err.Error(), c.errMsg) || !errors.Is(err, ErrPIN) {
					t.Fatalf("got %v, %v; want error with %q", got, err, c.errMsg)
				}
				return
			}
			if err != nil || got != c.want {
				t.Fatalf("got %v, %v; want %v", got, err, c.want)
			}
		})
	}
}

func TestMissingMechanism(t *testing.T) {
	t.Run("fake mechanism list", func(t *testing.T) {
		// A smart card through OpenSC: no HMAC at all.
		c := checkMechanisms(map[uint]MechInfo{ckmAESKeyWrapPad: {Flags: ckfUnwrap}})
		if len(c.Hashes) != 0 {
			t.Fatalf("hashes %v", c.Hashes)
		}
		all := strings.Join(c.Problems, "; ")
		for _, w := range []string{"CKM_SHA256_HMAC: not offered", "CKM_SHA384_HMAC: not offered"} {
			if !strings.Contains(all, w) {
				t.Errorf("problems %q do not say %q", all, w)
			}
		}
		// SHA-384 offered only for keys of 64 bytes and up, SHA-256 without CKF_SIGN.
		c = checkMechanisms(map[uint]MechInfo{
			ckmSHA256HMAC: {MinKeySize: 32, MaxKeySize: 512, Flags: 0x2000 /* verify only */},
			ckmSHA384HMAC: {MinKeySize: 64, MaxKeySize: 512, Flags: ckfSign},
		})
		all = strings.Join(c.Problems, "; ")
		for _, w := range []string{"CKM_SHA256_HMAC: offered, but not for C_Sign", "CKM_SHA384_HMAC: key sizes 64..512 bytes exclude the 48-byte PRK", "CKM_AES_KEY_WRAP_PAD: not offered"} {
			if !strings.Contains(all, w) {
				t.Errorf("problems %q do not say %q", all, w)
			}
		}
		if len(c.Hashes) != 0 || c.UnwrapAESPad {
			t.Fatalf("capabilities %+v", c)
		}
	})
	t.Run("real token", func(t *testing.T) {
		needToken(t)
		// Ask the real token for a mechanism SoftHSM2 lacks: SHA3-256 HMAC
		// in place of SHA-256 HMAC. Open must fail and name it.
		saved := needs
		defer func() { needs = saved }()
		needs = []need{
			{ckmSHA3_256HMAC, "HMAC for SHA-256 PSKs (C_Sign)", ckfSign, 32, importer.SHA256},
			{ckmHKDFDerive, "HKDF", 0x80000, 0, importer.SHA384},
		}
		tok := needToken(t)
		_, err := Open(bg, tok.URI())
		if err == nil {
			t.Fatal("Open succeeded without the needed mechanisms")
		}
		if !errors.Is(err, vault.ErrUnsupported) {
			t.Fatalf("error does not wrap ErrUnsupported: %v", err)
		}
		for _, w := range []string{"CKM_SHA3_256_HMAC: not offered by the token", "CKM_HKDF_DERIVE: not offered by the token", tok.Label} {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("error %q does not say %q", err, w)
			}
		}
	})
	t.Run("hash the token lacks", func(t *testing.T) {
		b := openToken(t, "")
		saved := b.caps
		defer func() { b.caps = saved }()
		b.caps = checkMechanisms(map[uint]MechInfo{ckmSHA256HMAC: {MinKeySize: 32, MaxKeySize: 512, Flags: ckfSign}})
		_, err := b.StoreKey(bg, vault.StoreRequest{PRK: make([]byte, 48), Hash: importer.SHA384})
		if !errors.Is(err, vault.ErrUnsupported) || !strings.Contains(err.Error(), "CKM_SHA384_HMAC") {
			t.Fatalf("StoreKey(sha384) on a token without SHA-384 HMAC: %v", err)
		}
	})
}

func TestProbe(t *testing.T) {
	tok := needToken(t)
	r, err := Probe(tok.URI())
	if err != nil {
		t.Fatal(err)
	}
	if !r.Usable || len(r.Hashes) != 2 || !r.Caps.UnwrapAESPad || !r.LoggedIn {
		t.Fatalf("probe report: %+v", r)
	}
	s := r.String()
	for _, w := range []string{"CKM_SHA256_HMAC", "CKM_SHA384_HMAC", "CKM_AES_KEY_WRAP_PAD", "self-test sha384: ok", "usable for sha256 and sha384"} {
		if !strings.Contains(s, w) {
			t.Errorf("report lacks %q:\n%s", w, s)
		}
	}
	// Without a PIN source the token still reports what it can do.
	r, err = Probe("pkcs11:token=" + tok.Label + "?module-path=" + tok.Module)
	if err != nil {
		t.Fatal(err)
	}
	if r.Usable || !strings.Contains(r.Verdict, "requires a PIN") {
		t.Fatalf("probe without PIN: %+v", r)
	}
	if _, err := Probe("pkcs11:token=no-such-token?module-path=" + tok.Module); err == nil || !strings.Contains(err.Error(), tok.Label) {
		t.Fatalf("probe of a missing token: %v (want the labels present)", err)
	}
	if _, err := Probe("pkcs11:token=x?module-path=/nonexistent/lib.so"); !errors.Is(err, vault.ErrBackendUnavailable) {
		t.Fatalf("probe with a missing module: %v", err)
	}
}

func TestPersistsAcrossReopen(t *testing.T) {
	tok := needToken(t)
	b, err := Open(bg, tok.URI())
	if err != nil {
		t.Fatal(err)
	}
	epsk := []byte("an external PSK of thirty-two b.")
	prk, _ := importer.Extract(importer.SHA384, epsk)
	handle, err := b.StoreKey(bg, vault.StoreRequest{PRK: prk, Hash: importer.SHA384, Label: "reopen"})
	if err != nil {
		t.Fatal(err)
	}
	b.Close()
	if _, err := b.HMAC(bg, vault.KeyRef{Handle: handle, Hash: importer.SHA384}, nil); !errors.Is(err, vault.ErrBackendUnavailable) {
		t.Fatalf("HMAC after Close: %v", err)
	}
	b = openToken(t, "")
	key := vault.KeyRef{Handle: handle, Hash: importer.SHA384}
	defer b.DeleteKey(bg, key)
	id := importer.Identity{External: []byte("node-a"), Context: []byte("a|b"), Protocol: importer.TLS13, KDF: importer.HKDFSHA256}
	plan, _ := importer.NewPlan(importer.SHA384, id)
	got, err := plan.Expand(func(d []byte) ([]byte, error) { return b.HMAC(bg, key, d) })
	if err != nil {
		t.Fatal(err)
	}
	_, want, _ := importer.Import(importer.SHA384, epsk, id)
	if !bytes.Equal(got, want) {
		t.Fatal("derivation after reopen differs from the importer")
	}
}

func TestDeletedKey(t *testing.T) {
	b := openToken(t, "")
	handle, _ := storeTestKey(t, b, importer.SHA256)
	key := vault.KeyRef{Handle: handle, Hash: importer.SHA256}
	if _, err := b.HMAC(bg, key, []byte("warm the cache")); err != nil {
		t.Fatal(err)
	}
	// Destroy behind the backend's back: the cached handle goes stale.
	s := rawSession(t, b)
	if err := b.p.DestroyObject(s, findByHandle(t, b, s, handle)); err != nil {
		t.Fatal(err)
	}
	if _, err := b.HMAC(bg, key, []byte("x")); !errors.Is(err, vault.ErrKeyNotFound) {
		t.Fatalf("HMAC of a destroyed key: %v, want ErrKeyNotFound", err)
	}
	if err := b.DeleteKey(bg, key); err != nil {
		t.Fatalf("DeleteKey of a destroyed key: %v", err)
	}
	if _, err := b.HMAC(bg, vault.KeyRef{Handle: handle, Hash: importer.SHA384}, []byte("x")); !errors.Is(err, ErrBadHandle) {
		t.Fatalf("hash mismatch: %v", err)
	}
	if _, err := b.HMAC(bg, vault.KeyRef{Handle: []byte{9, 1}, Hash: importer.SHA256}, nil); !errors.Is(err, ErrBadHandle) {
		t.Fatalf("bad handle: %v", err)
	}
}

func TestConcurrentHMAC(t *testing.T) {
	b := openToken(t, "&x-sessions=3")
	var keys []vault.KeyRef
	var prks [][]byte
	for _, h := range []importer.Hash{importer.SHA256, importer.SHA384} {
		handle, prk := storeTestKey(t, b, h)
		keys = append(keys, vault.KeyRef{Handle: handle, Hash: h})
		prks = append(prks, prk)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for g := 0; g < 16; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 100; i++ {
				k := (g + i) % 2
				d := []byte(fmt.Sprintf("g%d-%d", g, i))
				got, err := b.HMAC(bg, keys[k], d)
				if err != nil {
					errs <- err
					return
				}
				want, _ := importer.SoftwareMAC(keys[k].Hash, prks[k])(d)
				if !bytes.Equal(got, want) {
					errs <- errors.New("HMAC mismatch")
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
	if n := len(b.open); n > 3 {
		t.Fatalf("%d sessions open, pool size 3", n)
	}
}

func TestSessionRecovery(t *testing.T) {
	b := openToken(t, "&x-sessions=4")
	handle, prk := storeTestKey(t, b, importer.SHA256)
	key := vault.KeyRef{Handle: handle, Hash: importer.SHA256}
	want, _ := importer.SoftwareMAC(importer.SHA256, prk)([]byte("data"))
	check := func() error {
		got, err := b.HMAC(bg, key, []byte("data"))
		if err != nil {
			return err
		}
		if !bytes.Equal(got, want) {
			return errors.New("HMAC mismatch")
		}
		return nil
	}
	if err := check(); err != nil {
		t.Fatal(err)
	}
	t.Run("all sessions closed", func(t *testing.T) {
		waitIndexed(t, b) // see waitIndexed
		gen := b.gen
		if err := b.p.CloseAllSessions(b.slot); err != nil {
			t.Fatal(err)
		}
		if err := check(); err != nil {
			t.Fatalf("HMAC after C_CloseAllSessions: %v", err)
		}
		if b.gen != gen+1 {
			t.Fatalf("generation %d -> %d, want one reset", gen, b.gen)
		}
	})
	t.Run("logged out", func(t *testing.T) {
		waitIndexed(t, b)
		s := <-b.idle
		if s == 0 {
			s, _ = b.p.OpenSession(b.slot, p11.CKF_SERIAL_SESSION|p11.CKF_RW_SESSION)
			b.open[s] = struct{}{}
		}
		b.p.Logout(s)
		b.idle <- s
		if err := check(); err != nil {
			t.Fatalf("HMAC after C_Logout: %v", err)
		}
	})
	t.Run("closed under concurrent load", func(t *testing.T) {
		var wg sync.WaitGroup
		errs := make(chan error, 8)
		start := make(chan struct{})
		for g := 0; g < 8; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				for i := 0; i < 50; i++ {
					if err := check(); err != nil {
						errs <- err
						return
					}
				}
			}()
		}
		waitIndexed(t, b)
		close(start)
		b.p.CloseAllSessions(b.slot)
		wg.Wait()
		close(errs)
		for err := range errs {
			// An operation caught by a second close after its one retry
			// may fail; one close must not break anything.
			t.Fatalf("HMAC during C_CloseAllSessions: %v", err)
		}
		if err := check(); err != nil {
			t.Fatal(err)
		}
	})
}

func TestRandom(t *testing.T) {
	b := openToken(t, "")
	r, err := b.Random(bg, 32)
	if err != nil || len(r) != 32 || bytes.Equal(r, make([]byte, 32)) {
		t.Fatalf("Random: %x, %v", r, err)
	}
}
