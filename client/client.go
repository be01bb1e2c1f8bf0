// Package client is the Go client for a pskvault daemon's Unix socket. The
// pskvault CLI uses it for everything but init; TLS stacks written in Go can
// use it too.
package client

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"syscall"
	"time"

	"github.com/pskvault/pskvault/api/wire"
)

// ErrNoDaemon reports that nothing listens on the socket.
var ErrNoDaemon = errors.New("no pskvault daemon is listening")

// Error is an error answer from the daemon.
type Error struct {
	Status  int
	Code    string
	Message string
	// A refused batch import (code batch_refused): how many entries the
	// daemon read, and each problem with its entry's index.
	Read    int
	Entries []wire.BatchEntryError
}

func (e *Error) Error() string { return e.Message }

// Client talks to one daemon. It is safe for concurrent use: each request
// takes its own pooled connection.
//
// Before it writes anything on a new connection the client checks who
// listens on the socket (SO_PEERCRED): root, the caller's own uid, the
// system user pskvault when it exists, a uid given with WithDaemonUID or
// in PSKVAULT_DAEMON_UID. Anyone else gets nothing, not even the request
// line, and the request fails with an *UntrustedDaemonError, so a user who
// took the socket path first can neither read an imported key nor answer
// with one of his own.
type Client struct {
	socket string
	rt     *syncTransport
	binary bool // lookup, offers and derive in the binary form (binary.go)
	trust  trust
}

// Timeout bounds a request whose context has no deadline of its own.
const Timeout = 60 * time.Second

// defaultTimeout is Timeout; tests shorten it.
var defaultTimeout = Timeout

// New returns a client for the daemon listening on socket. It reads
// PSKVAULT_DAEMON_UID once, here; a malformed value fails every request
// with ErrDaemonUID rather than being ignored.
func New(socket string, opts ...Option) *Client {
	c := &Client{socket: socket}
	c.trust.fromEnv()
	for _, o := range opts {
		o(c)
	}
	c.rt = newSyncTransport(socket, &c.trust)
	return c
}

// Close drops idle connections.
func (c *Client) Close() { c.rt.CloseIdleConnections() }

// cancelOnClose ends a request's own timeout once its answer is closed.
type cancelOnClose struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (b cancelOnClose) Close() error {
	err := b.ReadCloser.Close()
	b.cancel()
	return err
}

// do sends one request straight through the transport: no http.Client
// (which would add a timer goroutine per request), no redirects.
func (c *Client) do(ctx context.Context, method, path string, q url.Values, ctype string, body []byte) (*http.Response, error) {
	return c.doAccept(ctx, method, path, q, ctype, "", body)
}

// doAccept is do with an Accept header (none when accept is "").
func (c *Client) doAccept(ctx context.Context, method, path string, q url.Values, ctype, accept string, body []byte) (*http.Response, error) {
	return c.send(ctx, method, path, q, ctype, accept, bytes.NewReader(body))
}

// noTimeout in a request's context means no default Timeout: the request
// may take as long as its body does (a batch import, whose daemon bounds
// each entry instead).
type noTimeout struct{}

// doReader is do with a streamed body (sent chunked).
func (c *Client) doReader(ctx context.Context, method, path, ctype string, body io.Reader) (*http.Response, error) {
	return c.send(ctx, method, path, nil, ctype, "", body)
}

func (c *Client) send(ctx context.Context, method, path string, q url.Values, ctype, accept string, body io.Reader) (*http.Response, error) {
	if c.socket == "" {
		return nil, ErrNoSocket
	}
	if c.trust.err != nil {
		return nil, c.trust.err
	}
	u := "http://pskvault" + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	cancel := context.CancelFunc(func() {})
	if _, ok := ctx.Deadline(); !ok && ctx.Value(noTimeout{}) == nil {
		ctx, cancel = context.WithTimeout(ctx, defaultTimeout)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		cancel()
		return nil, err
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	resp, err := c.rt.RoundTrip(req)
	if err != nil {
		cancel()
		if errors.Is(err, ErrUntrustedDaemon) {
			return nil, err
		}
		if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED) {
			return nil, fmt.Errorf("%w on %s", ErrNoDaemon, c.socket)
		}
		return nil, fmt.Errorf("talk to daemon on %s: %w", c.socket, err)
	}
	resp.Body = cancelOnClose{resp.Body, cancel}
	if resp.StatusCode >= 300 {
		defer resp.Body.Close()
		e := &Error{Status: resp.StatusCode}
		raw, _ := io.ReadAll(io.LimitReader(resp.Body, 4*wire.MaxBody)) // a message may name two long identities
		var ae wire.Error
		if json.Unmarshal(raw, &ae) != nil || ae.Code == "" {
			ae.Code, ae.Message = "http_"+strconv.Itoa(resp.StatusCode), "daemon answered "+resp.Status
		}
		e.Code, e.Message, e.Read, e.Entries = ae.Code, ae.Message, ae.Read, ae.Entries
		return nil, e
	}
	return resp, nil
}

