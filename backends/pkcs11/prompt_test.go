//go:build cgo

package pkcs11

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pskvault/pskvault/importer"
	"github.com/pskvault/pskvault/vault"
)

// pty opens a pseudo-terminal pair and points ttyPath at its terminal side.
func pty(t *testing.T) *os.File {
	t.Helper()
	master, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals here: %v", err)
	}
	t.Cleanup(func() { master.Close() })
	if err := unix.IoctlSetPointerInt(int(master.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(int(master.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	old := ttyPath
	ttyPath = fmt.Sprintf("/dev/pts/%d", n)
	t.Cleanup(func() { ttyPath = old })
	return master
}

// typeAtPrompt waits for the PIN prompt on the terminal, types pin, and
// returns everything the terminal showed.
func typeAtPrompt(t *testing.T, master *os.File, pin string) <-chan string {
	shown := make(chan string, 1)
	go func() {
		var seen bytes.Buffer
		buf := make([]byte, 256)
		typed := false
		master.SetReadDeadline(time.Now().Add(10 * time.Second))
		for {
			n, err := master.Read(buf)
			seen.Write(buf[:n])
			if !typed && strings.Contains(seen.String(), "PIN for PKCS#11 token") {
				master.Write([]byte(pin + "\n"))
				typed = true
				master.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
			}
			if err != nil {
				shown <- seen.String()
				return
			}
		}
	}()
	return shown
}

// TestPromptedPIN: pin-source=prompt reads the PIN from the terminal with
// echo off, logs in with it, and keeps it for re-login after a session loss.
func TestPromptedPIN(t *testing.T) {
	tok := needToken(t)
	master := pty(t)
	shown := typeAtPrompt(t, master, tok.PIN())
	uri := strings.Replace(tok.URI(), "pin-source=file:"+tok.PINFile, "pin-source=prompt", 1)
	if uri == tok.URI() {
		t.Fatalf("test URI has no file pin-source to replace")
	}
	b, err := Open(context.Background(), uri)
	if err != nil {
		t.Fatalf("Open with a prompted PIN: %v", err)
	}
	defer b.Close()
	if out := <-shown; strings.Contains(out, tok.PIN()) {
		t.Fatal("the terminal echoed the PIN")
	}
	prk := make([]byte, 32)
	h, err := b.StoreKey(context.Background(), vault.StoreRequest{PRK: prk, Hash: importer.SHA256, Label: "prompt"})
	if err != nil {
		t.Fatalf("StoreKey after a prompted login: %v", err)
	}
	defer b.DeleteKey(context.Background(), vault.KeyRef{Handle: h, Hash: importer.SHA256})
	// Lose every session behind the pool's back: re-login must not prompt again.
	waitIndexed(t, b) // see waitIndexed
	if err := b.p.CloseAllSessions(b.slot); err != nil {
		t.Fatal(err)
	}
	if _, err := b.HMAC(context.Background(), vault.KeyRef{Handle: h, Hash: importer.SHA256}, []byte("x")); err != nil {
		t.Fatalf("HMAC after session loss: %v", err)
	}
}

func TestPromptWithoutTerminal(t *testing.T) {
	old := ttyPath
	ttyPath = "/nonexistent/tty"
	defer func() { ttyPath = old }()
	_, err := promptPIN("x")
	if !errors.Is(err, ErrPIN) || !strings.Contains(err.Error(), "needs a terminal") {
		t.Fatalf("got %v", err)
	}
}

func TestPromptURI(t *testing.T) {
	u, err := ParseURI("pkcs11:token=t?module-path=/m.so&pin-source=prompt")
	if err != nil || u.PINSource != "prompt" {
		t.Fatalf("pin-source=prompt: %+v %v", u, err)
	}
}
