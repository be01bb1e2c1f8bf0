package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/pskvault/pskvault/fleet"
	"github.com/pskvault/pskvault/vault"
)

func init() {
	register(&command{name: "fleet provision", summary: "on a provisioning host: a fresh key per inventory link, written only as bundles wrapped to each node's hardware",
		long: "Reads the inventory (nodes with their TPM parent keys or PKCS#11 wrapping keys, and the links between them), makes a fresh key for every link not yet issued and writes it only as bundles wrapped to each node's hardware, one directory per node; the registry records what was issued so a rerun issues each link exactly once. Needs no daemon.",
		examples: []example{
			{"", "pskvault fleet provision --inventory fleet.csv --out bundles --valid-for 2160h --json"},
		},
		setup: setupFleetRun(false)})
	register(&command{name: "fleet rotate", summary: "issue the next generation of every link expiring within --expiring-within",
		long: "Like provision, for the links whose newest generation expires within --expiring-within: each gets a next generation, carried in rotation bundles with --overlap.",
		examples: []example{
			{"", "pskvault fleet rotate --inventory fleet.csv --out bundles --expiring-within 720h --overlap 168h"},
		},
		setup: setupFleetRun(true)})
	register(&command{name: "fleet status", summary: "the inventory's links against what the registry says was issued",
		long: "Compares the inventory with the registry: links issued, due for rotation, not issued, and issued links no longer in the inventory.",
		examples: []example{
			{"", "pskvault fleet status --inventory fleet.csv --out bundles -v"},
			{"", "pskvault fleet status --inventory fleet.csv --out bundles --json"},
		},
		setup: setupFleetStatus})
}

// fleetFlags are the flags every fleet verb shares.
type fleetFlags struct{ inventory, out, registry string }

func (f *fleetFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.inventory, "inventory", "", "inventory `file`: node,ID,tpm,PARENT_PUB | node,ID,pkcs11,KEK_FILE,LABEL | link,CLIENT,SERVER lines (docs/BUNDLE.md)")
	fs.StringVar(&f.out, "out", "", "output `directory`: one subdirectory per node holding its bundles")
	fs.StringVar(&f.registry, "registry", "", "registry `file` of what was issued (default OUT/registry.db)")
}

func (f *fleetFlags) open() (*fleet.Inventory, fleet.Registry, error) {
	if f.inventory == "" || f.out == "" {
		return nil, nil, usagef("--inventory and --out are required")
	}
	inv, err := fleet.ReadInventory(f.inventory)
	if err != nil {
		return nil, nil, err
	}
	if err := os.MkdirAll(f.out, 0o700); err != nil {
		return nil, nil, err
	}
	if f.registry == "" {
		f.registry = filepath.Join(f.out, "registry.db")
	}
	reg, err := fleet.OpenRegistry(f.registry)
	return inv, reg, err
}

