package main

import (
	"bufio"
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/pskvault/pskvault/backends/pkcs11/pkcs11test"
	"github.com/pskvault/pskvault/importer"
	"github.com/pskvault/pskvault/internal/swtpmsim"
)

// scanMemory reads every readable mapping of process pid through
// /proc/PID/mem and reports which needles occur in it, and how often.
// Reading another process's memory needs ptrace rights over it; the daemon
// is not dumpable (PR_SET_DUMPABLE 0), so only root (CAP_SYS_PTRACE) can.
func scanMemory(t *testing.T, pid int, needles map[string][]byte) map[string]int {
	t.Helper()
	maps, err := os.Open(fmt.Sprintf("/proc/%d/maps", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer maps.Close()
	mem, err := os.Open(fmt.Sprintf("/proc/%d/mem", pid))
	if err != nil {
		t.Fatalf("open /proc/%d/mem (the test must run as root): %v", pid, err)
	}
	defer mem.Close()
	found := map[string]int{}
	regions, read := 0, 0
	sc := bufio.NewScanner(maps)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 || f[1][0] != 'r' || (len(f) >= 6 && (f[5] == "[vvar]" || f[5] == "[vsyscall]" || f[5] == "[vvar_vclock]")) {
			continue
		}
		lo, hi, ok := strings.Cut(f[0], "-")
		if !ok {
			continue
		}
		start, err1 := strconv.ParseUint(lo, 16, 64)
		end, err2 := strconv.ParseUint(hi, 16, 64)
		if err1 != nil || err2 != nil || end <= start {
			continue
		}
		buf := make([]byte, end-start)
		n, _ := mem.ReadAt(buf, int64(start))
		regions++
		read += n
		for name, s := range needles {
			c := bytes.Count(buf[:n], s)
			found[name] += c
			if c > 0 {
				t.Logf("%d copies of the %s in %s", c, name, sc.Text())
			}
		}
	}
	if regions == 0 || read == 0 {
		t.Fatalf("read nothing of process %d's memory", pid)
	}
	return found
}

// hmacPads are HMAC's inner and outer padded keys for key under a hash
// with the given block size: what crypto/hmac keeps for as long as its
// state lives, and what XORs straight back to the key.
func hmacPads(key []byte, block int) (ipad, opad []byte) {
	ipad, opad = make([]byte, block), make([]byte, block)
	copy(ipad, key)
	copy(opad, key)
	for i := range ipad {
		ipad[i] ^= 0x36
		opad[i] ^= 0x5c
	}
	return ipad, opad
}

// TestKeyMaterialNotInDaemonMemory: after importing a known EPSK and
// deriving from it, neither the EPSK nor the PRK (epskx) is anywhere in the
// daemon's memory, nor (soft backend, which computes HMACs in process) the
// PRK's HMAC pads, nor the hex of the imported keys the answers carried;
// on every backend. Scanned through /proc/PID/mem, as
// root.
func TestKeyMaterialNotInDaemonMemory(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("PSKVAULT_REQUIRE_SIMULATORS") != "" {
			t.Fatal("reading the daemon's memory needs root (CI runs as root)")
		}
		t.Skip("reading the daemon's memory needs root")
	}
	backends := []struct {
		name string
		uri  func(t *testing.T) string
	}{
		{"soft", func(*testing.T) string { return "soft" }},
		{"tpm", func(t *testing.T) string { return swtpmsim.Start(t).URI() }},
		{"pkcs11", func(t *testing.T) string { return pkcs11test.Require(t, "pskvault-mem").URI() }},
	}
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			a := newNode(t, "node-a", b.uri(t))
			a.start()
			epsk := make([]byte, 32)
			rand.Read(epsk)
			m := hmac.New(sha256.New, make([]byte, 32))
			m.Write(epsk)
			prk := m.Sum(nil)
			ipad, opad := hmacPads(prk, 64)
			needles := map[string][]byte{"EPSK": epsk, "PRK": prk, "HMAC ipad of the PRK": ipad, "HMAC opad of the PRK": opad}
			// The imported keys in hex, as the derive answers carry them.
			for _, kdf := range []importer.KDF{importer.HKDFSHA256, importer.HKDFSHA384} {
				_, ipskx, err := importer.Import(importer.SHA256, epsk, importer.Identity{External: []byte("mem-1"), Protocol: importer.TLS13, KDF: kdf})
				if err != nil {
					t.Fatal(err)
				}
				needles["hex of the "+kdf.String()+" ipskx"] = []byte(hex.EncodeToString(ipskx))
			}
			if out, code := a.run(nil, "psk", "import", "--identity", "mem-1", "--client", "node-a", "--server", "node-b", "--key-file", writeKey(t, epsk)); code != 0 {
				t.Fatalf("import: exit %d: %s", code, out)
			}
			for i := range 20 {
				if out, code := a.run(nil, "derive", "--identity", "mem-1", "--kdf", []string{"sha256", "sha384"}[i%2], "--json"); code != 0 {
					t.Fatalf("derive: exit %d: %s", code, out)
				}
			}
			found := scanMemory(t, a.cmd.Process.Pid, needles)
			for name := range needles {
				if found[name] > 0 {
					t.Errorf("%s backend: the daemon's memory holds %d copies of the %s", b.name, found[name], name)
				}
			}
			// The scan itself works: a value the daemon certainly holds
			// (its node id, next to the vault config) is found.
			if c := scanMemory(t, a.cmd.Process.Pid, map[string][]byte{"node id": []byte("node-a")}); c["node id"] == 0 {
				t.Fatal("the scan does not find the node id: it cannot see the daemon's memory")
			}
		})
	}
}
