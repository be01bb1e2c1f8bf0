package main

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/pskvault/pskvault/api"
	"github.com/pskvault/pskvault/client"
)

func init() {
	register(&command{name: "psk import", summary: "import an EPSK from a hex key file (or a wrapped blob)",
		long: "Stores an EPSK made elsewhere: a bundle from the peer's 'psk create' or 'psk rotate' (it carries the policy; flags beside it may only narrow it), a bare hex key file with the policy given here, or a blob wrapped for this node's hardware by 'pskvault wrap'. The key never passes the command line.",
		examples: []example{
			{"the peer's bundle", "pskvault psk import --bundle link-a-b.bundle"},
			{"a bare key from a key ceremony", "pskvault psk import --identity legacy-1 --client node-a --server node-b --key-file legacy-1.hex --json"},
			{"a provisioning run's bundles for this node, 10,000 per all-or-nothing request", "pskvault psk import --batch fleet/node-b/"},
			{"JSON lines with key_hex (and bundles) from standard input", "pskvault psk import --batch - --batch-size 1000 --json"},
		},
		uses:  useSocket,
		setup: setupImport})
	register(&command{name: "psk create", summary: "generate a 256-bit EPSK, store it, write it for the peer",
		long: "The vault generates a 256-bit EPSK in the backend, stores it with its policy and writes it once for the peer (--out): as a bundle (the key with its policy, authenticated, optionally wrapped to the peer's TPM or token) or as bare hex.",
		examples: []example{
			{"", "pskvault psk create --identity link-a-b --client node-a --server node-b --valid-for 2160h --out link-a-b.bundle"},
			{"wrapped to the peer's TPM, random identity", "pskvault psk create --random-identity --client node-a --server node-b --tpm-parent-pub node-b.parent.pub --out link-a-b.bundle --json"},
		},
		uses:  useSocket,
		setup: setupCreate})
	register(&command{name: "psk list", summary: "list PSK records",
		long: "Lists every PSK record: identity, hash, key size, nodes, state and expiry. No key material. The daemon answers pages of at most 1,000 records; without --limit every page is fetched and printed as it comes, with --limit one page, and the cursor of the next on standard error.",
		examples: []example{
			{"", "pskvault psk list"},
			{"", "pskvault psk list --json"},
			{"one page, then the page after it", "pskvault psk list --limit 100 --cursor AWRldi0wMDA5OQ"},
		},
		uses:  useSocket,
		setup: setupList})
	register(&command{name: "psk show", args: "", summary: "show one PSK record",
		long: "Shows one PSK record with its policy and key check value. No key material.",
		examples: []example{
			{"", "pskvault psk show --identity link-a-b"},
			{"", "pskvault psk show --identity-hex 6c696e6b2d612d62 --json"},
		},
		uses:  useSocket,
		setup: setupShow})
	register(&command{name: "psk delete", summary: "destroy a PSK in the backend and remove its record",
		long: "Destroys the PSK's key in the backend and removes its record (revoke keeps the record).",
		examples: []example{
			{"", "pskvault psk delete --identity link-a-b"},
			{"", "pskvault psk delete --identity link-a-b --json"},
		},
		uses:  useSocket,
		setup: setupDelete})
}

// identityFlags are --identity / --identity-hex.
type identityFlags struct{ text, hex string }

func (f *identityFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.text, "identity", "", "external identity as UTF-8 `text`")
	fs.StringVar(&f.hex, "identity-hex", "", "external identity as `hex` bytes")
}

func (f *identityFlags) bytes() ([]byte, error) {
	switch {
	case f.text != "" && f.hex != "":
		return nil, usagef("give --identity or --identity-hex, not both")
	case f.text != "":
		return []byte(f.text), nil
	case f.hex != "":
		b, err := hex.DecodeString(f.hex)
		if err != nil || len(b) == 0 {
			return nil, usagef("--identity-hex: not a non-empty hex string")
		}
		return b, nil
	}
	return nil, usagef("--identity or --identity-hex is required")
}

