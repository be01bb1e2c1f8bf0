package vault

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"sync"

	bolt "go.etcd.io/bbolt"

	"github.com/pskvault/pskvault/importer"
)

// The auxiliary key is one random 256-bit HMAC-SHA-256 key per vault, held
// by the backend like any PRK (so in the TPM or token when there is one).
// The vault never sees it; it asks the backend for HMAC(aux, label || 0 ||
// data) with a distinct label per use, which makes the outputs for
// different uses independent PRF values:
//
//	"pskvault fingerprint v1": keyed fingerprint of an EPSK, to detect reuse
//	"pskvault seal v1":        AES-256-GCM key sealing one finalized imported PSK
//
// The handle is kept in the meta bucket under auxKeyName, created on first
// use, so vaults made before it existed gain one transparently.
const auxKeyName = "aux_key"

const (
	labelFingerprint = "pskvault fingerprint v1"
	labelSeal        = "pskvault seal v1"
)

// auxKey caches the auxiliary key's handle.
type auxKey struct {
	mu     sync.Mutex
	handle []byte
}

func (v *Vault) auxHandle(ctx context.Context) ([]byte, error) {
	v.aux.mu.Lock()
	defer v.aux.mu.Unlock()
	if v.aux.handle != nil {
		return v.aux.handle, nil
	}
	var h []byte
	if err := v.db.View(func(tx *bolt.Tx) error {
		h = bytes.Clone(tx.Bucket(bucketMeta).Get([]byte(auxKeyName)))
		return nil
	}); err != nil {
		return nil, err
	}
	if h == nil {
		k := make([]byte, 32)
		if _, err := rand.Read(k); err != nil {
			return nil, fmt.Errorf("OS RNG: %w", err)
		}
		var err error
		err = v.guard.change(ctx, OpStore, func() (err error) {
			h, err = v.backend.StoreKey(v.intentContext(ctx, "aux", nil, importer.SHA256), StoreRequest{PRK: k, Hash: importer.SHA256, Label: "pskvault-aux"})
			return err
		})
		clear(k)
		if err != nil {
			return nil, fmt.Errorf("store auxiliary key in %s backend: %w", v.backend.Info().Name, err)
		}
		if err := v.db.Update(func(tx *bolt.Tx) error {
			if err := tx.Bucket(bucketMeta).Put([]byte(auxKeyName), h); err != nil {
				return err
			}
			return dropIntent(tx, h)
		}); err != nil {
			v.backend.DeleteKey(ctx, KeyRef{Handle: h, Hash: importer.SHA256})
			return nil, fmt.Errorf("record auxiliary key: %w", err)
		}
	}
	v.aux.handle = h
	return h, nil
}

func (v *Vault) auxHMAC(ctx context.Context, label string, data []byte) ([]byte, error) {
	h, err := v.auxHandle(ctx)
	if err != nil {
		return nil, err
	}
	msg := make([]byte, 0, len(label)+1+len(data))
	msg = append(append(append(msg, label...), 0), data...)
	out, err := v.hmac(ctx, KeyRef{Handle: h, Hash: importer.SHA256}, msg)
	if err != nil {
		return nil, fmt.Errorf("auxiliary key in %s backend: %w", v.backend.Info().Name, err)
	}
	return out, nil
}

// fingerprint is HMAC(aux, "pskvault fingerprint v1" || 0 || SHA-256(epsk)).
// Without the backend it is a random-looking value: it reveals nothing about
// the key and, unlike a plain hash, allows no offline guessing of a
// low-entropy key from a stolen database.
func (v *Vault) fingerprint(ctx context.Context, epsk []byte) ([]byte, error) {
	sum := importer.SecretSHA256(epsk) // wipes its copies of the EPSK
	defer clear(sum[:])
	return v.auxHMAC(ctx, labelFingerprint, sum[:])
}

// Sealed is one imported PSK kept by finalize: the AES-256-GCM encryption of
// ipskx under HMAC(aux, "pskvault seal v1" || 0 || SHA-256(ImportedIdentity)),
// with the ImportedIdentity as associated data, so a box cannot be moved to
// another identity, context or target.
type Sealed struct {
	Target  Target `json:"target"`
	Context []byte `json:"context,omitempty"`
	Box     []byte `json:"box,omitempty"` // nonce || ciphertext || tag; in vault.db only inside the record's Sealed
}

func (v *Vault) sealKey(ctx context.Context, importedIdentity []byte) (cipher.AEAD, error) {
	sum := sha256.Sum256(importedIdentity)
	k, err := v.auxHMAC(ctx, labelSeal, sum[:])
	if err != nil {
		return nil, err
	}
	defer clear(k)
	block, err := aes.NewCipher(k)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

func (v *Vault) seal(ctx context.Context, importedIdentity, ipskx []byte) ([]byte, error) {
	aead, err := v.sealKey(ctx, importedIdentity)
	if err != nil {
		return nil, err
	}
	nonce := make([]byte, aead.NonceSize(), aead.NonceSize()+len(ipskx)+aead.Overhead())
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("OS RNG: %w", err)
	}
	return aead.Seal(nonce, nonce, ipskx, importedIdentity), nil
}

var errSealBroken = errors.New("sealed imported PSK does not open (database tampered with, or the backend's auxiliary key changed)")

func (v *Vault) unseal(ctx context.Context, importedIdentity, box []byte) ([]byte, error) {
	aead, err := v.sealKey(ctx, importedIdentity)
	if err != nil {
		return nil, err
	}
	if len(box) < aead.NonceSize()+aead.Overhead() {
		return nil, errSealBroken
	}
	out, err := aead.Open(nil, box[:aead.NonceSize()], box[aead.NonceSize():], importedIdentity)
	if err != nil {
		return nil, errSealBroken
	}
	return out, nil
}
