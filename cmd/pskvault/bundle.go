package main

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/pskvault/pskvault/api"
	"github.com/pskvault/pskvault/bundle"
	"github.com/pskvault/pskvault/client"
	"github.com/pskvault/pskvault/importer"
	"github.com/pskvault/pskvault/vault"
)

// noFollow: a key or bundle file is never read through a symlink.
const noFollow = syscall.O_NOFOLLOW

// errNotForThisNode: a bundle made for another node.
var errNotForThisNode = errors.New("bundle is not for this node")

// bundleOutFlags are the flags of psk create and psk rotate that shape what
// is written for the peer (docs/BUNDLE.md).
type bundleOutFlags struct {
	format  string
	forNode string
	kekName string
	wraps   []activeWrapper
}

type activeWrapper struct {
	name  string
	given func() bool
	wrap  func([]byte, importer.Hash) ([]byte, error)
}

func (f *bundleOutFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.format, "format", "bundle", "what --out gets: bundle (the key with its policy, authenticated; docs/BUNDLE.md) or hex (the bare EPSK, for peers without pskvault)")
	fs.StringVar(&f.forNode, "for", "", "the `node` the bundle is for (default: the other node of a pairwise PSK; required for a group PSK)")
	fs.StringVar(&f.kekName, "wrapping-key", "", "with --pkcs11-kek: the `label` of that key-encryption key on the peer's token")
	for _, w := range wrappers {
		given, wrap := w.flags(fs)
		f.wraps = append(f.wraps, activeWrapper{w.name, given, wrap})
	}
}

// check validates the flags; it returns the wrapper chosen (nil: the key
// goes in clear).
func (f *bundleOutFlags) check() (*activeWrapper, error) {
	var chosen []*activeWrapper
	for i := range f.wraps {
		if f.wraps[i].given() {
			chosen = append(chosen, &f.wraps[i])
		}
	}
	switch {
	case f.format != "bundle" && f.format != "hex":
		return nil, usagef("--format %q: want bundle or hex", f.format)
	case f.format == "hex" && (len(chosen) > 0 || f.forNode != "" || f.kekName != ""):
		return nil, usagef("--for, --wrapping-key and the wrapping flags are for --format bundle")
	case len(chosen) > 1:
		return nil, usagef("wrap for one kind of hardware only")
	case len(chosen) == 1 && chosen[0].name == bundle.KeyPKCS11 && f.kekName == "":
		return nil, usagef("--pkcs11-kek needs --wrapping-key LABEL, the key's label on the peer's token")
	case f.kekName != "" && (len(chosen) == 0 || chosen[0].name != bundle.KeyPKCS11):
		return nil, usagef("--wrapping-key goes with --pkcs11-kek")
	case len(chosen) == 1:
		return chosen[0], nil
	}
	return nil, nil
}

// bundleNode is this vault's node id, which a bundle needs (to name the
// peer it is for); "" for --format hex, which asks the daemon nothing more.
func bundleNode(ctx context.Context, c *client.Client, f *bundleOutFlags) (string, error) {
	if f.format != "bundle" {
		return "", nil
	}
	st, err := c.Status(ctx)
	if err != nil {
		return "", err
	}
	return st.NodeID, nil
}

// peerOutput opens where the key for the peer goes: a new 0600 file, or
// standard output for "-". The record is then printed to stderr.
type peerOutput struct {
	path string
	f    *os.File
	w    io.Writer
}

func openPeerOutput(g *globals, path string) (*peerOutput, error) {
	if path == "-" {
		return &peerOutput{path: path, w: g.stdout}, nil
	}
	f, err := createSecretFile(path)
	if err != nil {
		return nil, err
	}
	return &peerOutput{path: path, f: f, w: f}, nil
}

// abort removes a file that was not completely written.
func (o *peerOutput) abort() {
	if o.f != nil {
		o.f.Close()
		os.Remove(o.path)
	}
}

