package agent

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pskvault/pskvault/client"
)

// Agent keeps the outputs of one configuration.
type Agent struct {
	cfg *Config
	c   *client.Client
	log *slog.Logger
	// seen remembers, per output, identities selected through rotation,
	// so a generation stays selected after the one it was rotated from
	// has expired.
	seen map[string]map[string]bool
	// OnRender, when set, is called after each output was handled:
	// written (and reloaded) or left as it was.
	OnRender func(path string, written bool)
}

// New returns an agent for cfg; log may be nil.
func New(cfg *Config, log *slog.Logger) *Agent {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var opts []client.Option
	if cfg.DaemonUID != nil {
		opts = append(opts, client.WithDaemonUID(*cfg.DaemonUID))
	}
	return &Agent{cfg: cfg, c: client.New(cfg.DataSocket, opts...), log: log, seen: map[string]map[string]bool{}}
}

// Close drops the agent's connections.
func (a *Agent) Close() { a.c.Close() }

// Once renders every output once; it reports every output that failed.
func (a *Agent) Once(ctx context.Context) error {
	var errs []error
	for i := range a.cfg.Outputs {
		if err := a.render(ctx, &a.cfg.Outputs[i]); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", a.cfg.Outputs[i].Path, err))
		}
	}
	return errors.Join(errs...)
}

// Run renders every output, then again each time the daemon reports that
// what this agent may derive changed, until ctx ends. Failures are logged
// and retried; they never stop the loop.
func (a *Agent) Run(ctx context.Context) error {
	token := ""
	backoff := time.Duration(0)
	for {
		tok, _, err := a.c.Watch(ctx, token, 0)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			backoff = min(max(2*backoff, 100*time.Millisecond), 5*time.Second)
			a.log.Warn("watch failed; retrying", "err", err, "in", backoff)
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(backoff):
			}
			// A restarted daemon gives new tokens: render again then.
			token = ""
			continue
		}
		backoff = 0
		if tok == token {
			continue // the wait ended with nothing changed for us
		}
		if err := a.Once(ctx); err != nil {
			a.log.Error("render failed", "err", err)
			// Keep the old token: the next watch answers at once and
			// the render is tried again, a second later at most.
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(time.Second):
			}
			continue
		}
		token = tok
	}
}

// key is one entry of an output file.
type key struct {
	identity, imported, ipskx []byte
	generation                int
	notAfter                  time.Time
	dheRequired, earlyData    bool
}

// selectKeys asks the daemon for the output's keys, newest generation
// first, filtered by identity (following rotations) when asked.
func (a *Agent) selectKeys(ctx context.Context, o *Output) ([]key, error) {
	offers, err := a.c.Keys(ctx, client.KeysRequest{Role: o.Role, Peer: o.Peer, Context: o.context, Protocol: o.Protocol, KDF: o.KDF})
	if err != nil {
		return nil, err
	}
	sel := a.seen[o.Path]
	if sel == nil {
		sel = map[string]bool{}
		for id := range o.ids {
			sel[id] = true
		}
		a.seen[o.Path] = sel
	}
	if len(o.ids) > 0 {
		for grew := true; grew; {
			grew = false
			for _, k := range offers {
				from, _ := hex.DecodeString(k.Policy.RotatedFrom)
				if !sel[string(k.Identity)] && len(from) > 0 && sel[string(from)] {
					sel[string(k.Identity)], grew = true, true
				}
			}
		}
	}
	var out []key
	for _, k := range offers {
		if len(o.ids) > 0 && !sel[string(k.Identity)] {
			clear(k.IPSKX)
			continue
		}
		out = append(out, key{identity: k.Identity, imported: k.ImportedIdentity, ipskx: k.IPSKX, generation: k.Policy.Generation,
			notAfter: k.NotAfter, dheRequired: k.Policy.DHERequired, earlyData: k.Policy.EarlyData})
	}
	return out, nil
}

// maxStunnelIdentity is OpenSSL's PSK_MAX_IDENTITY_LEN, which stunnel's
// identities (the hex text) must fit.
const maxStunnelIdentity = 128

// Render writes keys in an output's format.
func Render(o *Output, keys []key) ([]byte, error) {
	var b bytes.Buffer
	switch o.Format {
	case "stunnel", "mosquitto":
		for _, k := range keys {
			id := hex.EncodeToString(k.imported)
			if o.Format == "stunnel" && len(id) > maxStunnelIdentity {
				return nil, fmt.Errorf("an ImportedIdentity of %d bytes is %d hex digits, over stunnel's (OpenSSL's) %d", len(k.imported), len(id), maxStunnelIdentity)
			}
			fmt.Fprintf(&b, "%s:%x\n", id, k.ipskx)
		}
	case "gnutls":
		for _, k := range keys {
			if o.IdentityForm == "bytes" {
				b.WriteByte('#')
			}
			fmt.Fprintf(&b, "%x:%x\n", k.imported, k.ipskx)
		}
	case "json":
		type entry struct {
			IdentityHex      string    `json:"identity_hex"`
			ImportedIdentity string    `json:"imported_identity"`
			IPSKX            string    `json:"ipskx"`
			Generation       int       `json:"generation"`
			NotAfter         time.Time `json:"not_after,omitzero"`
			DHERequired      bool      `json:"psk_dhe_ke_required"`
			EarlyData        bool      `json:"early_data_allowed"`
		}
		doc := struct {
			Protocol string  `json:"protocol"`
			KDF      string  `json:"kdf"`
			Keys     []entry `json:"keys"`
		}{Protocol: o.Protocol, KDF: o.KDF, Keys: []entry{}}
		for _, k := range keys {
			doc.Keys = append(doc.Keys, entry{hex.EncodeToString(k.identity), hex.EncodeToString(k.imported), hex.EncodeToString(k.ipskx), k.generation, k.notAfter, k.dheRequired, k.earlyData})
		}
		enc := json.NewEncoder(&b)
		enc.SetIndent("", "  ")
		if err := enc.Encode(doc); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("format %q", o.Format)
	}
	return b.Bytes(), nil
}

