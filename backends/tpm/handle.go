package tpm

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"

	"github.com/google/go-tpm/tpm2"

	"github.com/pskvault/pskvault/importer"
	"github.com/pskvault/pskvault/vault"
)

// Key handles (what the vault stores for a TPM key) are a versioned binary
// encoding of everything needed to load and use the key again; none of it
// is secret, the private part is encrypted by the TPM under the parent.
//
//	"PSKVTPM" 0x01 or 0x02   magic and version
//	u8   origin              1 created in this TPM, 2 imported from a wrapped blob
//	u8   hash                importer.Hash of the PRK
//	u16  len, parent Name    the storage parent the key is wrapped under
//	u32  PCR mask            PCRs (0..31, SHA-256 bank) the key's policy binds; 0 for none
//	u8   n, n * (u8 len, value)   the PCR values at creation, ascending PCR order
//	u8   len, auth salt      version 2 only: the key has an auth value derived
//	                         from the backend's auth-source secret and this salt
//	u16  len, TPM2B_PUBLIC
//	u16  len, TPM2B_PRIVATE
//
// A key without an auth value is written as version 1, so handles made
// before auth-source existed and handles made without it are the same.
var (
	handleMagic   = []byte("PSKVTPM\x01")
	handleMagicV2 = []byte("PSKVTPM\x02")
)

const (
	originCreated  = 1
	originImported = 2
)

// keyBlob is a decoded handle.
type keyBlob struct {
	origin     byte
	hash       importer.Hash
	parentName []byte
	pcrMask    uint32
	pcrValues  [][]byte
	authSalt   []byte // empty: the key's auth value is empty
	public     tpm2.TPM2BPublic
	pubBytes   []byte
	private    tpm2.TPM2BPrivate
	privBytes  []byte
	raw        []byte // the encoded handle
}

// id names the key in the loaded-object cache: the handle itself, so a hot
// HMAC finds its object without decoding the handle again.
func (k *keyBlob) id() string { return string(k.raw) }

// seal encodes k and records the encoding as its id.
func (k *keyBlob) seal() []byte {
	k.raw = k.marshal()
	return slices.Clone(k.raw)
}

func (k *keyBlob) marshal() []byte {
	b := slices.Clone(handleMagic)
	if len(k.authSalt) > 0 {
		b = slices.Clone(handleMagicV2)
	}
	b = append(b, k.origin, byte(k.hash))
	b = binary.BigEndian.AppendUint16(b, uint16(len(k.parentName)))
	b = append(b, k.parentName...)
	b = binary.BigEndian.AppendUint32(b, k.pcrMask)
	b = append(b, byte(len(k.pcrValues)))
	for _, v := range k.pcrValues {
		b = append(b, byte(len(v)))
		b = append(b, v...)
	}
	if len(k.authSalt) > 0 {
		b = append(b, byte(len(k.authSalt)))
		b = append(b, k.authSalt...)
	}
	b = binary.BigEndian.AppendUint16(b, uint16(len(k.pubBytes)))
	b = append(b, k.pubBytes...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(k.privBytes)))
	b = append(b, k.privBytes...)
	return b
}

var errBadHandle = errors.New("not a pskvault TPM key handle")

