// Package fleet provisions PSKs for many nodes from one provisioning host:
// an inventory of nodes (each with the public part of its key-import
// hardware) and links (client node, server node), one fresh key per link,
// written only as bundles wrapped to each node's hardware (docs/BUNDLE.md),
// and a registry of what was issued (no key bytes) that makes a run
// idempotent and resumable.
package fleet

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/pskvault/pskvault/backends/pkcs11"
	"github.com/pskvault/pskvault/backends/tpm"
	"github.com/pskvault/pskvault/bundle"
	"github.com/pskvault/pskvault/importer"
	"github.com/pskvault/pskvault/vault"
)

// Node is one node of the inventory and the hardware its bundles are
// wrapped to.
type Node struct {
	ID   string
	Kind string // bundle.KeyTPM or bundle.KeyPKCS11
	// TPM: the storage parent public area (pskvault tpm parent-pub).
	// PKCS#11: the AES key-encryption key, and its label on the token.
	ParentPub []byte
	KEK       []byte
	KEKLabel  string
}

// Link is one pairwise PSK to provision.
type Link struct{ Client, Server string }

// Name is the link's registry key.
func (l Link) Name() string { return l.Client + "--" + l.Server }

// Inventory is the plan.
type Inventory struct {
	Nodes map[string]*Node
	Links []Link
}

// ErrInventory reports a malformed inventory.
var ErrInventory = errors.New("inventory")

// ReadInventory parses an inventory file (CSV-like, one record a line;
// relative paths are relative to the file's directory):
//
//	# comment
//	node,ID,tpm,PARENT_PUB_FILE
//	node,ID,pkcs11,KEK_HEX_FILE,KEK_LABEL
//	link,CLIENT_ID,SERVER_ID
func ReadInventory(path string) (*Inventory, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	dir := filepath.Dir(path)
	return ParseInventory(f, path, func(p string) ([]byte, error) {
		if !filepath.IsAbs(p) {
			p = filepath.Join(dir, p)
		}
		return os.ReadFile(p)
	})
}

