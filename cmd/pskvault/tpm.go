package main

import (
	"context"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/pskvault/pskvault/backends/tpm" // also registers the "tpm" backend
	"github.com/pskvault/pskvault/importer"
)

func init() {
	register(&command{name: "tpm parent-pub", summary: "export this node's TPM storage parent public key, for 'pskvault wrap --tpm-parent-pub'", setup: setupTPMParentPub})
	registerWrapper(&wrapper{name: "tpm", flags: func(fs *flag.FlagSet) (func() bool, func([]byte, importer.Hash) ([]byte, error)) {
		file := fs.String("tpm-parent-pub", "", "wrap for the TPM whose parent public key is in this `file` ('pskvault tpm parent-pub' on the node)")
		given := func() bool { return *file != "" }
		wrap := func(prk []byte, h importer.Hash) ([]byte, error) {
			pub, err := os.ReadFile(*file)
			if err != nil {
				return nil, fmt.Errorf("read TPM parent public key: %w", err)
			}
			return tpm.Wrap(pub, h, prk)
		}
		return given, wrap
	}})
}

func setupTPMParentPub(fs *flag.FlagSet, g *globals) func(context.Context, []string) error {
	out := fs.String("out", "", "`file` to write the parent public key to (TPM2B_PUBLIC; never overwritten)")
	backend := fs.String("backend", "", "read it from this TPM `URI` (tpm, tpm:device=..., tpm:swtpm=...) instead of the vault's record")
	return func(ctx context.Context, args []string) error {
		if *out == "" {
			return usagef("--out is required")
		}
		var pub []byte
		var err error
		if *backend != "" {
			var b *tpm.Backend
			if b, err = tpm.Open(ctx, *backend); err != nil {
				return err
			}
			pub, err = b.ParentPublic(ctx)
			err = errors.Join(err, b.Close())
		} else {
			path := filepath.Join(g.stateDir, tpm.ParentPubFile)
			pub, err = os.ReadFile(path)
			if errors.Is(err, os.ErrNotExist) {
				return withHint(fmt.Errorf("%s has no TPM parent record (%s)", g.stateDir, path),
					"initialize the vault with --backend tpm..., or read the TPM directly with --backend tpm:device=/dev/tpmrm0")
			}
		}
		if err != nil {
			return err
		}
		name, _, err := tpm.ParentInfo(pub)
		if err != nil {
			return err
		}
		f, err := os.OpenFile(*out, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
		if errors.Is(err, os.ErrExist) {
			return withHint(fmt.Errorf("%s already exists", *out), "choose another --out")
		}
		if err != nil {
			return err
		}
		_, werr := f.Write(pub)
		if err := errors.Join(werr, f.Sync(), f.Close()); err != nil {
			os.Remove(*out)
			return err
		}
		fmt.Fprintf(g.stdout, "wrote TPM parent public key (name %s) to %s; on the provisioning machine: pskvault wrap --tpm-parent-pub %s --key-file EPSK --out BLOB\n",
			hex.EncodeToString(name), *out, *out)
		return nil
	}
}
