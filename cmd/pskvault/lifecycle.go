package main

import (
	"context"
	"encoding/hex"
	"flag"
	"fmt"
	"time"

	"github.com/pskvault/pskvault/client"
)

func init() {
	register(&command{name: "psk revoke", summary: "stop a PSK now: destroy its key, keep the record (RFC 9257 lifecycle)",
		long: "Destroys the PSK's key in the backend at once and keeps its record, marked revoked with the reason: what RFC 9257 asks when a key or a node is compromised.",
		examples: []example{
			{"", "pskvault psk revoke --identity link-a-b --reason 'node-b decommissioned'"},
		},
		uses:  useSocket,
		setup: setupRevoke})
	register(&command{name: "psk rotate", summary: "make the next generation of a PSK; the old one expires after --overlap",
		long: "Makes the next generation of a PSK under a new identity; both derive until --overlap has passed, then the old one expires. The vault generates the key and writes it for the peer (--out, a bundle the peer imports), or you bring it (--key-file).",
		examples: []example{
			{"", "pskvault psk rotate --identity link-a-b --new-identity link-a-b-2 --overlap 168h --out link-a-b-2.bundle"},
			{"with a key made elsewhere", "pskvault psk rotate --identity link-a-b --new-identity link-a-b-2 --key-file link-a-b-2.hex --json"},
		},
		uses:  useSocket,
		setup: setupRotate})
	register(&command{name: "psk sweep", summary: "destroy the keys of expired PSKs (records stay, marked revoked)",
		long: "Destroys the key of every active PSK past its not_after; the records stay, marked revoked. pskvault-sweep.timer runs it daily.",
		examples: []example{
			{"", "pskvault psk sweep"},
			{"", "pskvault psk sweep --json"},
		},
		uses:  useSocket,
		setup: setupSweep})
	register(&command{name: "psk finalize", summary: "keep the imported keys for the allowed targets and destroy the main key (RFC 9257 section 6)",
		long: "Keeps only the imported keys of the allowed targets (and contexts) and destroys the main key, so nothing else can be derived from the PSK again (RFC 9257 section 6).",
		examples: []example{
			{"", "pskvault psk finalize --identity link-a-b"},
			{"keep two contexts", "pskvault psk finalize --identity link-a-b --context-hex 01 --context-hex 02 --json"},
		},
		uses:  useSocket,
		setup: setupFinalize})
}

func setupRevoke(fs *flag.FlagSet, g *globals) func(context.Context, []string) error {
	var id identityFlags
	id.register(fs)
	reason := fs.String("reason", "", "why, recorded on the PSK (e.g. \"node-b decommissioned\")")
	asJSON := fs.Bool("json", false, "print the record as JSON")
	return func(ctx context.Context, args []string) error {
		b, err := id.bytes()
		if err != nil {
			return err
		}
		p, err := g.client().Revoke(ctx, b, *reason)
		if err != nil {
			return err
		}
		return printRecord(g, p, *asJSON)
	}
}

func setupFinalize(fs *flag.FlagSet, g *globals) func(context.Context, []string) error {
	var id identityFlags
	id.register(fs)
	var contexts listFlag
	fs.Var(&contexts, "context-hex", "RFC 9258 `context` to keep, in hex, repeatable (default: the empty context; PSKs with --node-context keep their node contexts)")
	asJSON := fs.Bool("json", false, "print the record as JSON")
	return func(ctx context.Context, args []string) error {
		b, err := id.bytes()
		if err != nil {
			return err
		}
		var cs [][]byte
		for _, h := range contexts {
			c, err := hex.DecodeString(h)
			if err != nil {
				return usagef("--context-hex %q: not a hex string", h)
			}
			cs = append(cs, c)
		}
		p, err := g.client().Finalize(ctx, b, cs)
		if err != nil {
			return err
		}
		return printRecord(g, p, *asJSON)
	}
}

