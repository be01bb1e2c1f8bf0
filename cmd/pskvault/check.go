package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
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
		},
		uses:  useSocket,
		setup: setupCheck})
}

// errCheckFailed makes check exit non-zero after printing its report.
var errCheckFailed = errors.New("RFC 9257 check failed")

func setupCheck(fs *flag.FlagSet, g *globals) func(context.Context, []string) error {
	asJSON := fs.Bool("json", false, "print the report as JSON")
	strict := fs.Bool("strict", false, "also fail when a SHOULD is not met")
	return func(ctx context.Context, args []string) error {
		rep, err := g.client().Check(ctx)
		if err != nil {
			return err
		}
		if *asJSON {
			if err := json.NewEncoder(g.stdout).Encode(rep); err != nil {
				return err
			}
		} else {
			printCheck(g, rep)
		}
		switch {
		case rep.Must > 0:
			return fmt.Errorf("%w: %d MUST violation(s)", errCheckFailed, rep.Must)
		case rep.Errors > 0:
			return fmt.Errorf("%w: %d disagreement(s) between the records and the backend", errCheckFailed, rep.Errors)
		case *strict && rep.Should > 0:
			return fmt.Errorf("%w: %d SHOULD finding(s) and --strict", errCheckFailed, rep.Should)
		}
		return nil
	}
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func printCheck(g *globals, rep *wire.Report) {
	tw := tabwriter.NewWriter(g.stdout, 2, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "IDENTITY\tKIND\tNODES\tBITS\tENTROPY\tDHE REQUIRED\tEARLY DATA\tIMPORTER ONLY\tFINALIZED\tNOT AFTER\tSTATE\tFINDINGS")
	for _, a := range rep.PSKs {
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
	tw.Flush()
	for _, a := range rep.PSKs {
		for _, f := range a.Findings {
			if f.Level == wire.LevelInfo {
				continue
			}
			if f.Section == "" {
				fmt.Fprintf(g.stdout, "%-6s %s: %s (rule %s)\n", f.Level, a.IdentityHex, f.Message, f.Rule)
				continue
			}
			fmt.Fprintf(g.stdout, "%-6s %s: %s (RFC 9257 section %s, rule %s)\n", f.Level, a.IdentityHex, f.Message, f.Section, f.Rule)
		}
	}
	if r := rep.Reconciliation; r != nil {
		fmt.Fprintf(g.stdout, "at start: %d interrupted create(s) undone, %d pending delete(s) finished, %d key destroy(s) finished, %d key(s) checked against the backend, %d missing\n",
			r.CreatesUndone, r.DeletesFinished, r.HandlesCleared, r.KeysChecked, len(r.KeysMissing))
		for _, o := range r.Orphans {
			fmt.Fprintf(g.stdout, "error  backend key %s carries this vault's tag, but no record names it (kept; destroy it by hand if it is not needed)\n", o)
		}
		for _, p := range r.Problems {
			fmt.Fprintf(g.stdout, "error  at start: %s\n", p)
		}
	}
	fmt.Fprintf(g.stdout, "node %s: %d PSK(s), %d MUST violation(s), %d SHOULD finding(s), %d warning(s), %d record/backend disagreement(s)\n", rep.Node, len(rep.PSKs), rep.Must, rep.Should, rep.Warn, rep.Errors)
}
