package vault

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/pskvault/pskvault/importer"
)

// Keyed values derived from a PSK's PRK (epskx) for provisioning: a key
// check value both ends print, and the key that authenticates a
// provisioning bundle (docs/BUNDLE.md). Each is one HKDF-Expand block,
// HMAC(PRK, info || 0x01), so a hardware backend computes it with the one
// operation it offers, and neither can be mistaken for an RFC 9258 expand
// (whose info starts with the 2-byte length 0x0020 or 0x0030).
const (
	kcvInfo       = "pskvault key check value v1"
	bundleMACInfo = "pskvault bundle mac v1"
	// KCVLen is the key check value's length in bytes (6 hex digits), as
	// HSM key ceremonies use: enough to catch a wrong key, too short to
	// say anything about it.
	KCVLen = 3
)

// ErrBundleMAC reports a provisioning bundle whose MAC does not verify
// under the key it carries: its metadata or key was changed.
var ErrBundleMAC = errors.New("bundle authentication failed: the bundle was changed after it was made (or its key is not the one it was made for)")

// BundleAuth authenticates an import: Data is the bundle's authenticated
// text and MAC its MAC (docs/BUNDLE.md).
type BundleAuth struct {
	Data []byte
	MAC  []byte
}

func expandInfo(info string) []byte { return append([]byte(info), 1) }

// KCVFromPRK computes the key check value from a PRK in memory.
func KCVFromPRK(h importer.Hash, prk []byte) string {
	m := hmac.New(h.New(), prk)
	m.Write(expandInfo(kcvInfo))
	sum := m.Sum(nil)
	defer clear(sum)
	return hex.EncodeToString(sum[:KCVLen])
}

// BundleMACKeyFromPRK computes the bundle MAC key from a PRK in memory;
// the caller wipes it.
func BundleMACKeyFromPRK(h importer.Hash, prk []byte) []byte {
	m := hmac.New(h.New(), prk)
	m.Write(expandInfo(bundleMACInfo))
	return m.Sum(nil)
}

// BundleMAC is HMAC-SHA256 under the bundle MAC key.
func BundleMAC(macKey, data []byte) []byte {
	m := hmac.New(sha256.New, macKey)
	m.Write(data)
	return m.Sum(nil)
}

// keyCheck computes a stored key's check value in the backend.
func (v *Vault) keyCheck(ctx context.Context, ref KeyRef) (string, error) {
	sum, err := v.backend.HMAC(ctx, ref, expandInfo(kcvInfo))
	if err != nil {
		return "", err
	}
	defer clear(sum)
	return hex.EncodeToString(sum[:KCVLen]), nil
}

// verifyBundle checks a bundle's MAC under the bundle key of a stored key,
// computed in the backend.
func (v *Vault) verifyBundle(ctx context.Context, ref KeyRef, b *BundleAuth) error {
	k, err := v.backend.HMAC(ctx, ref, expandInfo(bundleMACInfo))
	if err != nil {
		return fmt.Errorf("bundle MAC key: %w", err)
	}
	defer clear(k)
	if !hmac.Equal(BundleMAC(k, b.Data), b.MAC) {
		return ErrBundleMAC
	}
	return nil
}
