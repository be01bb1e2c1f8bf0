package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strconv"
	"time"

	"github.com/pskvault/pskvault/api"
	"github.com/pskvault/pskvault/vault"
)

func init() {
	register(&command{name: "init", summary: "create a vault for this node", setup: setupInit})
	register(&command{name: "serve", summary: "run the daemon: own the vault, listen on the socket", setup: setupServe})
	register(&command{name: "version", summary: "print the version", setup: func(fs *flag.FlagSet, g *globals) func(context.Context, []string) error {
		return func(context.Context, []string) error {
			fmt.Fprintln(g.stdout, "pskvault", api.Version)
			return nil
		}
	}})
}

func setupInit(fs *flag.FlagSet, g *globals) func(context.Context, []string) error {
	node := fs.String("node-id", "", "this node's `identifier` (1-64 of A-Z a-z 0-9 . _ : -)")
	backend := fs.String("backend", "soft", "key backend `URI`: soft, tpm[:...], pkcs11:...")
	return func(ctx context.Context, args []string) error {
		if len(args) > 0 {
			return usagef("unexpected argument %q", args[0])
		}
		if *node == "" {
			return usagef("--node-id is required")
		}
		if err := vault.Init(ctx, g.stateDir, vault.Config{NodeID: *node, Backend: *backend}); err != nil {
			if errors.Is(err, vault.ErrAlreadyInitialized) {
				return withHint(err, "use another --state-dir, or delete %s to start over (this destroys its keys)", g.stateDir)
			}
			return err
		}
		fmt.Fprintf(g.stdout, "initialized vault for node %s in %s (backend %s)\n", *node, g.stateDir, *backend)
		return nil
	}
}

func setupServe(fs *flag.FlagSet, g *globals) func(context.Context, []string) error {
	mode := fs.String("socket-mode", "0600", "socket file `mode`: 0600 (owner only) or 0660 (owner and group)")
	logLevel := fs.String("log-level", "info", "`level`: debug, info, warn, error")
	return func(ctx context.Context, args []string) error {
		if len(args) > 0 {
			return usagef("unexpected argument %q", args[0])
		}
		m, err := strconv.ParseUint(*mode, 8, 32)
		if err != nil {
			return usagef("--socket-mode %q: want 0600 or 0660", *mode)
		}
		var lvl slog.Level
		if err := lvl.UnmarshalText([]byte(*logLevel)); err != nil {
			return usagef("--log-level %q: want debug, info, warn or error", *logLevel)
		}
		log := slog.New(slog.NewTextHandler(g.stderr, &slog.HandlerOptions{Level: lvl}))
		v, err := vault.Open(ctx, g.stateDir)
		if err != nil {
			if errors.Is(err, vault.ErrNotInitialized) {
				return withHint(err, "run 'pskvault --state-dir %s init --node-id NAME' first", g.stateDir)
			}
			return err
		}
		defer v.Close()
		l, err := api.Listen(g.socket, os.FileMode(m))
		if err != nil {
			return err
		}
		srv := api.NewServer(v, log).HTTPServer()
		log.Info("serving", "node", v.NodeID(), "backend", v.BackendInfo().Name, "socket", g.socket, "state_dir", g.stateDir, "version", api.Version)
		errc := make(chan error, 1)
		go func() { errc <- srv.Serve(l) }()
		select {
		case err := <-errc:
			return fmt.Errorf("serve: %w", err)
		case <-ctx.Done():
		}
		log.Info("shutting down")
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Warn("shutdown", "err", err)
		}
		return nil
	}
}
