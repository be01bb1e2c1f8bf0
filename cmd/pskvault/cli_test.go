package main

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/pskvault/pskvault/api"
	"github.com/pskvault/pskvault/api/wire"
)

// cliEnv is the environment of the CLI runs here: none of the PSKVAULT_
// variables of whoever runs the tests.
func cliEnv(extra ...string) []string {
	var env []string
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, "PSKVAULT_") {
			env = append(env, e)
		}
	}
	return append(env, extra...)
}

// runSplit runs the binary with args and returns stdout and stderr apart.
func runSplit(t *testing.T, stdin []byte, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, args...)
	cmd.Env = cliEnv()
	cmd.Stdin = bytes.NewReader(stdin)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		t.Fatalf("run pskvault: %v", err)
	}
	return o.String(), e.String(), code
}

// shellWords splits an example line as sh would (quotes, no expansion)
// and stops at the first redirection or pipe.
func shellWords(line string) ([]string, error) {
	var words []string
	var cur strings.Builder
	in, quote := false, rune(0)
	for _, r := range line {
		switch {
		case quote != 0 && r == quote:
			quote = 0
		case quote != 0:
			cur.WriteRune(r)
		case r == '\'' || r == '"':
			quote, in = r, true
		case r == ' ' || r == '\t':
			if in {
				words = append(words, cur.String())
				cur.Reset()
				in = false
			}
		default:
			cur.WriteRune(r)
			in = true
		}
	}
	if quote != 0 {
		return nil, errors.New("unterminated quote")
	}
	if in {
		words = append(words, cur.String())
	}
	for i, w := range words {
		if w == ">" || w == "|" || w == "<" || w == ";" || w == "&&" {
			return words[:i], nil
		}
	}
	return words, nil
}

// parseExample parses an example command line exactly as run does, without
// running it: the global flags, the verb, the verb's flags, its arguments.
func parseExample(line string) (*command, error) {
	words, err := shellWords(line)
	if err != nil {
		return nil, err
	}
	if len(words) == 0 || words[0] != "pskvault" {
		return nil, fmt.Errorf("does not start with pskvault")
	}
	g := &globals{stdout: io.Discard, stderr: io.Discard}
	top, help, _ := topFlags(g)
	if err := top.Parse(words[1:]); err != nil {
		return nil, err
	}
	rest := top.Args()
	if len(rest) == 0 && *help {
		return nil, nil
	}
	c, args := lookup(rest)
	if c == nil {
		return nil, fmt.Errorf("unknown command %q", rest)
	}
	fs := flag.NewFlagSet(c.name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	g.register(fs, c.uses)
	c.setup(fs, g)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return c, nil
		}
		return c, err
	}
	if c.args == "" && fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if c.args != "" && fs.NArg() == 0 {
		return c, fmt.Errorf("no %s", c.args)
	}
	return c, nil
}

// exampleLines are the command lines after "Examples:" on a help page.
func exampleLines(out string) []string {
	_, ex, ok := strings.Cut(out, "\nExamples:\n")
	if !ok {
		return nil
	}
	var lines []string
	for _, l := range strings.Split(ex, "\n") {
		if l = strings.TrimSpace(l); strings.HasPrefix(l, "pskvault ") {
			lines = append(lines, l)
		}
	}
	return lines
}

// verbFlags is the verb's FlagSet as run builds it.
func verbFlags(c *command) *flag.FlagSet {
	fs := flag.NewFlagSet(c.name, flag.ContinueOnError)
	g := &globals{}
	g.register(fs, c.uses)
	c.setup(fs, g)
	return fs
}

var globalFlagUse = map[string]globalUse{"state-dir": useStateDir, "socket": useSocket, "data-socket": useDataSocket}

