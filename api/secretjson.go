package api

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"strconv"
)

// secretRef is what an answer's ipskx field holds until writeSecretJSON
// puts the key in: "pskvault-secret-N" names keys[N]. The key itself never
// becomes a Go string (which cannot be wiped) nor passes through
// encoding/json, whose pooled encode buffers are reused without being
// cleared; its hex is written straight into the answer buffer, which is
// wiped after the write.
func secretRef(i int) string { return secretRefPrefix + strconv.Itoa(i) }

const secretRefPrefix = "pskvault-secret-"

// ipskxRef is how a placeholder appears in encoded JSON. Quotes inside
// string values are always escaped, so this sequence can only be the
// ipskx member itself.
var ipskxRef = []byte(`"ipskx":"` + secretRefPrefix)

// writeSecretJSON is writeJSON for answers carrying keys: every ipskx field
// of v holds secretRef(i), and keys[i] is the key it stands for.
func writeSecretJSON(w http.ResponseWriter, code int, v any, keys [][]byte) {
	enc := jsonBufs.Get().(*bytes.Buffer)
	out := jsonBufs.Get().(*bytes.Buffer)
	defer func() {
		for _, b := range []*bytes.Buffer{enc, out} {
			clear(b.Bytes()[:b.Cap()])
			b.Reset()
			if b.Cap() <= 64<<10 {
				jsonBufs.Put(b)
			}
		}
	}()
	if err := json.NewEncoder(enc).Encode(v); err != nil {
		writeError(w, http.StatusInternalServerError, CodeInternal, "internal error")
		return
	}
	src := enc.Bytes()
	n := 0
	for _, k := range keys {
		n += 2 * len(k)
	}
	out.Grow(len(src) + n) // one allocation: no grown-out copy of a key is left behind
	for {
		i := bytes.Index(src, ipskxRef)
		if i < 0 {
			out.Write(src)
			break
		}
		start := i + len(`"ipskx":"`)
		out.Write(src[:start])
		rest := src[i+len(ipskxRef):]
		end := bytes.IndexByte(rest, '"')
		idx, err := strconv.Atoi(string(rest[:max(end, 0)]))
		if end < 0 || err != nil || idx < 0 || idx >= len(keys) {
			writeError(w, http.StatusInternalServerError, CodeInternal, "internal error")
			return
		}
		k := keys[idx]
		hex.Encode(out.AvailableBuffer()[:2*len(k)], k)
		out.Write(out.AvailableBuffer()[:2*len(k)])
		src = rest[end:]
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	w.Write(out.Bytes())
}
