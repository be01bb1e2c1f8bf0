// Package wire holds the types and encodings of pskvault's socket protocol
// (docs/API.md) that both sides need: request and answer bodies, error
// codes, the envelope and the binary (TLV) form. The server (package api)
// and the Go client (package client) both import it. It depends on the
// standard library and package importer only, so a program that imports
// the client does not pull in the server's storage (bbolt) or identity
// checks (confusables, x/text); a test in package client enforces that.
//
// The JSON answers built from vault types (the backend in a status, the
// check report) are mirrored here field for field; a test in package api
// checks that the mirrors decode every field the vault types encode.
package wire
