package main

import (
	"context"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"

	"github.com/pskvault/pskvault/backends/tpm" // also registers the "tpm" backend
	"github.com/pskvault/pskvault/importer"
	"github.com/pskvault/pskvault/internal/safepath"
	"github.com/pskvault/pskvault/vault"
)

func init() {
	register(&command{name: "tpm parent-pub", summary: "export this node's TPM storage parent public key, for 'pskvault wrap --tpm-parent-pub'",
		long: "Writes this node's TPM storage parent public key (TPM2B_PUBLIC) from the vault's record, or read from a TPM directly with --backend, for the provisioning machine: 'pskvault wrap --tpm-parent-pub' wraps keys that only this TPM can unwrap. Needs no daemon.",
		examples: []example{
			{"", "pskvault tpm parent-pub --out node-a.parent.pub"},
			{"straight from the TPM", "pskvault tpm parent-pub --backend tpm:device=/dev/tpmrm0 --out node-a.parent.pub --json"},
		},
		uses:  useStateDir,
		setup: setupTPMParentPub})
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
	asJSON := fs.Bool("json", false, "print JSON: out, name")
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
			pub, err = readStateFile(g.stateDir, path)
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
		if *asJSON {
			return writeJSON(g.stdout, parentPubJSON{Out: *out, Name: hex.EncodeToString(name)})
		}
		fmt.Fprintf(g.stdout, "wrote TPM parent public key (name %s) to %s; on the provisioning machine: pskvault wrap --tpm-parent-pub %s --key-file EPSK --out BLOB\n",
			hex.EncodeToString(name), *out, *out)
		return nil
	}
}

// readStateFile reads a small file in a state directory that may be another
// user's (root exporting the parent key of a daemon that runs as user
// pskvault): the directory and the file must belong to the same user, who
// is this one unless this one is root, the directories above it must pass
// internal/safepath for that user, and the file is opened as the daemon
// opens its own (no link followed, regular, one link, mode 0600). A planted
// parent key would have the provisioning side wrap keys for someone else's
// TPM.
func readStateFile(dir, path string) ([]byte, error) {
	if _, err := os.Lstat(path); err != nil {
		return nil, err // no record: the caller says what to do
	}
	st, err := os.Lstat(dir)
	if err != nil {
		return nil, err
	}
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok || !st.IsDir() {
		return nil, fmt.Errorf("%w: state dir %s is not a directory", vault.ErrUnsafeState, dir)
	}
	owner := sys.Uid
	if me := uint32(os.Geteuid()); me != 0 && owner != me {
		return nil, fmt.Errorf("%w: state dir %s belongs to uid %d, not to you (uid %d)", vault.ErrUnsafeState, dir, owner, me)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("%w: state dir %s has mode %04o; it must be 0700", vault.ErrUnsafeState, dir, st.Mode().Perm())
	}
	if err := safepath.CheckDir(dir, owner, false); err != nil {
		return nil, fmt.Errorf("%w: state dir %s: %w", vault.ErrUnsafeState, dir, err)
	}
	f, err := safepath.OpenFile(path, os.O_RDONLY, 0, owner, safepath.FileRules{})
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, 64<<10))
}