// listFlag collects a repeatable flag.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(s string) error { *l = append(*l, s); return nil }

// specFlags are the flags import and create share.
type specFlags struct {
	id             identityFlags
	client, server string
	hash           string
	targets        listFlag
	notAfter       string
	validFor       time.Duration
	params         listFlag
	pol            policyFlags // RFC 9257 flags (policy.go)
}

func (s *specFlags) register(fs *flag.FlagSet) {
	s.id.register(fs)
	fs.StringVar(&s.client, "client", "", "the client `node` of this PSK")
	fs.StringVar(&s.server, "server", "", "the server `node` of this PSK")
	fs.StringVar(&s.hash, "hash", "sha256", "EPSK `hash`: sha256 or sha384")
	fs.Var(&s.targets, "target", "allowed import `target` PROTOCOL/KDF, repeatable (default: all of tls1.3|dtls1.3 x sha256|sha384)")
	fs.StringVar(&s.notAfter, "not-after", "", "expiry `time` (RFC 3339)")
	fs.DurationVar(&s.validFor, "valid-for", 0, "expire after this `duration` (e.g. 2160h)")
	fs.Var(&s.params, "param", "backend-specific `NAME=VALUE`, repeatable (e.g. pcrs=7,11 on tpm)")
	s.pol.register(fs)
}

func (s *specFlags) spec() (client.PSKSpec, error) {
	id, err := s.id.bytes()
	if s.pol.randomIdentity && s.id.text == "" && s.id.hex == "" {
		id, err = nil, nil
	}
	if err != nil {
		return client.PSKSpec{}, err
	}
	pol, err := s.pol.spec()
	if err != nil {
		return client.PSKSpec{}, err
	}
	if (s.client == "" || s.server == "") && len(pol.Group) == 0 {
		return client.PSKSpec{}, usagef("--client and --server are required: every PSK has exactly one client node and one server node (RFC 9257 section 4.1), unless --group lists the members of a group PSK")
	}
	spec := client.PSKSpec{Identity: id, Hash: s.hash, ClientNode: s.client, ServerNode: s.server, Targets: s.targets, Policy: pol}
	if spec.NotAfter, err = s.validity(); err != nil {
		return spec, err
	}
	spec.Params, err = s.paramMap()
	return spec, err
}

// validity is the not-after --not-after or --valid-for give (zero: none).
func (s *specFlags) validity() (time.Time, error) {
	switch {
	case s.notAfter != "" && s.validFor != 0:
		return time.Time{}, usagef("give --not-after or --valid-for, not both")
	case s.notAfter != "":
		t, err := time.Parse(time.RFC3339, s.notAfter)
		if err != nil {
			return t, usagef("--not-after %q: want RFC 3339, e.g. 2027-01-02T15:04:05Z", s.notAfter)
		}
		return t, nil
	case s.validFor < 0:
		return time.Time{}, usagef("--valid-for must be positive")
	case s.validFor > 0:
		return time.Now().Add(s.validFor), nil
	}
	return time.Time{}, nil
}

// paramMap collects --param NAME=VALUE.
func (s *specFlags) paramMap() (map[string]string, error) {
	var m map[string]string
	for _, p := range s.params {
		k, v, ok := strings.Cut(p, "=")
		if !ok || k == "" {
			return nil, usagef("--param %q: want NAME=VALUE", p)
		}
		if m == nil {
			m = map[string]string{}
		}
		m[k] = v
	}
	return m, nil
}

