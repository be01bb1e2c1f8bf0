//go:build !cgo

package pkcs11

import (
	"context"
	"fmt"

	"github.com/pskvault/pskvault/vault"
)

// errNoCgo explains why this build has no PKCS#11 backend.
var errNoCgo = fmt.Errorf("%w: this pskvault was built without cgo, and PKCS#11 modules are C libraries; rebuild with CGO_ENABLED=1", vault.ErrUnsupported)

func init() {
	vault.RegisterBackend("pkcs11", func(ctx context.Context, cfg vault.BackendConfig) (vault.Backend, error) {
		if _, err := ParseURI(cfg.URI); err != nil {
			return nil, err
		}
		return nil, errNoCgo
	})
}

// Probe needs cgo.
func Probe(uri string) (*Report, error) { return nil, errNoCgo }
