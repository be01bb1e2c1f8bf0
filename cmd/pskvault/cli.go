package main

// The cobra side of the CLI. Commands run through the registry in main.go and
// Go's flag package, as before; cobra is used only for what it does well and
// we would otherwise write ourselves: the shell completion scripts, the
// dynamic completion they call back into (pskvault __complete ...), and the
// man pages (cobra/doc with go-md2man). The cobra tree is built from the same
// registry, each verb's flags from the same Go FlagSet its run parses
// (pflag's AddGoFlagSet), so help pages, man pages and completions cannot
// drift apart (docs/DESIGN.md, "CLI"; TestHelpPages, TestManPagesMatchHelp).

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/cobra/doc"
	"github.com/spf13/pflag"

	"github.com/pskvault/pskvault/api"
)

// genDocsCmd is the hidden verb packaging/build.sh runs on the binary it
// packages: pskvault __gen-docs [--date YYYY-MM-DD] DIR writes DIR/man1/*.1
// and DIR/completion/{pskvault.bash,_pskvault,pskvault.fish}.
const genDocsCmd = "__gen-docs"

func init() {
	register(&command{name: "completion", args: "bash|zsh|fish", summary: "print the shell completion script for bash, zsh or fish",
		long: "The script completes verbs, flags and flag values; --identity and --identity-hex are completed from the daemon's PSK list (it asks 'pskvault __complete', which asks the daemon the command line being completed names, or the default one). The .deb and .rpm install the scripts where each shell looks for them.",
		examples: []example{
			{"this shell only", "pskvault completion bash > ~/.local/share/bash-completion/completions/pskvault"},
			{"", "pskvault completion zsh > ~/.zfunc/_pskvault"},
			{"", "pskvault completion fish > ~/.config/fish/completions/pskvault.fish"},
		},
		noJSON: "it prints a shell script",
		setup:  setupCompletion})
}

func setupCompletion(fs *flag.FlagSet, g *globals) func(context.Context, []string) error {
	return func(ctx context.Context, args []string) error {
		if len(args) != 1 {
			return usagef("give one shell: bash, zsh or fish")
		}
		return writeCompletion(g.stdout, args[0], g)
	}
}

func writeCompletion(w io.Writer, shell string, g *globals) error {
	root := cobraTree(g)
	switch shell {
	case "bash":
		return root.GenBashCompletionV2(w, true)
	case "zsh":
		return root.GenZshCompletion(w)
	case "fish":
		return root.GenFishCompletion(w, true)
	}
	return usagef("shell %q: want bash, zsh or fish", shell)
}

// cobraTree is the registry as cobra commands: one per verb, one per group
// word, each verb's flags converted from the FlagSet its run parses (with
// the global flags that apply to it). Nothing runs through it but
// completion requests.
func cobraTree(g *globals) *cobra.Command {
	root := &cobra.Command{
		Use:               "pskvault",
		Short:             overviewSummary,
		Long:              overviewLong,
		Example:           cobraExamples(overviewExamples),
		SilenceErrors:     true,
		SilenceUsage:      true,
		DisableAutoGenTag: true,
		Run:               func(*cobra.Command, []string) {},
	}
	root.CompletionOptions.DisableDefaultCmd = true
	top, _, _ := topFlags(g)
	// Go's -h alias and --help: cobra adds its own -h, --help.
	keep := flag.NewFlagSet("pskvault", flag.ContinueOnError)
	top.VisitAll(func(f *flag.Flag) {
		if f.Name != "h" && f.Name != "help" {
			keep.Var(f.Value, f.Name, f.Usage)
		}
	})
	addFlags(root, keep)
	parents := map[string]*cobra.Command{}
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		c := commands[n]
		parent, leaf := root, n
		if grp, sub, ok := strings.Cut(n, " "); ok {
			if parents[grp] == nil {
				gc := &cobra.Command{Use: grp, Short: "pskvault " + grp + " commands", DisableAutoGenTag: true}
				if gr := groups[grp]; gr != nil {
					gc.Short, gc.Example = gr.summary, cobraExamples(gr.examples)
				}
				root.AddCommand(gc)
				parents[grp] = gc
			}
			parent, leaf = parents[grp], sub
		}
		use := leaf + " [flags]"
		if c.args != "" {
			use += " " + c.args
		}
		long := c.summary
		if c.long != "" {
			long += "\n\n" + c.long
		}
		cc := &cobra.Command{
			Use: use, Short: c.summary, Long: long, Example: cobraExamples(c.examples),
			DisableAutoGenTag: true, DisableFlagsInUseLine: true,
			Run: func(*cobra.Command, []string) {},
		}
		if c.args == "" {
			cc.Args = cobra.NoArgs
			cc.ValidArgsFunction = cobra.NoFileCompletions
		}
		if c.name == "completion" {
			cc.ValidArgs = []string{"bash", "zsh", "fish"}
		}
		fs := flag.NewFlagSet("pskvault "+n, flag.ContinueOnError)
		g2 := *g
		g2.register(fs, c.uses)
		c.setup(fs, &g2)
		addFlags(cc, fs)
		completeValues(cc, c, &g2)
		parent.AddCommand(cc)
	}
	return root
}

