package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
	"sort"
	"strings"
	"time"

	"github.com/pskvault/pskvault/api"
	"github.com/pskvault/pskvault/api/wire"
	"github.com/pskvault/pskvault/vault"
)

func init() {
	register(&command{name: "version", summary: "print the version, commit, Go version and the backends compiled in",
		long: "Prints the version, the commit the binary was built from (when known), the Go version and the backends compiled in. Needs no daemon.",
		examples: []example{
			{"", "pskvault version"},
			{"", "pskvault version --json"},
		},
		setup: setupVersion})
	register(&command{name: "status", summary: "ask the daemon whether it serves: node, backend health and problems, PSK counts by state, next expiry",
		long: "Asks the daemon (admin socket) whether it serves: its node, backend and the backend's health, problems, PSK counts by state and the next expiry. Exit status 1 when the daemon cannot be reached or reports problems.",
		examples: []example{
			{"", "pskvault status"},
			{"", "pskvault status --json"},
		},
		uses:  useSocket,
		setup: setupStatus})
}

// versionInfo is `pskvault version --json`.
type versionInfo struct {
	Version   string   `json:"version"`
	Commit    string   `json:"commit,omitempty"`      // vcs.revision of the build, when built from a checkout
	Modified  bool     `json:"modified,omitempty"`    // the checkout had uncommitted changes
	BuildTime string   `json:"commit_time,omitempty"` // vcs.time
	GoVersion string   `json:"go_version"`
	Backends  []string `json:"backends"`
}

func buildVersion() versionInfo {
	v := versionInfo{Version: api.Version, GoVersion: runtime.Version(), Backends: vault.Backends()}
	sort.Strings(v.Backends)
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				v.Commit = s.Value
			case "vcs.modified":
				v.Modified = s.Value == "true"
			case "vcs.time":
				v.BuildTime = s.Value
			}
		}
	}
	return v
}

func printVersion(w io.Writer, asJSON bool) error {
	v := buildVersion()
	if asJSON {
		return json.NewEncoder(w).Encode(v)
	}
	commit := v.Commit
	if commit == "" {
		commit = "unknown"
	}
	if v.Modified {
		commit += " (modified)"
	}
	_, err := fmt.Fprintf(w, "pskvault %s\ncommit %s\n%s\nbackends: %s\n", v.Version, commit, v.GoVersion, strings.Join(v.Backends, ", "))
	return err
}

func setupVersion(fs *flag.FlagSet, g *globals) func(context.Context, []string) error {
	asJSON := fs.Bool("json", false, "print JSON")
	return func(context.Context, []string) error { return printVersion(g.stdout, *asJSON) }
}

// statusInfo is `pskvault status --json`.
type statusInfo struct {
	Daemon     string            `json:"daemon"` // "running" or "unreachable"
	Error      string            `json:"error,omitempty"`
	Socket     string            `json:"socket"`
	Version    string            `json:"version,omitempty"` // the daemon's
	Node       string            `json:"node,omitempty"`
	Backend    *wire.BackendInfo `json:"backend,omitempty"`
	Problems   []string          `json:"problems"`
	PSKs       map[string]int    `json:"psks_by_state"`         // "active", "expired" (active past not_after), "revoked"
	Expired    int               `json:"expired"`               // active records past not_after (psk sweep destroys their keys)
	NextExpiry *time.Time        `json:"next_expiry,omitempty"` // the earliest not_after still ahead among active PSKs
}

// errDaemonProblems: the daemon answers but reports problems.
var errDaemonProblems = fmt.Errorf("the daemon reports problems")

func setupStatus(fs *flag.FlagSet, g *globals) func(context.Context, []string) error {
	asJSON := fs.Bool("json", false, "print JSON")
	return func(ctx context.Context, args []string) error {
		out := statusInfo{Socket: g.socket, Problems: []string{}, PSKs: map[string]int{}}
		st, err := g.client().Status(ctx)
		if err != nil {
			out.Daemon, out.Error = "unreachable", oneLine(err.Error())
			if *asJSON {
				json.NewEncoder(g.stdout).Encode(out)
			}
			return err
		}
		out.Daemon, out.Version, out.Node, out.Backend = "running", st.Version, st.NodeID, &st.Backend
		if st.Problems != nil {
			out.Problems = st.Problems
		}
		// Counts and the next expiry come from the daemon's status, which
		// keeps them (O(1) however many PSKs there are): no list.
		if st.PSKsByState != nil {
			out.PSKs = st.PSKsByState
		}
		out.Expired = out.PSKs["expired"]
		out.NextExpiry = st.NextExpiry
		if *asJSON {
			if err := json.NewEncoder(g.stdout).Encode(out); err != nil {
				return err
			}
		} else {
			printStatus(g.stdout, &out)
		}
		if len(out.Problems) > 0 {
			return errDaemonProblems
		}
		return nil
	}
}

func printStatus(w io.Writer, s *statusInfo) {
	fmt.Fprintf(w, "daemon:      running (pskvault %s) on %s\n", s.Version, s.Socket)
	fmt.Fprintf(w, "node:        %s\n", s.Node)
	hw := "software"
	if s.Backend.Hardware {
		hw = "hardware"
	}
	desc := ""
	if s.Backend.Description != "" {
		desc = ", " + s.Backend.Description
	}
	fmt.Fprintf(w, "backend:     %s (%s%s), hashes %s\n", s.Backend.Name, hw, desc, strings.Join(s.Backend.HashNames, ", "))
	if len(s.Problems) == 0 {
		fmt.Fprintln(w, "problems:    none")
	} else {
		fmt.Fprintln(w, "problems:")
		for _, p := range s.Problems {
			fmt.Fprintf(w, "  - %s\n", oneLine(p))
		}
	}
	parts := []string{}
	for _, k := range []string{"active", "expired", "revoked"} {
		parts = append(parts, fmt.Sprintf("%d %s", s.PSKs[k], k))
	}
	fmt.Fprintf(w, "psks:        %s", strings.Join(parts, ", "))
	if s.Expired > 0 {
		fmt.Fprint(w, " (expired: active past not_after; run 'pskvault psk sweep')")
	}
	fmt.Fprintln(w)
	if s.NextExpiry == nil {
		fmt.Fprintln(w, "next expiry: none")
	} else {
		fmt.Fprintf(w, "next expiry: %s (in %s; 'pskvault psk list' names the PSK)\n", s.NextExpiry.Format(time.RFC3339), time.Until(*s.NextExpiry).Round(time.Second))
	}
}
