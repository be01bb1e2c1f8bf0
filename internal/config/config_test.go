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
metrics_listen = "127.0.0.1:9464"

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
	if c.NodeID != "node-a" || c.MaxConns != 64 || c.MetricsListen != "127.0.0.1:9464" || len(c.Access.Client) != 2 || len(c.PSKs) != 2 ||
		string(c.PSKs[0].Identity) != "web-1" || c.PSKs[0].Rule.Server[0].ID != 65534 || c.PSKs[1].Identity[1] != 0xff {
		t.Fatalf("parsed wrong: %+v", c)
	}
}

// TestParseProblems: one row per rule, each problem reported with its line.
func TestParseProblems(t *testing.T) {
	for _, tc := range []struct{ name, in, want string }{
		{"unknown key", "node_id = \"a\"\nsocket = \"x\"", "t.toml:2: unknown key (not repeated here; known: node_id,"},
		{"duplicate key", "mlock = \"off\"\nmlock = \"auto\"", "t.toml:2: key \"mlock\" given twice (first on line 1)"},
		{"unquoted string", "node_id = node-a", "t.toml:1: node_id: unsupported value"},
		{"wrong type", "max_conns = \"10\"", "t.toml:1: max_conns: want a positive integer"},
		{"bad enum", "\n\nmlock = \"yes\"", "t.toml:3: mlock: want auto, require or off"},
		{"bad address", "metrics_listen = \"9464\"", "t.toml:1: metrics_listen: want host:port, e.g. \"127.0.0.1:9464\""},
		{"bad node id", "node_id = \"a b\"", "t.toml:1: node_id:"},
		{"unknown table", "[acces]\nclient = []", "t.toml:1: unknown table (known: [access], [[psk]])"},
		{"bad principal", "[access]\nclient = [\"uzer:1\"]", "t.toml:2: client: entry 1: want user:NAME"},
		{"no such user", "[access]\n\nserver = [\"user:no-such-user-xyz\"]", "t.toml:3: server: entry 1: no such user"},
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
	want := []string{`t.toml:2: unknown key (not repeated here; known: node_id, backend, state_dir, admin_socket, data_socket, admin_group, audit_log, log_level, max_conns, max_conns_per_uid, mlock, metrics_listen)`, `t.toml:4: client: entry 1: want user:NAME, user:UID, group:NAME or group:GID`}
	if got := ce.Lines(); !slices.Equal(got, want) {
		t.Fatalf("got %q, want %q", got, want)
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(good))
	f.Fuzz(func(t *testing.T, b []byte) { Parse("f", b) })
}

// TestProblemsNeverQuoteTheFile (issue 11 item 3): whatever the file holds,
// in whatever position, problems name the line and the fault, never the
// text: `config check` on a key file, or a reload of one, must not print
// the key to the terminal, the log or the audit log.
func TestProblemsNeverQuoteTheFile(t *testing.T) {
	const s = "9f3c2a7be1d04c58a6f2e9b17d3c5a40c1e8f27b9d6a4e35f0b2c8d7e1a9f604"
	const b64 = "nzwqe+HQTFim8umxfTxaQMHo8nudak418LLI1+Gp9gQ="
	var cases []string
	for _, x := range []string{s, b64, "pin-1234-5678-secret"} {
		q := `"` + x + `"`
		cases = append(cases,
			x, x+"\n", "\n\n"+x, " "+x+" # comment", x+" = 1", x+" = "+q, x+"=", x+" = "+x,
			"["+x+"]", "[["+x+"]]", "["+x, "[["+x+"]", "[access]\n"+x+" = 1", "[[psk]]\n"+x+" = 1",
			x+" = 1\n"+x+" = 2", "node_id = "+x, "node_id = "+q+" "+x, `node_id = "\`+x+`"`,
			"node_id = "+q, "log_level = "+q, "mlock = "+q, "admin_group = "+q, "max_conns = "+x, "max_conns = "+q,
			"backend = "+x, "audit_log = \""+x, "state_dir = ["+q+"]", "state_dir = ["+x+"]",
			"[access]\nclient = ["+q+"]", "[access]\nclient = [\"user:"+x+"\"]", "[access]\nserver = [\"group:"+x+"\", "+x+"]",
			"[access]\nclient = "+q, "[[psk]]\nidentity_hex = "+q, "[[psk]]\nidentity_hex = \"zz"+x+"\"",
			"[[psk]]\nidentity = "+q+"\n[[psk]]\nidentity = "+q, "[[psk]]\nidentity = "+q+"\nidentity_hex = "+q,
		)
	}
	for i, in := range cases {
		_, err := Parse("t.toml", []byte(in))
		if err == nil {
			continue // a well-formed file: nothing is printed
		}
		msg := err.Error()
		for _, x := range []string{s, b64, "pin-1234-5678-secret"} {
			for j := 0; j+8 <= len(x); j++ {
				if strings.Contains(msg, x[j:j+8]) {
					t.Errorf("case %d: a problem quotes the file's text (8 characters from offset %d)", i, j)
					break
				}
			}
		}
	}
	// The file that started it: a key file given as the configuration.
	if _, err := Parse("key.hex", []byte(s+"\n")); err == nil || err.Error() != "key.hex:1: want key = value, a [table] or a # comment" {
		t.Errorf("a key file as configuration: %v", err)
	}
}

func TestUnknownKeySuggests(t *testing.T) {
	_, err := Parse("t.toml", []byte("audit_lgo = \"/x\"\n[access]\nclinet = []\n"))
	want := `t.toml:1: unknown key (not repeated here); did you mean "audit_log"?; t.toml:3: unknown key in [access] (not repeated here); did you mean "client"?`
	if err == nil || err.Error() != want {
		t.Fatalf("got %v, want %s", err, want)
	}
}
