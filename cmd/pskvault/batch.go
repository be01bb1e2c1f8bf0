package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/pskvault/pskvault/api/wire"
	"github.com/pskvault/pskvault/bundle"
	"github.com/pskvault/pskvault/client"
)

// psk import --batch: what a provisioning run produced, imported many PSKs
// per request (docs/API.md, "Batch import").
//
// The input is a directory of bundles (what 'pskvault fleet provision'
// writes for a node: OUT/NODE/*.bundle), or a file or standard input
// holding, in any mix:
//   - bundles, one after another (each from its "pskvault-bundle 1" line
//     to its "mac:" line), as 'psk create --out' and fleet write them;
//   - JSON entries, one per line: the fields of the import request
//     (docs/API.md, PSKSpec: identity or identity_hex, client, server, ...)
//     and "key_hex", the EPSK in hex (or with wrapped_key_bits, the wrapped
//     PRK in hex).
//
// Blank lines and lines starting with '#' are skipped. Entries are read
// and sent as they come, never the whole input at once; every --batch-size
// entries make one request, which the daemon imports all or nothing.

// batchInput yields the entries of a batch input one at a time, each with
// a label ("FILE:LINE" or a bundle's file name) for messages.
type batchInput struct {
	g     *globals
	me    string // this node, for the bundles' for-node
	r     *bufio.Reader
	name  string
	line  int
	files []string // a directory's bundles, when reading one
	// bundles counts bundles read, whose key check values are compared
	// with the daemon's.
	bundles int
}

