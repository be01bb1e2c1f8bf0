package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"

	"github.com/pskvault/pskvault/internal/config"
	"github.com/pskvault/pskvault/internal/safepath"
)

func init() {
	register(&command{name: "config check", args: "", summary: "validate a daemon configuration file, reporting each problem with its line",
		long: "Reads the file as serve does (refusing one that anyone but root or you could have written) and reports every problem with its line; serve reads the same file at start and on SIGHUP.",
		examples: []example{
			{"", "pskvault config check --config /etc/pskvault/pskvault.toml"},
			{"", "pskvault config check --config ./pskvault.toml --json"},
		},
		setup: setupConfigCheck})
}

// defaultConfig is read by serve when it exists and no --config is given.
const defaultConfig = "/etc/pskvault/pskvault.toml"

func setupConfigCheck(fs *flag.FlagSet, g *globals) func(context.Context, []string) error {
	path := fs.String("config", defaultConfig, "configuration `file`")
	asJSON := fs.Bool("json", false, "print JSON: config, ok and the problems with their lines")
	return func(ctx context.Context, args []string) error {
		raw, err := readConfig(*path)
		if err != nil {
			return err
		}
		out := configCheckJSON{Config: *path, OK: true, Problems: []configProblem{}}
		_, err = config.Parse(*path, raw)
		clear(raw) // it may be the wrong file: a key
		if err != nil {
			var ce *config.Error
			if errors.As(err, &ce) {
				for _, p := range ce.Problems {
					if *asJSON {
						out.Problems = append(out.Problems, configProblem{Line: p.Line, Message: p.Msg})
					} else {
						fmt.Fprintf(g.stderr, "%s:%d: %s\n", *path, p.Line, p.Msg)
					}
				}
				if *asJSON {
					out.OK = false
					if err := writeJSON(g.stdout, out); err != nil {
						return err
					}
				}
				return fmt.Errorf("%s: %d problem(s)", *path, len(ce.Problems))
			}
			return err
		}
		if *asJSON {
			return writeJSON(g.stdout, out)
		}
		fmt.Fprintf(g.stdout, "%s: ok\n", *path)
		return nil
	}
}

// errConfigTrust: a configuration file someone other than root and the
// daemon's user could have written. It says who may use the vault, so it
// is refused like an ~/.ssh/authorized_keys that OpenSSH calls unsafe.
var errConfigTrust = errors.New("configuration file not trusted")

// maxConfig bounds the configuration file's size.
const maxConfig = 1 << 20

// readConfig reads a configuration file after checking that nobody but
// root and this user could have written it: the file (through a symbolic
// link, the link itself too) belongs to one of them, is a regular file, is
// writable by neither group nor others, and every directory above it meets
// the rules of internal/safepath. The checks are made on the opened file,
// so what is read is what was checked. serve (at start and at each
// SIGHUP) and config check all read it through here.
func readConfig(path string) ([]byte, error) {
	uid := uint32(os.Geteuid())
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%w: %s is not a regular file", errConfigTrust, path)
	}
	if sys, ok := st.Sys().(*syscall.Stat_t); !ok || (sys.Uid != 0 && sys.Uid != uid) {
		owner := -1
		if ok {
			owner = int(sys.Uid)
		}
		return nil, fmt.Errorf("%w: %s belongs to uid %d, not to root or this user (uid %d): its owner could give himself access to every key (chown root %s)", errConfigTrust, path, owner, uid, path)
	}
	if st.Mode().Perm()&0o022 != 0 {
		return nil, fmt.Errorf("%w: %s is writable by group or others (mode %04o): any of them could give himself access to every key (chmod go-w %s)", errConfigTrust, path, st.Mode().Perm(), path)
	}
	// The directories it is reached through, and those of the file a
	// link points to.
	if err := safepath.CheckDir(filepath.Dir(path), uid, false); err != nil {
		return nil, fmt.Errorf("%w: %s: %w", errConfigTrust, path, err)
	}
	if lst, err := os.Lstat(path); err == nil && lst.Mode()&os.ModeSymlink != 0 {
		if sys, ok := lst.Sys().(*syscall.Stat_t); !ok || (sys.Uid != 0 && sys.Uid != uid) {
			return nil, fmt.Errorf("%w: %s is a symbolic link that belongs to another user", errConfigTrust, path)
		}
		real, err := filepath.EvalSymlinks(path)
		if err != nil {
			return nil, err
		}
		if err := safepath.CheckDir(filepath.Dir(real), uid, false); err != nil {
			return nil, fmt.Errorf("%w: %s (through a link): %w", errConfigTrust, real, err)
		}
	}
	raw, err := io.ReadAll(io.LimitReader(f, maxConfig+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if len(raw) > maxConfig {
		return nil, fmt.Errorf("%s is larger than %d bytes: not a pskvault configuration", path, maxConfig)
	}
	return raw, nil
}

// loadConfig reads path for serve; a missing default file is no error.
func loadConfig(path string, explicit bool) (*config.Config, error) {
	raw, err := readConfig(path)
	if err != nil {
		if !explicit && errors.Is(err, os.ErrNotExist) {
			return &config.Config{}, nil
		}
		return nil, err
	}
	c, err := config.Parse(path, raw)
	clear(raw)
	if err != nil {
		return nil, withHint(err, "run 'pskvault config check --config %s'", path)
	}
	return c, nil
}
