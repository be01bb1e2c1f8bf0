package tpm

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"math/bits"
	"strconv"
	"strings"

	"github.com/google/go-tpm/tpm2"
)

// maxPCR is the highest PCR index a binding may name (PC Client TPMs have 24).
const maxPCR = 23

// parsePCRs parses "7,11" (or "7+11", systemd-style) into a bitmask.
func parsePCRs(s string) (uint32, error) {
	if s == "" {
		return 0, fmt.Errorf("tpm: pcrs= is empty (want a list such as 7,11)")
	}
	var mask uint32
	for _, f := range strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == '+' }) {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 0 || n > maxPCR {
			return 0, fmt.Errorf("tpm: pcrs=%q: %q is not a PCR index 0..%d", s, f, maxPCR)
		}
		if mask&(1<<n) != 0 {
			return 0, fmt.Errorf("tpm: pcrs=%q names PCR %d twice", s, n)
		}
		mask |= 1 << n
	}
	if mask == 0 {
		return 0, fmt.Errorf("tpm: pcrs=%q selects no PCR", s)
	}
	return mask, nil
}

func pcrCount(mask uint32) int { return bits.OnesCount32(mask) }

func pcrIndexes(mask uint32) []uint {
	var out []uint
	for i := uint(0); i < 32; i++ {
		if mask&(1<<i) != 0 {
			out = append(out, i)
		}
	}
	return out
}

// pcrString renders a mask as "7,11".
func pcrString(mask uint32) string {
	var parts []string
	for _, i := range pcrIndexes(mask) {
		parts = append(parts, strconv.Itoa(int(i)))
	}
	return strings.Join(parts, ",")
}

// pcrSelection is the SHA-256 bank selection for mask.
func pcrSelection(mask uint32) tpm2.TPMLPCRSelection {
	return tpm2.TPMLPCRSelection{PCRSelections: []tpm2.TPMSPCRSelection{{
		Hash:      tpm2.TPMAlgSHA256,
		PCRSelect: tpm2.PCClientCompatible.PCRs(pcrIndexes(mask)...),
	}}}
}

// readPCRs reads the SHA-256 bank values of the PCRs in mask, ascending.
// TPM2_PCR_Read returns at most 8 digests per call, so it reads in rounds.
func readPCRs(t *link, mask uint32) ([][]byte, error) {
	var out [][]byte
	for _, i := range pcrIndexes(mask) {
		var rsp *tpm2.PCRReadResponse
		err := retry(func() error {
			var e error
			rsp, e = tpm2.PCRRead{PCRSelectionIn: pcrSelection(1 << i)}.Execute(t)
			return e
		})
		if err != nil {
			return nil, err
		}
		if len(rsp.PCRValues.Digests) != 1 {
			return nil, fmt.Errorf("tpm: PCR %d has no SHA-256 bank value on this TPM (is the SHA-256 bank allocated?)", i)
		}
		out = append(out, rsp.PCRValues.Digests[0].Buffer)
	}
	return out, nil
}

// pcrPolicy computes the PolicyPCR authPolicy for the given values, the way
// the TPM will when the session runs TPM2_PolicyPCR.
func pcrPolicy(mask uint32, values [][]byte, withAuth bool) ([]byte, error) {
	h := sha256.New()
	for _, v := range values {
		h.Write(v)
	}
	calc, err := tpm2.NewPolicyCalculator(tpm2.TPMAlgSHA256)
	if err != nil {
		return nil, err
	}
	if err := (tpm2.PolicyPCR{PcrDigest: tpm2.TPM2BDigest{Buffer: h.Sum(nil)}, Pcrs: pcrSelection(mask)}).Update(calc); err != nil {
		return nil, err
	}
	if withAuth { // the key's auth value is needed too (auth.go)
		if err := (tpm2.PolicyAuthValue{}).Update(calc); err != nil {
			return nil, err
		}
	}
	return calc.Hash().Digest, nil
}

// changedPCRs names the PCRs whose current value differs from the value
// recorded when the key was created ("" if it cannot tell).
func changedPCRs(t *link, k *keyBlob) string {
	now, err := readPCRs(t, k.pcrMask)
	if err != nil || len(now) != len(k.pcrValues) {
		return ""
	}
	var changed []string
	for i, idx := range pcrIndexes(k.pcrMask) {
		if !bytes.Equal(now[i], k.pcrValues[i]) {
			changed = append(changed, strconv.Itoa(int(idx)))
		}
	}
	return strings.Join(changed, ",")
}
