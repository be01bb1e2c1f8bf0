package vault

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"
	"sync/atomic"

	bolt "go.etcd.io/bbolt"
	"golang.org/x/sys/unix"
)

// datasync makes f's written data durable (fdatasync).
func datasync(f *os.File) error {
	for {
		err := unix.Fdatasync(int(f.Fd()))
		if err != unix.EINTR {
			return err
		}
	}
}

// Crypto-shredding (issue 12): destroying a record's key material without
// rewriting vault.db.
//
// What makes a destroyed PSK's key usable is its backend handle (the soft
// backend's sealed key, the TPM-wrapped blob, the PKCS#11 CKA_ID) and, for
// a finalized PSK, its sealed imported keys. A record keeps them only
// sealed (AES-256-GCM) under a random 32-byte data key of its own, its DEK;
// the record names the slot of vault.keys that holds the DEK (KeySlot) and
// carries the sealed secret (Sealed). The GCM additional data binds the
// slot number and the identity, so a sealed secret opens only in its own
// record and slot.
//
// vault.keys is an array of 32-byte slots (0600, O_NOFOLLOW, the state
// directory's rules). Slot 0 is a header (a magic string); slot n > 0 lives
// at offset 32n. A slot of zeros is free.
//
// Destroying a record's key = overwriting its slot with zeros in place
// (pwrite + fdatasync) before the record change is committed to bbolt. Old
// copies of the record that bbolt leaves in freed pages then hold
// ciphertext under a DEK that exists nowhere any more. A crash between the
// overwrite and the commit leaves a record whose slot no longer opens its
// secret: it is treated as destroyed (loaded without handle, refused for
// derivation, and the next change removes or clears it). Creating one:
// the DEK is written to a free slot and fdatasynced before the record that
// names it is committed; a crash in between leaves an orphan slot, which
// Open finds (no record names it) and zeroes.
//
// A change that keeps some of a record's secret and drops the rest
// (finalize destroying the main key but keeping the imported keys) cannot
// reuse the slot: the old sealed copy, with the handle, would stay readable
// under it. It moves the record to a new slot and, in the same transaction,
// notes the old slot in the "shred" bucket; the old slot is then zeroed and
// the note dropped. Open zeroes every slot still noted there. Slots are
// reused only once nothing in vault.db names them.

const (
	keysFile = "vault.keys"
	slotSize = 32
	// slotsMagic fills slot 0.
	slotsMagic = "pskvault keys v1"
)

var (
	bucketShred = []byte("shred")
	// errShredded: a record's slot no longer opens its sealed secret: its
	// key material was destroyed (a crash after the slot was zeroed and
	// before the record change was committed).
	errShredded = errors.New("record's key slot was destroyed")
)

// keySlots is the open vault.keys.
type keySlots struct {
	// mu serializes the writers (alloc, shred, release, scan, Close).
	// read takes only closeMu, shared, so a derivation reading a DEK never
	// waits for a writer's fdatasync; Close takes both.
	mu      sync.Mutex
	closeMu sync.RWMutex
	f       *os.File
	n       atomic.Uint32 // slots in the file, header included
	free    []uint32      // zero slots below n, reused first
	// ready are slots already holding a fresh DEK, written and synced
	// together (alloc): one fdatasync per readyBatch single allocations
	// instead of one each. Close zeroes those left; after a crash they
	// are orphans, which Open zeroes (reclaimSlots).
	ready []uint32

	// fault, when set (tests only), is called before each step ("shred":
	// before a slot is zeroed; "write": before a DEK is written) and
	// aborts it when it returns an error.
	fault func(step string) error
}

