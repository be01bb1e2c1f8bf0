package vault

import (
	"bytes"
	"crypto/md5"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/subtle"
	_ "embed"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"sync"
	"unicode"
	"unicode/utf8"

	"github.com/pskvault/pskvault/importer"
)

// AssessEntropy looks for signs that an EPSK was not drawn from a good RNG
// (RFC 9257 section 4.2: low-entropy PSKs fall to offline dictionary
// attacks; section 6 rec. 1: at least 128 bits of entropy). It returns one
// finding per sign, empty for a key that looks random. Findings name the
// pattern, never the key bytes.
//
// Every test is calibrated so that a uniformly random key of at least 16
// bytes trips it with probability below 2^-22 (documented per test), so
// real keys are not refused; what it catches is text (with a trailing line
// break too), repeats, counters and other arithmetic progressions, unsalted
// hashes of the most common passwords, and published example keys. It
// cannot prove a key random: a key derived by a salted or iterated KDF, or
// a hash of any password not on the embedded list, passes; docs/RFC9257.md
// ("What the entropy check can and cannot see") lists the limits. Hence
// "looks".
func AssessEntropy(key []byte) []string {
	var out []string
	n := len(key)
	if n == 0 {
		return []string{"empty key"}
	}
	if isText(key) {
		out = append(out, "passphrase-like: the key is text (printable ASCII or UTF-8, perhaps ending in a line break): was a password, or the key's hex, imported as bytes?")
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
	} else if d, ok := progression(key); ok {
		out = append(out, fmt.Sprintf("arithmetic progression: %d or more bytes each %d more than the one before (mod 256)", progressionRun, d))
	}
	if h := commonPasswordHash(key); h != "" {
		out = append(out, "unsalted "+h+" hash of one of the most common passwords (a dictionary attack finds it at once)")
	}
	sum := importer.SecretSHA256(key) // wipes its copies of the key
	defer clear(sum[:])
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
		// Hashes of passwords (and of the empty string) are found by
		// commonPasswordHash.
	} {
		b, err := hex.DecodeString(k.hex)
		if err != nil {
			panic("vault: bad hex in weak key table")
		}
		out = append(out, w{k.name, sha256.Sum256(b)})
	}
	return out
}()

// isText reports whether key is text: after trailing white space (space,
// tab, CR, LF: what `echo ... | xxd -p` or an editor leaves) it is
// non-empty valid UTF-8 of printable characters only. Random bytes are text
// with probability 2^-22.8 at 16 bytes when all ASCII (95 printable
// values of 256 per byte, the white-space tail adding a factor of 1.04),
// and 2^-22.9 at 20 bytes when multi-byte UTF-8 is allowed (an upper bound
// counting every non-ASCII scalar as printable; 2^-18.4 at 16 bytes, which
// is why non-ASCII text is only called text from 20 bytes on).
func isText(key []byte) bool {
	t := bytes.TrimRight(key, " \t\r\n")
	if len(t) == 0 || !utf8.Valid(t) {
		return false
	}
	ascii := true
	for _, r := range string(t) {
		if !unicode.IsPrint(r) {
			return false
		}
		ascii = ascii && r < utf8.RuneSelf
	}
	return ascii || len(key) >= 20
}

// progressionRun is the shortest run progression reports. A run of k bytes
// with one common difference d has probability 2^(-8(k-2)) at each offset
// of a random key (d is whatever the first two bytes give), so 2^-48 per
// offset and at most 2^-38 for the longest key accepted (MaxKeyLen).
const progressionRun = 8

// progression finds a run of progressionRun or more bytes each d more than
// the one before (mod 256), like 00 02 04 ... 3e, for any d. (Runs with d
// of 0, 1 or -1 are reported from 6 bytes on by the caller.)
func progression(key []byte) (d byte, ok bool) {
	n := 1
	for i := 1; i < len(key); i++ {
		if i >= 2 && key[i]-key[i-1] == key[i-1]-key[i-2] {
			n++
		} else {
			n = 2
		}
		if n >= progressionRun {
			return key[i] - key[i-1], true
		}
	}
	return 0, false
}

// commonPasswords is the 1,000 most common passwords of Mark Burnett's ten
// million password list (2015), as published in SecLists
// (Passwords/Common-Credentials/xato-net-10-million-passwords-1000.txt, MIT
// licence; source and version in docs/DESIGN.md), one per line.
//
//go:embed common-passwords.txt
var commonPasswords string

// extraPasswords are common in key material specifically (examples in
// documentation and tutorials) but absent from the list above.
var extraPasswords = []string{"hunter2", "changeit", "P@ssw0rd", "Password1", "admin", "root", "toor", "pskvault",
	"correct horse battery staple", "correcthorsebatterystaple", "Tr0ub4dor&3", "secret123", "mysecretkey", "psk", "key"}

// passwordHashes maps (hash length, first 8 bytes of the hash) of every
// common password, bare and followed by "\n" or "\r\n", under MD5, SHA-1,
// SHA-224, SHA-256, SHA-384 and SHA-512 to the hash's name. Built on first
// use (about 21,000 hashes, a few milliseconds). A random key matches one
// of the ~3,500 entries of its length with probability about 2^-52.
var passwordHashes = sync.OnceValue(func() map[hashPrefix]string {
	m := map[hashPrefix]string{}
	add := func(name string, sum []byte) { m[hashPrefix{len(sum), binary.BigEndian.Uint64(sum)}] = name }
	words := append(bytes.Split([]byte(commonPasswords), []byte("\n")), []byte{})
	for _, w := range extraPasswords {
		words = append(words, []byte(w))
	}
	for _, w := range words {
		for _, tail := range []string{"", "\n", "\r\n"} {
			b := append(bytes.Clone(w), tail...)
			s1, s224, s256, s384, s512, s5 := sha1.Sum(b), sha256.Sum224(b), sha256.Sum256(b), sha512.Sum384(b), sha512.Sum512(b), md5.Sum(b)
			add("MD5", s5[:])
			add("SHA-1", s1[:])
			add("SHA-224", s224[:])
			add("SHA-256", s256[:])
			add("SHA-384", s384[:])
			add("SHA-512", s512[:])
		}
	}
	return m
})

type hashPrefix struct {
	n      int
	prefix uint64
}

// commonPasswordHash names the hash when key is the hash of a common
// password, and returns "" otherwise. Which password is never said.
func commonPasswordHash(key []byte) string {
	switch len(key) {
	case md5.Size, sha1.Size, sha256.Size224, sha256.Size, sha512.Size384, sha512.Size:
	default:
		return ""
	}
	return passwordHashes()[hashPrefix{len(key), binary.BigEndian.Uint64(key)}]
}