// ParseInventory parses an inventory from r (name is for errors); load
// reads the files it names.
func ParseInventory(r io.Reader, path string, load func(string) ([]byte, error)) (*Inventory, error) {
	inv := &Inventory{Nodes: map[string]*Node{}}
	seen := map[string]bool{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 64<<10)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fs := strings.Split(line, ",")
		bad := func(format string, args ...any) error {
			return fmt.Errorf("%w %s:%d: %s", ErrInventory, path, n, fmt.Sprintf(format, args...))
		}
		switch {
		case fs[0] == "node" && len(fs) == 4 && fs[2] == bundle.KeyTPM:
			pub, err := load(fs[3])
			if err != nil {
				return nil, bad("%v", err)
			}
			if _, _, err := tpm.ParentInfo(pub); err != nil {
				return nil, bad("node %s: %v", fs[1], err)
			}
			inv.Nodes[fs[1]] = &Node{ID: fs[1], Kind: bundle.KeyTPM, ParentPub: pub}
		case fs[0] == "node" && len(fs) == 5 && fs[2] == bundle.KeyPKCS11:
			kek, err := readHex(load, fs[3])
			if err != nil {
				return nil, bad("node %s: %v", fs[1], err)
			}
			inv.Nodes[fs[1]] = &Node{ID: fs[1], Kind: bundle.KeyPKCS11, KEK: kek, KEKLabel: fs[4]}
		case fs[0] == "node":
			return nil, bad("want node,ID,tpm,PARENT_PUB_FILE or node,ID,pkcs11,KEK_FILE,LABEL")
		case fs[0] == "link" && len(fs) == 3:
			l := Link{Client: fs[1], Server: fs[2]}
			if l.Client == l.Server {
				return nil, bad("link %s: client and server are the same node", l.Name())
			}
			if seen[l.Name()] {
				return nil, bad("link %s listed twice", l.Name())
			}
			seen[l.Name()] = true
			inv.Links = append(inv.Links, l)
		default:
			return nil, bad("want a node or link record")
		}
		if fs[0] == "node" {
			if err := vault.CheckNodeID(fs[1]); err != nil {
				return nil, bad("%v", err)
			}
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	for _, l := range inv.Links {
		for _, id := range []string{l.Client, l.Server} {
			if inv.Nodes[id] == nil {
				return nil, fmt.Errorf("%w %s: link %s names node %s, which has no node record", ErrInventory, path, l.Name(), id)
			}
		}
	}
	return inv, nil
}

func readHex(load func(string) ([]byte, error), path string) ([]byte, error) {
	raw, err := load(path)
	if err != nil {
		return nil, err
	}
	defer clear(raw)
	k, err := hex.DecodeString(strings.Join(strings.Fields(string(raw)), "")) // whitespace ignored, as --key-file does
	if err != nil || len(k) == 0 {
		return nil, errors.New("key-encryption key file is not hex")
	}
	return k, nil
}

// Policy is what every bundle of a run says.
type Policy struct {
	Targets  []string
	ValidFor time.Duration
	Overlap  time.Duration // for rotations
}

// issue makes one generation of a link: a fresh key, a bundle for each
// node wrapped to its hardware, written under tmp names in out. The key
// exists only here and is wiped before it returns.
func issue(out string, inv *Inventory, l Link, prev *Issue, pol Policy, now time.Time) (*Issue, error) {
	id, err := vault.RandomIdentity()
	if err != nil {
		return nil, err
	}
	epsk := make([]byte, 32)
	defer clear(epsk)
	if _, err := io.ReadFull(rand.Reader, epsk); err != nil {
		return nil, err
	}
	prk, err := importer.Extract(importer.SHA256, epsk)
	if err != nil {
		return nil, err
	}
	defer clear(prk)
	mk := vault.BundleMACKeyFromPRK(importer.SHA256, prk)
	defer clear(mk)
	is := &Issue{Link: l.Name(), Client: l.Client, Server: l.Server, Identity: id, Generation: 1,
		NotBefore: now.UTC().Truncate(time.Second), NotAfter: now.Add(pol.ValidFor).UTC().Truncate(time.Second),
		KCV: vault.KCVFromPRK(importer.SHA256, prk)}
	if prev != nil {
		is.Generation, is.Rotates = prev.Generation+1, prev.Identity
	}
	for _, nid := range []string{l.Client, l.Server} {
		n := inv.Nodes[nid]
		b := &bundle.Bundle{ForNode: nid, Identity: id, Client: l.Client, Server: l.Server, NodeContext: true,
			Hash: importer.SHA256, Targets: pol.Targets, DHERequired: true, NotBefore: is.NotBefore, NotAfter: is.NotAfter,
			Generation: is.Generation, KeyBits: 256, KCV: is.KCV, KeyKind: n.Kind}
		if prev != nil {
			b.Rotates, b.Overlap = prev.Identity, pol.Overlap
		}
		switch n.Kind {
		case bundle.KeyTPM:
			b.Key, err = tpm.Wrap(n.ParentPub, importer.SHA256, prk)
		default:
			b.Key, err = pkcs11.WrapPRK(n.KEK, prk)
			b.WrappingKey = n.KEKLabel
		}
		if err != nil {
			return nil, fmt.Errorf("link %s: wrap for %s: %w", l.Name(), nid, err)
		}
		b.Seal(mk)
		data := b.Marshal()
		err = writeFile(filepath.Join(out, nid), is.fileName()+".tmp", data)
		clear(data)
		if err != nil {
			return nil, err
		}
	}
	return is, nil
}

// fileName is the bundle's name in each node's directory.
func (is *Issue) fileName() string { return fmt.Sprintf("%s.g%d.bundle", is.Link, is.Generation) }

// writeFile writes a bundle 0600 in a 0700 directory, synced.
func writeFile(dir, name string, data []byte) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	f, err := os.OpenFile(filepath.Join(dir, name), os.O_WRONLY|os.O_CREATE|os.O_TRUNC|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	return errors.Join(err, f.Sync(), f.Close())
}

// finish renames an issued generation's bundles to their final names.
func finish(out string, is *Issue) error {
	for _, nid := range []string{is.Client, is.Server} {
		p := filepath.Join(out, nid, is.fileName())
		if err := os.Rename(p+".tmp", p); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		if _, err := os.Stat(p); err != nil {
			return fmt.Errorf("link %s: bundle for %s: %w", is.Link, nid, err)
		}
	}
	return nil
}