// openKeySlots opens (creating when create is set) vault.keys in dir. Its
// free list holds every zero slot, found by reading the file a block at a
// time (32 MB at 1M records, never held whole).
func openKeySlots(path string, create bool) (*keySlots, error) {
	flag := os.O_RDWR
	if create {
		flag |= os.O_CREATE
	}
	f, err := OpenStateFile(path, flag, 0o600)
	if err != nil {
		return nil, err
	}
	s := &keySlots{f: f}
	fail := func(err error) (*keySlots, error) {
		f.Close()
		return nil, err
	}
	st, err := f.Stat()
	if err != nil {
		return fail(err)
	}
	if st.Size() < slotSize {
		var hdr [slotSize]byte
		copy(hdr[:], slotsMagic)
		if _, err := f.WriteAt(hdr[:], 0); err != nil {
			return fail(fmt.Errorf("write %s: %w", path, err))
		}
		if err := f.Sync(); err != nil {
			return fail(fmt.Errorf("sync %s: %w", path, err))
		}
		s.n.Store(1)
		return s, nil
	}
	// A trailing partial slot is a DEK whose write a crash interrupted:
	// no record names it, and the next allocation overwrites it.
	n := uint32(st.Size() / slotSize)
	s.n.Store(n)
	var zero [slotSize]byte
	buf := make([]byte, 64*1024)
	for off := int64(0); off < int64(n)*slotSize; off += int64(len(buf)) {
		chunk := buf[:min(int64(len(buf)), int64(n)*slotSize-off)]
		if _, err := f.ReadAt(chunk, off); err != nil {
			return fail(fmt.Errorf("read %s: %w", path, err))
		}
		for i := 0; i < len(chunk); i += slotSize {
			slot := uint32((off + int64(i)) / slotSize)
			switch {
			case slot == 0:
				if !bytes.Equal(chunk[:len(slotsMagic)], []byte(slotsMagic)) {
					return fail(fmt.Errorf("%w: %s is not a pskvault key-slot file", ErrInvalid, path))
				}
			case bytes.Equal(chunk[i:i+slotSize], zero[:]):
				s.free = append(s.free, slot)
			}
		}
	}
	clear(buf)
	slices.Reverse(s.free) // the lowest slots are taken first
	return s, nil
}

// readAll returns the content of vault.keys, whole (the caller wipes
// it): for the walks over every record after a crash or a migration.
func (s *keySlots) readAll() ([]byte, error) {
	s.closeMu.RLock()
	defer s.closeMu.RUnlock()
	if s.f == nil {
		return nil, errDBClosed
	}
	data := make([]byte, int(s.n.Load())*slotSize)
	if _, err := s.f.ReadAt(data, 0); err != nil {
		clear(data)
		return nil, fmt.Errorf("read %s: %w", keysFile, err)
	}
	return data, nil
}

// scan builds the free list from the file's content: every zero slot, and
// every non-zero one that inUse (when not nil) says no record names (an
// orphan from an interrupted create), which is zeroed first. It returns
// how many orphans it zeroed.
func (s *keySlots) scan(data []byte, inUse func(slot uint32) bool) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var zero [slotSize]byte
	s.free = s.free[:0]
	orphans := 0
	for i := s.n.Load() - 1; i >= 1; i-- {
		slot := data[int(i)*slotSize : int(i+1)*slotSize]
		if bytes.Equal(slot, zero[:]) {
			s.free = append(s.free, i)
			continue
		}
		if inUse != nil && !inUse(i) {
			if _, err := s.f.WriteAt(zero[:], int64(i)*slotSize); err != nil {
				return orphans, fmt.Errorf("zero orphan key slot: %w", err)
			}
			orphans++
			s.free = append(s.free, i)
		}
	}
	if orphans > 0 {
		if err := datasync(s.f); err != nil {
			return orphans, fmt.Errorf("sync %s: %w", keysFile, err)
		}
	}
	return orphans, nil
}

func (s *keySlots) step(name string) error {
	if s.fault == nil {
		return nil
	}
	return s.fault(name)
}

// readyBatch is how many DEKs alloc writes and syncs at once, at most;
// blockSlots, the slots in a 4 KiB block of vault.keys.
const (
	readyBatch = 32
	blockSlots = 4096 / slotSize
)

