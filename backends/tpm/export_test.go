package tpm

import "testing"

// SharedSimURI gives the external test package the backend URI of the swtpm
// the package's benchmarks share.
func SharedSimURI(b *testing.B) string { return sharedSim(b).URI() }
