package tpm

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"

	"github.com/google/go-tpm/tpm2"

	"github.com/pskvault/pskvault/importer"
	"github.com/pskvault/pskvault/vault"
)

// Wrapped provisioning: a provisioning machine that holds the EPSK computes
// the PRK, and Wrap encrypts it to one TPM's storage parent (TPM2 duplication
// format, outer wrapper only) with nothing but that parent's public area.
// The node's ImportWrapped runs TPM2_Import, so the PRK never exists in the
// node's memory.
//
// Blob format:
//
//	"PSKVTPW" 0x01           magic and version
//	u8   hash                importer.Hash of the PRK
//	u16  len, parent Name    the parent the blob is encrypted to
//	u16  len, TPM2B_PUBLIC   the key's public area
//	u16  len, duplicate      TPM2B_PRIVATE-shaped outer-wrapped sensitive area
//	u16  len, inSymSeed      the seed, encrypted to the parent (ECDH or RSA-OAEP)
var wrapMagic = []byte("PSKVTPW\x01")

// ParentInfo parses a parent public area (marshaled TPM2B_PUBLIC, as
// ParentPublic returns or tpm2_readpublic -o writes) and returns its TPM Name.
func ParentInfo(parentPub []byte) (name []byte, pub *tpm2.TPMTPublic, err error) {
	p2b, err := tpm2.Unmarshal[tpm2.TPM2BPublic](parentPub)
	if err != nil {
		return nil, nil, fmt.Errorf("tpm: parent public key does not parse as a TPM2B_PUBLIC: %w", err)
	}
	pub, err = p2b.Contents()
	if err != nil {
		return nil, nil, fmt.Errorf("tpm: parent public key does not parse as a TPM2B_PUBLIC: %w", err)
	}
	if !pub.ObjectAttributes.Restricted || !pub.ObjectAttributes.Decrypt || pub.ObjectAttributes.SignEncrypt {
		return nil, nil, fmt.Errorf("tpm: the parent public key is not a storage key (restricted decrypt)")
	}
	n, err := tpm2.ObjectName(pub)
	if err != nil {
		return nil, nil, fmt.Errorf("tpm: parent public key: %w", err)
	}
	return n.Buffer, pub, nil
}

// Wrap encrypts prk (epskx, h.Size() bytes) to the TPM whose storage parent
// public area is parentPub, producing a blob for ImportWrapped on that TPM
// only. It runs without a TPM. prk is not retained; the caller wipes it.
func Wrap(parentPub []byte, h importer.Hash, prk []byte) ([]byte, error) {
	if !h.Valid() {
		return nil, fmt.Errorf("tpm wrap: %w %d", importer.ErrUnknownHash, uint8(h))
	}
	if len(prk) != h.Size() {
		return nil, fmt.Errorf("tpm wrap: PRK is %d bytes, %v needs %d: %w", len(prk), h, h.Size(), importer.ErrBadPRK)
	}
	parentName, pub, err := ParentInfo(parentPub)
	if err != nil {
		return nil, err
	}
	ek, err := tpm2.ImportEncapsulationKey(pub)
	if err != nil {
		return nil, fmt.Errorf("tpm wrap: parent key cannot be used for import: %w", err)
	}
	// The obfuscation value hides the key from its public unique field,
	// unique = SHA-256(seed || key) (TPM 2.0 Part 1, "Public Area Creation").
	seed := make([]byte, sha256.Size)
	defer clear(seed)
	if _, err := rand.Read(seed); err != nil {
		return nil, err
	}
	u := sha256.New()
	u.Write(seed)
	u.Write(prk)
	tmpl := hmacTemplate(h, false, nil)
	tmpl.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgKeyedHash, &tpm2.TPM2BDigest{Buffer: u.Sum(nil)})
	name, err := tpm2.ObjectName(&tmpl)
	if err != nil {
		return nil, err
	}
	key := bytes.Clone(prk)
	defer clear(key)
	sensitive := tpm2.Marshal(tpm2.TPMTSensitive{
		SensitiveType: tpm2.TPMAlgKeyedHash,
		SeedValue:     tpm2.TPM2BDigest{Buffer: seed},
		Sensitive:     tpm2.NewTPMUSensitiveComposite(tpm2.TPMAlgKeyedHash, &tpm2.TPM2BSensitiveData{Buffer: key}),
	})
	defer clear(sensitive)
	dup, encSeed, err := tpm2.CreateDuplicate(rand.Reader, ek, name.Buffer, sensitive)
	if err != nil {
		return nil, fmt.Errorf("tpm wrap: %w", err)
	}
	pubBytes := tpm2.Marshal(tpm2.New2B(tmpl))
	out := slices.Clone(wrapMagic)
	out = append(out, byte(h))
	for _, v := range [][]byte{parentName, pubBytes, dup, encSeed} {
		out = binary.BigEndian.AppendUint16(out, uint16(len(v)))
		out = append(out, v...)
	}
	return out, nil
}