// alloc returns a slot holding a new random DEK, already durable, and the
// DEK (which the caller wipes). The DEKs are written and synced
// readyBatch at a time (ready), so most calls cost no fdatasync.
func (s *keySlots) alloc() (uint32, []byte, error) {
	s.mu.Lock()
	if err := s.step("take"); err != nil {
		s.mu.Unlock()
		return 0, nil, err
	}
	if len(s.ready) == 0 {
		// Free slots first, then the file's current 4 KiB block: the
		// file grows a block at a time, as when slots were written one
		// by one, and a full disk shows at the same import.
		n := len(s.free)
		if n == 0 {
			n = int(blockSlots - s.n.Load()%blockSlots)
		}
		slots, deks, err := s.allocNLocked(min(n, readyBatch))
		if err != nil {
			s.mu.Unlock()
			return 0, nil, err
		}
		for _, d := range deks {
			clear(d)
		}
		slices.Reverse(slots)
		s.ready = slots
	}
	slot := s.ready[len(s.ready)-1]
	s.ready = s.ready[:len(s.ready)-1]
	s.mu.Unlock()
	dek, err := s.read(slot)
	if err != nil {
		s.shred(slot)
		s.release(slot)
		return 0, nil, err
	}
	return slot, dek, nil
}

// allocN writes n new random DEKs to free slots, makes them durable with
// one fdatasync, and returns the slots and the DEKs (which the caller
// wipes).
func (s *keySlots) allocN(n int) ([]uint32, [][]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.allocNLocked(n)
}

func (s *keySlots) allocNLocked(n int) ([]uint32, [][]byte, error) {
	buf := make([]byte, n*slotSize)
	if _, err := rand.Read(buf); err != nil {
		return nil, nil, fmt.Errorf("OS RNG: %w", err)
	}
	if s.f == nil {
		clear(buf)
		return nil, nil, errDBClosed
	}
	if err := s.step("write"); err != nil {
		clear(buf)
		return nil, nil, err
	}
	slots := make([]uint32, n)
	deks := make([][]byte, n)
	free, top := len(s.free), s.n.Load()
	for i := range slots {
		if free > 0 {
			free--
			slots[i] = s.free[free]
		} else {
			slots[i] = top
			top++
		}
		deks[i] = buf[i*slotSize : (i+1)*slotSize : (i+1)*slotSize]
	}
	undo := func(err error) ([]uint32, [][]byte, error) {
		// Not durable, maybe partly written: zero them again (best
		// effort); they stay free.
		var zero [slotSize]byte
		for _, slot := range slots {
			s.f.WriteAt(zero[:], int64(slot)*slotSize)
		}
		clear(buf)
		return nil, nil, err
	}
	// Appended slots are contiguous: one write for them.
	for i := 0; i < n; {
		j := i + 1
		for j < n && slots[j] == slots[j-1]+1 {
			j++
		}
		if _, err := s.f.WriteAt(buf[i*slotSize:j*slotSize], int64(slots[i])*slotSize); err != nil {
			return undo(fmt.Errorf("write key slot: %w", err))
		}
		i = j
	}
	if err := datasync(s.f); err != nil {
		return undo(fmt.Errorf("sync %s: %w", keysFile, err))
	}
	s.free = s.free[:free]
	s.n.Store(top)
	return slots, deks, nil
}

// read returns the DEK in slot (the caller wipes it).
func (s *keySlots) read(slot uint32) ([]byte, error) {
	s.closeMu.RLock()
	defer s.closeMu.RUnlock()
	if s.f == nil {
		return nil, errDBClosed
	}
	if slot == 0 || slot >= s.n.Load() {
		return nil, fmt.Errorf("%w: slot %d", errShredded, slot)
	}
	dek := make([]byte, slotSize)
	if _, err := s.f.ReadAt(dek, int64(slot)*slotSize); err != nil {
		return nil, fmt.Errorf("read key slot: %w", err)
	}
	return dek, nil
}

