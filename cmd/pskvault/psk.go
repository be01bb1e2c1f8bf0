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
	register(&command{name: "psk import", summary: "import an EPSK from a hex key file (or a wrapped blob)", setup: setupImport})
	register(&command{name: "psk create", summary: "generate a 256-bit EPSK, store it, write it for the peer", setup: setupCreate})
	register(&command{name: "psk list", summary: "list PSK records", setup: setupList})
	register(&command{name: "psk show", args: "", summary: "show one PSK record", setup: setupShow})
	register(&command{name: "psk delete", summary: "destroy a PSK in the backend and remove its record", setup: setupDelete})
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
	switch {
	case s.notAfter != "" && s.validFor != 0:
		return spec, usagef("give --not-after or --valid-for, not both")
	case s.notAfter != "":
		if spec.NotAfter, err = time.Parse(time.RFC3339, s.notAfter); err != nil {
			return spec, usagef("--not-after %q: want RFC 3339, e.g. 2027-01-02T15:04:05Z", s.notAfter)
		}
	case s.validFor < 0:
		return spec, usagef("--valid-for must be positive")
	case s.validFor > 0:
		spec.NotAfter = time.Now().Add(s.validFor)
	}
	for _, p := range s.params {
		k, v, ok := strings.Cut(p, "=")
		if !ok || k == "" {
			return spec, usagef("--param %q: want NAME=VALUE", p)
		}
		if spec.Params == nil {
			spec.Params = map[string]string{}
		}
		spec.Params[k] = v
	}
	return spec, nil
}

func setupImport(fs *flag.FlagSet, g *globals) func(context.Context, []string) error {
	var s specFlags
	s.register(fs)
	keyFile := fs.String("key-file", "", "hex EPSK `file`, or - for standard input (whitespace ignored)")
	wrapped := fs.String("wrapped", "", "import a wrapped PRK `blob` file made by 'pskvault wrap' instead of --key-file")
	wrappedBits := fs.Int("wrapped-key-bits", 256, "EPSK size in `bits` that the wrapped blob was made from")
	asJSON := fs.Bool("json", false, "print the record as JSON")
	return func(ctx context.Context, args []string) error {
		spec, err := s.spec()
		if err != nil {
			return err
		}
		var p *api.PSK
		switch {
		case (*keyFile == "") == (*wrapped == ""):
			return usagef("give exactly one of --key-file and --wrapped")
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
	out := fs.String("out", "", "`file` to write the new EPSK to, in hex, for the peer (created 0600, never overwritten)")
	asJSON := fs.Bool("json", false, "print the record as JSON")
	return func(ctx context.Context, args []string) error {
		spec, err := s.spec()
		if err != nil {
			return err
		}
		if *out == "" {
			return usagef("--out is required: the peer needs the key")
		}
		f, err := createSecretFile(*out)
		if err != nil {
			return err
		}
		c := g.client()
		id, key, err := c.Create(ctx, spec)
		if err != nil {
			f.Close()
			os.Remove(*out)
			return err
		}
		err = writeHexKey(f, key)
		clear(key)
		if err != nil {
			os.Remove(*out)
			c.Delete(ctx, id)
			return fmt.Errorf("write %s: %w (the new PSK was deleted again)", *out, err)
		}
		p, err := c.Get(ctx, id)
		if err != nil {
			return err
		}
		if err := printRecord(g, p, *asJSON); err != nil {
			return err
		}
		if !*asJSON {
			fmt.Fprintf(g.stdout, "EPSK for the peer written to %s (0600): deliver it over a secure channel, import it on the peer, then delete the file\n", *out)
		}
		return nil
	}
}

func setupList(fs *flag.FlagSet, g *globals) func(context.Context, []string) error {
	asJSON := fs.Bool("json", false, "print JSON")
	return func(ctx context.Context, args []string) error {
		psks, err := g.client().List(ctx)
		if err != nil {
			return err
		}
		if *asJSON {
			return json.NewEncoder(g.stdout).Encode(api.PSKList{PSKs: psks})
		}
		tw := tabwriter.NewWriter(g.stdout, 2, 8, 2, ' ', 0)
		fmt.Fprintln(tw, "IDENTITY\tHASH\tBITS\tCLIENT\tSERVER\tSTATE\tNOT AFTER")
		for _, p := range psks {
			na := "-"
			if !p.NotAfter.IsZero() {
				na = p.NotAfter.Format(time.RFC3339)
			}
			fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\t%s\n", displayIdentity(p), p.Hash, p.KeyBits, p.ClientNode, p.ServerNode, p.State, na)
		}
		return tw.Flush()
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
	return func(ctx context.Context, args []string) error {
		b, err := id.bytes()
		if err != nil {
			return err
		}
		if err := g.client().Delete(ctx, b); err != nil {
			return err
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
	if !p.NotAfter.IsZero() {
		row("not_after", p.NotAfter.Format(time.RFC3339))
	}
	policyRows(row, p)
	warnPolicy(g, p)
	return tw.Flush()
}
