package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/pskvault/pskvault/importer"
)

// wrapper produces a wrapped-PRK blob for one kind of hardware. Backends
// with wrapped import register one from their own file in this package.
type wrapper struct {
	name string
	// flags registers the wrapper's flags and returns a function that
	// reports whether they were given, and one that wraps a PRK.
	flags func(fs *flag.FlagSet) (given func() bool, wrap func(prk []byte, h importer.Hash) ([]byte, error))
}

var wrappers []*wrapper

func registerWrapper(w *wrapper) { wrappers = append(wrappers, w) }

func init() {
	register(&command{name: "wrap", summary: "on a provisioning machine: wrap an EPSK's PRK for one node's TPM or HSM",
		long: "On a provisioning machine: extracts the PRK of an EPSK (hex file) and wraps it for one node's TPM (--tpm-parent-pub) or PKCS#11 token (--pkcs11-kek); the node imports the blob with 'psk import --wrapped' and the key never exists there in clear. Needs no daemon.",
		examples: []example{
			{"", "pskvault wrap --tpm-parent-pub node-a.parent.pub --key-file epsk.hex --out epsk.node-a.blob"},
			{"", "pskvault wrap --pkcs11-kek kek.hex --key-file epsk.hex --out epsk.node-a.blob --json"},
		},
		setup: setupWrap})
}

func setupWrap(fs *flag.FlagSet, g *globals) func(context.Context, []string) error {
	keyFile := fs.String("key-file", "", "hex EPSK `file`, or - for standard input")
	hashName := fs.String("hash", "sha256", "EPSK `hash`: sha256 or sha384")
	out := fs.String("out", "", "`file` for the wrapped blob (created 0600, never overwritten)")
	asJSON := fs.Bool("json", false, "print JSON: out, target, key_bits, hash")
	type active struct {
		name  string
		given func() bool
		wrap  func([]byte, importer.Hash) ([]byte, error)
	}
	var ws []active
	for _, w := range wrappers {
		given, wrap := w.flags(fs)
		ws = append(ws, active{w.name, given, wrap})
	}
	return func(ctx context.Context, args []string) error {
		var chosen []active
		var names []string
		for _, w := range ws {
			names = append(names, w.name)
			if w.given() {
				chosen = append(chosen, w)
			}
		}
		if len(chosen) != 1 {
			return usagef("give the flags of exactly one kind of target (%s)", strings.Join(names, ", "))
		}
		if *keyFile == "" || *out == "" {
			return usagef("--key-file and --out are required")
		}
		h, err := importer.ParseHash(*hashName)
		if err != nil {
			return usagef("--hash: %v", err)
		}
		key, err := readHexKey(g, *keyFile)
		if err != nil {
			return err
		}
		if len(key) < 16 {
			clear(key)
			return errors.New("key shorter than 128 bits (RFC 9257 section 6 requires at least 128 bits of entropy)")
		}
		prk, err := importer.Extract(h, key)
		bits := len(key) * 8
		clear(key)
		if err != nil {
			return err
		}
		blob, err := chosen[0].wrap(prk, h)
		clear(prk)
		if err != nil {
			return fmt.Errorf("wrap for %s: %w", chosen[0].name, err)
		}
		f, err := createSecretFile(*out)
		if err != nil {
			return err
		}
		_, werr := f.Write(blob)
		if err := errors.Join(werr, f.Sync(), f.Close()); err != nil {
			os.Remove(*out)
			return err
		}
		if *asJSON {
			return writeJSON(g.stdout, wrapJSON{Out: *out, Target: chosen[0].name, KeyBits: bits, Hash: h.String()})
		}
		fmt.Fprintf(g.stdout, "wrapped %d-bit EPSK (%s) for %s into %s; on the node: pskvault psk import --wrapped %s --wrapped-key-bits %d --hash %s ...\n", bits, h, chosen[0].name, *out, *out, bits, h)
		return nil
	}
}
