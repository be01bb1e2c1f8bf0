// Package botan holds the tests of pskvault's Botan 3 consumer
// (clients/botan/src): a Botan TLS 1.3 endpoint that takes RFC 9258 imported
// PSKs from the vault and uses them as imported PSKs ("imp binder"), tested
// against GnuTLS 3.8's and Botan's own native importers in a Debian forky
// chroot that clients/botan/chroot.sh builds. The package has no Go API.
package botan
