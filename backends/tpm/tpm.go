// Package tpm is the TPM 2.0 vault backend: each PSK's PRK (epskx) becomes a
// keyedHash HMAC object wrapped by the TPM's storage parent, and every
// HKDF-Expand block is one TPM2_HMAC. Only TPM-wrapped public/private blobs
// leave the TPM; the PRK crosses the bus once, at creation, inside a salted
// parameter-encrypted session.
//
// It registers the "tpm" scheme with the vault. URIs:
//
//	tpm                                  /dev/tpmrm0, else /dev/tpm0
//	tpm:device=/dev/tpmrm0               a TPM character device
//	tpm:swtpm=127.0.0.1:2321             swtpm's raw TCP command channel
//	tpm:swtpm-unix=/run/swtpm/sock       swtpm's unix command channel
//
// followed by comma-separated options: persist-srk (make the ECC SRK
// persistent at 0x81000001 if nothing is there), max-loaded=N (transient
// objects to keep loaded; default 16, and fewer when the TPM runs out),
// auth-source=file:PATH or auth-source=credential:NAME (a secret of at
// least 16 bytes from which every new key's TPM auth value is derived; see
// auth.go).
package tpm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"github.com/google/go-tpm/tpm2"

	"github.com/pskvault/pskvault/importer"
	"github.com/pskvault/pskvault/vault"
)

// Scheme is the URI scheme this backend registers.
const Scheme = "tpm"

// SRKHandle is the TCG-reserved persistent handle of the storage root key.
const SRKHandle = tpm2.TPMHandle(0x81000001)

// ParentPubFile is the file in the vault's state directory where the
// backend records its storage parent's public area (TPM2B_PUBLIC, not
// secret) each time it opens, so `pskvault tpm parent-pub` can export it
// while the daemon holds the TPM.
const ParentPubFile = "tpm-parent.pub"

func init() {
	vault.RegisterBackend(Scheme, func(ctx context.Context, cfg vault.BackendConfig) (vault.Backend, error) {
		b, err := Open(ctx, cfg.URI)
		if err != nil {
			return nil, err
		}
		if cfg.StateDir != "" {
			if err := b.recordParent(ctx, filepath.Join(cfg.StateDir, ParentPubFile)); err != nil {
				b.Close()
				return nil, err
			}
		}
		return b, nil
	})
}

// recordParent writes the parent public area to path (0600, atomically).
func (b *Backend) recordParent(ctx context.Context, path string) error {
	pub, err := b.ParentPublic(ctx)
	if err != nil {
		return err
	}
	// State files are opened without following links and must be the
	// daemon's own (vault.OpenStateFile).
	if f, err := vault.OpenStateFile(path, os.O_RDONLY, 0); err == nil {
		old, rerr := io.ReadAll(io.LimitReader(f, 64<<10))
		f.Close()
		if rerr == nil && bytes.Equal(old, pub) {
			return nil
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("tpm: record parent public key: %w", err)
	}
	tmp := path + ".tmp"
	if err := os.Remove(tmp); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("tpm: record parent public key: %w", err)
	}
	f, err := vault.OpenStateFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("tpm: record parent public key: %w", err)
	}
	_, werr := f.Write(pub)
	if err := errors.Join(werr, f.Close()); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("tpm: record parent public key: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("tpm: record parent public key: %w", err)
	}
	return nil
}

// Config is a parsed backend URI.
type Config struct {
	Device     string // character device; "" with no swtpm = default device
	SwtpmTCP   string // host:port of swtpm's command channel
	SwtpmUnix  string // path of swtpm's unix command socket
	PersistSRK bool   // create the persistent SRK if absent
	MaxLoaded  int    // upper bound on cached loaded objects
	AuthSource string // file:PATH or credential:NAME of the per-key auth secret; "" for none
}

// DefaultDevices are tried in order when the URI names no device.
var DefaultDevices = []string{"/dev/tpmrm0", "/dev/tpm0"}

// ParseURI parses a "tpm[:k=v,...]" backend URI. Unknown options are
// refused, never ignored.
func ParseURI(uri string) (Config, error) {
	cfg := Config{MaxLoaded: 16}
	scheme, rest, _ := strings.Cut(uri, ":")
	if scheme != Scheme {
		return cfg, fmt.Errorf("tpm backend: URI %q does not start with %q", uri, Scheme+":")
	}
	if rest == "" {
		return cfg, nil
	}
	seen := map[string]bool{}
	for _, kv := range strings.Split(rest, ",") {
		k, v, hasV := strings.Cut(kv, "=")
		if seen[k] {
			return cfg, fmt.Errorf("tpm backend: option %q given twice", k)
		}
		seen[k] = true
		need := func() error {
			if !hasV || v == "" {
				return fmt.Errorf("tpm backend: option %q needs a value (%s=...)", k, k)
			}
			return nil
		}
		switch k {
		case "device":
			if err := need(); err != nil {
				return cfg, err
			}
			cfg.Device = v
		case "swtpm":
			if err := need(); err != nil {
				return cfg, err
			}
			cfg.SwtpmTCP = v
		case "swtpm-unix":
			if err := need(); err != nil {
				return cfg, err
			}
			cfg.SwtpmUnix = v
		case "persist-srk":
			b := true
			if hasV {
				var err error
				if b, err = strconv.ParseBool(v); err != nil {
					return cfg, fmt.Errorf("tpm backend: persist-srk=%q is not a boolean", v)
				}
			}
			cfg.PersistSRK = b
		case "auth-source":
			if err := need(); err != nil {
				return cfg, err
			}
			cfg.AuthSource = v
		case "max-loaded":
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 || n > 1024 {
				return cfg, fmt.Errorf("tpm backend: max-loaded=%q: want a number from 1 to 1024", v)
			}
			cfg.MaxLoaded = n
		case "":
			return cfg, fmt.Errorf("tpm backend: empty option in URI %q", uri)
		default:
			return cfg, fmt.Errorf("tpm backend: unknown option %q in URI (known: device, swtpm, swtpm-unix, persist-srk, max-loaded, auth-source)", k)
		}
	}
	n := 0
	for _, s := range []string{cfg.Device, cfg.SwtpmTCP, cfg.SwtpmUnix} {
		if s != "" {
			n++
		}
	}
	if n > 1 {
		return cfg, errors.New("tpm backend: give only one of device=, swtpm=, swtpm-unix=")
	}
	return cfg, nil
}

