package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"

	"github.com/pskvault/pskvault/backends/pkcs11" // also registers the "pkcs11" backend
	"github.com/pskvault/pskvault/importer"
)

func init() {
	register(&command{name: "pkcs11 probe", args: "URI", summary: "show what a PKCS#11 token can do and whether pskvault can use it",
		long: "Opens the token the URI names (module-path, token, pin-source) and reports its mechanisms, whether it can hold HMAC keys and unwrap, and a verdict; exit status 1 when pskvault cannot use it. Needs no daemon.",
		examples: []example{
			{"", "pskvault pkcs11 probe 'pkcs11:token=pskvault?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/etc/pskvault/pin'"},
			{"", "pskvault pkcs11 probe --json 'pkcs11:token=pskvault?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/etc/pskvault/pin'"},
		},
		setup: setupPKCS11Probe})
	register(&command{name: "pkcs11 import-wrapping-key", summary: "put an AES wrapping key on a PKCS#11 token, for 'pskvault wrap --pkcs11-kek'",
		long: "Puts an AES key (from a hex file) on the token as an unwrap-only, non-extractable key with the given label; the provisioning machine keeps a copy and wraps PSKs for this node with 'pskvault wrap --pkcs11-kek'.",
		examples: []example{
			{"", "pskvault pkcs11 import-wrapping-key --backend 'pkcs11:token=pskvault?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/etc/pskvault/pin' --label kek-2026 --key-file kek.hex"},
		},
		setup: setupPKCS11WrappingKey})
	registerWrapper(&wrapper{name: "pkcs11", flags: func(fs *flag.FlagSet) (func() bool, func([]byte, importer.Hash) ([]byte, error)) {
		file := fs.String("pkcs11-kek", "", "wrap for a PKCS#11 token holding this AES wrapping key (hex `file`, 16/24/32 bytes; see 'pskvault pkcs11 import-wrapping-key'); import on the node with --param wrapping-key=LABEL")
		given := func() bool { return *file != "" }
		wrap := func(prk []byte, h importer.Hash) ([]byte, error) {
			if *file == "-" {
				// Standard input may already carry the key being wrapped.
				return nil, errors.New("--pkcs11-kek: give the wrapping key's file, not standard input")
			}
			kek, err := readHexKey(&globals{}, *file)
			if err != nil {
				return nil, fmt.Errorf("--pkcs11-kek: %w", err)
			}
			defer clear(kek)
			return pkcs11.WrapPRK(kek, prk)
		}
		return given, wrap
	}})
}

func setupPKCS11Probe(fs *flag.FlagSet, g *globals) func(context.Context, []string) error {
	asJSON := fs.Bool("json", false, "print the report as JSON")
	return func(ctx context.Context, args []string) error {
		if len(args) != 1 {
			return usagef("give exactly one PKCS#11 URI, e.g. 'pkcs11:token=LABEL?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/etc/pskvault/pin'")
		}
		r, err := pkcs11.Probe(args[0])
		if err != nil {
			return err
		}
		if *asJSON {
			enc := json.NewEncoder(g.stdout)
			enc.SetIndent("", "  ")
			if err := enc.Encode(r); err != nil {
				return err
			}
		} else {
			fmt.Fprint(g.stdout, r.String())
		}
		if !r.Usable {
			return withHint(errors.New("pskvault cannot use this token"), "see the verdict above; tokens without CKM_SHA256_HMAC (most smart cards) cannot hold PSKs")
		}
		return nil
	}
}

func setupPKCS11WrappingKey(fs *flag.FlagSet, g *globals) func(context.Context, []string) error {
	backend := fs.String("backend", "", "PKCS#11 `URI` of the token")
	label := fs.String("label", "", "CKA_LABEL for the wrapping key (what --param wrapping-key= names)")
	keyFile := fs.String("key-file", "", "hex AES key `file` (16, 24 or 32 bytes), or - for standard input; the provisioning side keeps a copy")
	asJSON := fs.Bool("json", false, "print JSON: label")
	return func(ctx context.Context, args []string) error {
		if *backend == "" || *label == "" || *keyFile == "" {
			return usagef("--backend, --label and --key-file are required")
		}
		kek, err := readHexKey(g, *keyFile)
		if err != nil {
			return err
		}
		defer clear(kek)
		b, err := pkcs11.Open(ctx, *backend)
		if err != nil {
			return err
		}
		err = errors.Join(b.ImportWrappingKey(ctx, *label, kek), b.Close())
		if err != nil {
			return err
		}
		if *asJSON {
			return writeJSON(g.stdout, wrappingKeyJSON{Label: *label})
		}
		fmt.Fprintf(g.stdout, "wrapping key %q is on the token (unwrap only, non-extractable); on the provisioning machine: pskvault wrap --pkcs11-kek KEKFILE --key-file EPSK --out BLOB; on this node: pskvault psk import --wrapped BLOB --param wrapping-key=%s ...\n", *label, *label)
		return nil
	}
}
