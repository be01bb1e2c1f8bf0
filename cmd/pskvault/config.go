package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"

	"github.com/pskvault/pskvault/internal/config"
)

func init() {
	register(&command{name: "config check", args: "", summary: "validate a daemon configuration file, reporting each problem with its line", setup: setupConfigCheck})
}

// defaultConfig is read by serve when it exists and no --config is given.
const defaultConfig = "/etc/pskvault/pskvault.toml"

func setupConfigCheck(fs *flag.FlagSet, g *globals) func(context.Context, []string) error {
	path := fs.String("config", defaultConfig, "configuration `file`")
	return func(ctx context.Context, args []string) error {
		raw, err := os.ReadFile(*path)
		if err != nil {
			return err
		}
		if _, err := config.Parse(*path, raw); err != nil {
			var ce *config.Error
			if errors.As(err, &ce) {
				for _, p := range ce.Problems {
					fmt.Fprintf(g.stderr, "%s:%d: %s\n", *path, p.Line, p.Msg)
				}
				return fmt.Errorf("%s: %d problem(s)", *path, len(ce.Problems))
			}
			return err
		}
		fmt.Fprintf(g.stdout, "%s: ok\n", *path)
		return nil
	}
}

// loadConfig reads path for serve; a missing default file is no error.
func loadConfig(path string, explicit bool) (*config.Config, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		if !explicit && errors.Is(err, os.ErrNotExist) {
			return &config.Config{}, nil
		}
		return nil, err
	}
	c, err := config.Parse(path, raw)
	if err != nil {
		return nil, withHint(err, "run 'pskvault config check --config %s'", path)
	}
	return c, nil
}