// shred overwrites slot with zeros and makes that durable. The slot is not
// free yet: release makes it so once no committed record names it.
func (s *keySlots) shred(slots ...uint32) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.f == nil {
		return errDBClosed
	}
	if err := s.step("shred"); err != nil {
		return err
	}
	var zero [slotSize]byte
	for _, slot := range slots {
		if slot == 0 || slot >= s.n.Load() {
			continue
		}
		if _, err := s.f.WriteAt(zero[:], int64(slot)*slotSize); err != nil {
			return fmt.Errorf("zero key slot: %w", err)
		}
	}
	if err := datasync(s.f); err != nil {
		return fmt.Errorf("sync %s: %w", keysFile, err)
	}
	return nil
}

// release returns zeroed slots to the free list.
func (s *keySlots) release(slots ...uint32) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, slot := range slots {
		if slot != 0 && slot < s.n.Load() {
			s.free = append(s.free, slot)
		}
	}
}

func (s *keySlots) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closeMu.Lock()
	defer s.closeMu.Unlock()
	if s.f == nil {
		return nil
	}
	// The unused ready DEKs: zeroed, so that a clean shutdown leaves no
	// slot that no record names.
	var zero [slotSize]byte
	for _, slot := range s.ready {
		s.f.WriteAt(zero[:], int64(slot)*slotSize)
	}
	if len(s.ready) > 0 {
		datasync(s.f)
		s.ready = nil
	}
	err := s.f.Close()
	s.f = nil
	return err
}

// The sealed secret: handle, then each finalized imported key's box, each
// as a 4-byte big-endian length and the bytes, under AES-256-GCM with a
// random 96-bit nonce (nonce || ciphertext || tag).

const sealedLabel = "pskvault record secret v1\x00"

func recordAAD(slot uint32, identity []byte) []byte {
	aad := make([]byte, 0, len(sealedLabel)+4+len(identity))
	aad = append(aad, sealedLabel...)
	aad = binary.BigEndian.AppendUint32(aad, slot)
	return append(aad, identity...)
}

// hasSecret reports whether p holds key material to protect.
func hasSecret(p *PSK) bool {
	if len(p.Handle) > 0 {
		return true
	}
	for _, s := range p.Finalized {
		if len(s.Box) > 0 {
			return true
		}
	}
	return false
}

// secretPrefix reports whether next's secret is prev's with more added
// (same handle or a handle where there was none, prev's boxes first): then
// the slot can stay, as nothing prev's old sealed copies hold is destroyed.
func secretPrefix(prev, next *PSK) bool {
	if len(prev.Handle) > 0 && !bytes.Equal(prev.Handle, next.Handle) {
		return false
	}
	var pb [][]byte
	for _, s := range prev.Finalized {
		if len(s.Box) > 0 {
			pb = append(pb, s.Box)
		}
	}
	var nb [][]byte
	for _, s := range next.Finalized {
		if len(s.Box) > 0 {
			nb = append(nb, s.Box)
		}
	}
	if len(nb) < len(pb) {
		return false
	}
	for i := range pb {
		if !bytes.Equal(pb[i], nb[i]) {
			return false
		}
	}
	return true
}

func newGCM(dek []byte) (cipher.AEAD, error) {
	b, err := aes.NewCipher(dek)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(b)
}

// sealRecord seals p's handle and boxes under dek for slot.
func sealRecord(dek []byte, slot uint32, p *PSK) ([]byte, error) {
	boxes := make([][]byte, len(p.Finalized))
	for i, s := range p.Finalized {
		boxes[i] = s.Box
	}
	pt := encodeSecret(p.Handle, boxes)
	defer clear(pt)
	aead, err := newGCM(dek)
	if err != nil {
		return nil, err
	}
	nonce := make([]byte, aead.NonceSize(), aead.NonceSize()+len(pt)+aead.Overhead())
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("OS RNG: %w", err)
	}
	return aead.Seal(nonce, nonce, pt, recordAAD(slot, p.Identity)), nil
}

