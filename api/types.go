// Package api is pskvault's local socket protocol: HTTP/1.1 with JSON bodies
// over a Unix socket, under versioned paths (/v1/...). It holds the server
// that turns requests into vault calls. The wire types it shares with the
// Go client (package client) live in package api/wire, which depends on
// the standard library and package importer only; this package re-exports
// them (wire_aliases.go) so server code names them as before.
//
// Key material crosses the socket in exactly two places, never as JSON except
// the derived key: an EPSK being imported travels raw after the JSON
// metadata of POST /v1/psks/import's envelope body (bodies.go), a generated EPSK as
// the raw body of the POST /v1/psks/create response, and a derived key as the
// "ipskx" field of a derive response.
package api

import (
	"encoding/hex"
	"unicode/utf8"

	"github.com/pskvault/pskvault/vault"
)

// FromRecord converts a vault record for the wire.
func FromRecord(p *vault.PSK) PSK {
	out := PSK{
		IdentityHex:   p.IdentityHex(),
		Hash:          p.Hash.String(),
		KeyBits:       p.KeyBits,
		ClientNode:    p.ClientNode,
		ServerNode:    p.ServerNode,
		Created:       p.Created,
		NotAfter:      p.NotAfter,
		State:         string(p.State),
		Origin:        p.Origin,
		Backend:       p.Backend,
		DeletePending: p.DeletePending,
		KeyMissing:    p.KeyMissing,
	}
	out.PSKPolicy = PolicyOf(p)
	if utf8.Valid(p.Identity) {
		out.Identity = string(p.Identity)
	}
	for _, t := range p.Targets {
		out.Targets = append(out.Targets, t.String())
	}
	return out
}

func hexOf(b []byte) string { return hex.EncodeToString(b) }
