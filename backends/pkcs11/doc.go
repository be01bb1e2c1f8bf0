// Package pkcs11 is the pskvault backend for PKCS#11 tokens (HSMs, SoftHSM2).
//
// Each PSK's PRK (RFC 9258 epskx) lives on the token as a sensitive,
// non-extractable CKK_GENERIC_SECRET that may only sign; each HKDF-Expand
// block of a derivation is one C_SignInit + C_Sign with CKM_SHA256_HMAC or
// CKM_SHA384_HMAC. The host never holds the PRK after StoreKey returns, and
// with ImportWrapped (CKM_AES_KEY_WRAP_PAD under a wrapping key already on
// the token) it never holds it at all.
//
// The backend is configured by an RFC 7512 PKCS#11 URI (see ParseURI) and
// registers itself with the vault as scheme "pkcs11". It keeps one login
// and a pool of sessions, rebuilds them once when the token reports a lost
// login, closed sessions or removal, and never retries a refused PIN.
//
// Without cgo the package still parses URIs and wraps keys, but opening a
// token fails with an error that says why.
package pkcs11