// openRecord fills p's handle and boxes from its sealed secret under dek.
// It fails with errShredded when the DEK does not open it (zeroed, or
// reused after a crash).
func openRecord(dek []byte, p *PSK) error {
	aead, err := newGCM(dek)
	if err != nil {
		return err
	}
	if len(p.Sealed) < aead.NonceSize()+aead.Overhead() {
		return fmt.Errorf("%w: sealed secret too short", errShredded)
	}
	ns := aead.NonceSize()
	pt, err := aead.Open(nil, p.Sealed[:ns], p.Sealed[ns:], recordAAD(p.KeySlot, p.Identity))
	if err != nil {
		return errShredded
	}
	defer clear(pt)
	h, boxes, err := parseSecret(pt, len(p.Finalized))
	if err != nil {
		return err
	}
	fin := make([]Sealed, len(p.Finalized))
	copy(fin, p.Finalized)
	for i := range fin {
		fin[i].Box = boxes[i]
	}
	p.Handle, p.Finalized = h, fin
	return nil
}

// encodeSecret lays out a record's secret for sealing (parseSecret).
func encodeSecret(handle []byte, boxes [][]byte) []byte {
	var pt []byte
	pt = binary.BigEndian.AppendUint32(pt, uint32(len(handle)))
	pt = append(pt, handle...)
	for _, b := range boxes {
		pt = binary.BigEndian.AppendUint32(pt, uint32(len(b)))
		pt = append(pt, b...)
	}
	return pt
}

// parseSecret splits an opened sealed secret into the handle (nil when
// empty) and exactly nboxes boxes, each a 4-byte big-endian length and
// the bytes. The result is copied out of pt.
func parseSecret(pt []byte, nboxes int) ([]byte, [][]byte, error) {
	next := func() ([]byte, error) {
		if len(pt) < 4 {
			return nil, fmt.Errorf("%w: truncated sealed secret", ErrInvalid)
		}
		n := binary.BigEndian.Uint32(pt)
		if uint64(n) > uint64(len(pt)-4) {
			return nil, fmt.Errorf("%w: truncated sealed secret", ErrInvalid)
		}
		b := bytes.Clone(pt[4 : 4+n])
		pt = pt[4+n:]
		return b, nil
	}
	h, err := next()
	if err != nil {
		return nil, nil, err
	}
	if len(h) == 0 {
		h = nil
	}
	if nboxes > len(pt)/4 {
		return nil, nil, fmt.Errorf("%w: sealed secret too short for %d boxes", ErrInvalid, nboxes)
	}
	boxes := make([][]byte, nboxes)
	for i := range boxes {
		if boxes[i], err = next(); err != nil {
			return nil, nil, err
		}
	}
	if len(pt) != 0 {
		return nil, nil, fmt.Errorf("%w: sealed secret has %d bytes too many", ErrInvalid, len(pt))
	}
	return h, boxes, nil
}

// diskRecord is p as stored: the handle and boxes only inside Sealed.
// (encodeRecord, codec.go, never writes them).
func diskRecord(p *PSK) ([]byte, error) {
	if err := checkEncodable(p); err != nil {
		return nil, err
	}
	return encodeRecord(p), nil
}

// shredNote records, in tx, that slot must be zeroed (Open does it when a
// crash came first).
func shredNote(tx *bolt.Tx, slot uint32) error {
	b, err := tx.CreateBucketIfNotExists(bucketShred)
	if err != nil {
		return err
	}
	return b.Put(binary.BigEndian.AppendUint32(nil, slot), []byte{1})
}

func dropShredNote(tx *bolt.Tx, slot uint32) error {
	b := tx.Bucket(bucketShred)
	if b == nil {
		return nil
	}
	return b.Delete(binary.BigEndian.AppendUint32(nil, slot))
}
