package tpm

import (
	"bytes"
	"context"
	"crypto/hmac"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/google/go-tpm/tpm2"

	"github.com/pskvault/pskvault/importer"
	"github.com/pskvault/pskvault/vault"
)

// maxHMACBuffer is the largest TPM2_HMAC input (TPM2B_MAX_BUFFER on PC
// Client TPMs); longer data goes through an HMAC sequence.
const maxHMACBuffer = 1024

// StoreParams are the per-key options StoreKey accepts.
var StoreParams = []string{"pcrs"}

// probe is the message StoreKey MACs to check the new key.
var probe = []byte("pskvault tpm store self-test")

// hmacTemplate is the public area of a PRK object. Created keys are
// FixedTPM|FixedParent (they can never leave this TPM); imported keys must
// have both clear (TPM2_Import refuses them otherwise) but have no
// authPolicy allowing TPM2_Duplicate, so they cannot be re-exported either.
func hmacTemplate(h importer.Hash, fixed bool, policy []byte) tpm2.TPMTPublic {
	return tpm2.TPMTPublic{
		Type:    tpm2.TPMAlgKeyedHash,
		NameAlg: tpm2.TPMAlgSHA256,
		ObjectAttributes: tpm2.TPMAObject{
			FixedTPM:            fixed,
			FixedParent:         fixed,
			SensitiveDataOrigin: false, // the TPM refuses it with caller-supplied data
			UserWithAuth:        len(policy) == 0,
			NoDA:                true,
			SignEncrypt:         true,
		},
		AuthPolicy: tpm2.TPM2BDigest{Buffer: policy},
		Parameters: hmacParms(tpmHash(h)),
	}
}

func checkParams(params map[string]string, allowed ...string) error {
	var unknown []string
	for k := range params {
		ok := false
		for _, a := range allowed {
			ok = ok || k == a
		}
		if !ok {
			unknown = append(unknown, k)
		}
	}
	if len(unknown) == 0 {
		return nil
	}
	sort.Strings(unknown)
	known := strings.Join(allowed, ", ")
	if known == "" {
		known = "none"
	}
	return fmt.Errorf("tpm: unknown key parameter %s (this backend knows: %s): %w", strings.Join(unknown, ", "), known, vault.ErrUnsupported)
}

func (b *Backend) checkHash(h importer.Hash) error {
	for _, x := range b.hashes {
		if x == h {
			return nil
		}
	}
	return fmt.Errorf("tpm: this TPM cannot do HMAC with %v: %w", h, vault.ErrUnsupported)
}