func openBatchInput(g *globals, path, me string) (*batchInput, func(), error) {
	in := &batchInput{g: g, me: me, name: path}
	if path == "-" {
		in.r, in.name = bufio.NewReaderSize(g.stdin, 64<<10), "stdin"
		return in, func() {}, nil
	}
	f, err := os.OpenFile(path, os.O_RDONLY|noFollow, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("read batch: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("read batch: %w", err)
	}
	if fi.IsDir() {
		f.Close()
		ents, err := os.ReadDir(path)
		if err != nil {
			return nil, nil, fmt.Errorf("read batch directory: %w", err)
		}
		for _, e := range ents { // sorted by name
			if e.Type().IsRegular() && strings.HasSuffix(e.Name(), ".bundle") {
				in.files = append(in.files, filepath.Join(path, e.Name()))
			}
		}
		if len(in.files) == 0 {
			return nil, nil, fmt.Errorf("batch directory %s holds no *.bundle file", path)
		}
		return in, func() {}, nil
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, nil, fmt.Errorf("read batch: %s is not a regular file or directory", path)
	}
	if m := fi.Mode().Perm(); m&0o044 != 0 {
		f.Close()
		return nil, nil, withHint(fmt.Errorf("batch file %s can be read by other users (mode %04o)", path, m),
			"it holds keys: 'chmod 600 %s' if nobody else has read it, else treat the keys as compromised", path)
	}
	in.r = bufio.NewReaderSize(f, 64<<10)
	return in, func() { f.Close() }, nil
}

// secretHex is a hex JSON string decoded straight into bytes, so that the
// key never sits in an immutable Go string.
type secretHex []byte

func (s *secretHex) UnmarshalJSON(b []byte) error {
	if len(b) < 2 || b[0] != '"' || b[len(b)-1] != '"' {
		return errors.New("key_hex: want a string of hex digits")
	}
	b = b[1 : len(b)-1]
	out := make([]byte, hex.DecodedLen(len(b)))
	if _, err := hex.Decode(out, b); err != nil {
		clear(out)
		return errors.New("key_hex: not hex") // never quote the key
	}
	*s = out
	return nil
}

// batchLine is a JSON entry of a batch file.
type batchLine struct {
	wire.PSKSpec
	KeyHex secretHex `json:"key_hex"`
}

// next returns the next entry and its label; io.EOF at the end.
func (in *batchInput) next() (*client.BatchEntry, string, error) {
	if in.r == nil { // a directory
		if len(in.files) == 0 {
			return nil, "", io.EOF
		}
		path := in.files[0]
		in.files = in.files[1:]
		raw, err := readSecretInput(in.g, path, bundle.MaxSize, "bundle")
		if err != nil {
			return nil, path, err
		}
		defer clear(raw)
		e, err := in.fromBundle(raw)
		return e, filepath.Base(path), err
	}
	for {
		l, err := in.readLine()
		if err != nil {
			return nil, "", err
		}
		in.line++
		label := fmt.Sprintf("%s:%d", in.name, in.line)
		t := bytes.TrimSpace(l)
		switch {
		case len(t) == 0 || t[0] == '#':
			clear(l)
			continue
		case t[0] == '{':
			e, err := fromJSONLine(t)
			clear(l)
			return e, label, err
		case string(t) == bundle.Magic:
			raw := append(make([]byte, 0, 4096), l...)
			clear(l)
			for done := false; !done; {
				if l, err = in.readLine(); err != nil {
					clear(raw)
					if err == io.EOF {
						err = fmt.Errorf("%s: the bundle starting here has no mac line", label)
					}
					return nil, label, err
				}
				in.line++
				if len(raw)+len(l) > bundle.MaxSize {
					clear(raw)
					clear(l)
					return nil, label, fmt.Errorf("%s: bundle over %d bytes", label, bundle.MaxSize)
				}
				raw = append(raw, l...)
				done = bytes.HasPrefix(l, []byte("mac: "))
				clear(l)
			}
			e, err := in.fromBundle(raw)
			clear(raw)
			return e, label, err
		default:
			clear(l)
			return nil, label, fmt.Errorf("%s: neither a JSON entry ({...}) nor a bundle (%q)", label, bundle.Magic)
		}
	}
}

// readLine reads one line, newline included (none at the end of input).
func (in *batchInput) readLine() ([]byte, error) {
	var out []byte
	for {
		frag, err := in.r.ReadSlice('\n')
		out = append(out, frag...)
		clear(frag)
		if len(out) > wire.MaxBody {
			clear(out)
			return nil, fmt.Errorf("%s:%d: line over %d bytes", in.name, in.line+1, wire.MaxBody)
		}
		switch {
		case err == nil:
			return out, nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case err == io.EOF && len(out) > 0:
			return out, nil
		default:
			return nil, err
		}
	}
}

// ignoreJSON skips a value without copying it.
type ignoreJSON struct{}

func (*ignoreJSON) UnmarshalJSON([]byte) error { return nil }

// batchLineFields are the names a JSON entry may use.
var batchLineFields = func() []string {
	out := []string{"key_hex"}
	t := reflect.TypeOf(wire.PSKSpec{})
	for i := range t.NumField() {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ",")
		out = append(out, name)
	}
	return out
}()

func fromJSONLine(t []byte) (*client.BatchEntry, error) {
	// json.Unmarshal works on t in place (a json.Decoder would copy the
	// line, key and all, into a buffer nobody wipes); unknown names are
	// refused as a strict decoder would.
	var names map[string]ignoreJSON
	if err := json.Unmarshal(t, &names); err != nil {
		return nil, fmt.Errorf("JSON entry: %v", err)
	}
	for name := range names {
		if !slices.ContainsFunc(batchLineFields, func(f string) bool { return strings.EqualFold(f, name) }) {
			return nil, fmt.Errorf("JSON entry: unknown field %q", name)
		}
	}
	var l batchLine
	if err := json.Unmarshal(t, &l); err != nil {
		clear(l.KeyHex)
		return nil, fmt.Errorf("JSON entry: %v", err)
	}
	if len(l.KeyHex) == 0 {
		return nil, errors.New("JSON entry: key_hex is required")
	}
	s := l.PSKSpec
	spec := client.PSKSpec{ClientNode: s.Client, ServerNode: s.Server, Hash: s.Hash, Targets: s.Targets, Params: s.Params, Bundle: s.Bundle,
		Policy: client.PolicySpec{AllowLowEntropy: s.AllowLowEntropy, AllowPSKKE: s.AllowPSKKE, AllowEarlyData: s.AllowEarlyData, Group: s.Group,
			NodeContext: s.NodeContext, Provenance: s.Provenance, RandomIdentity: s.RandomIdentity, AllowIdentityWarnings: s.AllowIdentityWarnings,
			Finalize: s.Finalize, Stack: s.Stack}}
	switch {
	case s.Identity != "" && s.IdentityHex != "":
		clear(l.KeyHex)
		return nil, errors.New("JSON entry: give identity or identity_hex, not both")
	case s.Identity != "":
		spec.Identity = []byte(s.Identity)
	case s.IdentityHex != "":
		id, err := hex.DecodeString(s.IdentityHex)
		if err != nil || len(id) == 0 {
			clear(l.KeyHex)
			return nil, errors.New("JSON entry: identity_hex is not a non-empty hex string")
		}
		spec.Identity = id
	}
	if s.NotAfter != "" {
		t, err := time.Parse(time.RFC3339, s.NotAfter)
		if err != nil {
			clear(l.KeyHex)
			return nil, errors.New("JSON entry: not_after: want RFC 3339")
		}
		spec.NotAfter = t
	}
	return &client.BatchEntry{Spec: spec, Key: l.KeyHex, WrappedKeyBits: s.WrappedKeyBits}, nil
}

