package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"

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
		f, err := os.Open(*cfgPath)
		if err != nil {
			return err
		}
		data, err := io.ReadAll(io.LimitReader(f, agent.MaxConfig+1))
		f.Close()
		if err != nil {
			return err
		}
		cfg, err := agent.ParseConfig(data)
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
