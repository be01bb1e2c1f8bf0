// Command pskvault keeps TLS 1.3 external PSKs in a TPM, an HSM or an
// encrypted software store and hands local TLS stacks only RFC 9258 imported
// PSKs derived from them, following RFC 9257.
//
// `pskvault serve` owns a vault and listens on a Unix socket; every other verb
// but init talks to it through package client.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/pskvault/pskvault/client"

	// Backends register themselves with the vault.
	_ "github.com/pskvault/pskvault/backends/soft"
)

// command is one verb ("init") or verb pair ("psk import"). It is the one
// definition the help page, the man page (cli.go, cobra's doc generator) and
// the shell completions are made from.
type command struct {
	name    string
	args    string // synopsis of positional arguments; "" means the verb takes none
	summary string
	// long says more than the summary: what the verb needs and what it
	// changes (help page and man page DESCRIPTION).
	long string
	// examples end the help page; each line is a real command line (a
	// test parses every one against the verb's flags) and never carries
	// key material.
	examples []example
	// uses says which of the global flags apply: only those are
	// registered on the verb (the others are refused after it, and its
	// help page does not mention them).
	uses globalUse
	// noJSON says why the verb has no --json ("" : it has one); a test
	// checks every verb has one or the other.
	noJSON string
	// setup registers the verb's flags and returns the function to run.
	setup func(fs *flag.FlagSet, g *globals) func(ctx context.Context, args []string) error
}

// example is one command line of a help page, with what it does.
type example struct{ what, line string }

// globalUse is a set of global flags.
type globalUse uint8

const (
	useStateDir globalUse = 1 << iota
	useSocket
	useDataSocket
	useAll = useStateDir | useSocket | useDataSocket
)

// group is a word that starts two-word commands ("psk", "tpm").
type group struct {
	summary  string
	examples []example
}

var groups = map[string]*group{}

func registerGroup(name string, gr *group) { groups[name] = gr }

var commands = map[string]*command{}

func register(c *command) {
	if _, dup := commands[c.name]; dup {
		panic("pskvault: command registered twice: " + c.name)
	}
	commands[c.name] = c
}

// globals are the flags every verb accepts.
type globals struct {
	stateDir   string
	socket     string
	dataSocket string // "" : use socket
	stdout     io.Writer
	stderr     io.Writer
	stdin      io.Reader
}

func (g *globals) client() *client.Client { return client.New(g.socket) }

// dataClient talks to the data socket when one is named, else to the
// admin socket (which serves the data endpoints too).
func (g *globals) dataClient() *client.Client {
	if g.dataSocket != "" {
		return client.New(g.dataSocket)
	}
	return client.New(g.socket)
}

// register adds the global flags in use to fs, with the help text that fits
// the verb: the admin socket is a data verb's fallback, serve's to listen on.
func (g *globals) register(fs *flag.FlagSet, use globalUse) {
	if use&useStateDir != 0 {
		fs.StringVar(&g.stateDir, "state-dir", g.stateDir, "vault state `directory` (env PSKVAULT_STATE_DIR)")
	}
	if use&useSocket != 0 {
		text := "daemon (admin) socket `path` (env PSKVAULT_SOCKET)"
		switch {
		case use == useAll:
			text = "admin socket `path` to listen on (env PSKVAULT_SOCKET)"
		case use&useDataSocket != 0:
			text = "daemon (admin) socket `path`, used when no --data-socket is given (env PSKVAULT_SOCKET)"
		}
		fs.StringVar(&g.socket, "socket", g.socket, text)
	}
	if use&useDataSocket != 0 {
		text := "data socket `path` (env PSKVAULT_DATA_SOCKET; default: the admin socket, which serves the data endpoints too)"
		if use == useAll {
			text = "data socket `path` for TLS stacks (derive, lookup, offers; env PSKVAULT_DATA_SOCKET): created beside --socket (DIR/../data/ for an admin/ DIR, else DIR-data/) unless given, or none to serve only the admin socket"
		}
		fs.StringVar(&g.dataSocket, "data-socket", g.dataSocket, text)
	}
}

func defaultGlobals() *globals {
	g := &globals{stdout: os.Stdout, stderr: os.Stderr, stdin: os.Stdin}
	g.stateDir = os.Getenv("PSKVAULT_STATE_DIR")
	if g.stateDir == "" {
		g.stateDir = defaultStateDir()
	}
	g.dataSocket = os.Getenv("PSKVAULT_DATA_SOCKET")
	g.socket = os.Getenv("PSKVAULT_SOCKET")
	if g.socket == "" {
		g.socket, _ = defaultSocket()
	}
	return g
}