// TestHelpPages walks the overview, every group word and every verb with
// --help: exit 0, on stdout, every flag of the verb's FlagSet shown and no
// global flag that does not apply to it (not even in the text), and
// examples at the end, each of which parses as a command line of that verb.
func TestHelpPages(t *testing.T) {
	pages := [][]string{{"--help"}, {"help"}}
	for name := range groups {
		pages = append(pages, []string{name, "--help"})
	}
	names := slices.Sorted(func(yield func(string) bool) {
		for n := range commands {
			if !yield(n) {
				return
			}
		}
	})
	for _, n := range names {
		pages = append(pages, append(strings.Fields(n), "--help"))
	}
	for name := range commands {
		if g, _, ok := strings.Cut(name, " "); ok && groups[g] == nil {
			t.Errorf("group %q has no registerGroup (summary, examples)", g)
		}
	}
	for _, args := range pages {
		out, errOut, code := runSplit(t, nil, args...)
		what := strings.Join(args, " ")
		if code != 0 || errOut != "" {
			t.Errorf("%s: exit %d, stderr %q", what, code, errOut)
			continue
		}
		ex := exampleLines(out)
		if len(ex) == 0 {
			t.Errorf("%s: no examples:\n%s", what, out)
		}
		_, tail, _ := strings.Cut(out, "\nExamples:\n")
		for _, l := range strings.Split(strings.TrimSpace(tail), "\n") {
			if l = strings.TrimSpace(l); !strings.HasPrefix(l, "pskvault ") && !strings.HasPrefix(l, "# ") {
				t.Errorf("%s: the page does not end with its examples: %q", what, l)
			}
		}
		for _, l := range ex {
			if _, err := parseExample(l); err != nil {
				t.Errorf("%s: example %q: %v", what, l, err)
			}
		}
		c := commands[strings.Join(args[:len(args)-1], " ")]
		if c == nil {
			continue
		}
		fs := verbFlags(c)
		fs.VisitAll(func(f *flag.Flag) {
			if !strings.Contains(out, "\n  --"+f.Name+" ") && !strings.Contains(out, "\n  --"+f.Name+"\n") && !strings.Contains(out, "\n  -"+f.Name+"\n") {
				t.Errorf("%s: flag --%s not shown", what, f.Name)
			}
		})
		for gname, use := range globalFlagUse {
			if c.uses&use != 0 {
				continue
			}
			if fs.Lookup(gname) != nil {
				t.Errorf("%s: global flag --%s registered on a verb that does not use it", what, gname)
			}
			if regexp.MustCompile(`(^|[^-])--` + gname + `\b`).MatchString(out) {
				t.Errorf("%s: the page mentions --%s, which does not apply to it:\n%s", what, gname, out)
			}
		}
	}
	// pskvault help VERB... is VERB... --help.
	for _, args := range [][]string{{"psk", "create"}, {"psk"}, {"wrap"}} {
		want, _, _ := runSplit(t, nil, append(slices.Clone(args), "--help")...)
		got, errOut, code := runSplit(t, nil, append([]string{"help"}, args...)...)
		if code != 0 || got != want {
			t.Errorf("help %v: exit %d, not the --help page: %s%s", args, code, got, errOut)
		}
	}
	if _, errOut, code := runSplit(t, nil, "help", "frobnicate"); code != 2 || !strings.Contains(errOut, "unknown command") {
		t.Errorf("help frobnicate: exit %d: %s", code, errOut)
	}
	// Inapplicable globals after the verb are refused like any unknown flag
	// (before the verb they are accepted, as always).
	for _, args := range [][]string{{"wrap", "--socket", "/x"}, {"init", "--data-socket", "/x"}, {"psk", "list", "--state-dir", "/x"}} {
		if _, errOut, code := runSplit(t, nil, args...); code != 2 || !strings.Contains(errOut, "flag provided but not defined") {
			t.Errorf("%v: exit %d: %s", args, code, errOut)
		}
	}
}

// TestEveryVerbJSONOrReason: every verb has --json, or says why not.
func TestEveryVerbJSONOrReason(t *testing.T) {
	for name, c := range commands {
		has := verbFlags(c).Lookup("json") != nil
		switch {
		case has && c.noJSON != "":
			t.Errorf("%s has --json and a reason not to", name)
		case !has && c.noJSON == "":
			t.Errorf("%s has no --json and no noJSON reason", name)
		}
	}
}

// decodeStrict decodes one JSON value into v, refusing unknown fields and
// trailing data: the answer has exactly the documented shape.
func decodeStrict(t *testing.T, what, out string, v any) {
	t.Helper()
	if !json.Valid([]byte(out)) {
		t.Errorf("%s --json: not valid JSON: %q", what, out)
		return
	}
	dec := json.NewDecoder(strings.NewReader(out))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		t.Errorf("%s --json: %v: %s", what, err, out)
		return
	}
	if dec.More() {
		t.Errorf("%s --json: more than one value: %s", what, out)
	}
}

