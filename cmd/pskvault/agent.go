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
	register(&command{name: "agent", summary: "keep key files (stunnel, GnuTLS, mosquitto, JSON) current from the data socket", setup: setupAgent})
}

func setupAgent(fs *flag.FlagSet, g *globals) func(context.Context, []string) error {
	cfgPath := fs.String("config", "", "agent configuration `file` (JSON; see docs/CONSUMERS.md)")
	once := fs.Bool("once", false, "render every output once and exit (cron, ExecStartPre=)")
	check := fs.Bool("check", false, "check the configuration and exit")
	return func(ctx context.Context, _ []string) error {
		if *cfgPath == "" {
			return usagef("--config is required")
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
			fmt.Fprintf(g.stdout, "%s: %d output(s), OK\n", *cfgPath, len(cfg.Outputs))
			return nil
		}
		log := slog.New(slog.NewTextHandler(g.stderr, nil))
		a := agent.New(cfg, log)
		defer a.Close()
		if *once {
			return a.Once(ctx)
		}
		return a.Run(ctx)
	}
}
