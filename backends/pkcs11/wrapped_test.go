//go:build cgo

package pkcs11

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"strings"
	"testing"

	p11 "github.com/miekg/pkcs11"

	"github.com/pskvault/pskvault/importer"
	"github.com/pskvault/pskvault/vault"
)

// The token's own CKM_AES_KEY_WRAP_PAD output must equal WrapPRK's.
func TestWrapPRKMatchesToken(t *testing.T) {
	b := openToken(t, "")
	s := rawSession(t, b)
	for _, n := range []int{32, 48} {
		kek := make([]byte, 32)
		val := make([]byte, n)
		rand.Read(kek)
		rand.Read(val)
		wk, err := b.p.CreateObject(s, []*p11.Attribute{
			p11.NewAttribute(p11.CKA_CLASS, p11.CKO_SECRET_KEY), p11.NewAttribute(p11.CKA_KEY_TYPE, p11.CKK_AES),
			p11.NewAttribute(p11.CKA_TOKEN, false), p11.NewAttribute(p11.CKA_WRAP, true), p11.NewAttribute(p11.CKA_VALUE, kek),
		})
		if err != nil {
			t.Fatal(err)
		}
		k, err := b.p.CreateObject(s, []*p11.Attribute{
			p11.NewAttribute(p11.CKA_CLASS, p11.CKO_SECRET_KEY), p11.NewAttribute(p11.CKA_KEY_TYPE, p11.CKK_GENERIC_SECRET),
			p11.NewAttribute(p11.CKA_TOKEN, false), p11.NewAttribute(p11.CKA_EXTRACTABLE, true), p11.NewAttribute(p11.CKA_VALUE, val),
		})
		if err != nil {
			t.Fatal(err)
		}
		tok, err := b.p.WrapKey(s, []*p11.Mechanism{p11.NewMechanism(p11.CKM_AES_KEY_WRAP_PAD, nil)}, wk, k)
		if err != nil {
			t.Fatal(err)
		}
		mine, _ := WrapPRK(kek, val)
		if !bytes.Equal(tok, mine) {
			t.Fatalf("%d-byte key: token wrap %x, WrapPRK %x", n, tok, mine)
		}
		b.p.DestroyObject(s, k)
		b.p.DestroyObject(s, wk)
	}
}

func TestImportWrapped(t *testing.T) {
	b := openToken(t, "")
	kek := make([]byte, 32)
	rand.Read(kek)
	label := "wrapping-key-" + hex.EncodeToString(kek[:4])
	if err := b.ImportWrappingKey(bg, label, kek); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		s := rawSession(t, b)
		objs, _ := findObjects(b.p, s, []*p11.Attribute{p11.NewAttribute(p11.CKA_LABEL, label)}, 4)
		for _, o := range objs {
			b.p.DestroyObject(s, o)
		}
	})
	if err := b.ImportWrappingKey(bg, label, kek); err == nil {
		t.Fatal("second wrapping key with the same label accepted")
	}
	for _, h := range []importer.Hash{importer.SHA256, importer.SHA384} {
		t.Run(h.String(), func(t *testing.T) {
			epsk := make([]byte, 32)
			rand.Read(epsk)
			blob, err := WrapEPSK(kek, h, epsk)
			if err != nil {
				t.Fatal(err)
			}
			handle, err := b.ImportWrapped(bg, blob, h, map[string]string{"wrapping-key": label, "label": "wrapped-" + h.String()})
			if err != nil {
				t.Fatalf("ImportWrapped: %v", err)
			}
			key := vault.KeyRef{Handle: handle, Hash: h}
			defer b.DeleteKey(bg, key)
			s := rawSession(t, b)
			if err := verifyKey(b.p, s, findByHandle(t, b, s, handle), h.Size()); err != nil {
				t.Fatal(err)
			}
			for _, kdf := range []importer.KDF{importer.HKDFSHA256, importer.HKDFSHA384} {
				id := importer.Identity{External: []byte("wrapped"), Context: []byte("ctx"), Protocol: importer.TLS13, KDF: kdf}
				plan, _ := importer.NewPlan(h, id)
				got, err := plan.Expand(func(d []byte) ([]byte, error) { return b.HMAC(bg, key, d) })
				if err != nil {
					t.Fatal(err)
				}
				_, want, _ := importer.Import(h, epsk, id)
				if !bytes.Equal(got, want) {
					t.Fatalf("derivation from the unwrapped key differs from the importer (%v)", kdf)
				}
			}
		})
	}
	blob, _ := WrapEPSK(kek, importer.SHA256, []byte("psk"))
	other := make([]byte, 32)
	rand.Read(other)
	wrongBlob, _ := WrapEPSK(other, importer.SHA256, []byte("psk"))
	for _, c := range []struct {
		name   string
		blob   []byte
		h      importer.Hash
		params map[string]string
		msg    string
		is     error
	}{
		{"wrong wrapping key", wrongBlob, importer.SHA256, map[string]string{"wrapping-key": label}, "does not unwrap", nil},
		{"no such wrapping key", blob, importer.SHA256, map[string]string{"wrapping-key": "nope"}, "no AES wrapping key", vault.ErrKeyNotFound},
		{"no wrapping key named", blob, importer.SHA256, nil, "name the wrapping key", vault.ErrUnsupported},
		{"unknown parameter", blob, importer.SHA256, map[string]string{"wrapping-key": label, "pcrs": "7"}, "unknown", vault.ErrUnsupported},
		{"wrong length for hash", blob, importer.SHA384, map[string]string{"wrapping-key": label}, "is 56 bytes", nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := b.ImportWrapped(bg, c.blob, c.h, c.params)
			if err == nil || !strings.Contains(err.Error(), c.msg) || (c.is != nil && !errors.Is(err, c.is)) {
				t.Fatalf("got %v, want an error with %q", err, c.msg)
			}
		})
	}
	// The URI's object= names the default wrapping key.
	b2 := openToken(t, "")
	b2.uri.Object = label
	handle, err := b2.ImportWrapped(bg, blob, importer.SHA256, nil)
	if err != nil {
		t.Fatalf("ImportWrapped with the URI's object=: %v", err)
	}
	b2.DeleteKey(bg, vault.KeyRef{Handle: handle, Hash: importer.SHA256})
}