// StoreKey creates an HMAC key holding req.PRK in the TPM. The PRK travels
// to the TPM once, AES-CFB encrypted under a session salted with the
// parent's public key. With Params["pcrs"] = "7,11" the key only works
// while those PCRs (SHA-256 bank) hold the values they hold now.
func (b *Backend) StoreKey(ctx context.Context, req vault.StoreRequest) ([]byte, error) {
	if err := checkParams(req.Params, StoreParams...); err != nil {
		return nil, err
	}
	if err := b.checkHash(req.Hash); err != nil {
		return nil, err
	}
	if len(req.PRK) != req.Hash.Size() {
		return nil, fmt.Errorf("tpm: PRK is %d bytes, %v needs %d: %w", len(req.PRK), req.Hash, req.Hash.Size(), importer.ErrBadPRK)
	}
	defer scrubHeap() // go-tpm's copies of the PRK (scrub.go)
	var mask uint32
	if s, ok := req.Params["pcrs"]; ok {
		var err error
		if mask, err = parsePCRs(s); err != nil {
			return nil, fmt.Errorf("%w: %w", err, vault.ErrUnsupported)
		}
	}
	var handle []byte
	err := b.run(ctx, "store key", func() error {
		k := &keyBlob{origin: originCreated, hash: req.Hash, parentName: bytes.Clone(b.parent.name.Buffer), pcrMask: mask}
		var err error
		if k.authSalt, err = b.newAuthSalt(); err != nil {
			return err
		}
		auth, err := b.keyAuth(k)
		if err != nil {
			return err
		}
		defer clear(auth)
		var policy []byte
		if mask != 0 {
			vals, err := readPCRs(b.link, mask)
			if err != nil {
				return b.mapErr("read PCRs "+pcrString(mask), err)
			}
			k.pcrValues = vals
			if policy, err = pcrPolicy(mask, vals, len(auth) > 0); err != nil {
				return err
			}
		}
		prk := bytes.Clone(req.PRK)
		defer clear(prk)
		cr, err := withSlot(b, "", func() (cr *tpm2.CreateResponse, err error) {
			err = retry(func() error {
				var e error
				cr, e = tpm2.Create{
					ParentHandle: tpm2.AuthHandle{
						Handle: b.parent.handle,
						Name:   b.parent.name,
						Auth: tpm2.HMAC(tpm2.TPMAlgSHA256, 16,
							tpm2.AESEncryption(128, tpm2.EncryptIn),
							tpm2.Salted(b.parent.handle, b.parent.public)),
					},
					InSensitive: tpm2.TPM2BSensitiveCreate{Sensitive: &tpm2.TPMSSensitiveCreate{
						UserAuth: tpm2.TPM2BAuth{Buffer: auth},
						Data:     tpm2.NewTPMUSensitiveCreate(&tpm2.TPM2BSensitiveData{Buffer: prk}),
					}},
					InPublic: tpm2.New2B(hmacTemplate(req.Hash, true, policy)),
				}.Execute(b.link)
				return e
			})
			return cr, err
		})
		if err != nil {
			return b.parentErr("create key", err)
		}
		k.public, k.private = cr.OutPublic, cr.OutPrivate
		k.pubBytes, k.privBytes = tpm2.Marshal(cr.OutPublic), tpm2.Marshal(cr.OutPrivate)
		handle = k.seal()
		if err := b.selfTest(k, req.Hash, req.PRK); err != nil {
			return err
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return handle, nil
}

// selfTest checks a freshly stored key computes the same HMAC as
// crypto/hmac, and leaves it loaded for the derivations that usually follow.
func (b *Backend) selfTest(k *keyBlob, h importer.Hash, prk []byte) error {
	got, err := b.hmacLocked(k, probe)
	if err != nil {
		if errors.Is(err, vault.ErrKeyPolicy) && !errors.Is(err, errAuthRefused) {
			return fmt.Errorf("tpm: PCRs %s changed while the key was being created; try again: %w", pcrString(k.pcrMask), vault.ErrKeyPolicy)
		}
		return fmt.Errorf("tpm: self-test of the new key: %w", err)
	}
	want := importer.HMAC(h, prk, probe) // wipes its copies of the PRK, unlike crypto/hmac
	defer clear(want)
	if !hmac.Equal(got, want) {
		return errors.New("tpm: self-test of the new key failed: the TPM computes a different HMAC than crypto/hmac")
	}
	return nil
}

// HMAC computes HMAC(PRK, data) in the TPM.
func (b *Backend) HMAC(ctx context.Context, key vault.KeyRef, data []byte) ([]byte, error) {
	var out []byte
	err := b.run(ctx, "hmac", func() error {
		// Hot path: the handle is the cache key, no need to decode it.
		if o := b.cache.get(string(key.Handle)); o != nil && o.key.hash == key.Hash {
			var e error
			out, e = b.hmacObj(o.key, o, data)
			return e
		}
		k, err := parseHandle(key.Handle, key.Hash)
		if err != nil {
			return err
		}
		out, err = b.hmacLocked(k, data)
		return err
	})
	return out, err
}

// hmacLocked loads k if needed and computes the HMAC; the caller holds sem
// and is connected.
func (b *Backend) hmacLocked(k *keyBlob, data []byte) ([]byte, error) {
	obj, err := b.load(k)
	if err != nil {
		return nil, err
	}
	return b.hmacObj(k, obj, data)
}

// hmacObj computes the HMAC with a loaded key and explains failures.
func (b *Backend) hmacObj(k *keyBlob, obj *loaded, data []byte) ([]byte, error) {
	authValue, err := b.keyAuth(k)
	if err != nil {
		return nil, err
	}
	defer clear(authValue)
	var out []byte
	err = retry(func() error {
		var e error
		out, e = b.hmacCmd(k, obj, data, authValue)
		return e
	})
	if err == nil {
		if len(out) != k.hash.Size() {
			clear(out)
			return nil, fmt.Errorf("tpm hmac: TPM returned %d bytes, want %d", len(out), k.hash.Size())
		}
		return out, nil
	}
	var le *linkError
	if errors.As(err, &le) {
		return nil, err
	}
	if e := authRefused(k, err); e != nil {
		return nil, e
	}
	if errors.Is(err, tpm2.TPMRCPolicyFail) || errors.Is(err, tpm2.TPMRCValue) && k.pcrMask != 0 {
		changed := changedPCRs(b.link, k)
		if changed == "" {
			changed = pcrString(k.pcrMask)
		}
		return nil, fmt.Errorf("tpm hmac: %w: the key is bound to PCRs %s and PCR %s changed since the key was created "+
			"(firmware, boot loader or Secure Boot state changed; re-import the PSK)", vault.ErrKeyPolicy, pcrString(k.pcrMask), changed)
	}
	if errors.Is(err, tpm2.TPMRCHandle) || errors.Is(err, tpm2.TPMRCReferenceH0) {
		// The object vanished under us (flushed by someone else); forget it.
		b.cache.remove(nil, k.id())
	}
	return nil, b.mapErr("hmac", err)
}

// hmacCmd runs TPM2_HMAC (or an HMAC sequence for long data) under the
// key's authorization: its auth value as a password (empty without
// auth-source), or a PolicyPCR session, which then also proves the auth
// value by HMAC (PolicyAuthValue).
func (b *Backend) hmacCmd(k *keyBlob, obj *loaded, data, authValue []byte) ([]byte, error) {
	var auth tpm2.Session = tpm2.PasswordAuth(authValue)
	if k.pcrMask != 0 {
		var opts []tpm2.AuthOption
		if len(authValue) > 0 {
			opts = append(opts, tpm2.Auth(authValue))
		}
		sess, closeSess, err := tpm2.PolicySession(b.link, tpm2.TPMAlgSHA256, 16, opts...)
		if err != nil {
			return nil, err
		}
		defer closeSess()
		if _, err := (tpm2.PolicyPCR{PolicySession: sess.Handle(), Pcrs: pcrSelection(k.pcrMask)}).Execute(b.link); err != nil {
			return nil, err
		}
		if len(authValue) > 0 {
			if _, err := (tpm2.PolicyAuthValue{PolicySession: sess.Handle()}).Execute(b.link); err != nil {
				return nil, err
			}
		}
		auth = sess
	}
	alg := tpmHash(k.hash)
	ah := tpm2.AuthHandle{Handle: obj.handle, Name: obj.name, Auth: auth}
	if len(data) <= maxHMACBuffer {
		rsp, err := tpm2.Hmac{Handle: ah, Buffer: tpm2.TPM2BMaxBuffer{Buffer: data}, HashAlg: alg}.Execute(b.link)
		if err != nil {
			return nil, err
		}
		return rsp.OutHMAC.Buffer, nil
	}
	st, err := withSlot(b, k.id(), func() (*tpm2.HmacStartResponse, error) {
		return tpm2.HmacStart{Handle: ah, HashAlg: alg}.Execute(b.link)
	})
	if err != nil {
		return nil, err
	}
	seq := tpm2.AuthHandle{Handle: st.SequenceHandle, Auth: tpm2.PasswordAuth(nil)}
	for len(data) > maxHMACBuffer {
		if _, err := (tpm2.SequenceUpdate{SequenceHandle: seq, Buffer: tpm2.TPM2BMaxBuffer{Buffer: data[:maxHMACBuffer]}}).Execute(b.link); err != nil {
			b.link.flush(st.SequenceHandle)
			return nil, err
		}
		data = data[maxHMACBuffer:]
	}
	rsp, err := tpm2.SequenceComplete{SequenceHandle: seq, Buffer: tpm2.TPM2BMaxBuffer{Buffer: data}, Hierarchy: tpm2.TPMRHNull}.Execute(b.link)
	if err != nil {
		b.link.flush(st.SequenceHandle)
		return nil, err
	}
	return rsp.Result.Buffer, nil
}

// withSlot runs a command that needs a free transient slot (Create,
// Import, HmacStart use one internally), flushing cached keys other than
// keep while the TPM reports TPM_RC_OBJECT_MEMORY.
func withSlot[T any](b *Backend, keep string, f func() (T, error)) (T, error) {
	for {
		r, err := f()
		if !errors.Is(err, tpm2.TPMRCObjectMemory) || !b.evictOther(keep) {
			return r, err
		}
	}
}

func (b *Backend) evictOther(keep string) bool {
	if keep != "" && b.cache.get(keep) != nil && b.cache.len() <= 1 {
		return false // get moved keep to the front; nothing else to flush
	}
	return b.cache.evictOldest(b.link)
}

// load makes k resident and returns its TPM handle, flushing the least
// recently used keys when the cache or the TPM is full.
func (b *Backend) load(k *keyBlob) (*loaded, error) {
	if !bytes.Equal(k.parentName, b.parent.name.Buffer) {
		return nil, fmt.Errorf("tpm: %w: the key is wrapped under a different storage parent than this TPM's "+
			"(TPM cleared, SRK at 0x81000001 replaced, or vault copied from another machine)", vault.ErrKeyNotFound)
	}
	id := k.id()
	if o := b.cache.get(id); o != nil {
		return o, nil
	}
	for b.cache.len() >= b.cache.max {
		b.cache.evictOldest(b.link)
	}
	for {
		var rsp *tpm2.LoadResponse
		err := retry(func() error {
			var e error
			rsp, e = tpm2.Load{ParentHandle: b.parent.auth(), InPublic: k.public, InPrivate: k.private}.Execute(b.link)
			return e
		})
		if errors.Is(err, tpm2.TPMRCObjectMemory) && b.cache.evictOldest(b.link) {
			continue
		}
		if err != nil {
			var le *linkError
			if errors.As(err, &le) {
				return nil, err
			}
			if errors.Is(err, tpm2.TPMRCIntegrity) || errors.Is(err, tpm2.TPMRCSize) || errors.Is(err, tpm2.TPMRCKey) || errors.Is(err, tpm2.TPMRCValue) {
				return nil, fmt.Errorf("tpm: %w: this TPM cannot unwrap the key blob (%v): it was made by another TPM or before a TPM clear", vault.ErrKeyNotFound, err)
			}
			return nil, b.parentErr("load key", err)
		}
		o := &loaded{id: id, key: k, handle: rsp.ObjectHandle, name: rsp.Name}
		b.cache.add(o)
		return o, nil
	}
}

// KeyInHandle: the handle is the key wrapped by the storage parent;
// DeleteKey only flushes a loaded copy (vault.KeyInHandle).
func (b *Backend) KeyInHandle() bool { return true }

// DeleteKey forgets a key: it is flushed from the TPM if loaded. A TPM key
// blob cannot be revoked by the TPM itself: whoever keeps a copy of the
// handle can load it again under the same parent, so the vault must delete
// its record (see docs/TPM.md).
func (b *Backend) DeleteKey(ctx context.Context, key vault.KeyRef) error {
	k, err := parseHandle(key.Handle, key.Hash)
	if err != nil {
		return err
	}
	select {
	case b.sem <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-b.sem }()
	if b.link == nil {
		b.cache.remove(nil, k.id())
		return nil
	}
	b.cache.remove(b.link, k.id())
	return nil
}

// Random returns n bytes from the TPM's RNG (TPM2_GetRandom).
func (b *Backend) Random(ctx context.Context, n int) ([]byte, error) {
	if n < 0 || n > 1<<16 {
		return nil, fmt.Errorf("tpm random: %d bytes requested, limit 65536", n)
	}
	out := make([]byte, 0, n)
	err := b.run(ctx, "random", func() error {
		out = out[:0]
		for len(out) < n {
			want := min(n-len(out), 32)
			var rsp *tpm2.GetRandomResponse
			err := retry(func() error {
				var e error
				rsp, e = tpm2.GetRandom{BytesRequested: uint16(want)}.Execute(b.link)
				return e
			})
			if err != nil {
				return b.mapErr("get random", err)
			}
			if len(rsp.RandomBytes.Buffer) == 0 {
				return errors.New("tpm random: TPM returned no bytes")
			}
			out = append(out, rsp.RandomBytes.Buffer...)
		}
		return nil
	})
	if err != nil {
		clear(out[:cap(out)])
		return nil, err
	}
	return out[:n], nil
}
