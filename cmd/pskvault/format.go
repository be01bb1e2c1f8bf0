package main

import (
	"flag"
	"fmt"
	"strings"

	"github.com/pskvault/pskvault/api"
	"github.com/pskvault/pskvault/vault"
)

// deriveFlags are derive's RFC 9257 flags.
type deriveFlags struct {
	peer, role, format string
}

func (f *deriveFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.peer, "peer", "", "the peer `node` (required for group PSKs; checked for pairwise ones)")
	fs.StringVar(&f.role, "role", "", "this node's `role`, client or server (required for group PSKs)")
	fs.StringVar(&f.format, "format", "", "print the key in the `form` a stack's tools take: openssl, gnutls, mbedtls, hex")
}

// gnutlsPriority is the GnuTLS priority string for a pskvault key: TLS 1.3
// only, and only the PSK key exchanges with (EC)DHE (psk_dhe_ke, never
// psk_ke).
const gnutlsPriority = "NORMAL:-VERS-ALL:+VERS-TLS1.3:-KX-ALL:+DHE-PSK:+ECDHE-PSK"

// writeFormat prints an imported PSK for a TLS stack's command-line tools.
// These tools know no RFC 9258 importer: both ends use the hex of the
// ImportedIdentity as a plain identity string and ipskx as the key, which
// interoperates between two such stacks (the binder label is then "ext
// binder", not "imp binder": docs/RFC9257.md, "Stack profiles").
func writeFormat(g *globals, format string, r api.DeriveResponse) error {
	id, key := r.ImportedIdentity, r.IPSKX
	limit := func(stack string) error {
		s := vault.Stacks[stack]
		if s.MaxIdentityLen > 0 && len(id) > s.MaxIdentityLen {
			return fmt.Errorf("%w: the identity string is %d characters, %s takes at most %d", vault.ErrStackLimit, len(id), stack, s.MaxIdentityLen)
		}
		if s.MaxKeyLen > 0 && len(key)/2 > s.MaxKeyLen {
			return fmt.Errorf("%w: the key is %d bytes, %s takes at most %d (use --kdf sha256)", vault.ErrStackLimit, len(key)/2, stack, s.MaxKeyLen)
		}
		if s.SHA256Only && r.KDF != "sha256" {
			return fmt.Errorf("%w: %s's -psk pairs keys with SHA-256 suites only (use --kdf sha256)", vault.ErrStackLimit, stack)
		}
		return nil
	}
	warn := func() {
		if r.DHERequired {
			fmt.Fprintln(g.stderr, "pskvault: note: psk_dhe_ke is required for this PSK: do not enable psk_ke (no forward secrecy) in the stack")
		}
		if !r.EarlyData {
			fmt.Fprintln(g.stderr, "pskvault: note: early data is not allowed for this PSK: leave 0-RTT off")
		}
	}
	switch strings.ToLower(format) {
	case "hex":
		fmt.Fprintf(g.stdout, "%s %s\n", id, key)
	case "openssl":
		if err := limit("openssl"); err != nil {
			return err
		}
		warn()
		fmt.Fprintln(g.stderr, "pskvault: note: openssl s_client/s_server take the key on the command line, visible to other local users in ps: use them for tests only")
		// -tls1_3 pins both ends to TLS 1.3: without it an s_server given
		// -psk also completes TLS 1.2 handshakes with the PSK-* cipher
		// suites (no importer, no psk_dhe_ke). OpenSSL refuses psk_ke
		// unless -allow_no_dhe_kex is given, and 0-RTT unless -early_data
		// is: neither is printed.
		fmt.Fprintf(g.stdout, "-tls1_3 -ciphersuites TLS_AES_128_GCM_SHA256 -psk_identity %s -psk %s\n", id, key)
	case "gnutls":
		if err := limit("gnutls"); err != nil {
			return err
		}
		warn()
		fmt.Fprintln(g.stderr, "pskvault: note: a psktool-style line for gnutls-serv --pskpasswd FILE (0600); the client takes --pskusername and --pskkey; give both --priority "+gnutlsPriority+" (TLS 1.3, psk_dhe_ke only)")
		fmt.Fprintf(g.stdout, "%s:%s\n", id, key)
	case "mbedtls":
		if err := limit("mbedtls"); err != nil {
			return err
		}
		warn()
		fmt.Fprintf(g.stdout, "psk_identity=%s psk=%s\n", id, key)
	default:
		return usagef("--format %q: want openssl, gnutls, mbedtls or hex", format)
	}
	return nil
}
