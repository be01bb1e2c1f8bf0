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

// Backend is unavailable without cgo.
type Backend struct{}

// Open needs cgo.
func Open(ctx context.Context, uri string) (*Backend, error) {
	if _, err := ParseURI(uri); err != nil {
		return nil, err
	}
	return nil, errNoCgo
}

// ImportWrappingKey needs cgo.
func (b *Backend) ImportWrappingKey(ctx context.Context, label string, kek []byte) error {
	return errNoCgo
}

// Close does nothing.
func (b *Backend) Close() error { return nil }
