package vault

import (
	"fmt"

	"github.com/pskvault/pskvault/importer"
)

// CheckStack checks an identity and key against a TLS stack's limits.
// Replaced by the stack profiles in stacks.go.
func CheckStack(stack string, identity []byte, h importer.Hash, bits int) error {
	return fmt.Errorf("%w: unknown stack %q", ErrInvalid, stack)
}