// render brings one output up to date: the file is rewritten and the
// reload command run only when the content, owner or mode differ.
func (a *Agent) render(ctx context.Context, o *Output) error {
	keys, err := a.selectKeys(ctx, o)
	defer func() {
		for _, k := range keys {
			clear(k.ipskx)
		}
	}()
	if err != nil {
		return err
	}
	content, err := Render(o, keys)
	defer clear(content)
	if err != nil {
		return err
	}
	written, err := WriteFile(o.Path, content, o.uid, o.gid, o.mode)
	if err != nil {
		return err
	}
	if written {
		a.log.Info("wrote key file", "path", o.Path, "keys", len(keys))
		if len(o.argv) > 0 {
			if err := reload(ctx, o.argv); err != nil {
				return fmt.Errorf("file written, but the reload command failed: %w", err)
			}
		}
	}
	if a.OnRender != nil {
		a.OnRender(o.Path, written)
	}
	return nil
}

// reload runs argv (no shell) for at most 30 s; its output is dropped
// (it never sees key material).
func reload(ctx context.Context, argv []string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Stdin, cmd.Stdout = nil, nil
	var stderr bytes.Buffer
	cmd.Stderr = &limitWriter{w: &stderr, n: 512}
	if err := cmd.Run(); err != nil {
		if s := strings.TrimSpace(stderr.String()); s != "" {
			return fmt.Errorf("%s: %w: %s", argv[0], err, s)
		}
		return fmt.Errorf("%s: %w", argv[0], err)
	}
	return nil
}

type limitWriter struct {
	w io.Writer
	n int
}

func (l *limitWriter) Write(p []byte) (int, error) {
	if l.n > 0 {
		q := p[:min(len(p), l.n)]
		l.w.Write(q)
		l.n -= len(q)
	}
	return len(p), nil
}

// WriteFile puts content at path atomically, owned by uid:gid with mode:
// a temporary file in the same directory (O_EXCL, O_NOFOLLOW), fsync,
// rename over path, fsync of the directory. Nothing is followed: the
// directory is opened with O_NOFOLLOW and every name is resolved relative
// to it; a symlink at path is replaced, never written through. The
// directory must not be writable by anyone but its owner (root or this
// process's user). It reports false, and touches nothing, when path
// already holds exactly this content with this owner and mode.
func WriteFile(path string, content []byte, uid, gid int, mode os.FileMode) (bool, error) {
	dir, base := filepath.Split(path)
	dfd, err := unix.Open(filepath.Clean(dir), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return false, fmt.Errorf("open directory %s: %w", dir, err)
	}
	defer unix.Close(dfd)
	var st unix.Stat_t
	if err := unix.Fstat(dfd, &st); err != nil {
		return false, err
	}
	if st.Mode&0o022 != 0 && st.Mode&unix.S_ISVTX == 0 || (st.Uid != 0 && int(st.Uid) != os.Geteuid()) {
		return false, fmt.Errorf("directory %s: writable by others or owned by uid %d (want root or uid %d, not group/other-writable)", dir, st.Uid, os.Geteuid())
	}
	if same(dfd, base, content, uid, gid, mode) {
		return false, nil
	}
	var rnd [8]byte
	rand.Read(rnd[:])
	tmp := "." + base + ".pskvault-" + hex.EncodeToString(rnd[:])
	fd, err := unix.Openat(dfd, tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return false, fmt.Errorf("create temporary file in %s: %w", dir, err)
	}
	f := os.NewFile(uintptr(fd), filepath.Join(dir, tmp))
	ok := false
	defer func() {
		if !ok {
			f.Close()
			unix.Unlinkat(dfd, tmp, 0)
		}
	}()
	if _, err := f.Write(content); err != nil {
		return false, fmt.Errorf("write %s: %w", tmp, err)
	}
	if uid != os.Geteuid() || gid != os.Getegid() {
		if err := f.Chown(uid, gid); err != nil {
			return false, fmt.Errorf("chown %d:%d: %w", uid, gid, err)
		}
	}
	if err := f.Chmod(mode); err != nil {
		return false, err
	}
	if err := f.Sync(); err != nil {
		return false, fmt.Errorf("fsync %s: %w", tmp, err)
	}
	if err := f.Close(); err != nil {
		return false, err
	}
	if err := unix.Renameat(dfd, tmp, dfd, base); err != nil {
		return false, fmt.Errorf("rename into %s: %w", path, err)
	}
	ok = true
	if err := unix.Fsync(dfd); err != nil {
		return true, fmt.Errorf("fsync directory %s: %w", dir, err)
	}
	return true, nil
}

// same reports whether base in dfd is a regular file with this content,
// owner and mode.
func same(dfd int, base string, content []byte, uid, gid int, mode os.FileMode) bool {
	fd, err := unix.Openat(dfd, base, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return false
	}
	f := os.NewFile(uintptr(fd), base)
	defer f.Close()
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm() != mode || fi.Size() != int64(len(content)) {
		return false
	}
	if sys, ok := statOf(fi); !ok || int(sys.Uid) != uid || int(sys.Gid) != gid {
		return false
	}
	old := make([]byte, len(content)+1)
	defer clear(old)
	n, _ := io.ReadFull(f, old)
	return n == len(content) && bytes.Equal(old[:n], content)
}
