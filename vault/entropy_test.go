package vault_test

import (
	"bytes"
	"crypto/md5"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"strings"
	"testing"

	"github.com/pskvault/pskvault/vault"
)

// TestAssessEntropyClasses: one row per class of low-entropy key
// (RFC 9257 section 4.2), each named by the finding it must draw; the rows
// marked new were accepted before the class was added.
func TestAssessEntropyClasses(t *testing.T) {
	sha256s := func(s string) []byte { h := sha256.Sum256([]byte(s)); return h[:] }
	sha384s := func(s string) []byte { h := sha512.Sum384([]byte(s)); return h[:] }
	sha512s := func(s string) []byte { h := sha512.Sum512([]byte(s)); return h[:] }
	sha1s := func(s string) []byte { h := sha1.Sum([]byte(s)); return h[:] }
	md5s := func(s string) []byte { h := md5.Sum([]byte(s)); return h[:] }
	prog := func(start, d byte, n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = start + byte(i)*d
		}
		return b
	}
	halfZero := append(make([]byte, 16), randKey(t, 16)...)
	cases := []struct {
		name, want string
		key        []byte
	}{
		// Refused before.
		{"ASCII passphrase", "passphrase-like", []byte("correct horse battery staple")},
		{"UTF-8 passphrase (Cyrillic)", "", []byte("пароль-очень-длинный")},
		{"repeated pattern", "repeating pattern", bytes.Repeat([]byte{0xde, 0xad, 0xbe, 0xef}, 8)},
		{"half zero", "run of equal bytes", halfZero},
		{"counter", "counting sequence", prog(0, 1, 32)},
		{"SHA-256(\"password\")", "common passwords", sha256s("password")},
		// New: text with a trailing line break (echo ... | xxd -p), with
		// enough distinct bytes to escape the other checks.
		{"new: passphrase and LF", "passphrase-like", []byte("Tr0ub4dor&3 Quixotic-Zebra!\n")},
		{"new: passphrase and CRLF", "passphrase-like", []byte("My dog Rex, born 2019-04-12.\r\n")},
		{"new: UTF-8 passphrase with accents", "passphrase-like", []byte("Grüße aus München, 2026!")},
		{"new: UTF-8 passphrase and LF", "passphrase-like", []byte("Grüße aus München, 2026!\n")},
		// New: arithmetic progressions other than counting.
		{"new: 00 02 04 .. 3e", "arithmetic progression", prog(0, 2, 32)},
		{"new: step 7 from 0x91", "arithmetic progression", prog(0x91, 7, 16)},
		{"new: step -3 inside random bytes", "arithmetic progression", append(append(randKey(t, 12), prog(0xf0, 0xfd, 9)...), randKey(t, 11)...)},
		// New: unsalted hashes of common passwords, every size and ending.
		{"new: SHA-256(\"hunter2\")", "common passwords", sha256s("hunter2")},
		{"new: SHA-256(\"password\\n\")", "common passwords", sha256s("password\n")},
		{"new: SHA-256(\"letmein\\r\\n\")", "common passwords", sha256s("letmein\r\n")},
		{"new: SHA-384(\"qwerty\")", "common passwords", sha384s("qwerty")},
		{"new: SHA-384(\"dragon\\n\")", "common passwords", sha384s("dragon\n")},
		{"new: SHA-512(\"123456\")", "common passwords", sha512s("123456")},
		{"new: SHA-1(\"monkey\")", "common passwords", sha1s("monkey")},
		{"new: MD5(\"trustno1\")", "common passwords", md5s("trustno1")},
		{"new: SHA-256(\"\") empty string", "common passwords", sha256s("")},
		{"new: SHA-256 of the list's last word", "common passwords", sha256s("polina")},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := vault.AssessEntropy(c.key)
			if len(f) == 0 {
				t.Fatal("accepted")
			}
			if c.want != "" && !strings.Contains(strings.Join(f, "; "), c.want) {
				t.Fatalf("findings %q lack %q", f, c.want)
			}
			for _, s := range f {
				if strings.Contains(s, "hunter2") || strings.Contains(s, "password\"") {
					t.Fatalf("finding names the password: %s", s)
				}
			}
		})
	}
	// Not flagged: random keys of every size a hash check looks at, and
	// hashes of passwords that are not on the list (the check's limit).
	for _, n := range []int{16, 20, 24, 28, 32, 48, 64, 100} {
		for range 2000 {
			if f := vault.AssessEntropy(randKey(t, n)); len(f) > 0 {
				t.Fatalf("random %d-byte key flagged: %v", n, f)
			}
		}
	}
	if f := vault.AssessEntropy(sha256s("a passphrase nobody else has used, 7f3c")); len(f) != 0 {
		t.Fatalf("hash of an unlisted passphrase flagged: %v", f)
	}
}