// TestJSONEveryVerb runs every verb that has --json with it, against a
// real daemon (soft backend) where the verb needs one: exit 0, stdout one
// JSON value of the documented shape, nothing but hints on stderr, and no
// key material in the JSON (derive's ipskx aside). pkcs11 probe, pkcs11
// import-wrapping-key and tpm parent-pub need a token or a TPM: their
// --json is checked in TestPKCS11EndToEnd and TestTPMEndToEnd.
func TestJSONEveryVerb(t *testing.T) {
	elsewhere := map[string]string{"pkcs11 probe": "TestPKCS11EndToEnd", "pkcs11 import-wrapping-key": "TestPKCS11EndToEnd", "tpm parent-pub": "TestTPMEndToEnd"}
	covered := map[string]bool{}
	a := newNode(t, "node-a", "soft")
	a.start()
	g := []string{"--state-dir", a.dir, "--socket", a.socket}
	dir := t.TempDir()
	js := func(want any, args ...string) string {
		t.Helper()
		c, _ := lookup(args)
		if c == nil {
			t.Fatalf("no command %v", args)
		}
		covered[c.name] = true
		out, errOut, code := runSplit(t, nil, append(append(slices.Clone(g), args...), "--json")...)
		if code != 0 {
			t.Fatalf("%s --json: exit %d: %s", c.name, code, errOut)
		}
		decodeStrict(t, c.name, out, want)
		return out
	}
	key := testKey(32)
	keyHex := hex.EncodeToString(key)
	noKey := func(what, out string) {
		t.Helper()
		if strings.Contains(strings.ToLower(out), keyHex) {
			t.Errorf("%s --json carries the key", what)
		}
	}

	var v versionInfo
	js(&v, "version")
	var st statusInfo
	js(&st, "status")
	if st.Daemon != "running" || st.Node != "node-a" {
		t.Errorf("status --json: %+v", st)
	}
	var p api.PSK
	noKey("psk import", js(&p, "psk", "import", "--identity", "j-1", "--client", "node-a", "--server", "node-b", "--key-file", writeKey(t, key)))
	peerFile := filepath.Join(dir, "peer.hex")
	out := js(&p, "psk", "create", "--identity", "j-2", "--client", "node-a", "--server", "node-b", "--format", "hex", "--out", peerFile)
	if peer, err := os.ReadFile(peerFile); err != nil || strings.Contains(out, strings.TrimSpace(string(peer))) {
		t.Errorf("psk create --json: the peer's key is in the JSON, or no key file (%v)", err)
	}
	var list api.PSKList
	js(&list, "psk", "list")
	if len(list.PSKs) != 2 {
		t.Errorf("psk list --json: %d records", len(list.PSKs))
	}
	js(&p, "psk", "show", "--identity", "j-1")
	var d wire.DeriveResponse
	js(&d, "derive", "--identity", "j-1")
	if d.IPSKX == "" {
		t.Error("derive --json: no ipskx")
	}
	var rep wire.Report
	js(&rep, "check")
	var rot rotateJSON
	noKey("psk rotate", js(&rot, "psk", "rotate", "--identity", "j-1", "--new-identity", "j-1b", "--key-file", writeKey(t, testKey(48)[16:]), "--overlap", "1h"))
	if rot.IdentityHex != hex.EncodeToString([]byte("j-1")) || rot.NewIdentityHex != hex.EncodeToString([]byte("j-1b")) || rot.KCV == "" {
		t.Errorf("psk rotate --json: %+v", rot)
	}
	js(&p, "psk", "finalize", "--identity", "j-1b")
	js(&p, "psk", "revoke", "--identity", "j-2", "--reason", "test")
	var sw sweepJSON
	js(&sw, "psk", "sweep")
	if sw.SweptHex == nil {
		t.Error("psk sweep --json: swept_hex null, want a list")
	}
	var del deleteJSON
	js(&del, "psk", "delete", "--identity", "j-2")
	if del.DeletedHex != hex.EncodeToString([]byte("j-2")) {
		t.Errorf("psk delete --json: %+v", del)
	}

	// Offline verbs.
	var in initJSON
	js(&in, "init", "--state-dir", filepath.Join(dir, "v2"), "--node-id", "node-x")
	if in.NodeID != "node-x" || in.Backend != "soft" {
		t.Errorf("init --json: %+v", in)
	}
	cfg := filepath.Join(dir, "pskvault.toml")
	os.WriteFile(cfg, []byte("log_level = \"debug\"\n"), 0o600)
	var cc configCheckJSON
	js(&cc, "config", "check", "--config", cfg)
	if !cc.OK || cc.Problems == nil {
		t.Errorf("config check --json: %+v", cc)
	}
	os.WriteFile(cfg, []byte("log_level = \"loud\"\nbogus = 1\n"), 0o600)
	out, errOut, code := runSplit(t, nil, "config", "check", "--config", cfg, "--json")
	cc = configCheckJSON{}
	decodeStrict(t, "config check (bad file)", out, &cc)
	if code != 1 || cc.OK || len(cc.Problems) != 2 || cc.Problems[0].Line != 1 || !strings.Contains(errOut, "2 problem(s)") {
		t.Errorf("config check --json of a bad file: exit %d, %+v, stderr %s", code, cc, errOut)
	}
	agentKey := testKey(32)
	agentKey[0] ^= 0x77
	if out, code := a.run(nil, "psk", "import", "--identity", "j-agent", "--client", "node-a", "--server", "node-b", "--key-file", writeKey(t, agentKey)); code != 0 {
		t.Fatalf("import: %s", out)
	}
	agentCfg := filepath.Join(dir, "agent.json")
	agentOut := filepath.Join(dir, "keys.json")
	os.WriteFile(agentCfg, []byte(`{"data_socket":"`+a.socket+`","outputs":[{"path":"`+agentOut+`","format":"json","role":"client","identities":["j-agent"]}]}`), 0o600)
	var ag agentJSON
	js(&ag, "agent", "--config", agentCfg, "--check")
	if ag.Mode != "check" {
		t.Errorf("agent --check --json: %+v", ag)
	}
	js(&ag, "agent", "--config", agentCfg, "--once")
	if ag.Mode != "once" || ag.Outputs != 1 {
		t.Errorf("agent --once --json: %+v", ag)
	}
	if _, err := os.Stat(agentOut); err != nil {
		t.Errorf("agent --once wrote no file: %v", err)
	}
	var w wrapJSON
	kek := filepath.Join(dir, "kek.hex")
	os.WriteFile(kek, []byte(hex.EncodeToString(testKey(32))+"\n"), 0o600)
	noKey("wrap", js(&w, "wrap", "--pkcs11-kek", kek, "--key-file", writeKey(t, key), "--out", filepath.Join(dir, "blob")))
	if w.Target != "pkcs11" || w.KeyBits != 256 {
		t.Errorf("wrap --json: %+v", w)
	}
	// fleet: one link between two nodes known only by generated TPM parents.
	lines, ids := generatedNodes(t, dir, 2)
	inv := filepath.Join(dir, "inventory.csv")
	os.WriteFile(inv, []byte(strings.Join(append(lines, "link,"+ids[0]+","+ids[1]), "\n")+"\n"), 0o600)
	fout := filepath.Join(dir, "fleet")
	var fr fleetRunJSON
	js(&fr, "fleet", "provision", "--inventory", inv, "--out", fout)
	if fr.Action != "provision" || fr.Issued != 1 {
		t.Errorf("fleet provision --json: %+v", fr)
	}
	js(&fr, "fleet", "rotate", "--inventory", inv, "--out", fout, "--expiring-within", "87600h")
	if fr.Action != "rotate" || fr.Issued != 1 {
		t.Errorf("fleet rotate --json: %+v", fr)
	}
	var fs fleetStatusJSON
	js(&fs, "fleet", "status", "--inventory", inv, "--out", fout)
	if fs.Planned != 1 || len(fs.Links) != 1 || fs.Links[0].Generation != 2 {
		t.Errorf("fleet status --json: %+v", fs)
	}
	var dm demoJSON
	js(&dm, "demo", "--no-tls")
	if len(dm.Derived) != 3 || !dm.ThirdNodeRefused || !dm.ForeignContextRefused || dm.TLSHandshake != "skipped" {
		t.Errorf("demo --json: %+v", dm)
	}

	for name, c := range commands {
		if c.noJSON != "" || covered[name] || elsewhere[name] != "" {
			continue
		}
		t.Errorf("%s has --json but this test does not run it", name)
	}
}