func setupRotate(fs *flag.FlagSet, g *globals) func(context.Context, []string) error {
	var id, newID identityFlags
	id.register(fs)
	fs.StringVar(&newID.text, "new-identity", "", "identity of the new generation as UTF-8 `text` (default for a random identity: a new random one)")
	fs.StringVar(&newID.hex, "new-identity-hex", "", "identity of the new generation as `hex`")
	overlap := fs.Duration("overlap", 7*24*time.Hour, "how long the old generation stays derivable")
	keyFile := fs.String("key-file", "", "new hex EPSK `file` (or -) instead of generating one")
	out := fs.String("out", "", "`file` for the peer (0600, never overwritten), or - for standard output: a bundle carrying the new key, its policy and the overlap (see --format)")
	var bf bundleOutFlags
	bf.register(fs)
	validFor := fs.Duration("valid-for", 0, "lifetime of the new generation (default: the old one's)")
	source := fs.String("source", "", "provenance of --key-file")
	allowLow := fs.Bool("allow-low-entropy", false, "accept a --key-file that looks low-entropy (flagged for good)")
	asJSON := fs.Bool("json", false, "print JSON: identity_hex, new_identity_hex, overlap, key_check_value, out, format (to standard error when --out is -)")
	return func(ctx context.Context, args []string) error {
		b, err := id.bytes()
		if err != nil {
			return err
		}
		spec := client.RotateSpec{Overlap: *overlap, Provenance: *source, AllowLowEntropy: *allowLow}
		if newID.text != "" || newID.hex != "" {
			if spec.NewIdentity, err = newID.bytes(); err != nil {
				return err
			}
		}
		if *validFor > 0 {
			spec.NotAfter = time.Now().Add(*validFor)
		}
		c := g.client()
		if (*keyFile == "") == (*out == "") {
			return usagef("give --out (the vault generates the key) or --key-file (you bring it), exactly one")
		}
		if *keyFile != "" {
			key, err := readHexKey(g, *keyFile)
			if err != nil {
				return err
			}
			nid, _, err := c.Rotate(ctx, b, spec, key)
			clear(key)
			if err != nil {
				return err
			}
			if *asJSON {
				p, err := c.Get(ctx, nid)
				if err != nil {
					return err
				}
				return writeJSON(g.stdout, rotateJSON{IdentityHex: hex.EncodeToString(b), NewIdentityHex: hex.EncodeToString(nid), Overlap: overlap.String(), KCV: p.KCV})
			}
			fmt.Fprintf(g.stdout, "rotated %x -> %x; the old generation expires in %s\n", b, nid, *overlap)
			return nil
		}
		wrap, err := bf.check()
		if err != nil {
			return err
		}
		me, err := bundleNode(ctx, c, &bf)
		if err != nil {
			return err
		}
		o, err := openPeerOutput(g, *out)
		if err != nil {
			return err
		}
		nid, key, err := c.Rotate(ctx, b, spec, nil)
		if err != nil {
			o.abort()
			return err
		}
		defer clear(key)
		p, err := c.Get(ctx, nid)
		var data []byte
		var kcv string
		if err == nil {
			data, kcv, err = peerData(p, key, me, &bf, wrap, b, *overlap)
		}
		if err == nil {
			err = o.write(data)
			clear(data)
		} else {
			o.abort()
		}
		if err != nil {
			if derr := c.Delete(ctx, nid); derr != nil {
				return fmt.Errorf("write the key for the peer: %w; deleting the new generation %x also failed (%v): delete it, then rotate again", err, nid, derr)
			}
			return fmt.Errorf("write the key for the peer: %w (the new generation %x was deleted again; rotate again)", err, nid)
		}
		gi := o.info(g)
		if *asJSON {
			return writeJSON(gi.stdout, rotateJSON{IdentityHex: hex.EncodeToString(b), NewIdentityHex: hex.EncodeToString(nid), Overlap: overlap.String(), KCV: kcv, Out: *out, Format: bf.format})
		}
		where := *out + " (0600)"
		if *out == "-" {
			where = "standard output"
		}
		fmt.Fprintf(gi.stdout, "rotated %x -> %x; the old generation expires in %s\nkey check value %s\n", b, nid, *overlap, kcv)
		if bf.format == "hex" {
			fmt.Fprintf(gi.stdout, "EPSK for the peer written to %s: deliver it securely and on the peer run 'pskvault psk rotate --identity-hex %x --new-identity-hex %x --overlap %s --key-file FILE'\n", where, b, nid, *overlap)
		} else {
			fmt.Fprintf(gi.stdout, "bundle for the peer (with the %s overlap) written to %s: on the peer run 'pskvault psk import --bundle FILE'\n", *overlap, where)
		}
		return nil
	}
}

func setupSweep(fs *flag.FlagSet, g *globals) func(context.Context, []string) error {
	asJSON := fs.Bool("json", false, "print JSON: swept_hex, the identities whose keys were destroyed")
	return func(ctx context.Context, args []string) error {
		ids, err := g.client().Sweep(ctx)
		if err != nil {
			return err
		}
		if *asJSON {
			if ids == nil {
				ids = []string{}
			}
			return writeJSON(g.stdout, sweepJSON{SweptHex: ids})
		}
		for _, id := range ids {
			fmt.Fprintf(g.stdout, "destroyed the key of expired PSK %s\n", id)
		}
		fmt.Fprintf(g.stdout, "%d expired PSK(s) swept\n", len(ids))
		return nil
	}
}
