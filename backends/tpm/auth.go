package tpm

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"

	"github.com/google/go-tpm/tpm2"

	"github.com/pskvault/pskvault/internal/secretfile"
	"github.com/pskvault/pskvault/vault"
)

// Per-key auth values. With auth-source=file:PATH or credential:NAME in the
// backend URI, every key the backend creates or imports gets a TPM auth
// value of its own, HMAC-SHA256(secret, authLabel || salt), with a random
// salt kept in the key's handle. The secret lives apart from the state dir
// (ideally a systemd credential), so a copy of the state dir cannot drive
// this TPM's keys without it, not even for a local user allowed to open the
// TPM. Keys are NoDA: a wrong secret is refused without counting towards
// the TPM's dictionary-attack lockout.
const (
	authSaltLen     = 16
	minAuthSecret   = 16 // 128 bits
	maxAuthSecret   = 1024
	authSourceUsage = "auth-source=file:/path/to/0600-file or auth-source=credential:NAME"
)

var authLabel = []byte("pskvault tpm key auth v1\x00")

// errAuthRefused marks a refused auth value (wrapped with vault.ErrKeyPolicy).
var errAuthRefused = errors.New("auth value refused")

// readAuthSecret reads the auth-source secret.
func readAuthSecret(source string) ([]byte, error) {
	s, err := secretfile.Read(source, "auth-source", maxAuthSecret)
	if err != nil {
		return nil, fmt.Errorf("tpm backend: %w: %w", err, vault.ErrBackendUnavailable)
	}
	if len(s) < minAuthSecret {
		clear(s)
		return nil, fmt.Errorf("tpm backend: auth-source %s holds %d bytes, want at least %d (128 bits; e.g. head -c 32 /dev/urandom): %w",
			source, len(s), minAuthSecret, vault.ErrBackendUnavailable)
	}
	return s, nil
}

// newAuthSalt returns a fresh salt when the backend has an auth secret,
// else nil (the key gets an empty auth value).
func (b *Backend) newAuthSalt() ([]byte, error) {
	if b.authSecret == nil {
		return nil, nil
	}
	salt := make([]byte, authSaltLen)
	if _, err := rand.Read(salt); err != nil {
		return nil, fmt.Errorf("tpm: auth salt: %w", err)
	}
	return salt, nil
}

// keyAuth is k's auth value: empty for a key made without auth-source.
func (b *Backend) keyAuth(k *keyBlob) ([]byte, error) {
	if len(k.authSalt) == 0 {
		return nil, nil
	}
	if b.authSecret == nil {
		return nil, fmt.Errorf("tpm: %w: this key's auth value derives from an auth-source secret and the backend URI names none; "+
			"add the %s the key was created with", vault.ErrKeyPolicy, authSourceUsage)
	}
	m := hmac.New(sha256.New, b.authSecret)
	m.Write(authLabel)
	m.Write(k.authSalt)
	sum := m.Sum(nil)
	defer clear(sum)
	// 192 bits as 32 base64url characters (the largest auth value a
	// SHA-256-named object takes), so that the value holds no zero byte:
	// go-tpm v0.9.8's HMAC sessions cut an auth value at its first zero
	// byte (hmacKeyFromAuthValue), not only at trailing ones as the TPM
	// does, and then about 1 key in 9 would be refused.
	auth := make([]byte, base64.RawURLEncoding.EncodedLen(24))
	base64.RawURLEncoding.Encode(auth, sum[:24])
	return auth, nil
}

// authRefused explains a refused auth value of a key that has one.
func authRefused(k *keyBlob, err error) error {
	if len(k.authSalt) == 0 || !(errors.Is(err, tpm2.TPMRCAuthFail) || errors.Is(err, tpm2.TPMRCBadAuth)) {
		return nil
	}
	return fmt.Errorf("tpm hmac: %w: %w: the TPM refused this key's auth value: the backend's auth-source holds another secret than the one the key was created with "+
		"(the key is NoDA: no lockout was counted)", vault.ErrKeyPolicy, errAuthRefused)
}