// TestCompletion: each shell's script is produced, non-empty and calls
// back into the binary (cobra's scripts complete from 'pskvault __complete'
// rather than from a word list, so the verbs are what that callback
// returns); the bash script, loaded into a real bash, completes every verb
// and group word, a group's subcommands, a flag, and a flag's values.
func TestCompletion(t *testing.T) {
	for _, sh := range []string{"bash", "zsh", "fish"} {
		out, errOut, code := runSplit(t, nil, "completion", sh)
		if code != 0 || len(out) < 1000 || !strings.Contains(out, "__complete") {
			t.Errorf("completion %s: exit %d, %d bytes, stderr %s", sh, code, len(out), errOut)
		}
	}
	if _, errOut, code := runSplit(t, nil, "completion", "tcsh"); code != 2 || !strings.Contains(errOut, "want bash, zsh or fish") {
		t.Errorf("completion tcsh: exit %d: %s", code, errOut)
	}
	want := map[string]bool{}
	for name := range commands {
		w, _, _ := strings.Cut(name, " ")
		want[w] = true
	}
	got := bashComplete(t, "pskvault ")
	for w := range want {
		if !slices.Contains(got, w) {
			t.Errorf("bash completion of 'pskvault ': no %s in %v", w, got)
		}
	}
	for _, c := range []struct {
		line string
		want []string
	}{
		{"pskvault psk ", []string{"create", "import", "list", "rotate", "sweep"}},
		{"pskvault derive --k", []string{"--kdf"}},
		{"pskvault derive --kdf ", []string{"sha256", "sha384"}},
		{"pskvault psk create --format ", []string{"bundle", "hex"}},
		{"pskvault derive --format ", []string{"openssl", "gnutls", "mbedtls", "hex"}},
		{"pskvault completion ", []string{"bash", "zsh", "fish"}},
	} {
		got := bashComplete(t, c.line)
		sort.Strings(got)
		for _, w := range c.want {
			if !slices.Contains(got, w) {
				t.Errorf("bash completion of %q: %v, want %v", c.line, got, c.want)
				break
			}
		}
	}
	// Only the flags that apply: wrap offers no --socket.
	if got := bashComplete(t, "pskvault wrap --"); slices.Contains(got, "--socket") || !slices.Contains(got, "--key-file") {
		t.Errorf("bash completion of 'pskvault wrap --': %v", got)
	}

	// fish: its own completer on the script.
	fish := requireTool(t, "fish")
	dir := t.TempDir()
	os.Symlink(binary, filepath.Join(dir, "pskvault"))
	script, _, _ := runSplit(t, nil, "completion", "fish")
	os.WriteFile(filepath.Join(dir, "pskvault.fish"), []byte(script), 0o600)
	for line, words := range map[string][]string{"pskvault ": slices.Collect(func(yield func(string) bool) {
		for w := range want {
			if !yield(w) {
				return
			}
		}
	}), "pskvault psk ": {"create", "list"}, "pskvault derive --kdf ": {"sha384"}} {
		cmd := exec.Command(fish, "--no-config", "-c", "source "+filepath.Join(dir, "pskvault.fish")+"; complete -C '"+line+"'")
		cmd.Env = cliEnv("PATH=" + dir + ":" + os.Getenv("PATH"))
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("fish complete -C %q: %v", line, err)
		}
		var got []string
		for _, l := range strings.Split(string(out), "\n") {
			if f := strings.Split(l, "\t"); f[0] != "" {
				got = append(got, f[0])
			}
		}
		for _, w := range words {
			if !slices.Contains(got, w) {
				t.Errorf("fish completion of %q: no %s in %v", line, w, got)
			}
		}
	}

	// zsh: the script parses and declares itself for pskvault (zsh's
	// completion system cannot be driven without a terminal).
	zsh := requireTool(t, "zsh")
	script, _, _ = runSplit(t, nil, "completion", "zsh")
	if !strings.HasPrefix(script, "#compdef pskvault") {
		t.Errorf("zsh script does not start with #compdef pskvault: %.40q", script)
	}
	zf := filepath.Join(dir, "_pskvault")
	os.WriteFile(zf, []byte(script), 0o600)
	if out, err := exec.Command(zsh, "-n", zf).CombinedOutput(); err != nil {
		t.Errorf("zsh -n _pskvault: %v\n%s", err, out)
	}
}

