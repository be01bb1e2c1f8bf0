package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/pskvault/pskvault/api/wire"
)

// pageFlags are --limit and --cursor of list and check: without --limit
// the CLI follows the daemon's cursors and prints each page as it comes,
// so a vault of any size is listed without one answer holding it whole.
type pageFlags struct {
	limit  int
	cursor string
}

func (f *pageFlags) register(fs *flag.FlagSet, what string) {
	fs.IntVar(&f.limit, "limit", 0, fmt.Sprintf("print one page of at most `N` %s (the daemon caps it at %d) and the cursor of the next; default: every page", what, wire.MaxPageLimit))
	fs.StringVar(&f.cursor, "cursor", "", "start after this `cursor` (a next cursor printed by an earlier --limit run)")
}

func (f *pageFlags) check() error {
	if f.limit < 0 {
		return usagef("--limit: want a positive number")
	}
	return nil
}

func setupList(fs *flag.FlagSet, g *globals) func(context.Context, []string) error {
	asJSON := fs.Bool("json", false, "print JSON")
	var pf pageFlags
	pf.register(fs, "records")
	return func(ctx context.Context, args []string) error {
		if err := pf.check(); err != nil {
			return err
		}
		c := g.client()
		cursor, n := pf.cursor, 0
		for {
			psks, next, err := c.ListPage(ctx, cursor, pf.limit)
			if err != nil {
				return err
			}
			if pf.limit > 0 { // one page: exactly the daemon's answer
				if *asJSON {
					return json.NewEncoder(g.stdout).Encode(wire.PSKList{PSKs: psks, NextCursor: next})
				}
				listTable(g.stdout, psks, true)
				if next != "" {
					fmt.Fprintf(g.stderr, "pskvault: more records follow: --cursor %s\n", next)
				}
				return nil
			}
			if *asJSON {
				listJSON(g.stdout, psks, n)
			} else {
				listTable(g.stdout, psks, n == 0)
			}
			n += len(psks)
			if next == "" {
				if *asJSON {
					if n == 0 {
						io.WriteString(g.stdout, "{\"psks\":[")
					}
					io.WriteString(g.stdout, "]}\n")
				}
				return nil
			}
			cursor = next
		}
	}
}

// listJSON streams records as the elements of {"psks":[...]}; n is how
// many were written before.
func listJSON(w io.Writer, psks []wire.PSK, n int) {
	for i, p := range psks {
		if n+i == 0 {
			io.WriteString(w, "{\"psks\":[")
		} else {
			io.WriteString(w, ",")
		}
		b, _ := json.Marshal(p)
		w.Write(b)
	}
}

// listTable prints one page of the table (its columns aligned within the
// page), with the header before the first.
func listTable(w io.Writer, psks []wire.PSK, first bool) {
	tw := tabwriter.NewWriter(w, 2, 8, 2, ' ', 0)
	if first {
		fmt.Fprintln(tw, "IDENTITY\tHASH\tBITS\tCLIENT\tSERVER\tSTATE\tNOT AFTER")
	}
	for _, p := range psks {
		na := "-"
		if !p.NotAfter.IsZero() {
			na = p.NotAfter.Format(time.RFC3339)
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\t%s\n", displayIdentity(p), p.Hash, p.KeyBits, p.ClientNode, p.ServerNode, p.State, na)
	}
	tw.Flush()
}