// addFlags adds a Go FlagSet to a cobra command. Go's `name` placeholders
// in the usage text are for Go's help output; the man page gets the text
// without the backquotes.
func addFlags(cc *cobra.Command, fs *flag.FlagSet) {
	cc.Flags().AddGoFlagSet(fs)
	cc.Flags().VisitAll(func(f *pflag.Flag) { f.Usage = strings.ReplaceAll(f.Usage, "`", "") })
}

func cobraExamples(ex []example) string {
	var b strings.Builder
	for i, e := range ex {
		if i > 0 {
			b.WriteByte('\n')
		}
		if e.what != "" {
			fmt.Fprintf(&b, "  # %s\n", e.what)
		}
		fmt.Fprintf(&b, "  %s", e.line)
	}
	return b.String()
}

// flagValues are the values a flag takes, for completion ("" : any verb;
// "VERB/flag" : that verb's flag).
var flagValues = map[string][]string{
	"hash":             {"sha256", "sha384"},
	"kdf":              {"sha256", "sha384"},
	"protocol":         {"tls1.3", "dtls1.3"},
	"role":             {"client", "server"},
	"target":           {"tls1.3/sha256", "tls1.3/sha384", "dtls1.3/sha256", "dtls1.3/sha384"},
	"log-level":        {"debug", "info", "warn", "error"},
	"mlock":            {"auto", "require", "off"},
	"audit-failure":    {"refuse", "log"},
	"socket-mode":      {"0600", "0660"},
	"data-socket-mode": {"0666", "0660", "0600"},
	"derive/format":    {"openssl", "gnutls", "mbedtls", "hex"},
	"format":           {"bundle", "hex"},
	"backend":          {"soft", "tpm", "tpm:device=/dev/tpmrm0", "pkcs11:"},
	"stack":            nil, // filled from stackNames
}

// completeValues registers the completion of c's flag values: fixed lists,
// identities from the daemon, nothing for free text; file names (cobra's
// default) for the rest.
func completeValues(cc *cobra.Command, c *command, g *globals) {
	cc.Flags().VisitAll(func(f *pflag.Flag) {
		var fn cobra.CompletionFunc
		switch name := f.Name; {
		case name == "identity" || name == "identity-hex":
			// Asking the daemon for its list: an admin verb asks the
			// admin socket, derive the one it would derive from.
			cl := g.client
			if c.uses&useDataSocket != 0 && c.uses != useAll {
				cl = g.dataClient
			}
			fn = func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				defer cancel()
				psks, err := cl().List(ctx)
				if err != nil {
					return nil, cobra.ShellCompDirectiveNoFileComp
				}
				var out []string
				for _, p := range psks {
					if name == "identity-hex" {
						out = append(out, p.IdentityHex)
					} else if p.Identity != "" {
						out = append(out, p.Identity)
					}
				}
				return out, cobra.ShellCompDirectiveNoFileComp
			}
		case name == "stack":
			fn = cobra.FixedCompletions(strings.Split(stackNames(), ", "), cobra.ShellCompDirectiveNoFileComp)
		case flagValues[c.name+"/"+name] != nil:
			fn = cobra.FixedCompletions(flagValues[c.name+"/"+name], cobra.ShellCompDirectiveNoFileComp)
		case flagValues[name] != nil:
			fn = cobra.FixedCompletions(flagValues[name], cobra.ShellCompDirectiveNoFileComp)
		case f.Value.Type() == "bool":
			return
		case name == "state-dir" || name == "out" && strings.HasPrefix(c.name, "fleet "):
			fn = func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
				return nil, cobra.ShellCompDirectiveFilterDirs
			}
		case strings.Contains(f.Usage, "file") || strings.Contains(f.Usage, "path") || name == "out":
			return // file names
		default:
			fn = cobra.NoFileCompletions
		}
		cc.RegisterFlagCompletionFunc(f.Name, fn)
	})
}

// complete answers the completion scripts' pskvault __complete ARGS...
// Global flags before the verb are applied to g first (so --socket decides
// which daemon lists the identities) and the rest goes to cobra.
func complete(ctx context.Context, argv []string, g *globals) int {
	words := argv[1:]
	valued := map[string]*string{"state-dir": &g.stateDir, "socket": &g.socket, "data-socket": &g.dataSocket}
	i := 0
	for i < len(words)-1 && strings.HasPrefix(words[i], "-") {
		name, val, hasVal := strings.Cut(strings.TrimLeft(words[i], "-"), "=")
		dst := valued[name]
		switch {
		case dst != nil && hasVal:
			*dst = val
			i++
		case dst != nil && i+1 < len(words)-1:
			*dst = words[i+1]
			i += 2
		default:
			goto done
		}
	}
done:
	root := cobraTree(g)
	root.SetArgs(append([]string{argv[0]}, words[i:]...))
	root.SetOut(g.stdout)
	root.SetErr(io.Discard)
	if err := root.ExecuteContext(ctx); err != nil {
		return 1
	}
	return 0
}

