package syncbuf

import (
	"fmt"
	"sync"
	"testing"
)

// TestConcurrent: writers and readers at once (run with -race); every
// write is kept whole.
func TestConcurrent(t *testing.T) {
	var b Buffer
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 100; i++ {
				fmt.Fprintf(&b, "%d\n", w)
				_ = b.String()
			}
		}()
	}
	wg.Wait()
	if got := len(b.Bytes()); got != 4*100*2 {
		t.Fatalf("%d bytes, want %d", got, 800)
	}
}
