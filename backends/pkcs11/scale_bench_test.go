//go:build cgo

package pkcs11

import (
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	p11 "github.com/miekg/pkcs11"

	"github.com/pskvault/pskvault/backends/pkcs11/pkcs11test"
	"github.com/pskvault/pskvault/importer"
	"github.com/pskvault/pskvault/vault"
)

// scaleVaultID is the vault ID the scale tokens' keys are tagged with.
var scaleVaultID = []byte("scale-bench-vault-id")

// scaleToken is a SoftHSM2 token of its own (own directory and config)
// holding n token objects made like the vault's keys: tagged, private,
// sensitive generic secrets.
type scaleToken struct {
	tok     *pkcs11test.SoftHSM
	handles [][]byte      // every key's vault handle
	fill    time.Duration // how long creating the n objects took
}

// newScaleToken makes the token and its n objects with raw C_CreateObject
// calls on one session (what StoreKey does, without its read-back check).
// It switches SOFTHSM2_CONF to the new token's config for the rest of the
// benchmark: SoftHSM2 reads it at each C_Initialize, and the module is
// initialized afresh whenever no backend holds it.
func newScaleToken(b *testing.B, n int) *scaleToken {
	b.Helper()
	pkcs11test.Skip(b)
	if dir := os.Getenv("PSKVAULT_P11_SCALE_REUSE"); dir != "" {
		return reuseScaleToken(b, dir, n)
	}
	// Not b.TempDir(): its name has an "=", which SoftHSM2's config parser
	// cuts the token directory's path at. PSKVAULT_P11_SCALE_DIR puts the
	// token elsewhere (the figures in docs/BENCHMARKS.md: /dev/shm, since
	// on this VM's disk SoftHSM2 creates ~50 objects/s, waiting on I/O).
	dir, err := os.MkdirTemp(os.Getenv("PSKVAULT_P11_SCALE_DIR"), "pskvault-p11-scale-")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(dir) })
	tok, err := pkcs11test.New(dir, "scale-"+strconv.Itoa(n))
	if err != nil {
		b.Fatal(err)
	}
	old := os.Getenv("SOFTHSM2_CONF")
	os.Setenv("SOFTHSM2_CONF", tok.Conf)
	b.Cleanup(func() { os.Setenv("SOFTHSM2_CONF", old) })
	be, err := openTagged(bg, tok.URI(), scaleVaultID)
	if err != nil {
		b.Fatal(err)
	}
	defer be.Close()
	s, err := be.p.OpenSession(be.slot, p11.CKF_SERIAL_SESSION|p11.CKF_RW_SESSION)
	if err != nil {
		b.Fatal(err)
	}
	defer be.p.CloseSession(s)
	prk := make([]byte, 32)
	rand.Read(prk)
	st := &scaleToken{tok: tok}
	start := time.Now()
	for i := 0; i < n; i++ {
		id, err := be.newID(importer.SHA256)
		if err != nil {
			b.Fatal(err)
		}
		tmpl := append(keyTemplate(id, "scale", true), p11.NewAttribute(p11.CKA_VALUE, prk))
		if _, err := be.p.CreateObject(s, tmpl); err != nil {
			b.Fatalf("C_CreateObject #%d: %v", i, err)
		}
		st.handles = append(st.handles, encodeHandle(importer.SHA256, id))
	}
	st.fill = time.Since(start)
	b.Logf("%d token objects created in %v (%.0f/s)", n, st.fill.Round(time.Millisecond), float64(n)/st.fill.Seconds())
	return st
}

// reuseScaleToken takes the token of an earlier run instead of making
// one: PSKVAULT_P11_SCALE_REUSE names a copy of its SoftHSM2 directory
// (the softhsm-* directory holding softhsm2.conf, tokens/ and user.pin;
// copied while that run was going, since it removes its own at the end).
// The copy's config is pointed at the copy's tokens; the keys' handles
// are read back with Keys. Only for one size.
func reuseScaleToken(b *testing.B, dir string, n int) *scaleToken {
	b.Helper()
	tok := &pkcs11test.SoftHSM{Dir: dir, Module: pkcs11test.Module(), Label: "scale-" + strconv.Itoa(n),
		Conf: filepath.Join(dir, "softhsm2.conf"), PINFile: filepath.Join(dir, "user.pin")}
	conf := fmt.Sprintf("directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n", filepath.Join(dir, "tokens"))
	if err := os.WriteFile(tok.Conf, []byte(conf), 0o600); err != nil {
		b.Fatal(err)
	}
	old := os.Getenv("SOFTHSM2_CONF")
	os.Setenv("SOFTHSM2_CONF", tok.Conf)
	b.Cleanup(func() { os.Setenv("SOFTHSM2_CONF", old) })
	be, err := openTagged(bg, tok.URI(), scaleVaultID)
	if err != nil {
		b.Fatal(err)
	}
	defer be.Close()
	handles, err := be.Keys(bg)
	if err != nil || len(handles) != n {
		b.Fatalf("reused token: %d keys (%v), want %d", len(handles), err, n)
	}
	return &scaleToken{tok: tok, handles: handles}
}