// fromBundle turns a bundle into an entry, with the checks psk import
// --bundle makes before it sends anything (importBundle).
func (in *batchInput) fromBundle(raw []byte) (*client.BatchEntry, error) {
	b, err := bundle.Parse(raw)
	if err != nil {
		return nil, err
	}
	fail := func(err error) (*client.BatchEntry, error) { clear(b.Key); return nil, err }
	switch {
	case b.ForNode != in.me:
		return fail(fmt.Errorf("%w: it is for node %s, this vault is node %s", errNotForThisNode, b.ForNode, in.me))
	case !slices.Contains(append(slices.Clone(b.Group), b.Client, b.Server), in.me):
		return fail(fmt.Errorf("%w: node %s is not a node of the PSK it carries", errNotForThisNode, in.me))
	case len(b.Rotates) > 0:
		return fail(fmt.Errorf("a rotation bundle (next generation of %x) cannot go in a batch: import it with 'psk import --bundle'", b.Rotates))
	}
	now := time.Now()
	if now.Add(5 * time.Minute).Before(b.NotBefore) {
		return fail(fmt.Errorf("bundle not valid before %s (check this host's clock)", b.NotBefore.Format(time.RFC3339)))
	}
	if !b.NotAfter.IsZero() && !now.Before(b.NotAfter) {
		return fail(fmt.Errorf("bundle expired at %s", b.NotAfter.Format(time.RFC3339)))
	}
	var params map[string]string
	if b.WrappingKey != "" {
		params = map[string]string{"wrapping-key": b.WrappingKey}
	}
	wrappedBits := 0
	if b.KeyKind != bundle.KeyClear {
		wrappedBits = b.KeyBits
	}
	in.bundles++
	spec := client.PSKSpec{Identity: b.Identity, Hash: b.Hash.String(), ClientNode: b.Client, ServerNode: b.Server,
		Targets: b.Targets, NotAfter: b.NotAfter, Params: params,
		Bundle: &wire.BundleAuth{Data: string(b.Authenticated()), MACHex: hex.EncodeToString(b.MAC)},
		Policy: client.PolicySpec{AllowPSKKE: !b.DHERequired, AllowEarlyData: b.EarlyData, Group: b.Group,
			NodeContext: b.NodeContext, Provenance: fmt.Sprintf("bundle (%s key) for %s", b.KeyKind, b.ForNode)}}
	return &client.BatchEntry{Spec: spec, Key: b.Key, WrappedKeyBits: wrappedBits}, nil
}