func (c *Client) getJSON(ctx context.Context, method, path string, q url.Values, ctype string, body []byte, out any) error {
	resp, err := c.do(ctx, method, path, q, ctype, body)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("decode daemon answer: %w", err)
	}
	return nil
}

// Status reports the daemon's node, backend and version.
func (c *Client) Status(ctx context.Context) (*wire.Status, error) {
	var s wire.Status
	return &s, c.getJSON(ctx, http.MethodGet, "/v1/status", nil, "", nil, &s)
}

// List returns every PSK record, following the pages (batch.go: ListPage
// and PSKs read them a page at a time).
func (c *Client) List(ctx context.Context) ([]wire.PSK, error) {
	out := []wire.PSK{}
	for p, err := range c.PSKs(ctx, 0) {
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, nil
}

// ref is the JSON body naming one PSK.
func ref(identity []byte) []byte {
	b, _ := json.Marshal(wire.IdentityRef{IdentityHex: hex.EncodeToString(identity)})
	return b
}

// Get returns one PSK record.
func (c *Client) Get(ctx context.Context, identity []byte) (*wire.PSK, error) {
	var p wire.PSK
	return &p, c.getJSON(ctx, http.MethodPost, "/v1/psks/show", nil, "application/json", ref(identity), &p)
}

// Delete destroys a PSK.
func (c *Client) Delete(ctx context.Context, identity []byte) error {
	return c.getJSON(ctx, http.MethodPost, "/v1/psks/delete", nil, "application/json", ref(identity), nil)
}

// PSKSpec describes a PSK to import or create.
type PSKSpec struct {
	Identity   []byte
	Hash       string // "sha256" (default) or "sha384"
	ClientNode string
	ServerNode string
	Targets    []string // "tls1.3/sha256", ...; empty: all
	NotAfter   time.Time
	Params     map[string]string // backend-specific
	Policy     PolicySpec        // RFC 9257 options (policy.go)
	// Bundle authenticates an import from a provisioning bundle: the
	// daemon keeps the key only if it verifies the bundle's MAC.
	Bundle *wire.BundleAuth
}

func (s PSKSpec) wire() wire.PSKSpec {
	w := wire.PSKSpec{Client: s.ClientNode, Server: s.ServerNode, Hash: s.Hash, Targets: s.Targets, Params: s.Params}
	if len(s.Identity) > 0 {
		w.IdentityHex = hex.EncodeToString(s.Identity)
	}
	if !s.NotAfter.IsZero() {
		w.NotAfter = s.NotAfter.UTC().Format(time.RFC3339)
	}
	s.Policy.addTo(&w)
	w.Bundle = s.Bundle
	return w
}

// Import stores an EPSK. key is sent raw after the metadata in the
// request's envelope body, never as JSON.
func (c *Client) Import(ctx context.Context, spec PSKSpec, key []byte) (*wire.PSK, error) {
	return c.importEnvelope(ctx, spec.wire(), key)
}

func (c *Client) importEnvelope(ctx context.Context, w wire.PSKSpec, key []byte) (*wire.PSK, error) {
	body, err := wire.MarshalEnvelope(w, key)
	if err != nil {
		return nil, err
	}
	defer clear(body)
	var p wire.PSK
	return &p, c.getJSON(ctx, http.MethodPost, "/v1/psks/import", nil, wire.ContentTypeEnvelope, body, &p)
}

// ImportWrapped stores a PRK wrapped for the daemon's hardware; keyBits is
// the EPSK size the provisioning side attests.
func (c *Client) ImportWrapped(ctx context.Context, spec PSKSpec, blob []byte, keyBits int) (*wire.PSK, error) {
	if keyBits <= 0 {
		return nil, fmt.Errorf("wrapped key bits must be positive, got %d", keyBits)
	}
	w := spec.wire()
	w.WrappedKeyBits = keyBits
	return c.importEnvelope(ctx, w, blob)
}

// Create has the daemon generate a 256-bit EPSK, store it, and return it for
// the peer. The caller delivers the key and then zeroes it.
func (c *Client) Create(ctx context.Context, spec PSKSpec) (identity, key []byte, err error) {
	body, err := json.Marshal(spec.wire())
	if err != nil {
		return nil, nil, err
	}
	resp, err := c.do(ctx, http.MethodPost, "/v1/psks/create", nil, "application/json", body)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	key, err = io.ReadAll(io.LimitReader(resp.Body, wire.MaxBody))
	if err != nil {
		clear(key)
		return nil, nil, fmt.Errorf("read created key: %w", err)
	}
	identity, err = hex.DecodeString(resp.Header.Get(wire.HeaderIdentity))
	if err != nil {
		clear(key)
		return nil, nil, fmt.Errorf("daemon sent a bad %s header", wire.HeaderIdentity)
	}
	return identity, key, nil
}

// DeriveRequest names an imported PSK to derive.
type DeriveRequest struct {
	Identity []byte
	Context  []byte
	Protocol string // "tls1.3" or "dtls1.3"
	KDF      string // "sha256" or "sha384"
	Peer     string // the peer node: required for group PSKs
	Role     string // this node's role, "client" or "server": required for group PSKs
}

// Derived is an imported PSK. IPSKX is secret: zero it after use.
type Derived struct {
	ImportedIdentity []byte
	IPSKX            []byte
	Response         wire.DeriveResponse // IPSKX field cleared
}

// Derive asks the daemon for an imported PSK.
func (c *Client) Derive(ctx context.Context, r DeriveRequest) (*Derived, error) {
	if c.binary {
		return c.deriveBinary(ctx, r)
	}
	body, _ := json.Marshal(wire.DeriveRequest{
		IdentityHex: hex.EncodeToString(r.Identity),
		ContextHex:  hex.EncodeToString(r.Context),
		Protocol:    r.Protocol,
		KDF:         r.KDF,
		Peer:        r.Peer,
		Role:        r.Role,
	})
	var resp wire.DeriveResponse
	if err := c.getJSON(ctx, http.MethodPost, "/v1/derive", nil, "application/json", body, &resp); err != nil {
		return nil, err
	}
	return derivedFrom(resp)
}

// Lookup is a TLS server's question: the key for the PskIdentity.identity
// bytes a ClientHello carried. expectContext, when non-nil, is the RFC 9258
// context the server requires; protocol and kdf ("" for any) the target it
// runs. Every refusal is the same *Error with Code "no_key".
func (c *Client) Lookup(ctx context.Context, wireIdentity, expectContext []byte, protocol, kdf string) (*Derived, error) {
	if c.binary {
		return c.lookupBinary(ctx, wireIdentity, expectContext, protocol, kdf)
	}
	req := wire.LookupRequest{IdentityHex: hex.EncodeToString(wireIdentity), Protocol: protocol, KDF: kdf}
	if expectContext != nil {
		h := hex.EncodeToString(expectContext)
		req.ContextHex = &h
	}
	body, _ := json.Marshal(req)
	var resp wire.DeriveResponse
	if err := c.getJSON(ctx, http.MethodPost, "/v1/lookup", nil, "application/json", body, &resp); err != nil {
		return nil, err
	}
	return derivedFrom(resp)
}

// Offer is one (imported identity, ipskx) pair to offer. IPSKX is secret.
type Offer struct {
	Identity         []byte // external identity
	ImportedIdentity []byte // what goes on the wire
	IPSKX            []byte
	Context          []byte // the RFC 9258 context used
	Hash             string
	NotAfter         time.Time
	// Policy is what the TLS stack must enforce with this key
	// (psk_dhe_ke_required, early_data_allowed, ...) and the PSK's
	// generation (Policy.Generation, 1 for a PSK never rotated).
	Policy wire.PSKPolicy
}

// Offers lists the imported PSKs a TLS client on this node offers to server
// node server, for one context and target ("tls1.3", "sha256"), newest
// generation first: offer the first one to move to a rotated link's new
// generation as soon as it exists.
func (c *Client) Offers(ctx context.Context, server string, context []byte, protocol, kdf string) ([]Offer, error) {
	if c.binary {
		return c.offersBinary(ctx, server, context, protocol, kdf)
	}
	body, _ := json.Marshal(wire.OffersRequest{Server: server, ContextHex: hex.EncodeToString(context), Protocol: protocol, KDF: kdf})
	var resp wire.OfferList
	if err := c.getJSON(ctx, http.MethodPost, "/v1/offers", nil, "application/json", body, &resp); err != nil {
		return nil, err
	}
	return offersFrom(resp.Offers)
}

// offersFrom decodes offers (or keys) answered in JSON.
func offersFrom(list []wire.Offer) ([]Offer, error) {
	out := make([]Offer, 0, len(list))
	for _, o := range list {
		var x Offer
		var e1, e2, e3, e4 error
		x.Identity, e1 = hex.DecodeString(o.IdentityHex)
		x.ImportedIdentity, e2 = hex.DecodeString(o.ImportedIdentity)
		x.IPSKX, e3 = hex.DecodeString(o.IPSKX)
		x.Context, e4 = hex.DecodeString(o.ContextHex)
		if e1 != nil || e2 != nil || e3 != nil || e4 != nil {
			for _, y := range out {
				clear(y.IPSKX)
			}
			clear(x.IPSKX)
			return nil, errors.New("daemon sent a malformed offer")
		}
		x.Hash, x.NotAfter, x.Policy = o.Hash, o.NotAfter, o.PSKPolicy
		out = append(out, x)
	}
	return out, nil
}

func derivedFrom(resp wire.DeriveResponse) (*Derived, error) {
	d := &Derived{Response: resp}
	var err error
	if d.ImportedIdentity, err = hex.DecodeString(resp.ImportedIdentity); err != nil {
		return nil, fmt.Errorf("daemon sent bad imported_identity: %w", err)
	}
	if d.IPSKX, err = hex.DecodeString(resp.IPSKX); err != nil {
		return nil, errors.New("daemon sent a malformed ipskx")
	}
	d.Response.IPSKX = ""
	return d, nil
}

// Watch waits until the caller's view (the PSKs it may derive now, and
// their policy) differs from the one named by since, or until wait ends
// (0: the daemon's default, 25 s; at most 50 s), and returns the view's
// current token and whether it changed. An empty since answers at once
// with the current token. The token is opaque: keep it for the next call.
// Changes to PSKs the caller may not derive are invisible: the answer
// then comes when wait ends, unchanged.
func (c *Client) Watch(ctx context.Context, since string, wait time.Duration) (token string, changed bool, err error) {
	req := wire.WatchRequest{Since: since}
	if wait > 0 {
		n := int((wait + time.Second - 1) / time.Second)
		req.WaitSeconds = &n
	}
	body, _ := json.Marshal(req)
	var resp wire.WatchResponse
	if err := c.getJSON(ctx, http.MethodPost, "/v1/watch", nil, "application/json", body, &resp); err != nil {
		return "", false, err
	}
	return resp.Token, resp.Changed, nil
}

// KeysRequest selects the keys this node holds in one role (pskvault agent).
type KeysRequest struct {
	Role     string // "client" or "server"
	Peer     string // only keys shared with this node; required for group PSKs
	Context  []byte
	Protocol string // "tls1.3" or "dtls1.3"
	KDF      string // "sha256" or "sha384"
}

// Keys lists the keys of every PSK the caller may derive in r.Role for one
// target, newest generation first. Each IPSKX is secret: zero it after use.
func (c *Client) Keys(ctx context.Context, r KeysRequest) ([]Offer, error) {
	body, _ := json.Marshal(wire.KeysRequest{Role: r.Role, Peer: r.Peer, ContextHex: hex.EncodeToString(r.Context), Protocol: r.Protocol, KDF: r.KDF})
	var resp wire.KeyList
	if err := c.getJSON(ctx, http.MethodPost, "/v1/keys", nil, "application/json", body, &resp); err != nil {
		return nil, err
	}
	return offersFrom(resp.Keys)
}
