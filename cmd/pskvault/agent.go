package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"

	"github.com/pskvault/pskvault/internal/agent"
)

func init() {
	register(&command{name: "agent", summary: "keep key files (stunnel, GnuTLS, mosquitto, JSON) current from the data socket",
		long: "It reads the agent configuration (JSON; docs/CONSUMERS.md), which names the data socket, the PSKs and the files to write, each with its owner, group, mode and reload command; it asks the daemon for the keys and rewrites each file whenever a key changes. --check validates the configuration only, --once renders every output once.",
		examples: []example{
			{"check the configuration", "pskvault agent --config /etc/pskvault/agent.json --check"},
			{"render the files once (cron, ExecStartPre=)", "pskvault agent --config /etc/pskvault/agent.json --once --json"},
			{"keep them current", "pskvault agent --config /etc/pskvault/agent.json"},
		},
		setup: setupAgent})
}

func setupAgent(fs *flag.FlagSet, g *globals) func(context.Context, []string) error {
	cfgPath := fs.String("config", "", "agent configuration `file` (JSON; see docs/CONSUMERS.md)")
	once := fs.Bool("once", false, "render every output once and exit (cron, ExecStartPre=)")
	check := fs.Bool("check", false, "check the configuration and exit")
	asJSON := fs.Bool("json", false, "with --check or --once: print JSON (config, mode, outputs) when done")
	return func(ctx context.Context, _ []string) error {
		if *cfgPath == "" {
			return usagef("--config is required")
		}
		if *asJSON && !*check && !*once {
			return usagef("--json goes with --check or --once: the running agent prints nothing but its log (standard error)")
		}
		// The file names where keys are written and who owns them: the
		// daemon configuration's trust rules apply (readConfig).
		data, err := readConfig(*cfgPath)
		if err != nil {
			return err
		}
		cfg, err := agent.ParseConfig(data)
		clear(data)
		if err != nil {
			if errors.Is(err, agent.ErrConfig) {
				return withHint(err, "see docs/CONSUMERS.md, \"pskvault agent\"")
			}
			return err
		}
		if *check {
			if *asJSON {
				return writeJSON(g.stdout, agentJSON{Config: *cfgPath, Mode: "check", Outputs: len(cfg.Outputs)})
			}
			fmt.Fprintf(g.stdout, "%s: %d output(s), OK\n", *cfgPath, len(cfg.Outputs))
			return nil
		}
		log := slog.New(slog.NewTextHandler(g.stderr, nil))
		a := agent.New(cfg, log)
		defer a.Close()
		if *once {
			if err := a.Once(ctx); err != nil {
				return err
			}
			if *asJSON {
				return writeJSON(g.stdout, agentJSON{Config: *cfgPath, Mode: "once", Outputs: len(cfg.Outputs)})
			}
			return nil
		}
		return a.Run(ctx)
	}
}