func setupImport(fs *flag.FlagSet, g *globals) func(context.Context, []string) error {
	var s specFlags
	s.register(fs)
	bundlePath := fs.String("bundle", "", "provisioning bundle `file` made by 'psk create' or 'psk rotate' on the peer, or - for standard input: it sets the whole policy; other flags may only narrow it (docs/BUNDLE.md)")
	keyFile := fs.String("key-file", "", "bare hex EPSK `file` made elsewhere, or - for standard input (whitespace ignored; refused when others can read it)")
	wrapped := fs.String("wrapped", "", "import a wrapped PRK `blob` file made by 'pskvault wrap' instead of --key-file")
	wrappedBits := fs.Int("wrapped-key-bits", 256, "EPSK size in `bits` that the wrapped blob was made from")
	asJSON := fs.Bool("json", false, "print the record as JSON")
	batchPath := fs.String("batch", "", "import many PSKs: a `file` of bundles and/or JSON entries with key_hex (one per line), a directory of *.bundle files (fleet's OUT/NODE), or - for standard input; sent --batch-size entries per request, each request all or nothing (docs/API.md)")
	batchSize := fs.Int("batch-size", 10000, "entries per batch request (at most 10000)")
	return func(ctx context.Context, args []string) error {
		if *batchPath != "" {
			n := 0
			fs.Visit(func(f *flag.Flag) {
				switch f.Name {
				case "batch", "batch-size", "json", "state-dir", "socket", "data-socket":
				default:
					n++
				}
			})
			if n > 0 {
				return usagef("--batch takes no other flag but --batch-size and --json: each entry carries its own policy")
			}
			return importBatchInput(ctx, g, *batchPath, *batchSize, *asJSON)
		}
		if *bundlePath != "" {
			return importBundle(ctx, g, fs, &s, *bundlePath, *asJSON)
		}
		spec, err := s.spec()
		if err != nil {
			return err
		}
		var p *api.PSK
		switch {
		case (*keyFile == "") == (*wrapped == ""):
			return usagef("give exactly one of --bundle, --key-file and --wrapped")
		case *keyFile != "":
			key, err := readHexKey(g, *keyFile)
			if err != nil {
				return err
			}
			p, err = g.client().Import(ctx, spec, key)
			clear(key)
			if err != nil {
				return err
			}
			defer removeHint(g, *keyFile, p.KCV)
		default:
			blob, err := os.ReadFile(*wrapped)
			if err != nil {
				return fmt.Errorf("read wrapped blob: %w", err)
			}
			if p, err = g.client().ImportWrapped(ctx, spec, blob, *wrappedBits); err != nil {
				return err
			}
		}
		return printRecord(g, p, *asJSON)
	}
}

func setupCreate(fs *flag.FlagSet, g *globals) func(context.Context, []string) error {
	var s specFlags
	s.register(fs)
	var bf bundleOutFlags
	bf.register(fs)
	out := fs.String("out", "", "`file` for the peer (created 0600, never overwritten), or - for standard output: a bundle with the key and its policy (see --format)")
	keyFile := fs.String("key-file", "", "take the EPSK from this hex `file` (a key made elsewhere, e.g. at a key ceremony) instead of generating one")
	asJSON := fs.Bool("json", false, "print the record as JSON")
	return func(ctx context.Context, args []string) error {
		spec, err := s.spec()
		if err != nil {
			return err
		}
		if *out == "" {
			return usagef("--out is required: the peer needs the key")
		}
		wrap, err := bf.check()
		if err != nil {
			return err
		}
		if len(spec.Policy.Group) > 0 && bf.format == "bundle" && bf.forNode == "" {
			return usagef("--for NODE is required for a group PSK: a bundle is for one node (or --format hex for the bare key)")
		}
		c := g.client()
		me, err := bundleNode(ctx, c, &bf)
		if err != nil {
			return err
		}
		o, err := openPeerOutput(g, *out)
		if err != nil {
			return err
		}
		var id, key []byte
		if *keyFile != "" {
			if key, err = readHexKey(g, *keyFile); err == nil {
				var p *api.PSK
				if p, err = c.Import(ctx, spec, key); err == nil {
					id, err = hex.DecodeString(p.IdentityHex)
				}
			}
		} else {
			id, key, err = c.Create(ctx, spec)
		}
		defer clear(key)
		if err != nil {
			o.abort()
			return err
		}
		p, err := c.Get(ctx, id)
		var data []byte
		var kcv string
		if err == nil {
			data, kcv, err = peerData(p, key, me, &bf, wrap, nil, 0)
		}
		if err == nil {
			err = o.write(data)
			clear(data)
		} else {
			o.abort()
		}
		if err != nil {
			if derr := c.Delete(ctx, id); derr != nil {
				return fmt.Errorf("write the key for the peer: %w; deleting the new PSK %x also failed (%v): delete it", err, id, derr)
			}
			return fmt.Errorf("write the key for the peer: %w (the new PSK was deleted again)", err)
		}
		gi := o.info(g)
		if err := printRecord(gi, p, *asJSON); err != nil {
			return err
		}
		if !*asJSON {
			what := "bundle"
			if bf.format == "hex" {
				what = "EPSK (hex)"
			}
			where := *out + " (0600)"
			if *out == "-" {
				where = "standard output"
			}
			fmt.Fprintf(gi.stdout, "%s for the peer written to %s; key check value %s: compare it with the one the peer prints after 'pskvault psk import --bundle'\n", what, where, kcv)
		}
		if *keyFile != "" {
			removeHint(g, *keyFile, kcv)
		}
		return nil
	}
}