// TestCompletionIdentities: --identity completes from the daemon that
// --socket (before the verb) names.
func TestCompletionIdentities(t *testing.T) {
	a := newNode(t, "node-a", "soft")
	a.start()
	if out, code := a.run(nil, "psk", "import", "--identity", "comp-1", "--client", "node-a", "--server", "node-b", "--key-file", writeKey(t, testKey(32))); code != 0 {
		t.Fatalf("import: %s", out)
	}
	got := bashComplete(t, "pskvault --socket "+a.socket+" psk show --identity ")
	if !slices.Contains(got, "comp-1") {
		t.Errorf("identity completion: %v", got)
	}
	got = bashComplete(t, "pskvault --socket "+a.socket+" psk show --identity-hex ")
	if !slices.Contains(got, hex.EncodeToString([]byte("comp-1"))) {
		t.Errorf("identity-hex completion: %v", got)
	}
}

// bashComplete loads the bash completion script into bash and completes
// line (the cursor at its end), as pressing TAB would.
func bashComplete(t *testing.T, line string) []string {
	t.Helper()
	bash := requireTool(t, "bash")
	const bashCompletion = "/usr/share/bash-completion/bash_completion"
	if _, err := os.Stat(bashCompletion); err != nil {
		if os.Getenv("PSKVAULT_REQUIRE_SIMULATORS") == "1" {
			t.Fatalf("%s: %v (package bash-completion; ./test.sh installs it)", bashCompletion, err)
		}
		t.Skipf("no bash-completion: %v", err)
	}
	script, _, code := runSplit(t, nil, "completion", "bash")
	if code != 0 {
		t.Fatal("completion bash failed")
	}
	dir := t.TempDir()
	os.Symlink(binary, filepath.Join(dir, "pskvault"))
	f := filepath.Join(dir, "c.bash")
	os.WriteFile(f, []byte(script), 0o600)
	words, _ := shellWords(line)
	if strings.HasSuffix(line, " ") {
		words = append(words, "")
	}
	prog := fmt.Sprintf(`source /usr/share/bash-completion/bash_completion; source %q
COMP_LINE=%q; COMP_POINT=${#COMP_LINE}; COMP_WORDS=(%s); COMP_CWORD=%d; COMP_TYPE=9
__start_pskvault pskvault "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
printf '%%s\n' "${COMPREPLY[@]}"`, f, line, quoteWords(words), len(words)-1)
	cmd := exec.Command(bash, "--norc", "--noprofile", "-c", prog)
	cmd.Env = cliEnv("PATH=" + dir + ":" + os.Getenv("PATH"))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr // compopt complains outside a real completion
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("bash completion of %q: %v\n%s%s", line, err, out, stderr.Bytes())
	}
	var got []string
	for _, l := range strings.Split(string(out), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			got = append(got, strings.Fields(l)[0])
		}
	}
	return got
}

