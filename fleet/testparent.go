package fleet

import (
	"crypto/ecdh"
	"crypto/rand"

	"github.com/google/go-tpm/tpm2"
)

// GenerateTPMParent returns the public area (TPM2B_PUBLIC) of an ECC P-256
// storage parent whose private key exists nowhere: bundles wrapped to it
// can be made but never imported. For tests and benchmarks that need
// thousands of distinct TPM nodes.
func GenerateTPMParent() ([]byte, error) {
	k, err := ecdh.P256().GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	pt := k.PublicKey().Bytes() // 0x04 || X || Y
	tmpl := tpm2.ECCSRKTemplate
	tmpl.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{
		X: tpm2.TPM2BECCParameter{Buffer: pt[1:33]},
		Y: tpm2.TPM2BECCParameter{Buffer: pt[33:65]},
	})
	return tpm2.Marshal(tpm2.New2B(tmpl)), nil
}