func (o *peerOutput) write(b []byte) error {
	_, err := o.w.Write(b)
	if o.f != nil {
		err = errors.Join(err, o.f.Sync(), o.f.Close())
		if err != nil {
			os.Remove(o.path)
		}
	}
	return err
}

// info is where messages go: stderr when the key went to stdout.
func (o *peerOutput) info(g *globals) *globals {
	if o.f != nil {
		return g
	}
	g2 := *g
	g2.stdout = g.stderr
	return &g2
}

// peerData is what --out gets for a new PSK (or generation) p with EPSK
// epsk: hex, or a sealed bundle. The caller wipes it.
func peerData(p *api.PSK, epsk []byte, me string, f *bundleOutFlags, wrap *activeWrapper, rotates []byte, overlap time.Duration) (data []byte, kcv string, err error) {
	h, err := importer.ParseHash(p.Hash)
	if err != nil {
		return nil, "", err
	}
	prk, err := importer.Extract(h, epsk)
	if err != nil {
		return nil, "", err
	}
	defer clear(prk)
	kcv = vault.KCVFromPRK(h, prk)
	if p.KCV != "" && p.KCV != kcv {
		return nil, "", fmt.Errorf("the daemon's key check value %s is not the key's %s", p.KCV, kcv)
	}
	if f.format == "hex" {
		data = make([]byte, hex.EncodedLen(len(epsk))+1)
		hex.Encode(data, epsk)
		data[len(data)-1] = '\n'
		return data, kcv, nil
	}
	id, err := hex.DecodeString(p.IdentityHex)
	if err != nil {
		return nil, "", err
	}
	forNode := f.forNode
	switch {
	case forNode != "":
	case p.Kind == "group":
		return nil, "", usagef("--for NODE is required for a group PSK: a bundle is for one node")
	case p.ClientNode == me:
		forNode = p.ServerNode
	default:
		forNode = p.ClientNode
	}
	if forNode == me {
		return nil, "", usagef("--for %s: that is this node; the bundle is for the peer", forNode)
	}
	if !slices.Contains(append(slices.Clone(p.Group), p.ClientNode, p.ServerNode), forNode) {
		return nil, "", usagef("--for %s: not a node of this PSK", forNode)
	}
	b := &bundle.Bundle{
		ForNode: forNode, Identity: id, Client: p.ClientNode, Server: p.ServerNode, Group: p.Group,
		NodeContext: p.NodeContext, Hash: h, Targets: p.Targets, DHERequired: p.DHERequired, EarlyData: p.EarlyData,
		NotBefore: p.Created, NotAfter: p.NotAfter, Generation: max(p.Generation, 1), KeyBits: p.KeyBits, KCV: kcv,
		KeyKind: bundle.KeyClear,
	}
	if len(rotates) > 0 {
		b.Rotates, b.Overlap = rotates, overlap
	}
	if wrap == nil {
		b.Key = bytes.Clone(epsk)
	} else {
		if b.Key, err = wrap.wrap(prk, h); err != nil {
			return nil, "", fmt.Errorf("wrap for %s: %w", wrap.name, err)
		}
		b.KeyKind, b.WrappingKey = wrap.name, f.kekName
	}
	defer clear(b.Key)
	mk := vault.BundleMACKeyFromPRK(h, prk)
	b.Seal(mk)
	clear(mk)
	return b.Marshal(), kcv, nil
}

