package importer

import (
	"crypto/sha256"
	"crypto/sha512"
	"hash"
	"runtime"
)

// HMAC computes HMAC(key, data) (RFC 2104) with h and wipes every copy of
// the key it made: the padded key, the inner and outer pads, and the hash
// states' buffers. crypto/hmac keeps its pads for as long as the HMAC
// object lives and never clears them, and the pads XOR straight back to the
// key; this one is for keys (the PRK, the EPSK's zero-salt Extract) that
// must not outlive the call. It returns nil for an invalid h.
//
// What it cannot wipe: copies the Go runtime makes on its own (a hash
// state copied onto the stack inside Sum, registers spilled by assembly);
// burnStack overwrites the stack area those land in.
func HMAC(h Hash, key, data []byte) []byte {
	var newHash func() hash.Hash
	var size, block int
	switch h {
	case SHA256:
		newHash, size, block = sha256.New, sha256.Size, sha256.BlockSize
	case SHA384:
		newHash, size, block = sha512.New384, sha512.Size384, sha512.BlockSize
	default:
		return nil
	}
	var pads [2 * sha512.BlockSize]byte // ipad || opad, on the stack
	ipad, opad := pads[:block], pads[block:2*block]
	inner, outer := newHash(), newHash()
	if len(key) > block {
		inner.Write(key)
		inner.Sum(ipad[:0]) // K' = H(K), into the pad buffer
		wipeHash(inner, block)
	} else {
		copy(ipad, key)
	}
	copy(opad, ipad)
	for i := range ipad {
		ipad[i] ^= 0x36
		opad[i] ^= 0x5c
	}
	inner.Reset()
	inner.Write(ipad) // a whole block: hashed in place, not copied
	inner.Write(data)
	var sums [2 * sha512.Size]byte
	in := inner.Sum(sums[:0])
	outer.Write(opad)
	outer.Write(in)
	out := outer.Sum(make([]byte, 0, size))
	clear(pads[:])
	clear(sums[:])
	wipeHash(inner, block)
	wipeHash(outer, block)
	burnStack()
	runtime.KeepAlive(&pads)
	runtime.KeepAlive(&sums)
	return out
}

// wipeHash overwrites what a hash state buffers: after Reset, writing
// block-1 zero bytes fills its partial-block buffer with zeros (a full
// block would be hashed in place and leave the buffer as it was).
func wipeHash(d hash.Hash, block int) {
	var zero [sha512.BlockSize]byte
	d.Reset()
	d.Write(zero[:block-1])
	d.Reset()
}

// burnStack overwrites a few KB of the stack below the caller, where the
// hash functions' frames (and the copies of their states that Sum makes)
// were.
//
//go:noinline
func burnStack() {
	var b [8192]byte
	clear(b[:])
	runtime.KeepAlive(&b)
}

// SecretSHA256 returns SHA-256(data) for secret data (an EPSK being
// fingerprinted), wiping the hash state that buffered it and the stack
// below; sha256.Sum256 leaves the data's last partial block in a state
// on the stack.
func SecretSHA256(data []byte) [sha256.Size]byte {
	var out [sha256.Size]byte
	d := sha256.New()
	d.Write(data)
	d.Sum(out[:0])
	wipeHash(d, sha256.BlockSize)
	burnStack()
	return out
}

// BurnStack overwrites a few KB of the calling goroutine's stack below the
// caller: call it (deferred) at the end of a function whose callees handled
// key material, so their dead frames do not keep it.
func BurnStack() { burnStack() }