func defaultStateDir() string {
	if os.Geteuid() == 0 {
		return "/var/lib/pskvault"
	}
	if d := os.Getenv("XDG_STATE_HOME"); d != "" {
		return filepath.Join(d, "pskvault")
	}
	home, _ := os.UserHomeDir()
	return filepath.Join(home, ".local", "state", "pskvault")
}

// errNoDefaultSocket: no --socket, no PSKVAULT_SOCKET, and no private
// runtime directory to put the socket in.
var errNoDefaultSocket = errors.New("no socket path: --socket and PSKVAULT_SOCKET are unset, and neither $XDG_RUNTIME_DIR nor /run/user/UID is there to hold a private one (pskvault never falls back to /tmp, where another user could take the path first)")

// defaultSocket is the admin socket: /run/pskvault/admin/pskvault.sock for
// root (the path contrib/systemd uses), else under $XDG_RUNTIME_DIR, else
// under /run/user/UID when that is a directory of this user's closed to
// others (what XDG_RUNTIME_DIR names in a login session; su, sudo -u and
// cron leave the variable unset). Nothing else: a path in a directory other
// users can write (/tmp) could be taken by one of them before the daemon
// starts. With neither, the socket must be given (errNoDefaultSocket).
func defaultSocket() (string, error) {
	if os.Geteuid() == 0 {
		return "/run/pskvault/admin/pskvault.sock", nil
	}
	if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" {
		return filepath.Join(d, "pskvault", "admin", "pskvault.sock"), nil
	}
	d := fmt.Sprintf("/run/user/%d", os.Geteuid())
	if st, err := os.Lstat(d); err == nil && st.IsDir() && st.Mode().Perm()&0o077 == 0 {
		if sys, ok := st.Sys().(*syscall.Stat_t); ok && sys.Uid == uint32(os.Geteuid()) {
			return filepath.Join(d, "pskvault", "admin", "pskvault.sock"), nil
		}
	}
	return "", errNoDefaultSocket
}

// noSocketHint tells a user without a default socket what to do.
const noSocketHint = "give --socket PATH or set PSKVAULT_SOCKET, to a path in a directory only you (or root) can write, for example PSKVAULT_SOCKET=$HOME/.local/state/pskvault-run/admin/pskvault.sock; or set XDG_RUNTIME_DIR"

// hintError is an error with advice for the user.
type hintError struct {
	err  error
	hint string
}

func (h *hintError) Error() string { return h.err.Error() }
func (h *hintError) Unwrap() error { return h.err }

func withHint(err error, format string, args ...any) error {
	return &hintError{err: err, hint: fmt.Sprintf(format, args...)}
}

// usageError is a mistake on the command line.
type usageError struct{ msg string }

func (u *usageError) Error() string { return u.msg }

func usagef(format string, args ...any) error { return &usageError{fmt.Sprintf(format, args...)} }

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], defaultGlobals())
	stop()
	os.Exit(code)
}

// run executes one command line and returns the exit status.
func run(ctx context.Context, argv []string, g *globals) int {
	if len(argv) > 0 {
		switch argv[0] {
		case cobra.ShellCompRequestCmd, cobra.ShellCompNoDescRequestCmd:
			return complete(ctx, argv, g)
		case genDocsCmd:
			return genDocs(argv[1:], g)
		}
	}
	top, help, version := topFlags(g)
	if err := top.Parse(argv); err != nil {
		fmt.Fprintf(g.stderr, "pskvault: error: %v\n", err)
		fmt.Fprintln(g.stderr, "pskvault: hint: run 'pskvault --help'")
		return 2
	}
	rest := top.Args()
	if len(rest) > 1 && rest[0] == "help" {
		// pskvault help psk create: the same as pskvault psk create --help.
		rest = append(slices.Clone(rest[1:]), "--help")
	}
	if *version && !*help {
		if err := printVersion(g.stdout, false); err != nil {
			return 1
		}
		return 0
	}
	if len(rest) > 0 && commands[rest[0]] == nil && isGroup(rest[0]) {
		// A group word alone or with --help: list its subcommands.
		if len(rest) == 1 || isHelpWord(rest[1]) {
			printGroup(g.stdout, rest[0])
			if len(rest) == 1 {
				return 2
			}
			return 0
		}
	}
	if *help || len(rest) == 0 || rest[0] == "help" {
		printOverview(g.stdout)
		if len(rest) == 0 && !*help {
			return 2
		}
		return 0
	}
	c, args := lookup(rest)
	if c == nil {
		fmt.Fprintf(g.stderr, "pskvault: error: unknown command %q\n", strings.Join(rest[:min(2, len(rest))], " "))
		fmt.Fprintln(g.stderr, "pskvault: hint: run 'pskvault --help' for the list of commands")
		return 2
	}
	fs := flag.NewFlagSet("pskvault "+c.name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	g.register(fs, c.uses)
	do := c.setup(fs, g)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			printUsage(g.stdout, c, fs)
			return 0
		}
		fmt.Fprintf(g.stderr, "pskvault %s: error: %v\n", c.name, err)
		fmt.Fprintf(g.stderr, "pskvault %s: hint: run 'pskvault %s --help'\n", c.name, c.name)
		return 2
	}
	if c.args == "" && fs.NArg() > 0 {
		// Verbs take flags only; a stray word is most often a key pasted
		// where a file name belongs.
		// The word is not echoed: it may be a key.
		return report(g, c, usagef("unexpected argument after the flags (this verb takes flags only; key material is never taken on the command line: give a file with --key-file)"))
	}
	if err := do(ctx, fs.Args()); err != nil {
		return report(g, c, err)
	}
	return 0
}