// importBatchInput sends the input in batches of size entries.
func importBatchInput(ctx context.Context, g *globals, path string, size int, asJSON bool) error {
	if size <= 0 || size > wire.MaxBatchEntries {
		return usagef("--batch-size: want 1 to %d", wire.MaxBatchEntries)
	}
	c := g.client()
	st, err := c.Status(ctx)
	if err != nil {
		return err
	}
	in, closeIn, err := openBatchInput(g, path, st.NodeID)
	if err != nil {
		return err
	}
	defer closeIn()
	enc := json.NewEncoder(g.stdout)
	total, batches := 0, 0
	start := time.Now()
	for {
		// The first entry of the next batch: none means the input is done.
		first, label, err := in.next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return batchInputErr(total, label, err)
		}
		labels := []string{label}
		kcvs := []string{}
		var inputErr error
		n := 0
		res, err := c.ImportBatch(ctx, func() (*client.BatchEntry, error) {
			if n == 0 {
				n++
				kcvs = append(kcvs, bundleKCV(first))
				return first, nil
			}
			if n == size {
				return nil, io.EOF
			}
			e, label, err := in.next()
			if err != nil {
				if err != io.EOF {
					inputErr = batchInputErr(total+n, label, err)
				}
				return nil, err
			}
			n++
			labels = append(labels, label)
			kcvs = append(kcvs, bundleKCV(e))
			return e, nil
		})
		if inputErr != nil {
			return fmt.Errorf("%w (the batch of entries %d on was not sent whole, so none of it was imported; %d entries imported before it)", inputErr, total, total)
		}
		if err != nil {
			return batchRefused(g, err, total, labels)
		}
		batches++
		if asJSON {
			if err := enc.Encode(res); err != nil {
				return err
			}
		} else {
			fmt.Fprintf(g.stdout, "batch %d: imported %d PSK(s) (entries %d-%d)\n", batches, res.Imported, total, total+res.Imported-1)
		}
		for i, p := range res.PSKs {
			if i < len(kcvs) && kcvs[i] != "" && kcvs[i] != p.KCV {
				return fmt.Errorf("entry %d (%s) imported, but its key check value here is %s, the bundle says %s: delete PSK %s and ask for a new bundle", total+i, labels[i], p.KCV, kcvs[i], p.IdentityHex)
			}
		}
		total += res.Imported
	}
	if !asJSON {
		el := time.Since(start)
		fmt.Fprintf(g.stdout, "imported %d PSK(s) in %d batch(es) in %.1fs\n", total, batches, el.Seconds())
		if in.bundles > 0 {
			fmt.Fprintf(g.stdout, "key check values of the %d bundle(s) match the daemon's\n", in.bundles)
		}
	}
	return nil
}

// bundleKCV is the key check value a bundle entry carries ("" for a JSON
// entry): its authenticated text says it.
func bundleKCV(e *client.BatchEntry) string {
	if e.Spec.Bundle == nil {
		return ""
	}
	for _, l := range strings.Split(e.Spec.Bundle.Data, "\n") {
		if v, ok := strings.CutPrefix(l, "key-check-value: "); ok {
			return v
		}
	}
	return ""
}

func batchInputErr(index int, label string, err error) error {
	if label == "" {
		return fmt.Errorf("batch input, entry %d: %w", index, err)
	}
	return fmt.Errorf("batch input, entry %d (%s): %w", index, label, err)
}

// batchRefused reports a refused batch: each problem with its entry's
// index in the whole input and its label, and what was imported before.
func batchRefused(g *globals, err error, before int, labels []string) error {
	var ce *client.Error
	if !errors.As(err, &ce) || ce.Code != wire.CodeBatchRefused {
		return fmt.Errorf("%w (this batch, from entry %d on, was not imported; %d entries were imported before it)", err, before, before)
	}
	for _, e := range ce.Entries {
		label := ""
		if e.Index < len(labels) {
			label = " (" + labels[e.Index] + ")"
		}
		fmt.Fprintf(g.stderr, "pskvault: entry %d%s: %s [%s]\n", before+e.Index, label, e.Message, e.Code)
	}
	return fmt.Errorf("batch refused, none of its entries imported (entries %d on; %d entries were imported by earlier batches): %d problem(s), listed above", before, before, len(ce.Entries))
}
