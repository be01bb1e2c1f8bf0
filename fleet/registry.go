package fleet

import (
	"encoding/json"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Issue is what the registry keeps of one issued generation of a link:
// never key bytes.
type Issue struct {
	Link       string    `json:"link"`
	Client     string    `json:"client"`
	Server     string    `json:"server"`
	Identity   []byte    `json:"identity"`
	Generation int       `json:"generation"`
	Rotates    []byte    `json:"rotates,omitempty"`
	NotBefore  time.Time `json:"not_before"`
	NotAfter   time.Time `json:"not_after"`
	KCV        string    `json:"kcv"`
}

// Registry records what was issued. Record must be atomic for a batch: a
// generation is issued exactly when Record returns with it. The embedded
// default is a bbolt file; docs/DESIGN.md says how a PostgreSQL store
// would implement the same interface for several provisioning hosts.
type Registry interface {
	// Latest returns every link's newest generation, by link name.
	Latest() (map[string]*Issue, error)
	// Record stores a batch of new generations at once.
	Record(batch []*Issue) error
	Close() error
}

var bucketLinks = []byte("links")

// boltRegistry is the embedded registry.
type boltRegistry struct{ db *bolt.DB }

// OpenRegistry opens (creating it 0600) the embedded registry at path.
func OpenRegistry(path string) (Registry, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		return nil, fmt.Errorf("open registry %s (another fleet run on it?): %w", path, err)
	}
	if err := db.Update(func(tx *bolt.Tx) error { _, err := tx.CreateBucketIfNotExists(bucketLinks); return err }); err != nil {
		db.Close()
		return nil, err
	}
	return &boltRegistry{db: db}, nil
}

func (r *boltRegistry) Latest() (map[string]*Issue, error) {
	out := map[string]*Issue{}
	err := r.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketLinks).ForEach(func(k, v []byte) error {
			var is Issue
			if err := json.Unmarshal(v, &is); err != nil {
				return fmt.Errorf("registry entry %s: %w", k, err)
			}
			out[string(k)] = &is
			return nil
		})
	})
	return out, err
}

func (r *boltRegistry) Record(batch []*Issue) error {
	return r.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketLinks)
		for _, is := range batch {
			if prev := b.Get([]byte(is.Link)); prev != nil {
				var p Issue
				if err := json.Unmarshal(prev, &p); err == nil && p.Generation >= is.Generation {
					return fmt.Errorf("registry: link %s already has generation %d", is.Link, p.Generation)
				}
			}
			v, err := json.Marshal(is)
			if err != nil {
				return err
			}
			if err := b.Put([]byte(is.Link), v); err != nil {
				return err
			}
		}
		return nil
	})
}

func (r *boltRegistry) Close() error { return r.db.Close() }