// readSecretInput reads a key or bundle file, or standard input for "-",
// refusing a file that group or others can read. At most limit bytes.
func readSecretInput(g *globals, path string, limit int64, what string) ([]byte, error) {
	var r io.Reader = g.stdin
	if path != "-" {
		f, err := os.OpenFile(path, os.O_RDONLY|noFollow, 0)
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", what, err)
		}
		defer f.Close()
		fi, err := f.Stat()
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", what, err)
		}
		if !fi.Mode().IsRegular() {
			return nil, fmt.Errorf("read %s: %s is not a regular file", what, path)
		}
		if m := fi.Mode().Perm(); m&0o044 != 0 {
			return nil, withHint(fmt.Errorf("%s %s can be read by other users (mode %04o)", what, path, m),
				"it holds a key: 'chmod 600 %s' if nobody else has read it, else treat the key as compromised; remove the file after the import ('shred -u %s')", path, path)
		}
		r = f
	}
	raw, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		clear(raw)
		return nil, fmt.Errorf("read %s: %w", what, err)
	}
	if int64(len(raw)) > limit {
		clear(raw)
		return nil, fmt.Errorf("read %s: over %d bytes", what, limit)
	}
	return raw, nil
}

// removeHint tells the operator to delete a file that held a key in clear.
func removeHint(g *globals, path, kcv string) {
	if path == "-" {
		return
	}
	fmt.Fprintf(g.stderr, "pskvault: hint: %s still holds the key in clear: once both ends show key check value %s, remove it ('shred -u %s')\n", path, kcv, path)
}

