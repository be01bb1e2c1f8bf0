package config

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

const good = `# pskvault daemon
node_id = "node-a"
backend = "soft"
admin_socket = "/run/pskvault/admin/pskvault.sock"  # operators
data_socket = "/run/pskvault/data/pskvault.sock"
admin_group = "0"
max_conns = 64
mlock = "auto"

[access]
client = ["user:0", "group:0"]
server = []

[[psk]]
identity = "web-1"
server = ["user:65534"]

[[psk]]
identity_hex = "00ff"
client = ["user:root"]
`

func TestParseGood(t *testing.T) {
	c, err := Parse("t.toml", []byte(good))
	if err != nil {
		t.Fatal(err)
	}
	if c.NodeID != "node-a" || c.MaxConns != 64 || len(c.Access.Client) != 2 || len(c.PSKs) != 2 ||
		string(c.PSKs[0].Identity) != "web-1" || c.PSKs[0].Rule.Server[0].ID != 65534 || c.PSKs[1].Identity[1] != 0xff {
		t.Fatalf("parsed wrong: %+v", c)
	}
}

// TestParseProblems: one row per rule, each problem reported with its line.
func TestParseProblems(t *testing.T) {
	for _, tc := range []struct{ name, in, want string }{
		{"unknown key", "node_id = \"a\"\nsocket = \"x\"", "t.toml:2: unknown key \"socket\""},
		{"duplicate key", "mlock = \"off\"\nmlock = \"auto\"", "t.toml:2: key \"mlock\" given twice (first on line 1)"},
		{"unquoted string", "node_id = node-a", "t.toml:1: node_id: unsupported value"},
		{"wrong type", "max_conns = \"10\"", "t.toml:1: max_conns: want a positive integer"},
		{"bad enum", "\n\nmlock = \"yes\"", "t.toml:3: mlock \"yes\""},
		{"bad node id", "node_id = \"a b\"", "t.toml:1: node_id:"},
		{"unknown table", "[acces]\nclient = []", "t.toml:1: unknown table [acces]"},
		{"bad principal", "[access]\nclient = [\"uzer:1\"]", "t.toml:2: client: access entry"},
		{"no such user", "[access]\n\nserver = [\"user:no-such-user-xyz\"]", "t.toml:3: server: access entry \"user:no-such-user-xyz\": no such user"},
		{"psk without identity", "[[psk]]\nclient = []", "t.toml:1: [[psk]] needs identity"},
		{"psk twice", "[[psk]]\nidentity = \"a\"\n[[psk]]\nidentity_hex = \"61\"", "t.toml:3: a [[psk]] for this identity is already on line 1"},
		{"unterminated", "audit_log = \"/x", "t.toml:1: audit_log: unterminated string"},
		{"no equals", "node_id", "t.toml:1: want key = value"},
		{"multi-line array", "[access]\nclient = [\n\"user:0\"]", "t.toml:2: client: arrays must open and close on one line"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("t.toml", []byte(tc.in))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
		})
	}
}

// TestErrorLines: one "FILE:LINE: message" per problem, in file order.
func TestErrorLines(t *testing.T) {
	_, err := Parse("t.toml", []byte("node_id = \"a\"\nbogus = 1\n[access]\nclient = [\"uzer:1\"]\n"))
	var ce *Error
	if !errors.As(err, &ce) {
		t.Fatalf("got %v, want *Error", err)
	}
	want := []string{`t.toml:2: unknown key "bogus"`, `t.toml:4: client: access entry "uzer:1": want user:NAME, user:UID, group:NAME or group:GID`}
	if got := ce.Lines(); !slices.Equal(got, want) {
		t.Fatalf("got %q, want %q", got, want)
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(good))
	f.Fuzz(func(t *testing.T, b []byte) { Parse("f", b) })
}