func report(g *globals, c *command, err error) int {
	if errors.Is(err, client.ErrNoSocket) && g.socket == "" {
		err = errNoDefaultSocket
	}
	fmt.Fprintf(g.stderr, "pskvault %s: error: %s\n", c.name, oneLine(err.Error()))
	var h *hintError
	var u *usageError
	switch {
	case errors.As(err, &h):
		fmt.Fprintf(g.stderr, "pskvault %s: hint: %s\n", c.name, h.hint)
	case errors.As(err, &u):
		fmt.Fprintf(g.stderr, "pskvault %s: hint: run 'pskvault %s --help'\n", c.name, c.name)
		return 2
	case errors.Is(err, client.ErrNoSocket), errors.Is(err, errNoDefaultSocket):
		fmt.Fprintf(g.stderr, "pskvault %s: hint: %s\n", c.name, noSocketHint)
	case errors.Is(err, client.ErrUntrustedDaemon):
		fmt.Fprintf(g.stderr, "pskvault %s: hint: the daemon you mean runs as root, as you, or as user %s; if another uid runs it, set %s to that uid\n", c.name, client.SystemUser, client.EnvDaemonUID)
	case errors.Is(err, client.ErrNoDaemon):
		fmt.Fprintf(g.stderr, "pskvault %s: hint: start the daemon with 'pskvault --state-dir %s --socket %s serve' (or pass the --socket of a running one)\n", c.name, g.stateDir, g.socket)
	}
	return 1
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

func lookup(rest []string) (*command, []string) {
	if len(rest) >= 2 {
		if c := commands[rest[0]+" "+rest[1]]; c != nil {
			return c, rest[2:]
		}
	}
	if c := commands[rest[0]]; c != nil {
		return c, rest[1:]
	}
	return nil, nil
}

// topFlags are the flags before the verb: every global flag, --help and
// --version.
func topFlags(g *globals) (top *flag.FlagSet, help, version *bool) {
	top = flag.NewFlagSet("pskvault", flag.ContinueOnError)
	top.SetOutput(io.Discard)
	g.register(top, useAll)
	// The text is the one the verbs that take them show.
	top.Lookup("socket").Usage = "daemon (admin) socket `path` (env PSKVAULT_SOCKET)"
	top.Lookup("data-socket").Usage = "data socket `path` (env PSKVAULT_DATA_SOCKET): for serve, where to listen (see 'pskvault serve --help'); for the data verbs, where to ask"
	help = top.Bool("help", false, "show help")
	top.BoolVar(help, "h", false, "show help")
	version = top.Bool("version", false, "print the version")
	return top, help, version
}

const overviewSummary = "TLS 1.3 external PSKs kept in hardware, handed out only as RFC 9258 imported PSKs"

const overviewLong = `pskvault keeps TLS 1.3 external PSKs (EPSKs) in a TPM, a PKCS#11 token or an encrypted software store and hands local TLS stacks only RFC 9258 imported PSKs derived from them, following RFC 9257. 'pskvault serve' owns the vault and listens on an admin socket (PSK management) and a data socket (derive, lookup, offers for TLS stacks); the other verbs talk to it, except the offline ones (init, wrap, demo, fleet, config check, pkcs11, tpm parent-pub, version, completion).

The global flags may be given before the verb; after the verb, a verb takes only those that apply to it. Key material is never taken on the command line: give a file (--key-file) or standard input.`

var overviewExamples = []example{
	{"create a vault and run the daemon as yourself", "pskvault init --node-id node-a"},
	{"", "pskvault serve"},
	{"is the daemon there, and healthy?", "pskvault status --json"},
	{"a help page", "pskvault psk create --help"},
}

func printOverview(w io.Writer) {
	fmt.Fprintf(w, "pskvault: %s\n", overviewSummary)
	fmt.Fprintln(w, "\nUsage: pskvault [--state-dir DIR] [--socket PATH] [--data-socket PATH] COMMAND [flags]\n\nCommands:")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-27s %s\n", n, commands[n].summary)
	}
	fmt.Fprintf(w, "\n%s\n\nGlobal flags:\n", wrapText(overviewLong, 79))
	top, _, _ := topFlags(&globals{})
	printFlags(w, top)
	fmt.Fprintln(w, "\nRun 'pskvault COMMAND --help' for a command's flags.")
	printExamples(w, overviewExamples)
}