// parseHandle strictly decodes a handle and checks it is an HMAC key for h.
func parseHandle(b []byte, h importer.Hash) (*keyBlob, error) {
	bad := func(why string) error {
		return fmt.Errorf("tpm: %w (%s): %w", errBadHandle, why, vault.ErrKeyNotFound)
	}
	if len(b) < len(handleMagic) || string(b[:len(handleMagic)-1]) != string(handleMagic[:len(handleMagic)-1]) {
		return nil, bad("wrong magic")
	}
	version := b[len(handleMagic)-1]
	if version != 1 && version != 2 {
		return nil, bad(fmt.Sprintf("handle version %d, this build reads versions 1 and 2", version))
	}
	r := reader{b: b[len(handleMagic):]}
	k := &keyBlob{raw: slices.Clone(b)}
	k.origin = r.u8()
	k.hash = importer.Hash(r.u8())
	k.parentName = r.vec16()
	k.pcrMask = r.u32()
	n := int(r.u8())
	for i := 0; i < n && r.err == nil; i++ {
		k.pcrValues = append(k.pcrValues, r.vec8())
	}
	if version == 2 {
		if k.authSalt = r.vec8(); r.err == nil && len(k.authSalt) != authSaltLen {
			return nil, bad(fmt.Sprintf("auth salt of %d bytes, want %d", len(k.authSalt), authSaltLen))
		}
	}
	k.pubBytes = r.vec16()
	k.privBytes = r.vec16()
	if r.err != nil {
		return nil, bad("truncated")
	}
	if len(r.b) != 0 {
		return nil, bad(fmt.Sprintf("%d trailing bytes", len(r.b)))
	}
	if k.origin != originCreated && k.origin != originImported {
		return nil, bad(fmt.Sprintf("unknown origin %d", k.origin))
	}
	if n != pcrCount(k.pcrMask) {
		return nil, bad("PCR values do not match the PCR mask")
	}
	if k.hash != h {
		return nil, fmt.Errorf("tpm: key handle is for %v, the vault asked for %v: %w", k.hash, h, vault.ErrKeyNotFound)
	}
	pub, err := tpm2.Unmarshal[tpm2.TPM2BPublic](k.pubBytes)
	if err != nil {
		return nil, bad("public area does not parse")
	}
	k.public = *pub
	priv, err := tpm2.Unmarshal[tpm2.TPM2BPrivate](k.privBytes)
	if err != nil {
		return nil, bad("private area does not parse")
	}
	k.private = *priv
	contents, err := k.public.Contents()
	if err != nil || contents.Type != tpm2.TPMAlgKeyedHash {
		return nil, bad("not a keyedHash object")
	}
	alg, err := schemeHash(contents)
	if err != nil {
		return nil, bad(err.Error())
	}
	if alg != tpmHash(h) {
		return nil, fmt.Errorf("tpm: key handle holds an HMAC-%v key, the vault asked for %v: %w", alg, h, vault.ErrKeyNotFound)
	}
	return k, nil
}

// reader is a minimal bounds-checked big-endian reader; the first error
// sticks.
type reader struct {
	b   []byte
	err error
}

func (r *reader) take(n int) []byte {
	if r.err != nil || n > len(r.b) {
		r.err = errors.New("truncated")
		return nil
	}
	v := r.b[:n]
	r.b = r.b[n:]
	return v
}

func (r *reader) u8() byte {
	if v := r.take(1); v != nil {
		return v[0]
	}
	return 0
}

func (r *reader) u16() int {
	if v := r.take(2); v != nil {
		return int(binary.BigEndian.Uint16(v))
	}
	return 0
}

func (r *reader) u32() uint32 {
	if v := r.take(4); v != nil {
		return binary.BigEndian.Uint32(v)
	}
	return 0
}

func (r *reader) vec8() []byte  { return slices.Clone(r.take(int(r.u8()))) }
func (r *reader) vec16() []byte { return slices.Clone(r.take(r.u16())) }

// tpmHash maps an EPSK hash to the TPM algorithm.
func tpmHash(h importer.Hash) tpm2.TPMIAlgHash {
	switch h {
	case importer.SHA256:
		return tpm2.TPMAlgSHA256
	case importer.SHA384:
		return tpm2.TPMAlgSHA384
	}
	return tpm2.TPMAlgNull
}

// schemeHash returns the HMAC hash of a keyedHash public area.
func schemeHash(p *tpm2.TPMTPublic) (tpm2.TPMIAlgHash, error) {
	kh, err := p.Parameters.KeyedHashDetail()
	if err != nil {
		return 0, errors.New("no keyedHash parameters")
	}
	if kh.Scheme.Scheme != tpm2.TPMAlgHMAC {
		return 0, errors.New("keyedHash object without an HMAC scheme")
	}
	d, err := kh.Scheme.Details.HMAC()
	if err != nil {
		return 0, errors.New("HMAC scheme without a hash")
	}
	return d.HashAlg, nil
}

// hmacParms is the keyedHash parameter block for an HMAC key.
func hmacParms(alg tpm2.TPMIAlgHash) tpm2.TPMUPublicParms {
	return tpm2.NewTPMUPublicParms(tpm2.TPMAlgKeyedHash, &tpm2.TPMSKeyedHashParms{
		Scheme: tpm2.TPMTKeyedHashScheme{
			Scheme:  tpm2.TPMAlgHMAC,
			Details: tpm2.NewTPMUSchemeKeyedHash(tpm2.TPMAlgHMAC, &tpm2.TPMSSchemeHMAC{HashAlg: alg}),
		},
	})
}