// manDate is the date in the man pages' header: --date, else the commit
// time of the build, else today (the packages pass the commit's date, so
// that regenerating them from the installed binary gives the same bytes).
func manDate(given string) (time.Time, error) {
	if given != "" {
		return time.Parse(time.DateOnly, given)
	}
	if t, err := time.Parse(time.RFC3339, buildVersion().BuildTime); err == nil {
		return t.UTC(), nil
	}
	return time.Now().UTC(), nil
}

// tagFlags turns cobra's flag entries (a paragraph holding the flag, a tab
// and its text) into roff tagged paragraphs (.TP), which man(1) shows as
// the flag with its text indented below it.
func tagFlags(page []byte) []byte {
	lines := strings.Split(string(page), "\n")
	out := make([]string, 0, len(lines))
	for i := 0; i < len(lines); i++ {
		l := lines[i]
		if strings.HasPrefix(l, `\fB-`) && i+1 < len(lines) && strings.HasPrefix(lines[i+1], "\t") {
			if n := len(out); n > 0 && out[n-1] == ".PP" {
				out = out[:n-1]
			}
			text := strings.TrimLeft(lines[i+1], "\t")
			if strings.HasPrefix(text, ".") || strings.HasPrefix(text, "'") {
				text = `\&` + text // not a roff request
			}
			out = append(out, ".TP", l, text)
			i++
			continue
		}
		out = append(out, l)
	}
	return []byte(strings.Join(out, "\n"))
}

// genDocs is pskvault __gen-docs [--date YYYY-MM-DD] DIR.
func genDocs(argv []string, g *globals) int {
	fs := flag.NewFlagSet(genDocsCmd, flag.ContinueOnError)
	fs.SetOutput(g.stderr)
	date := fs.String("date", "", "date in the man pages' header (YYYY-MM-DD)")
	if err := fs.Parse(argv); err != nil || fs.NArg() != 1 {
		fmt.Fprintf(g.stderr, "pskvault %s: usage: pskvault %s [--date YYYY-MM-DD] DIR\n", genDocsCmd, genDocsCmd)
		return 2
	}
	if err := writeDocs(fs.Arg(0), *date, g); err != nil {
		fmt.Fprintf(g.stderr, "pskvault %s: error: %v\n", genDocsCmd, err)
		return 1
	}
	return 0
}

// writeDocs writes DIR/man1/*.1 and DIR/completion/{pskvault.bash,
// _pskvault,pskvault.fish}. The man pages and scripts describe the
// defaults of a system installation, not the environment of whoever runs
// it: the globals are the ones root would get.
func writeDocs(dir, date string, g *globals) error {
	d, err := manDate(date)
	if err != nil {
		return fmt.Errorf("--date: %w", err)
	}
	sys := &globals{stateDir: "/var/lib/pskvault", socket: "/run/pskvault/admin/pskvault.sock", stdout: g.stdout, stderr: g.stderr, stdin: g.stdin}
	man := filepath.Join(dir, "man1")
	comp := filepath.Join(dir, "completion")
	for _, p := range []string{man, comp} {
		if err := os.MkdirAll(p, 0o755); err != nil {
			return err
		}
	}
	hdr := &doc.GenManHeader{Section: "1", Source: "pskvault " + api.Version, Manual: "pskvault manual", Date: &d}
	if err := doc.GenManTree(cobraTree(sys), hdr, man); err != nil {
		return err
	}
	pages, err := filepath.Glob(filepath.Join(man, "*.1"))
	if err != nil {
		return err
	}
	for _, p := range pages {
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if err := os.WriteFile(p, tagFlags(b), 0o644); err != nil {
			return err
		}
	}
	for shell, name := range map[string]string{"bash": "pskvault.bash", "zsh": "_pskvault", "fish": "pskvault.fish"} {
		var b bytes.Buffer
		if err := writeCompletion(&b, shell, sys); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(comp, name), b.Bytes(), 0o644); err != nil {
			return err
		}
	}
	return nil
}

func init() {
	registerGroup("psk", &group{summary: "create, import, show and retire PSKs through the daemon's admin socket",
		examples: []example{{"", "pskvault psk list"}, {"", "pskvault psk create --help"}}})
	registerGroup("tpm", &group{summary: "TPM helpers for provisioning: the parent key a provisioning machine wraps keys for",
		examples: []example{{"", "pskvault tpm parent-pub --out node-a.parent.pub"}}})
	registerGroup("pkcs11", &group{summary: "PKCS#11 helpers: whether a token is usable, and its wrapping key",
		examples: []example{{"", "pskvault pkcs11 probe 'pkcs11:token=pskvault?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/etc/pskvault/pin'"}}})
	registerGroup("config", &group{summary: "the daemon's configuration file",
		examples: []example{{"", "pskvault config check --config /etc/pskvault/pskvault.toml"}}})
	registerGroup("fleet", &group{summary: "offline provisioning of many nodes: one key per link, written only as bundles wrapped to each node's hardware",
		examples: []example{{"", "pskvault fleet status --inventory fleet.csv --out bundles"}}})
}