// requireTool is the path of a tool the test needs: a failure under
// PSKVAULT_REQUIRE_SIMULATORS=1 (./test.sh installs it), else a skip.
func requireTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("PSKVAULT_REQUIRE_SIMULATORS") == "1" {
			t.Fatalf("%s not installed and PSKVAULT_REQUIRE_SIMULATORS=1 (./test.sh installs it)", name)
		}
		t.Skipf("%s not installed", name)
	}
	return p
}

func quoteWords(ws []string) string {
	q := make([]string, len(ws))
	for i, w := range ws {
		q[i] = fmt.Sprintf("%q", w)
	}
	return strings.Join(q, " ")
}

// TestManPages: __gen-docs writes a man page for the program, every group
// word and every verb, each naming every flag of the verb's FlagSet (and
// no global flag that does not apply), its summary and its examples; the
// output is the same bytes when made again (what packaging/build.sh
// installs and TestDeb compares with the installed binary's).
func TestManPages(t *testing.T) {
	dirs := []string{t.TempDir(), t.TempDir()}
	for _, d := range dirs {
		if out, errOut, code := runSplit(t, nil, "__gen-docs", "--date", "2026-12-02", d); code != 0 {
			t.Fatalf("__gen-docs: exit %d: %s%s", code, out, errOut)
		}
	}
	files := func(d string) map[string][]byte {
		m := map[string][]byte{}
		filepath.WalkDir(d, func(p string, e os.DirEntry, err error) error {
			if err == nil && !e.IsDir() {
				b, _ := os.ReadFile(p)
				rel, _ := filepath.Rel(d, p)
				m[rel] = b
			}
			return nil
		})
		return m
	}
	one, two := files(dirs[0]), files(dirs[1])
	if len(one) != len(two) {
		t.Errorf("two runs made %d and %d files", len(one), len(two))
	}
	for k, v := range one {
		if !bytes.Equal(v, two[k]) {
			t.Errorf("%s differs between two runs", k)
		}
	}
	wantPages := []string{"pskvault.1"}
	for name := range groups {
		wantPages = append(wantPages, "pskvault-"+name+".1")
	}
	for name, c := range commands {
		page := "man1/pskvault-" + strings.ReplaceAll(name, " ", "-") + ".1"
		wantPages = append(wantPages, page[len("man1/"):])
		b := one[page]
		if b == nil {
			t.Errorf("no %s", page)
			continue
		}
		man := string(b)
		if !strings.Contains(man, "\n"+`.TH "PSKVAULT-`+strings.ToUpper(strings.ReplaceAll(name, " ", "-"))+`" "1" "Dec 2026"`) {
			t.Errorf("%s: no .TH header for it dated Dec 2026:\n%.200s", page, man)
		}
		for _, want := range []string{".SH NAME", ".SH SYNOPSIS", ".SH DESCRIPTION", ".SH OPTIONS", ".SH EXAMPLE"} {
			if !strings.Contains(man, want) {
				t.Errorf("%s: no %s", page, want)
			}
		}
		verbFlags(c).VisitAll(func(f *flag.Flag) {
			if !strings.Contains(man, `\fB--`+f.Name+`\fP`) && !strings.Contains(man, `\fB-`+f.Name+`\fP`) {
				t.Errorf("%s: flag --%s missing", page, f.Name)
			}
		})
		for gname, use := range globalFlagUse {
			if c.uses&use == 0 && regexp.MustCompile(`(^|[^-])--`+gname+`\b`).MatchString(man) {
				t.Errorf("%s mentions --%s, which does not apply to it", page, gname)
			}
		}
		for _, e := range c.examples {
			if !strings.Contains(man, e.line) {
				t.Errorf("%s: example %q missing", page, e.line)
			}
		}
	}
	for _, p := range wantPages {
		if one["man1/"+p] == nil {
			t.Errorf("no man1/%s", p)
		}
	}
	if n := len(one) - 3; n != len(wantPages) {
		t.Errorf("%d man pages, want %d", n, len(wantPages))
	}
	for _, f := range []string{"completion/pskvault.bash", "completion/_pskvault", "completion/pskvault.fish"} {
		if len(one[f]) < 1000 {
			t.Errorf("%s: %d bytes", f, len(one[f]))
		}
	}
	// The man pages format without a warning.
	if groff, err := exec.LookPath("groff"); err == nil {
		out, err := exec.Command(groff, "-man", "-Tutf8", "-z", "-ww", filepath.Join(dirs[0], "man1", "pskvault-psk-create.1")).CombinedOutput()
		if err != nil || len(out) > 0 {
			t.Errorf("groff -man -ww pskvault-psk-create.1: %v\n%s", err, out)
		}
	}
}

// TestTagFlags: cobra's flag paragraphs become .TP entries, and a flag text
// that starts like a roff request is escaped.
func TestTagFlags(t *testing.T) {
	in := ".SH OPTIONS\n\\fB--a\\fP=\"\"\n\tfirst\n\n.PP\n\\fB--b\\fP=\"\"\n\t.dot first\n\n.SH EXAMPLE\n"
	want := ".SH OPTIONS\n.TP\n\\fB--a\\fP=\"\"\nfirst\n\n.TP\n\\fB--b\\fP=\"\"\n\\&.dot first\n\n.SH EXAMPLE\n"
	if got := string(tagFlags([]byte(in))); got != want {
		t.Errorf("tagFlags:\n%q\nwant\n%q", got, want)
	}
}