// isTerminal reports whether f is a terminal (for the progress bar).
func isTerminal(f *os.File) bool {
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

func setupFleetRun(rotate bool) func(fs *flag.FlagSet, g *globals) func(context.Context, []string) error {
	return func(fs *flag.FlagSet, g *globals) func(context.Context, []string) error {
		var f fleetFlags
		f.register(fs)
		validFor := fs.Duration("valid-for", 2160*time.Hour, "lifetime of each new key")
		var targets listFlag
		fs.Var(&targets, "target", "allowed `target` PROTOCOL/KDF, repeatable (default: all four)")
		within := fs.Duration("expiring-within", 720*time.Hour, "rotate: links whose newest generation expires within this `duration`")
		overlap := fs.Duration("overlap", 168*time.Hour, "rotate: how long each old generation stays derivable after the node imports the new one")
		asJSON := fs.Bool("json", false, "print JSON: action, planned, issued, completed, already, discarded, out, duration_ms")
		return func(ctx context.Context, args []string) error {
			inv, reg, err := f.open()
			if err != nil {
				return err
			}
			defer reg.Close()
			if len(targets) == 0 {
				for _, t := range vault.AllTargets {
					targets = append(targets, t.String())
				}
			}
			if _, err := vault.ParseTargets(targets); err != nil {
				return usagef("--target: %v", err)
			}
			if !rotate {
				*within = 0
			} else if *within <= 0 {
				return usagef("--expiring-within must be positive")
			}
			var progress func(int, int)
			if stderr, ok := g.stderr.(*os.File); ok && isTerminal(stderr) && !*asJSON {
				progress = func(done, total int) {
					w := 40
					n := w
					if total > 0 {
						n = done * w / total
					}
					fmt.Fprintf(stderr, "\r[%-*s] %d/%d links", w, strings.Repeat("#", n), done, total)
					if done == total {
						fmt.Fprintln(stderr)
					}
				}
			}
			start := time.Now()
			sum, err := fleet.Run(inv, reg, f.out, fleet.Policy{Targets: targets, ValidFor: *validFor, Overlap: *overlap}, *within, progress)
			verb := "issued"
			if rotate {
				verb = "rotated"
			}
			if *asJSON {
				action := "provision"
				if rotate {
					action = "rotate"
				}
				if jerr := writeJSON(g.stdout, fleetRunJSON{Action: action, Planned: sum.Planned, Issued: sum.Issued, Completed: sum.Completed,
					Already: sum.Already, Discarded: sum.Discarded, Out: f.out, DurationMS: time.Since(start).Milliseconds()}); jerr != nil && err == nil {
					return jerr
				}
				if err != nil {
					return withHint(err, "run the same command again: what was recorded stays issued exactly once, the rest is done again")
				}
				return nil
			}
			fmt.Fprintf(g.stdout, "%d links planned: %d %s now, %d finished from an interrupted run, %d not due or already issued; %d unrecorded bundles of an interrupted run discarded (%s)\n",
				sum.Planned, sum.Issued, verb, sum.Completed, sum.Already, sum.Discarded, time.Since(start).Round(time.Millisecond))
			if err != nil {
				return withHint(err, "run the same command again: what was recorded stays issued exactly once, the rest is done again")
			}
			fmt.Fprintf(g.stdout, "bundles in %s/NODE/; each node imports its own with 'pskvault psk import --bundle FILE' (first generations before rotations)\n", f.out)
			return nil
		}
	}
}

func setupFleetStatus(fs *flag.FlagSet, g *globals) func(context.Context, []string) error {
	var f fleetFlags
	f.register(fs)
	within := fs.Duration("expiring-within", 720*time.Hour, "count links whose newest generation expires within this `duration` as due")
	verbose := fs.Bool("v", false, "list every link")
	asJSON := fs.Bool("json", false, "print JSON: the counts and every link (planned, issued, due, not_issued, unplanned, links)")
	return func(ctx context.Context, args []string) error {
		inv, reg, err := f.open()
		if err != nil {
			return err
		}
		defer reg.Close()
		planned, unplanned, err := fleet.Plan(inv, reg)
		if err != nil {
			return err
		}
		var issued, missing, due int
		js := fleetStatusJSON{Links: []fleetLink{}}
		tw := tabwriter.NewWriter(g.stdout, 2, 8, 2, ' ', 0)
		if *verbose && !*asJSON {
			fmt.Fprintln(tw, "LINK\tGENERATION\tNOT AFTER\tKCV\tSTATE")
		}
		soon := time.Now().Add(*within)
		for _, s := range planned {
			state := "not issued"
			switch {
			case s.Issue == nil:
				missing++
			case s.Issue.NotAfter.Before(soon):
				issued++
				due++
				state = "due for rotation"
			default:
				issued++
				state = "issued"
			}
			if *asJSON {
				l := fleetLink{Link: s.Link.Name(), State: state}
				if s.Issue != nil {
					na := s.Issue.NotAfter
					l.Generation, l.NotAfter, l.KCV = s.Issue.Generation, &na, s.Issue.KCV
				}
				js.Links = append(js.Links, l)
			} else if *verbose {
				if s.Issue == nil {
					fmt.Fprintf(tw, "%s\t-\t-\t-\t%s\n", s.Link.Name(), state)
				} else {
					fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\n", s.Link.Name(), s.Issue.Generation, s.Issue.NotAfter.Format(time.RFC3339), s.Issue.KCV, state)
				}
			}
		}
		if *asJSON {
			js.Planned, js.Issued, js.Due, js.NotIssued, js.Unplanned = len(planned), issued, due, missing, len(unplanned)
			return writeJSON(g.stdout, js)
		}
		tw.Flush()
		fmt.Fprintf(g.stdout, "%d links planned: %d issued (%d due for rotation within %s), %d not issued; %d issued links no longer in the inventory\n",
			len(planned), issued, due, *within, missing, len(unplanned))
		return nil
	}
}
