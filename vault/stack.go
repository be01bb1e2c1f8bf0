package vault

import (
	"errors"
	"fmt"
	"sort"
	"strings"
)

// ErrStackLimit: the identity or key does not fit the named TLS stack.
var ErrStackLimit = errors.New("does not fit the TLS stack's limits")

// Stack is what a TLS stack allows for the TLS 1.3 external PSKs pskvault
// hands it: the ImportedIdentity serialization as the PSK identity and
// ipskx (32 or 48 bytes, per target KDF) as the key. Sources are cited in
// docs/RFC9257.md ("Stack profiles"); 0 means no limit below the
// protocol's 65535 bytes was verified.
type Stack struct {
	Name           string
	MaxIdentityLen int  // bytes of PskIdentity.identity
	MaxKeyLen      int  // bytes of the PSK
	SHA256Only     bool // its simple PSK interfaces only pair PSKs with SHA-256 suites
	Advice         string
}

// Stacks are the profiles `--stack` knows.
var Stacks = map[string]Stack{
	"openssl": {Name: "openssl", MaxIdentityLen: 256, MaxKeyLen: 512, SHA256Only: true,
		Advice: "OpenSSL 3 (PSK_MAX_IDENTITY_LEN 256, PSK_MAX_PSK_LEN 512 in ssl.h): s_server/s_client -psk and the psk_client/server callbacks pair the key with SHA-256 suites only, so use target tls1.3/sha256 and -ciphersuites TLS_AES_128_GCM_SHA256 (or TLS_CHACHA20_POLY1305_SHA256); SHA-384 targets need SSL_CTX_set_psk_find_session_callback with a TLS_AES_256_GCM_SHA384 session. -psk puts the key in argv: prefer the callbacks in production"},
	"boringssl": {Name: "boringssl", MaxIdentityLen: 128, MaxKeyLen: 256,
		Advice: "BoringSSL (PSK_MAX_IDENTITY_LEN 128, PSK_MAX_PSK_LEN 256 in include/openssl/ssl.h): its TLS 1.3 PSK credential (SSL_CREDENTIAL_new_pre_shared_key) runs the RFC 9258 importer itself from the EPSK; feeding it an ipskx from pskvault is not verified, keep identities within 128 bytes"},
	"gnutls": {Name: "gnutls", MaxIdentityLen: 0, MaxKeyLen: 0,
		Advice: "GnuTLS (3.7.9 here has no importer; 3.8.1+ imports itself): psktool password files hold identity:hexkey lines, so use the hex of the imported identity as the username; gnutls_psk_set_*_credentials2 takes binary identities. No identity or key limit below the protocol's was verified"},
	"mbedtls": {Name: "mbedtls", MaxIdentityLen: 0, MaxKeyLen: 32,
		Advice: "Mbed TLS (MBEDTLS_PSK_MAX_LEN 32 by default in mbedtls/ssl.h): only 32-byte keys, so only */sha256 targets unless the build raises MBEDTLS_PSK_MAX_LEN to 48; with PSA opaque keys import the ipskx as a PSA_ALG_HKDF derive key"},
	"wolfssl": {Name: "wolfssl", MaxIdentityLen: 128, MaxKeyLen: 64,
		Advice: "wolfSSL (internal.h: MAX_PSK_ID_LEN 128, or 1536 in WOLFSSL_TLS13 builds; MAX_PSK_KEY_LEN 64): use wolfSSL_CTX_set_psk_client_tls13_callback / _server_tls13_callback, which also return the cipher suite to match the target KDF"},
}

// StackNames lists the known stacks.
func StackNames() []string {
	var out []string
	for n := range Stacks {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// CheckStack checks a PSK against a stack's limits: the ImportedIdentity
// built from identity with a context of ctxLen bytes (2+len+2+ctx+4 bytes)
// must fit the identity limit, and each target's ipskx the key limit.
func CheckStack(stack string, identity []byte, ctxLen int, targets []Target) error {
	s, ok := Stacks[stack]
	if !ok {
		return fmt.Errorf("%w: unknown stack %q (known: %s)", ErrInvalid, stack, strings.Join(StackNames(), ", "))
	}
	var problems []string
	if n := 2 + len(identity) + 2 + ctxLen + 4; s.MaxIdentityLen > 0 && n > s.MaxIdentityLen {
		problems = append(problems, fmt.Sprintf("imported identity is %d bytes, %s takes at most %d", n, s.Name, s.MaxIdentityLen))
	}
	for _, t := range targets {
		if l := t.KDF.OutputLen(); s.MaxKeyLen > 0 && l > s.MaxKeyLen {
			problems = append(problems, fmt.Sprintf("target %s gives a %d-byte key, %s takes at most %d", t, l, s.Name, s.MaxKeyLen))
		} else if s.SHA256Only && t.KDF.OutputLen() != 32 {
			problems = append(problems, fmt.Sprintf("target %s needs a SHA-384 suite, which %s's simple PSK interfaces do not pair with PSKs", t, s.Name))
		}
	}
	if len(problems) > 0 {
		return fmt.Errorf("%w: %s (restrict --target; %s)", ErrStackLimit, strings.Join(problems, "; "), s.Advice)
	}
	return nil
}
