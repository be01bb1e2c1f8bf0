package tpm

import "runtime"

// scrubSink keeps scrubHeap's allocations from being optimised away.
var scrubSink []byte

// scrubHeap is a best-effort wipe of the freed heap memory go-tpm leaves
// behind after a Create or Import: go-tpm marshals the sensitive area (the
// PRK in clear, before parameter encryption) into internal buffers that
// pskvault never sees and cannot clear. After a collection frees them, new
// pointer-free allocations of the same size classes are zeroed by the
// allocator when they land in those slots; allocating a few spans' worth of
// each small size class makes that likely. Go gives no guarantee which
// slot an allocation takes, so this narrows the window, it does not close
// it: docs/TPM.md and README say so.
func scrubHeap() {
	runtime.GC()
	for size := 16; size <= 512; size += 16 {
		for range 64 * 1024 / size {
			scrubSink = make([]byte, size)
		}
	}
	scrubSink = nil
	runtime.GC()
}