// importBundle is psk import --bundle. Flags beside it may only narrow
// the bundle's policy.
func importBundle(ctx context.Context, g *globals, fs *flag.FlagSet, s *specFlags, path string, asJSON bool) error {
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	for _, name := range []string{"identity", "identity-hex", "client", "server", "hash", "group", "allow-low-entropy",
		"allow-psk-ke", "allow-early-data", "random-identity", "allow-identity-warnings", "key-file", "wrapped", "wrapped-key-bits"} {
		if set[name] {
			return usagef("--%s cannot be given with --bundle: the bundle sets it, and flags beside --bundle may only narrow its policy (--target, --not-after, --valid-for, --node-context, --finalize, --param, --source, --stack)", name)
		}
	}
	raw, err := readSecretInput(g, path, bundle.MaxSize, "bundle")
	if err != nil {
		return err
	}
	defer clear(raw)
	b, err := bundle.Parse(raw)
	if err != nil {
		return err
	}
	defer clear(b.Key)
	c := g.client()
	st, err := c.Status(ctx)
	if err != nil {
		return err
	}
	me := st.NodeID
	if b.ForNode != me {
		return withHint(fmt.Errorf("%w: it is for node %s, this vault is node %s", errNotForThisNode, b.ForNode, me), "import it on %s; each node gets its own bundle", b.ForNode)
	}
	if !slices.Contains(append(slices.Clone(b.Group), b.Client, b.Server), me) {
		return fmt.Errorf("%w: node %s is not a node of the PSK it carries", errNotForThisNode, me)
	}
	now := time.Now()
	if now.Add(5 * time.Minute).Before(b.NotBefore) {
		return fmt.Errorf("bundle not valid before %s (check this host's clock)", b.NotBefore.Format(time.RFC3339))
	}
	if !b.NotAfter.IsZero() && !now.Before(b.NotAfter) {
		return fmt.Errorf("bundle expired at %s", b.NotAfter.Format(time.RFC3339))
	}
	// Narrowing flags.
	targets := b.Targets
	if set["target"] {
		for _, t := range s.targets {
			if !slices.Contains(b.Targets, t) {
				return fmt.Errorf("--target %s widens the bundle's targets (%s): flags beside --bundle may only narrow", t, strings.Join(b.Targets, ","))
			}
		}
		targets = s.targets
	}
	notAfter := b.NotAfter
	if set["not-after"] || set["valid-for"] {
		spec, err := s.validity()
		if err != nil {
			return err
		}
		if !b.NotAfter.IsZero() && spec.After(b.NotAfter) {
			return fmt.Errorf("--not-after/--valid-for %s is later than the bundle's not-after %s: flags beside --bundle may only narrow", spec.Format(time.RFC3339), b.NotAfter.Format(time.RFC3339))
		}
		notAfter = spec
	}
	params, err := s.paramMap()
	if err != nil {
		return err
	}
	if b.WrappingKey != "" {
		if v, ok := params["wrapping-key"]; ok && v != b.WrappingKey {
			return fmt.Errorf("--param wrapping-key=%s: the bundle is wrapped under %s", v, b.WrappingKey)
		}
		if params == nil {
			params = map[string]string{}
		}
		params["wrapping-key"] = b.WrappingKey
	}
	provenance := s.pol.source
	if provenance == "" {
		provenance = fmt.Sprintf("bundle (%s key) for %s", b.KeyKind, b.ForNode)
	}
	auth := &api.BundleAuth{Data: string(b.Authenticated()), MACHex: hex.EncodeToString(b.MAC)}
	wrappedBits := 0
	if b.KeyKind != bundle.KeyClear {
		wrappedBits = b.KeyBits
	}
	var p *api.PSK
	if len(b.Rotates) > 0 {
		for _, name := range []string{"target", "not-after", "valid-for", "node-context", "finalize", "stack"} {
			if set[name] {
				return usagef("--%s: a rotation bundle makes the next generation of %x, which keeps that generation's policy", name, b.Rotates)
			}
		}
		old, err := c.Get(ctx, b.Rotates)
		if err != nil {
			return withHint(fmt.Errorf("the generation this bundle rotates, %x: %w", b.Rotates, err), "import that generation's bundle first")
		}
		if d := policyDiff(old, b); d != "" {
			return fmt.Errorf("the bundle's policy differs from generation %x here (%s): refusing the rotation", b.Rotates, d)
		}
		nid, _, err := c.Rotate(ctx, b.Rotates, client.RotateSpec{NewIdentity: b.Identity, Overlap: b.Overlap, NotAfter: b.NotAfter,
			Provenance: provenance, WrappedKeyBits: wrappedBits, Params: params, Bundle: auth}, b.Key)
		if err != nil {
			return err
		}
		if p, err = c.Get(ctx, nid); err != nil {
			return err
		}
	} else {
		spec := client.PSKSpec{Identity: b.Identity, Hash: b.Hash.String(), ClientNode: b.Client, ServerNode: b.Server,
			Targets: targets, NotAfter: notAfter, Params: params, Bundle: auth,
			Policy: client.PolicySpec{AllowPSKKE: !b.DHERequired, AllowEarlyData: b.EarlyData, Group: b.Group,
				NodeContext: b.NodeContext || s.pol.nodeContext, Provenance: provenance, Finalize: s.pol.finalize, Stack: s.pol.stack}}
		if wrappedBits > 0 {
			p, err = c.ImportWrapped(ctx, spec, b.Key, wrappedBits)
		} else {
			p, err = c.Import(ctx, spec, b.Key)
		}
		if err != nil {
			return err
		}
	}
	if p.KCV != b.KCV {
		return fmt.Errorf("imported, but the key check value here is %s, the bundle says %s: delete the PSK and ask for a new bundle", p.KCV, b.KCV)
	}
	if err := printRecord(g, p, asJSON); err != nil {
		return err
	}
	if !asJSON {
		fmt.Fprintf(g.stdout, "imported from a bundle for %s; key check value %s: it must match the one printed where the bundle was made\n", me, p.KCV)
	}
	if b.KeyKind == bundle.KeyClear {
		removeHint(g, path, p.KCV)
	}
	return nil
}

// policyDiff names the first policy field where a rotation bundle and the
// generation it rotates here differ; "" when they agree.
func policyDiff(old *api.PSK, b *bundle.Bundle) string {
	switch {
	case old.ClientNode != b.Client || old.ServerNode != b.Server || !slices.Equal(old.Group, b.Group):
		return "nodes"
	case old.Hash != b.Hash.String():
		return "hash"
	case old.NodeContext != b.NodeContext:
		return "node context"
	case old.DHERequired != b.DHERequired:
		return "psk_dhe_ke"
	case old.EarlyData != b.EarlyData:
		return "early data"
	case !slices.Equal(old.Targets, b.Targets):
		return "targets"
	}
	return ""
}