// scaleModes are the BenchmarkFirstUse variants: PSKVAULT_P11_SCALE_MODES
// (comma-separated), default after-open,after-keys; "delete" times
// DeleteKey of a key not used since the start (made, then the backend
// reopened and Keys listed, as at a daemon start).
func scaleModes() []string {
	if v := os.Getenv("PSKVAULT_P11_SCALE_MODES"); v != "" {
		return strings.Split(v, ",")
	}
	return []string{"after-open", "after-keys"}
}

// scaleSizes are the token sizes BenchmarkFirstUse runs at:
// PSKVAULT_P11_SCALE_OBJECTS (comma-separated), default 20 and 2000.
func scaleSizes(b *testing.B) []int {
	v := os.Getenv("PSKVAULT_P11_SCALE_OBJECTS")
	if v == "" {
		v = "20,2000"
	}
	var out []int
	for _, f := range strings.Split(v, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			b.Fatalf("PSKVAULT_P11_SCALE_OBJECTS: bad size %q", f)
		}
		out = append(out, n)
	}
	return out
}

// BenchmarkFirstUse is the first HMAC on a key not used since the backend
// was opened, on a token holding N objects like the vault's, each
// iteration after a fresh open (C_Initialize: a restart as the module sees
// it) and on a different key:
//
//	PSKVAULT_P11_SCALE_OBJECTS=20,100000 go test -run '^$' \
//	    -bench BenchmarkFirstUse -benchtime 5x -timeout 2h ./backends/pkcs11/
//
// ns/op is the first HMAC alone (for "delete": the DeleteKey alone). "after-open" runs it as soon as Open
// returns; "after-keys" first lists the vault's keys (Keys), as the
// vault's reconciliation does at every start. open-ms and keys-ms are
// what Open and Keys took.
func BenchmarkFirstUse(b *testing.B) {
	for _, n := range scaleSizes(b) {
		b.Run("objects="+strconv.Itoa(n), func(b *testing.B) {
			st := newScaleToken(b, n)
			for _, mode := range scaleModes() {
				b.Run(mode, func(b *testing.B) {
					var open, keys time.Duration
					b.StopTimer()
					for i := 0; i < b.N; i++ {
						t0 := time.Now()
						be, err := openTagged(bg, st.tok.URI(), scaleVaultID)
						if err != nil {
							b.Fatal(err)
						}
						open += time.Since(t0)
						if mode != "after-open" {
							t1 := time.Now()
							hs, err := be.Keys(bg)
							if err != nil || len(hs) != n {
								b.Fatalf("Keys: %d keys, %v; want %d", len(hs), err, n)
							}
							keys += time.Since(t1)
						}
						key := vault.KeyRef{Handle: st.handles[(i*7919)%n], Hash: importer.SHA256}
						if mode == "delete" {
							// A key made in this open, then destroyed: the
							// vault's delete (rotate, revoke, finalize) of a
							// key not used since the start.
							prk := make([]byte, 32)
							rand.Read(prk)
							h, err := be.StoreKey(bg, vault.StoreRequest{PRK: prk, Hash: importer.SHA256, Label: "scale"})
							if err != nil {
								b.Fatal(err)
							}
							be.Close()
							if be, err = openTagged(bg, st.tok.URI(), scaleVaultID); err != nil {
								b.Fatal(err)
							}
							if _, err := be.Keys(bg); err != nil {
								b.Fatal(err)
							}
							b.StartTimer()
							err = be.DeleteKey(bg, vault.KeyRef{Handle: h, Hash: importer.SHA256})
							b.StopTimer()
							if err != nil {
								b.Fatal(err)
							}
							be.Close()
							continue
						}
						b.StartTimer()
						out, err := be.HMAC(bg, key, benchData)
						b.StopTimer()
						if err != nil || len(out) != 32 {
							b.Fatalf("HMAC: %v", err)
						}
						be.Close()
					}
					b.ReportMetric(float64(open.Milliseconds())/float64(b.N), "open-ms")
					if mode != "after-open" {
						b.ReportMetric(float64(keys.Milliseconds())/float64(b.N), "keys-ms")
					}
				})
			}
		})
	}
}
