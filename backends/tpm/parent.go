package tpm

import (
	"bytes"
	"context"
	"errors"
	"fmt"

	"github.com/google/go-tpm/tpm2"
)

// parent is the storage key every pskvault object is wrapped under.
type parent struct {
	handle    tpm2.TPMHandle
	name      tpm2.TPM2BName
	public    tpm2.TPMTPublic
	pubBytes  []byte // marshaled TPM2B_PUBLIC, as exported
	transient bool   // re-created from ECCSRKTemplate; flushed on Close
}

func (p *parent) auth() tpm2.AuthHandle {
	return tpm2.AuthHandle{Handle: p.handle, Name: p.name, Auth: tpm2.PasswordAuth(nil)}
}

// setupParent uses the persistent SRK at 0x81000001 when there is one, and
// otherwise re-creates the TCG ECC P-256 SRK under the owner hierarchy (the
// same key every time: it derives from the owner seed). It only writes a
// persistent handle when the URI says persist-srk.
func (b *Backend) setupParent() (*parent, error) {
	rp, err := tpm2.ReadPublic{ObjectHandle: SRKHandle}.Execute(b.link)
	if err == nil {
		pub, err := rp.OutPublic.Contents()
		if err != nil {
			return nil, fmt.Errorf("tpm: reading the SRK at 0x81000001: %w", err)
		}
		if !pub.ObjectAttributes.Restricted || !pub.ObjectAttributes.Decrypt || pub.ObjectAttributes.SignEncrypt {
			return nil, fmt.Errorf("tpm: the object at 0x81000001 is not a storage key (restricted decrypt); refusing to use it as parent")
		}
		return &parent{handle: SRKHandle, name: rp.Name, public: *pub, pubBytes: tpm2.Marshal(rp.OutPublic)}, nil
	}
	var le *linkError
	if errors.As(err, &le) {
		return nil, err
	}
	if !errors.Is(err, tpm2.TPMRCHandle) {
		return nil, b.mapErr("read SRK", err)
	}
	var cp *tpm2.CreatePrimaryResponse
	err = retry(func() error {
		var e error
		cp, e = tpm2.CreatePrimary{
			PrimaryHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)},
			InPublic:      tpm2.New2B(tpm2.ECCSRKTemplate),
		}.Execute(b.link)
		return e
	})
	if err != nil {
		if errors.Is(err, tpm2.TPMRCBadAuth) || errors.Is(err, tpm2.TPMRCAuthFail) {
			return nil, fmt.Errorf("tpm: creating the SRK needs an empty owner auth value, and this TPM's owner hierarchy has a password; "+
				"provision a persistent SRK at 0x81000001 (tpm2_createprimary -C o -G ecc256 ... && tpm2_evictcontrol) instead: %w", err)
		}
		return nil, b.mapErr("create SRK", err)
	}
	pub, err := cp.OutPublic.Contents()
	if err != nil {
		b.link.flush(cp.ObjectHandle)
		return nil, err
	}
	p := &parent{handle: cp.ObjectHandle, name: cp.Name, public: *pub, pubBytes: tpm2.Marshal(cp.OutPublic), transient: true}
	if b.cfg.PersistSRK {
		_, err := tpm2.EvictControl{
			Auth:             tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)},
			ObjectHandle:     tpm2.NamedHandle{Handle: cp.ObjectHandle, Name: cp.Name},
			PersistentHandle: SRKHandle,
		}.Execute(b.link)
		if err != nil {
			b.link.flush(cp.ObjectHandle)
			return nil, b.mapErr("persist SRK at 0x81000001", err)
		}
		b.link.flush(cp.ObjectHandle)
		p.handle, p.transient = SRKHandle, false
	}
	return p, nil
}

// supportsHMAC asks the TPM whether it can do HMAC with alg.
func (b *Backend) supportsHMAC(alg tpm2.TPMIAlgHash) bool {
	_, err := tpm2.TestParms{Parameters: tpm2.TPMTPublicParms{
		Type:       tpm2.TPMAlgKeyedHash,
		Parameters: hmacParms(alg),
	}}.Execute(b.link)
	return err == nil
}

// ParentPublic returns this TPM's storage parent public area as a marshaled
// TPM2B_PUBLIC (the format tpm2_readpublic -o writes). A provisioning
// machine feeds it to Wrap; it is not secret.
func (b *Backend) ParentPublic(ctx context.Context) ([]byte, error) {
	var out []byte
	err := b.run(ctx, "parent-pub", func() error {
		out = bytes.Clone(b.parent.pubBytes)
		return nil
	})
	return out, err
}

// ParentName returns the TPM Name of the storage parent: the hash that
// identifies it in wrapped blobs and key handles.
func (b *Backend) ParentName(ctx context.Context) ([]byte, error) {
	var out []byte
	err := b.run(ctx, "parent-name", func() error {
		out = bytes.Clone(b.parent.name.Buffer)
		return nil
	})
	return out, err
}
