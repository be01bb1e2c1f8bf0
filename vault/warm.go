package vault

import (
	"bytes"

	bolt "go.etcd.io/bbolt"
)

// Warming the mapping (issue 12).
//
// bbolt reads vault.db through a shared mapping of the file. The first
// time the daemon touches a page of it costs a page fault even when the
// page is in the page cache: about 30 µs each on the 2-core VM, and a
// derivation of a random record in a 1M-record vault touches two or three
// pages no derivation touched before (measured: 116 µs per in-process
// derive on a fresh mapping against 24 µs once its pages were mapped). So
// after Open, and after bbolt maps the file anew as it grows, a background
// goroutine walks every bucket in short read transactions (4,096 keys
// each, so a writer that must grow the file never waits long for it),
// which maps every page. The pages are the page cache's (RssFile, not
// the daemon's heap; unlocked, munlock.go); nothing is copied.

const warmStep = 4096

// warm maps every page of vault.db into the process, in the background
// of whoever calls it (Open, boltStore after a remap). A later call
// supersedes an earlier one; closing the vault stops it.
func (s *boltStore) warm() {
	gen := s.warmGen.Add(1)
	go func() {
		var buckets [][]byte
		if s.View(func(tx *bolt.Tx) error {
			return tx.ForEach(func(name []byte, _ *bolt.Bucket) error {
				buckets = append(buckets, bytes.Clone(name))
				return nil
			})
		}) != nil {
			return
		}
		for _, name := range buckets {
			var after []byte
			for {
				if s.warmGen.Load() != gen {
					return
				}
				done := true
				err := s.View(func(tx *bolt.Tx) error {
					b := tx.Bucket(name)
					if b == nil {
						return nil
					}
					c := b.Cursor()
					k, _ := c.First()
					if after != nil {
						if k, _ = c.Seek(after); k != nil && bytes.Equal(k, after) {
							k, _ = c.Next()
						}
					}
					for i := 0; k != nil; k, _ = c.Next() {
						if i++; i == warmStep {
							after, done = bytes.Clone(k), false
							return nil
						}
					}
					return nil
				})
				if err != nil {
					return // closed
				}
				if done {
					break
				}
			}
		}
		s.warmed.Add(1)
	}()
}