// wrapText fills each paragraph of s to lines of at most width columns
// (a longer word stays whole).
func wrapText(s string, width int) string {
	paras := strings.Split(s, "\n\n")
	for i, p := range paras {
		var b strings.Builder
		n := 0
		for _, word := range strings.Fields(p) {
			switch {
			case n == 0:
			case n+1+len(word) > width:
				b.WriteByte('\n')
				n = 0
			default:
				b.WriteByte(' ')
				n++
			}
			b.WriteString(word)
			n += len(word)
		}
		paras[i] = b.String()
	}
	return strings.Join(paras, "\n\n")
}

// printExamples ends a help page.
func printExamples(w io.Writer, ex []example) {
	fmt.Fprintln(w, "\nExamples:")
	for _, e := range ex {
		if e.what != "" {
			fmt.Fprintf(w, "  # %s\n", e.what)
		}
		fmt.Fprintf(w, "  %s\n", e.line)
	}
}

// isGroup reports whether word is the first word of two-word commands
// ("psk", "tpm", "pkcs11", "config", "fleet").
func isGroup(word string) bool {
	for n := range commands {
		if strings.HasPrefix(n, word+" ") {
			return true
		}
	}
	return false
}

func isHelpWord(s string) bool {
	switch s {
	case "-h", "-help", "--help", "help":
		return true
	}
	return false
}

// printGroup lists a group's subcommands.
func printGroup(w io.Writer, group string) {
	fmt.Fprintf(w, "Usage: pskvault %s COMMAND [flags]\n\n", group)
	if gr := groups[group]; gr != nil {
		fmt.Fprintf(w, "%s\n\n", gr.summary)
	}
	fmt.Fprintln(w, "Commands:")
	names := []string{}
	for n := range commands {
		if strings.HasPrefix(n, group+" ") {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-27s %s\n", n, commands[n].summary)
	}
	fmt.Fprintf(w, "\nRun 'pskvault %s COMMAND --help' for a command's flags.\n", group)
	if gr := groups[group]; gr != nil {
		printExamples(w, gr.examples)
	}
}

func printUsage(w io.Writer, c *command, fs *flag.FlagSet) {
	fmt.Fprintf(w, "Usage: pskvault %s [flags]%s\n\n%s\n", c.name, strings.TrimRight(" "+c.args, " "), c.summary)
	if c.long != "" {
		fmt.Fprintf(w, "\n%s\n", wrapText(c.long, 79))
	}
	fmt.Fprintln(w, "\nFlags:")
	printFlags(w, fs)
	printExamples(w, c.examples)
}

// printFlags is flag.PrintDefaults with the --name the examples and the
// man pages use (Go's flag package takes -name and --name alike).
func printFlags(w io.Writer, fs *flag.FlagSet) {
	fs.VisitAll(func(f *flag.Flag) {
		name, usage := flag.UnquoteUsage(f)
		line := "  --" + f.Name
		switch {
		case f.Name == "h" && fs.Lookup("help") != nil:
			return // shown with --help
		case f.Name == "help" && fs.Lookup("h") != nil:
			line = "  -h, --help"
		case len(f.Name) == 1:
			line = "  -" + f.Name
		}
		if name != "" {
			line += " " + name
		}
		switch f.DefValue {
		case "", "false", "0", "0s":
		default:
			if _, isBool := f.Value.(interface{ IsBoolFlag() bool }); !isBool {
				usage += fmt.Sprintf(" (default %q)", f.DefValue)
			}
		}
		fmt.Fprintf(w, "%s\n    \t%s\n", line, strings.ReplaceAll(usage, "\n", "\n    \t"))
	})
}
