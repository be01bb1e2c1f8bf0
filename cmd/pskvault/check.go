package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/pskvault/pskvault/api/wire"
)

func init() {
	register(&command{name: "check", summary: "audit the vault against RFC 9257; exit status 1 when a MUST is violated",
		long: "Asks the daemon (admin socket) for its RFC 9257 report: per PSK its kind, entropy, psk_dhe_ke and early-data policy, expiry and the findings at MUST, SHOULD and warning level, and what reconciling the records with the backend found at start.",
		examples: []example{
			{"", "pskvault check"},
			{"fail on SHOULD findings too, machine-readable", "pskvault check --strict --json"},
			{"the first 500 records only", "pskvault check --limit 500"},
		},
		uses:  useSocket,
		setup: setupCheck})
}

// errCheckFailed makes check exit non-zero after printing its report.
var errCheckFailed = errors.New("RFC 9257 check failed")

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func setupCheck(fs *flag.FlagSet, g *globals) func(context.Context, []string) error {
	asJSON := fs.Bool("json", false, "print the report as JSON")
	strict := fs.Bool("strict", false, "also fail when a SHOULD is not met")
	var pf pageFlags
	pf.register(fs, "records audited")
	return func(ctx context.Context, args []string) error {
		if err := pf.check(); err != nil {
			return err
		}
		c := g.client()
		out := newCheckPrinter(g, *asJSON)
		cursor := pf.cursor
		for {
			rep, err := c.CheckPage(ctx, cursor, pf.limit)
			if err != nil {
				return err
			}
			if err := out.page(rep); err != nil {
				return err
			}
			if rep.NextCursor == "" || pf.limit > 0 {
				if err := out.end(rep.NextCursor); err != nil {
					return err
				}
				break
			}
			cursor = rep.NextCursor
		}
		tot := out.total
		switch {
		case tot.Must > 0:
			return fmt.Errorf("%w: %d MUST violation(s)", errCheckFailed, tot.Must)
		case tot.Errors > 0:
			return fmt.Errorf("%w: %d disagreement(s) between the records and the backend", errCheckFailed, tot.Errors)
		case *strict && tot.Should > 0:
			return fmt.Errorf("%w: %d SHOULD finding(s) and --strict", errCheckFailed, tot.Should)
		}
		return nil
	}
}

// checkPrinter prints a check report a page at a time: the table rows and
// findings of each page as it arrives, the totals at the end. With --json
// it writes one report object whose psks array is streamed.
type checkPrinter struct {
	g      *globals
	asJSON bool
	total  wire.Report // counts, node and reconciliation; PSKs stays empty
	n      int
	header bool
}

func newCheckPrinter(g *globals, asJSON bool) *checkPrinter {
	return &checkPrinter{g: g, asJSON: asJSON}
}

func (p *checkPrinter) page(rep *wire.Report) error {
	p.total.Node = rep.Node
	p.total.Must += rep.Must
	p.total.Should += rep.Should
	p.total.Warn += rep.Warn
	p.total.Errors += rep.Errors
	if rep.Reconciliation != nil {
		p.total.Reconciliation = rep.Reconciliation
	}
	if p.asJSON {
		for _, a := range rep.PSKs {
			if p.n == 0 {
				node, _ := json.Marshal(rep.Node)
				fmt.Fprintf(p.g.stdout, "{\"node\":%s,\"psks\":[", node)
			} else {
				io.WriteString(p.g.stdout, ",")
			}
			b, err := json.Marshal(a)
			if err != nil {
				return err
			}
			p.g.stdout.Write(b)
			p.n++
		}
		return nil
	}
	if len(rep.PSKs) > 0 || !p.header {
		tw := tabwriter.NewWriter(p.g.stdout, 2, 8, 2, ' ', 0)
		if !p.header {
			fmt.Fprintln(tw, "IDENTITY\tKIND\tNODES\tBITS\tENTROPY\tDHE REQUIRED\tEARLY DATA\tIMPORTER ONLY\tFINALIZED\tNOT AFTER\tSTATE\tFINDINGS")
			p.header = true
		}
		for _, a := range rep.PSKs {
			checkRow(tw, a)
		}
		tw.Flush()
	}
	for _, a := range rep.PSKs {
		for _, f := range a.Findings {
			if f.Level == wire.LevelInfo {
				continue
			}
			if f.Section == "" {
				fmt.Fprintf(p.g.stdout, "%-6s %s: %s (rule %s)\n", f.Level, a.IdentityHex, f.Message, f.Rule)
				continue
			}
			fmt.Fprintf(p.g.stdout, "%-6s %s: %s (RFC 9257 section %s, rule %s)\n", f.Level, a.IdentityHex, f.Message, f.Section, f.Rule)
		}
	}
	p.n += len(rep.PSKs)
	return nil
}

