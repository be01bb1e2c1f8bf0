//go:build cgo

package pkcs11

import (
	"testing"

	"github.com/pskvault/pskvault/backends/pkcs11/pkcs11test"
)

// SharedToken gives the external test package the shared SoftHSM2 token.
func SharedToken(t testing.TB) *pkcs11test.SoftHSM { return needToken(t) }
