package client

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pskvault/pskvault/internal/squatter"
)

func TestMain(m *testing.M) {
	squatter.Main() // when this binary runs as another uid's fake daemon
	os.Exit(m.Run())
}

// otherUID runs the squatter: a uid that is neither root, nor this
// process, nor (on test machines) the pskvault system user.
var otherUID = &syscall.Credential{Uid: 65533, Gid: 65534}

// sharedDir is a directory every user may create entries in, as /tmp.
func sharedDir(t *testing.T) string {
	t.Helper()
	d := t.TempDir()
	for p := d; p != "/" && p != os.TempDir(); p = filepath.Dir(p) {
		os.Chmod(p, 0o755)
	}
	shared := filepath.Join(d, "shared")
	if err := os.Mkdir(shared, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(shared, os.ModeSticky|0o777); err != nil {
		t.Fatal(err)
	}
	return shared
}

// TestUntrustedDaemonGetsNothing (issue 11 item 1): another user listens on
// the socket path first. Import and create are refused before a single byte
// is written, with an error naming the uid found; trusting that uid
// explicitly (option or PSKVAULT_DAEMON_UID) does reach it, which shows the
// squatter would have seen the request.
func TestUntrustedDaemonGetsNothing(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run the squatter as another uid")
	}
	t.Setenv(EnvDaemonUID, "")
	sock := filepath.Join(sharedDir(t), "pskvault-1000", "pskvault.sock")
	sq := squatter.Start(t, sock, otherUID)

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	key := []byte("0123456789abcdef0123456789abcdef")
	spec := PSKSpec{Identity: []byte("squat"), ClientNode: "node-a", ServerNode: "node-b"}
	c := New(sock)
	defer c.Close()
	_, err := c.Import(ctx, spec, key)
	var ue *UntrustedDaemonError
	if !errors.Is(err, ErrUntrustedDaemon) || !errors.As(err, &ue) || ue.UID != otherUID.Uid {
		t.Fatalf("import to a squatter: %v, want an UntrustedDaemonError for uid %d", err, otherUID.Uid)
	}
	for _, want := range []string{sock, "uid 65533", EnvDaemonUID + "=65533", "nothing was sent"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	if _, k, err := c.Create(ctx, spec); !errors.Is(err, ErrUntrustedDaemon) || k != nil {
		t.Fatalf("create from a squatter: %v (key returned: %v)", err, k != nil)
	}
	if _, err := c.Derive(ctx, DeriveRequest{Identity: []byte("squat"), Protocol: "tls1.3", KDF: "sha256"}); !errors.Is(err, ErrUntrustedDaemon) {
		t.Fatalf("derive from a squatter: %v", err)
	}
	got := sq.Conns(3, 10*time.Second)
	if len(got) != 3 {
		t.Fatalf("squatter saw %d connections end, want 3", len(got))
	}
	for i, n := range got {
		if n != 0 {
			t.Errorf("connection %d: the squatter received %d bytes, want 0", i, n)
		}
	}

	// The same squatter, trusted on purpose, does receive the request.
	for name, tc := range map[string]func() *Client{
		"option": func() *Client { return New(sock, WithDaemonUID(otherUID.Uid)) },
		"env": func() *Client {
			t.Setenv(EnvDaemonUID, "65533")
			defer t.Setenv(EnvDaemonUID, "")
			return New(sock)
		},
	} {
		before := len(sq.Conns(0, 0))
		tc := tc()
		_, _, err := tc.Create(ctx, spec)
		tc.Close()
		if errors.Is(err, ErrUntrustedDaemon) {
			t.Fatalf("%s: uid 65533 trusted, still refused: %v", name, err)
		}
		got := sq.Conns(before+1, 10*time.Second)
		if len(got) <= before || got[before] == 0 {
			t.Fatalf("%s: the trusted squatter received nothing: %v", name, got)
		}
	}
}

func TestDaemonUIDEnvMalformed(t *testing.T) {
	for _, v := range []string{"abc", "-1", "4294967295", "1,2"} {
		t.Setenv(EnvDaemonUID, v)
		c := New(filepath.Join(t.TempDir(), "none.sock"))
		if _, err := c.Status(context.Background()); !errors.Is(err, ErrDaemonUID) {
			t.Errorf("%s=%q: %v, want ErrDaemonUID", EnvDaemonUID, v, err)
		}
	}
}

func TestNoSocket(t *testing.T) {
	if _, err := New("").Status(context.Background()); !errors.Is(err, ErrNoSocket) {
		t.Fatalf("empty socket path: %v, want ErrNoSocket", err)
	}
}