type wrapped struct {
	hash       importer.Hash
	parentName []byte
	pubBytes   []byte
	public     tpm2.TPM2BPublic
	dup        []byte
	encSeed    []byte
}

func parseWrapped(b []byte) (*wrapped, error) {
	if len(b) < len(wrapMagic) || !bytes.Equal(b[:len(wrapMagic)], wrapMagic) {
		return nil, fmt.Errorf("tpm import: not a pskvault TPM wrapped blob (version 1; make it with `pskvault wrap`)")
	}
	r := reader{b: b[len(wrapMagic):]}
	w := &wrapped{hash: importer.Hash(r.u8())}
	w.parentName = r.vec16()
	w.pubBytes = r.vec16()
	w.dup = r.vec16()
	w.encSeed = r.vec16()
	if r.err != nil || len(r.b) != 0 {
		return nil, fmt.Errorf("tpm import: wrapped blob is truncated or has trailing bytes")
	}
	pub, err := tpm2.Unmarshal[tpm2.TPM2BPublic](w.pubBytes)
	if err != nil {
		return nil, fmt.Errorf("tpm import: wrapped blob's public area does not parse")
	}
	w.public = *pub
	c, err := pub.Contents()
	if err != nil || c.Type != tpm2.TPMAlgKeyedHash {
		return nil, fmt.Errorf("tpm import: wrapped blob does not hold a keyedHash object")
	}
	alg, err := schemeHash(c)
	if err != nil || alg != tpmHash(w.hash) {
		return nil, fmt.Errorf("tpm import: wrapped blob's HMAC scheme does not match its declared hash %v", w.hash)
	}
	a := c.ObjectAttributes
	if a.FixedTPM || a.FixedParent || !a.NoDA || !a.SignEncrypt || a.Decrypt || a.Restricted || len(c.AuthPolicy.Buffer) != 0 || !a.UserWithAuth {
		return nil, fmt.Errorf("tpm import: wrapped blob's object attributes are not the ones pskvault wrap produces; refusing it")
	}
	return w, nil
}

