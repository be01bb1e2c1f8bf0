package agent

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestWriteFile: written 0600 (or as told), skipped when nothing changed,
// rewritten when the mode changed, a symlink at the path replaced and its
// target untouched, a directory others may write refused.
func TestWriteFile(t *testing.T) {
	dir := t.TempDir()
	os.Chmod(dir, 0o700)
	p := filepath.Join(dir, "k.psk")
	uid, gid := os.Geteuid(), os.Getegid()
	if w, err := WriteFile(p, []byte("a:00\n"), uid, gid, 0o600); err != nil || !w {
		t.Fatalf("first write: %v %v", w, err)
	}
	if fi, _ := os.Stat(p); fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v", fi.Mode())
	}
	if w, err := WriteFile(p, []byte("a:00\n"), uid, gid, 0o600); err != nil || w {
		t.Fatalf("same content: written=%v %v", w, err)
	}
	if w, err := WriteFile(p, []byte("a:00\n"), uid, gid, 0o640); err != nil || !w {
		t.Fatalf("new mode: written=%v %v", w, err)
	}
	target := filepath.Join(t.TempDir(), "target")
	os.WriteFile(target, []byte("keep"), 0o600)
	os.Remove(p)
	os.Symlink(target, p)
	if w, err := WriteFile(p, []byte("b:01\n"), uid, gid, 0o600); err != nil || !w {
		t.Fatalf("over a symlink: %v %v", w, err)
	}
	if b, _ := os.ReadFile(target); string(b) != "keep" {
		t.Fatal("the symlink's target was written")
	}
	if fi, _ := os.Lstat(p); !fi.Mode().IsRegular() {
		t.Fatal("the symlink was not replaced by a file")
	}
	open := t.TempDir()
	os.Chmod(open, 0o777)
	if _, err := WriteFile(filepath.Join(open, "k"), []byte("x"), uid, gid, 0o600); err == nil {
		t.Fatal("wrote into a world-writable directory")
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Fatalf("temporary files left: %d entries", len(ents))
	}
}

func TestParseConfigRefusals(t *testing.T) {
	for _, c := range []struct{ cfg, want string }{
		{`{"data_socket":"rel","outputs":[]}`, "absolute"},
		{`{"data_socket":"/s","outputs":[{"path":"/a","format":"nginx","role":"server"}]}`, "format"},
		{`{"data_socket":"/s","outputs":[{"path":"/a","format":"stunnel","role":"both"}]}`, "role"},
		{`{"data_socket":"/s","outputs":[{"path":"/a","format":"stunnel","role":"server","mode":"0644"}]}`, "no access for others"},
		{`{"data_socket":"/s","outputs":[{"path":"/a","format":"stunnel","role":"server","identity_form":"bytes"}]}`, "cannot carry binary"},
		{`{"data_socket":"/s","outputs":[{"path":"/a","format":"stunnel","role":"server","reload":["kill"]}]}`, "absolute path"},
		{`{"data_socket":"/s","outputs":[{"path":"/a","format":"stunnel","role":"server","reload_unit":"a b"}]}`, "unit"},
		{`{"data_socket":"/s","outputs":[{"path":"/a","format":"stunnel","role":"server"},{"path":"/a","format":"json","role":"client"}]}`, "twice"},
		{`{"data_socket":"/s","outputs":[{"path":"/a","format":"stunnel","role":"server","extra":1}]}`, "unknown field"},
	} {
		_, err := ParseConfig([]byte(c.cfg))
		if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", c.cfg, err, c.want)
		}
	}
	c, err := ParseConfig([]byte(`{"data_socket":"/s","outputs":[{"path":"/a","format":"gnutls","role":"server","reload_unit":"gnutls-serv.service"}]}`))
	if err != nil || c.Outputs[0].IdentityForm != "bytes" || c.Outputs[0].mode != 0o600 || strings.Join(c.Outputs[0].argv, " ") != "systemctl reload -- gnutls-serv.service" {
		t.Fatalf("good config: %v %+v", err, c)
	}
}

func FuzzParseConfig(f *testing.F) {
	f.Add([]byte(`{"data_socket":"/s","outputs":[{"path":"/a","format":"stunnel","role":"server","peer":"n","identities":["x"],"mode":"0640","reload":["/bin/true"]}]}`))
	f.Add([]byte(`{"data_socket":"/s","outputs":[{"path":"/a/b","format":"json","role":"client","identities_hex":["00ff"],"context_hex":"01"}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := ParseConfig(data)
		if err == nil && (len(c.Outputs) == 0 || !filepath.IsAbs(c.DataSocket)) {
			t.Fatal("accepted a config without outputs or socket")
		}
		if err != nil && !errors.Is(err, ErrConfig) && c != nil {
			t.Fatal("config returned with an error")
		}
	})
}

// TestParseConfigNeverQuotesTheFile: a key file given as the configuration,
// or a secret pasted into any field, never reaches an error message (issue
// 11 item 3's rule for the daemon's configuration, kept for the agent's).
func TestParseConfigNeverQuotesTheFile(t *testing.T) {
	const secret = "5ec7e75ec7e75ec7e75ec7e75ec7e75e"
	out := `{"path":"/a","format":"stunnel","role":"server"`
	cases := []string{
		secret + "\n",
		"zz" + secret,
		`{"` + secret + `":1}`,
		`{"data_socket":"/s","outputs":[{"path":"/a","format":"stunnel","role":"server","` + secret + `":1}]}`,
		`{"data_socket":"/s","outputs":[{"path":"/a","format":"` + secret + `","role":"server"}]}`,
		`{"data_socket":"/s","outputs":[{"path":"/a","format":"stunnel","role":"` + secret + `"}]}`,
		`{"data_socket":"/s","outputs":[` + out + `,"identities_hex":["` + secret + `zz"]}]}`,
		`{"data_socket":"/s","outputs":[` + out + `,"protocol":"` + secret + `"}]}`,
		`{"data_socket":"/s","outputs":[` + out + `,"kdf":"` + secret + `"}]}`,
		`{"data_socket":"/s","outputs":[` + out + `,"identity_form":"` + secret + `"}]}`,
		`{"data_socket":"/s","outputs":[` + out + `,"mode":"` + secret + `"}]}`,
		`{"data_socket":"/s","outputs":[` + out + `,"reload_unit":"-` + secret + `"}]}`,
		`{"data_socket":"/s","outputs":[` + out + `,"owner":"u` + secret + `"}]}`,
		`{"data_socket":"/s","outputs":[` + out + `,"group":"g` + secret + `"}]}`,
	}
	for i, c := range cases {
		_, err := ParseConfig([]byte(c))
		if err == nil {
			t.Errorf("case %d: accepted", i)
			continue
		}
		if strings.Contains(err.Error(), secret[:8]) || strings.Contains(err.Error(), "5ec7") {
			t.Errorf("case %d: the error quotes the file", i)
		}
	}
}