// Backend is a vault.Backend holding PRKs in a TPM 2.0. It is safe for
// concurrent use: TPM commands are serialized.
type Backend struct {
	cfg Config

	// sem serializes all TPM traffic and guards everything below; a
	// channel rather than a mutex so that waiting honours the context.
	sem    chan struct{}
	closed bool
	link   *link   // nil while disconnected
	parent *parent // nil until (re)established on the current link
	cache  *objectCache
	hashes []importer.Hash // set by Open, then read-only
	desc   string          // device in use; written under sem
	info   vault.BackendInfo
	// parentAuthErr latches a refused authorization of the storage parent:
	// each failed attempt on a DA-protected parent counts toward the TPM's
	// dictionary-attack lockout, which then blocks every DA-protected key
	// of every program on this TPM. So the parent is tried once and never
	// again until the backend is reopened.
	parentAuthErr error
	// authSecret is the auth-source secret (nil without one), read once at
	// Open and cleared at Close.
	authSecret []byte

	closeOnce sync.Once
}

var (
	_ vault.Backend         = (*Backend)(nil)
	_ vault.RandomSource    = (*Backend)(nil)
	_ vault.WrappedImporter = (*Backend)(nil)
)

// Open connects to the TPM named by uri and prepares the storage parent.
func Open(ctx context.Context, uri string) (*Backend, error) {
	cfg, err := ParseURI(uri)
	if err != nil {
		return nil, err
	}
	b := &Backend{cfg: cfg, sem: make(chan struct{}, 1), cache: newObjectCache(cfg.MaxLoaded)}
	if cfg.AuthSource != "" {
		if b.authSecret, err = readAuthSecret(cfg.AuthSource); err != nil {
			return nil, err
		}
	}
	err = b.run(ctx, "open", func() error {
		b.hashes = []importer.Hash{importer.SHA256}
		if b.supportsHMAC(tpm2.TPMAlgSHA384) {
			b.hashes = append(b.hashes, importer.SHA384)
		}
		return nil
	})
	if err != nil {
		b.Close()
		return nil, err
	}
	b.info = b.makeInfo()
	return b, nil
}

// Info describes the backend.
func (b *Backend) Info() vault.BackendInfo {
	i := b.info
	i.Hashes = append([]importer.Hash(nil), i.Hashes...)
	i.HashNames = append([]string(nil), i.HashNames...)
	return i
}

func (b *Backend) makeInfo() vault.BackendInfo {
	names := make([]string, len(b.hashes))
	for i, h := range b.hashes {
		names[i] = h.String()
	}
	return vault.BackendInfo{
		Name:        Scheme,
		Description: b.description(),
		Hardware:    b.cfg.SwtpmTCP == "" && b.cfg.SwtpmUnix == "",
		Hashes:      append([]importer.Hash(nil), b.hashes...),
		HashNames:   names,
	}
}

func (b *Backend) description() string {
	var where string
	switch {
	case b.cfg.SwtpmTCP != "":
		where = "swtpm at " + b.cfg.SwtpmTCP + " (software TPM: no hardware protection)"
	case b.cfg.SwtpmUnix != "":
		where = "swtpm at " + b.cfg.SwtpmUnix + " (software TPM: no hardware protection)"
	default:
		where = b.desc
		if where == "" {
			where = "TPM device"
		}
	}
	return "TPM 2.0, " + where
}

// Close flushes the objects this backend loaded, sends TPM2_Shutdown(STATE)
// to a swtpm (a kernel-managed device is left to the kernel), and
// disconnects. It is safe to call more than once.
func (b *Backend) Close() error {
	var err error
	b.closeOnce.Do(func() {
		b.sem <- struct{}{}
		defer func() { <-b.sem }()
		b.closed = true
		clear(b.authSecret)
		if b.link == nil {
			return
		}
		b.cache.flushAll(b.link)
		if b.parent != nil && b.parent.transient {
			b.link.flush(b.parent.handle)
		}
		if b.link.simulator {
			if _, e := (tpm2.Shutdown{ShutdownType: tpm2.TPMSUState}).Execute(b.link); e != nil {
				err = b.mapErr("shutdown", e)
			}
		}
		if e := b.link.Close(); e != nil && err == nil {
			err = e
		}
		b.link, b.parent = nil, nil
	})
	return err
}
