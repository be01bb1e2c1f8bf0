package vault_test

import (
	"fmt"
	"testing"
)

// BenchmarkImportDeleteCycle is one import and one delete of a new PSK
// (soft backend): the unit of the daemon benchmark's write storm, without
// the socket. With -cpuprofile it shows where a change's CPU goes (on the
// 2-core VM: mostly the kernel's side of the fdatasyncs).
func BenchmarkImportDeleteCycle(b *testing.B) {
	v := openVault(b, "node-a")
	i := 0
	for b.Loop() {
		r := pairReq(fmt.Sprintf("cycle-%07d", i), randKey(b, 32))
		if _, err := v.Import(bg, r); err != nil {
			b.Fatal(err)
		}
		if err := v.Delete(bg, r.Identity); err != nil {
			b.Fatal(err)
		}
		i++
	}
}