// displayIdentity shows printable identities as text, others as hex.
func displayIdentity(p api.PSK) string {
	if p.Identity != "" && strings.IndexFunc(p.Identity, func(r rune) bool { return r < 0x21 || r == 0x7f }) < 0 {
		return p.Identity
	}
	return "hex:" + p.IdentityHex
}

func setupShow(fs *flag.FlagSet, g *globals) func(context.Context, []string) error {
	var id identityFlags
	id.register(fs)
	asJSON := fs.Bool("json", false, "print JSON")
	return func(ctx context.Context, args []string) error {
		b, err := id.bytes()
		if err != nil {
			return err
		}
		p, err := g.client().Get(ctx, b)
		if err != nil {
			return err
		}
		return printRecord(g, p, *asJSON)
	}
}

func setupDelete(fs *flag.FlagSet, g *globals) func(context.Context, []string) error {
	var id identityFlags
	id.register(fs)
	asJSON := fs.Bool("json", false, "print JSON: deleted_hex")
	return func(ctx context.Context, args []string) error {
		b, err := id.bytes()
		if err != nil {
			return err
		}
		if err := g.client().Delete(ctx, b); err != nil {
			return err
		}
		if *asJSON {
			return writeJSON(g.stdout, deleteJSON{DeletedHex: hex.EncodeToString(b)})
		}
		fmt.Fprintf(g.stdout, "deleted PSK %x\n", b)
		return nil
	}
}

func printRecord(g *globals, p *api.PSK, asJSON bool) error {
	if asJSON {
		return json.NewEncoder(g.stdout).Encode(p)
	}
	tw := tabwriter.NewWriter(g.stdout, 2, 8, 2, ' ', 0)
	row := func(k, v string) { fmt.Fprintf(tw, "%s\t%s\n", k, v) }
	row("identity", displayIdentity(*p))
	row("identity_hex", p.IdentityHex)
	row("hash", p.Hash)
	row("key_bits", fmt.Sprint(p.KeyBits))
	row("client_node", p.ClientNode)
	row("server_node", p.ServerNode)
	row("targets", strings.Join(p.Targets, " "))
	row("state", p.State)
	row("origin", p.Origin)
	row("backend", p.Backend)
	row("created", p.Created.Format(time.RFC3339))
	if p.KCV != "" {
		row("key_check_value", p.KCV)
	}
	if !p.NotAfter.IsZero() {
		row("not_after", p.NotAfter.Format(time.RFC3339))
	}
	policyRows(row, p)
	warnPolicy(g, p)
	return tw.Flush()
}