// end prints the totals; next is the cursor of the page after the last
// one printed ("" when the report is complete).
func (p *checkPrinter) end(next string) error {
	t := &p.total
	if p.asJSON {
		if p.n == 0 {
			node, _ := json.Marshal(t.Node)
			fmt.Fprintf(p.g.stdout, "{\"node\":%s,\"psks\":[", node)
		}
		tail := struct {
			Must           int                  `json:"must_violations"`
			Should         int                  `json:"should_violations"`
			Warn           int                  `json:"warnings"`
			Errors         int                  `json:"consistency_errors"`
			Reconciliation *wire.Reconciliation `json:"reconciliation,omitempty"`
			NextCursor     string               `json:"next_cursor,omitempty"`
		}{t.Must, t.Should, t.Warn, t.Errors, t.Reconciliation, next}
		b, err := json.Marshal(tail)
		if err != nil {
			return err
		}
		fmt.Fprintf(p.g.stdout, "],%s\n", b[1:])
		return nil
	}
	if r := t.Reconciliation; r != nil {
		fmt.Fprintf(p.g.stdout, "at start: %d interrupted create(s) undone, %d pending delete(s) finished, %d key destroy(s) finished, %d key(s) checked against the backend, %d missing\n",
			r.CreatesUndone, r.DeletesFinished, r.HandlesCleared, r.KeysChecked, len(r.KeysMissing))
		for _, o := range r.Orphans {
			fmt.Fprintf(p.g.stdout, "error  backend key %s carries this vault's tag, but no record names it (kept; destroy it by hand if it is not needed)\n", o)
		}
		for _, pr := range r.Problems {
			fmt.Fprintf(p.g.stdout, "error  at start: %s\n", pr)
		}
	}
	fmt.Fprintf(p.g.stdout, "node %s: %d PSK(s), %d MUST violation(s), %d SHOULD finding(s), %d warning(s), %d record/backend disagreement(s)\n", t.Node, p.n, t.Must, t.Should, t.Warn, t.Errors)
	if next != "" {
		fmt.Fprintf(p.g.stderr, "pskvault: more records follow: --cursor %s\n", next)
	}
	return nil
}

func checkRow(tw io.Writer, a wire.Audit) {
	id := "hex:" + a.IdentityHex
	if a.Identity != "" && strings.IndexFunc(a.Identity, func(r rune) bool { return r < 0x21 || r == 0x7f }) < 0 {
		id = a.Identity
	}
	na := "never"
	if !a.NotAfter.IsZero() {
		na = a.NotAfter.Format(time.RFC3339)
	}
	entropy, _, _ := strings.Cut(a.Entropy, ";")
	var must, should, warn int
	for _, f := range a.Findings {
		switch f.Level {
		case wire.LevelMust:
			must++
		case wire.LevelShould:
			should++
		case wire.LevelWarn:
			warn++
		}
	}
	fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d MUST, %d SHOULD, %d warn\n", id, a.Kind, a.Nodes, a.KeyBits, entropy,
		yesNo(a.DHERequired), yesNo(a.EarlyData), yesNo(a.ImporterOnly), yesNo(a.Finalized), na, a.State, must, should, warn)
}
