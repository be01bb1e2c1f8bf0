package vault

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
)

// AssessEntropy looks for signs that an EPSK was not drawn from a good RNG
// (RFC 9257 section 4.2: low-entropy PSKs fall to offline dictionary
// attacks; section 6 rec. 1: at least 128 bits of entropy). It returns one
// finding per sign, empty for a key that looks random. Findings name the
// pattern, never the key bytes.
//
// Every test is calibrated so that a uniformly random key of at least 16
// bytes trips it with probability below 2^-22 (documented per test), so
// real keys are not refused; what it catches is text, repeats, counters
// and published example keys. It cannot prove a key random: a key derived
// from a password by a KDF passes. Hence "looks".
func AssessEntropy(key []byte) []string {
	var out []string
	n := len(key)
	if n == 0 {
		return []string{"empty key"}
	}
	// Printable ASCII: a passphrase, or hex/base64 text imported as bytes.
	// Random 16 bytes are all printable with probability (95/256)^16 < 2^-22.
	printable := true
	for _, c := range key {
		printable = printable && c >= 0x20 && c < 0x7f
	}
	if printable {
		out = append(out, "passphrase-like: every byte is printable ASCII text (was the key's hex or a password imported as bytes?)")
	}
	// Few distinct byte values. A random key of n bytes has about
	// 256*(1-(255/256)^n) distinct values; fewer than half of min(n,256)
	// has probability far below 2^-40 for n >= 16.
	var seen [256]bool
	distinct := 0
	for _, c := range key {
		if !seen[c] {
			seen[c] = true
			distinct++
		}
	}
	if distinct*2 < min(n, 256) {
		out = append(out, fmt.Sprintf("few distinct bytes: %d different values in %d bytes", distinct, n))
	}
	// A short pattern repeated: key[i] == key[i-p] throughout for p <= n/2.
	for p := 1; p <= n/2; p++ {
		if subtle.ConstantTimeCompare(key[p:], key[:n-p]) == 1 {
			out = append(out, fmt.Sprintf("repeating pattern: a %d-byte pattern repeated", p))
			break
		}
	}
	// Runs of equal, counting-up or counting-down bytes of length >= 6:
	// about n*3*2^-40 for random keys.
	const run = 6
	same, up, down := 1, 1, 1
	var hit string
	for i := 1; i < n && hit == ""; i++ {
		same, up, down = step(same, key[i] == key[i-1]), step(up, key[i] == key[i-1]+1), step(down, key[i] == key[i-1]-1)
		switch {
		case same >= run:
			hit = "run of equal bytes"
		case up >= run:
			hit = "counting sequence (00 01 02 ...)"
		case down >= run:
			hit = "counting-down sequence"
		}
	}
	if hit != "" {
		out = append(out, fmt.Sprintf("%s of %d or more bytes", hit, run))
	}
	sum := sha256.Sum256(key)
	for _, w := range weakKeys {
		if subtle.ConstantTimeCompare(sum[:], w.sum[:]) == 1 {
			out = append(out, "known weak value: "+w.name)
		}
	}
	return out
}

func step(n int, cont bool) int {
	if cont {
		return n + 1
	}
	return 1
}

// weakKeys are published example keys that end up in production configs.
// Only their SHA-256 is compiled in.
var weakKeys = func() []struct {
	name string
	sum  [32]byte
} {
	type w = struct {
		name string
		sum  [32]byte
	}
	var out []w
	for _, k := range []struct{ name, hex string }{
		// GnuTLS manual, psktool / gnutls-cli --pskkey example.
		{"GnuTLS manual example key", "88f3824b3e5659f52d00e959bacab954b6540344"},
		// RFC 9258 / REFERENCE.md style test identity bytes used as a key.
		{"cafecafe/deadbeef test pattern", "cafecafedeadbeefcafecafedeadbeef"},
		// SHA-256("password"), "password" hashed without salt or KDF.
		{"SHA-256 of \"password\"", "5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8"},
		// SHA-256 of the empty string.
		{"SHA-256 of the empty string", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
	} {
		b, err := hex.DecodeString(k.hex)
		if err != nil {
			panic("vault: bad hex in weak key table")
		}
		out = append(out, w{k.name, sha256.Sum256(b)})
	}
	return out
}()