// ImportWrapped loads a blob made by Wrap for this TPM's parent with
// TPM2_Import and returns a key handle like StoreKey's. No parameters are
// accepted: a PCR policy would have to be fixed by the provisioning machine.
func (b *Backend) ImportWrapped(ctx context.Context, blob []byte, h importer.Hash, params map[string]string) ([]byte, error) {
	if _, ok := params["pcrs"]; ok {
		return nil, fmt.Errorf("tpm import: pcrs= cannot be applied to a wrapped key (its policy is fixed when it is wrapped): %w", vault.ErrUnsupported)
	}
	if err := checkParams(params); err != nil {
		return nil, err
	}
	if err := b.checkHash(h); err != nil {
		return nil, err
	}
	w, err := parseWrapped(blob)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", err, vault.ErrUnsupported)
	}
	if w.hash != h {
		return nil, fmt.Errorf("tpm import: the blob holds a %v key, the import asked for %v: %w", w.hash, h, vault.ErrUnsupported)
	}
	var handle []byte
	err = b.run(ctx, "import wrapped key", func() error {
		if !bytes.Equal(w.parentName, b.parent.name.Buffer) {
			return fmt.Errorf("tpm import: the blob was wrapped for parent %x, this TPM's parent is %x: "+
				"wrap it with this node's `pskvault tpm parent-pub` output: %w", w.parentName, b.parent.name.Buffer, vault.ErrUnsupported)
		}
		ir, err := withSlot(b, "", func() (ir *tpm2.ImportResponse, err error) {
			err = retry(func() error {
				var e error
				ir, e = tpm2.Import{
					ParentHandle: b.parent.auth(),
					ObjectPublic: w.public,
					Duplicate:    tpm2.TPM2BPrivate{Buffer: w.dup},
					InSymSeed:    tpm2.TPM2BEncryptedSecret{Buffer: w.encSeed},
					Symmetric:    tpm2.TPMTSymDef{Algorithm: tpm2.TPMAlgNull},
				}.Execute(b.link)
				return e
			})
			return ir, err
		})
		if err != nil {
			var le *linkError
			if errors.As(err, &le) {
				return err
			}
			if errors.Is(err, tpm2.TPMRCIntegrity) || errors.Is(err, tpm2.TPMRCValue) || errors.Is(err, tpm2.TPMRCECCPoint) {
				return fmt.Errorf("tpm import: the TPM rejected the blob (%v): it is corrupt or was wrapped for another TPM: %w", err, vault.ErrUnsupported)
			}
			return b.parentErr("import", err)
		}
		k := &keyBlob{origin: originImported, hash: h, parentName: bytes.Clone(b.parent.name.Buffer),
			public: w.public, pubBytes: w.pubBytes, private: ir.OutPrivate, privBytes: tpm2.Marshal(ir.OutPrivate)}
		if b.authSecret != nil {
			// The blob was wrapped with an empty auth value (the
			// provisioning machine does not know this node's secret):
			// give the key its own before the handle is recorded.
			if err := b.changeAuth(k); err != nil {
				return err
			}
		}
		handle = k.seal()
		if _, err := b.hmacLocked(k, probe); err != nil {
			return err
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return handle, nil
}

// changeAuth gives an imported key (empty auth value) a salt and the auth
// value derived from it (TPM2_ObjectChangeAuth), replacing k's private
// blob. The new auth value travels AES-CFB encrypted under a session
// salted with the parent's public key, as PRKs do in StoreKey.
func (b *Backend) changeAuth(k *keyBlob) error {
	salt, err := b.newAuthSalt()
	if err != nil {
		return err
	}
	k.seal() // the cache knows loaded keys by their handle
	obj, err := b.load(k)
	if err != nil {
		return err
	}
	defer b.cache.remove(b.link, k.id())
	k.authSalt = salt
	auth, err := b.keyAuth(k)
	if err != nil {
		return err
	}
	defer clear(auth)
	var rsp *tpm2.ObjectChangeAuthResponse
	err = retry(func() error {
		var e error
		rsp, e = tpm2.ObjectChangeAuth{
			ObjectHandle: tpm2.AuthHandle{Handle: obj.handle, Name: obj.name,
				Auth: tpm2.HMAC(tpm2.TPMAlgSHA256, 16,
					tpm2.AESEncryption(128, tpm2.EncryptIn),
					tpm2.Salted(b.parent.handle, b.parent.public))},
			ParentHandle: tpm2.NamedHandle{Handle: b.parent.handle, Name: b.parent.name},
			NewAuth:      tpm2.TPM2BAuth{Buffer: auth},
		}.Execute(b.link)
		return e
	})
	if err != nil {
		return b.mapErr("import: set the key's auth value", err)
	}
	k.private, k.privBytes = rsp.OutPrivate, tpm2.Marshal(rsp.OutPrivate)
	return nil
}
