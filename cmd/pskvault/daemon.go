package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/pskvault/pskvault/api"
	"github.com/pskvault/pskvault/internal/config"
	"github.com/pskvault/pskvault/vault"
)

func init() {
	register(&command{name: "init", summary: "create a vault for this node", setup: setupInit})
	register(&command{name: "serve", summary: "run the daemon: own the vault, listen on the admin and data sockets", setup: setupServe})
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

// serveFlags are serve's own flags.
type serveFlags struct {
	mode, dataMode   string
	logLevel         string
	adminGroup       string
	auditLog         string
	maxConns, perUID int
	mlock            string
	allowClient      listFlag
	allowServer      listFlag
	config           string
	cfg              *config.Config
	set              map[string]bool // flags given on the command line
}

func setupServe(fs *flag.FlagSet, g *globals) func(context.Context, []string) error {
	var f serveFlags
	fs.StringVar(&f.mode, "socket-mode", "", "admin socket file `mode`: 0600 (owner only; default) or 0660 (owner and --admin-group)")
	fs.StringVar(&f.dataMode, "data-socket-mode", "0666", "data socket file `mode`: 0666 (anyone connects, the access lists decide), 0660 or 0600")
	fs.StringVar(&f.logLevel, "log-level", "info", "`level`: debug, info, warn, error")
	fs.StringVar(&f.adminGroup, "admin-group", "", "`group` (name or gid) whose members may use the admin socket besides root and the daemon's user")
	fs.StringVar(&f.auditLog, "audit-log", "", "audit log `file` (JSON lines), or - for stderr (default: audit.log in the state dir)")
	fs.IntVar(&f.maxConns, "max-conns", 128, "open connections allowed per socket")
	fs.IntVar(&f.perUID, "max-conns-per-uid", 16, "open connections allowed per caller uid (root and the daemon's user exempt)")
	fs.StringVar(&f.mlock, "mlock", "auto", "lock memory out of swap: auto, require or off")
	fs.Var(&f.allowClient, "allow-client", "`principal` (user:NAME|UID, group:NAME|GID) allowed to derive client-role keys of every PSK without its own rule; repeatable")
	fs.Var(&f.allowServer, "allow-server", "`principal` allowed to derive server-role keys of every PSK without its own rule; repeatable")
	fs.StringVar(&f.config, "config", "", "configuration `file` (default "+defaultConfig+" when it exists); flags given here win over it")
	return func(ctx context.Context, args []string) error {
		f.set = map[string]bool{}
		fs.Visit(func(fl *flag.Flag) { f.set[fl.Name] = true })
		if err := applyConfig(g, &f); err != nil {
			return err
		}
		return serve(ctx, g, &f)
	}
}

// applyConfig fills in what the command line left unset from the
// configuration file.
func applyConfig(g *globals, f *serveFlags) error {
	path, explicit := f.config, f.config != ""
	if !explicit {
		path = defaultConfig
	}
	c, err := loadConfig(path, explicit)
	if err != nil {
		return err
	}
	f.cfg = c
	str := func(flagName string, dst *string, v string) {
		if v != "" && !f.set[flagName] {
			*dst = v
		}
	}
	num := func(flagName string, dst *int, v int) {
		if v != 0 && !f.set[flagName] {
			*dst = v
		}
	}
	// Globals come from flags before the verb or the environment: the file
	// fills them only when both left them at their defaults.
	if c.StateDir != "" && !f.set["state-dir"] && os.Getenv("PSKVAULT_STATE_DIR") == "" && g.stateDir == defaultStateDir() {
		g.stateDir = c.StateDir
	}
	if c.AdminSocket != "" && !f.set["socket"] && os.Getenv("PSKVAULT_SOCKET") == "" && g.socket == defaultSocket() {
		g.socket = c.AdminSocket
	}
	if c.DataSocket != "" && g.dataSocket == "" {
		g.dataSocket = c.DataSocket
	}
	str("admin-group", &f.adminGroup, c.AdminGroup)
	str("audit-log", &f.auditLog, c.AuditLog)
	str("log-level", &f.logLevel, c.LogLevel)
	str("mlock", &f.mlock, c.Mlock)
	num("max-conns", &f.maxConns, c.MaxConns)
	num("max-conns-per-uid", &f.perUID, c.MaxConnsPerUID)
	return nil
}

func parseMode(flagName, s string) (os.FileMode, error) {
	m, err := strconv.ParseUint(s, 8, 32)
	if err != nil || (m != 0o600 && m != 0o660 && m != 0o666) {
		return 0, usagef("%s %q: want 0600, 0660 or 0666", flagName, s)
	}
	return os.FileMode(m), nil
}

func serve(ctx context.Context, g *globals, f *serveFlags) error {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(f.logLevel)); err != nil {
		return usagef("--log-level %q: want debug, info, warn or error", f.logLevel)
	}
	log := slog.New(slog.NewTextHandler(g.stderr, &slog.HandlerOptions{Level: lvl}))
	if err := harden(log, f.mlock); err != nil {
		return err
	}
	opts := api.Options{Log: log, MaxConns: f.maxConns, MaxConnsPerUID: f.perUID}
	access := vault.DefaultAccess(uint32(os.Geteuid()))
	for _, p := range f.allowClient {
		pr, err := vault.ParsePrincipal(p)
		if err != nil {
			return usagef("--allow-client: %v", err)
		}
		access.Default.Client = append(access.Default.Client, pr)
	}
	for _, p := range f.allowServer {
		pr, err := vault.ParsePrincipal(p)
		if err != nil {
			return usagef("--allow-server: %v", err)
		}
		access.Default.Server = append(access.Default.Server, pr)
	}
	if f.cfg != nil {
		access.Default.Client = append(access.Default.Client, f.cfg.Access.Client...)
		access.Default.Server = append(access.Default.Server, f.cfg.Access.Server...)
		for _, r := range f.cfg.PSKs {
			if access.PSKs == nil {
				access.PSKs = map[string]vault.AccessRule{}
			}
			access.PSKs[string(r.Identity)] = r.Rule
		}
	}
	opts.Access = access
	adminMode := os.FileMode(0o600)
	if f.adminGroup != "" {
		pr, err := vault.ParsePrincipal("group:" + f.adminGroup)
		if err != nil {
			return usagef("--admin-group: %v", err)
		}
		opts.AdminGroup = &pr.ID
		adminMode = 0o660
	}
	if f.mode != "" {
		m, err := parseMode("--socket-mode", f.mode)
		if err != nil {
			return err
		}
		adminMode = m
	}
	if adminMode == 0o666 {
		return usagef("--socket-mode 0666: the admin socket is never open to everyone")
	}
	dataMode, err := parseMode("--data-socket-mode", f.dataMode)
	if err != nil {
		return err
	}

	v, err := vault.Open(ctx, g.stateDir)
	if err != nil {
		if errors.Is(err, vault.ErrNotInitialized) {
			return withHint(err, "run 'pskvault --state-dir %s init --node-id NAME' first", g.stateDir)
		}
		return err
	}
	defer v.Close()
	if f.cfg != nil && f.cfg.NodeID != "" && f.cfg.NodeID != v.NodeID() {
		return fmt.Errorf("configuration says node_id %q, the vault in %s is node %q", f.cfg.NodeID, g.stateDir, v.NodeID())
	}
	if f.cfg != nil && f.cfg.Backend != "" && f.cfg.Backend != v.Config().Backend {
		return fmt.Errorf("configuration says backend %q, the vault in %s uses %q", f.cfg.Backend, g.stateDir, v.Config().Backend)
	}

	auditPath := f.auditLog
	if auditPath == "" {
		auditPath = filepath.Join(g.stateDir, "audit.log")
	}
	var auditW io.Writer = g.stderr
	if auditPath != "-" {
		af, err := os.OpenFile(auditPath, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
		if err != nil {
			return fmt.Errorf("open audit log: %w", err)
		}
		defer af.Close()
		auditW = af
	}
	opts.Audit = api.NewAudit(auditW)

	var adminL, dataL net.Listener
	activated, err := api.ActivationListeners()
	if err != nil {
		return err
	}
	if activated != nil {
		adminL, dataL = activated["admin"], activated["data"]
		if adminL == nil || len(activated) > 2 || (len(activated) == 2 && dataL == nil) {
			return fmt.Errorf("socket activation: want sockets named admin and data (FileDescriptorName=), got %d", len(activated))
		}
		log.Info("using sockets from systemd", "count", len(activated))
	} else {
		if adminL, err = api.Listen(g.socket, adminMode); err != nil {
			return err
		}
		if opts.AdminGroup != nil {
			if err := chgrpSocket(g.socket, *opts.AdminGroup); err != nil {
				adminL.Close()
				return err
			}
		}
		switch g.dataSocket {
		case "":
			g.dataSocket = defaultDataSocket(g.socket)
		case "none":
			g.dataSocket = ""
		}
		if g.dataSocket != "" {
			if filepath.Dir(g.dataSocket) == filepath.Dir(g.socket) {
				adminL.Close()
				return usagef("--data-socket must be in another directory than --socket: the directories' modes keep the admin socket private")
			}
			if dataL, err = api.Listen(g.dataSocket, dataMode); err != nil {
				adminL.Close()
				return err
			}
		}
	}
	defer adminL.Close()
	if dataL != nil {
		defer dataL.Close()
	}

	s := api.NewServerWith(v, opts)
	type served struct {
		srv  *http.Server
		errc <-chan error
	}
	var all []served
	for _, x := range []struct {
		l    net.Listener
		sock api.Socket
	}{{adminL, api.SocketAdmin}, {dataL, api.SocketData}} {
		if x.l == nil {
			continue
		}
		srv, errc, err := s.Serve(x.l, x.sock)
		if err != nil {
			return err
		}
		all = append(all, served{srv, errc})
	}
	log.Info("serving", "node", v.NodeID(), "backend", v.BackendInfo().Name, "socket", g.socket, "data_socket", g.dataSocket, "state_dir", g.stateDir, "audit_log", auditPath, "version", api.Version)
	errc := make(chan error, len(all))
	for _, x := range all {
		go func() { errc <- <-x.errc }()
	}
	var serveErr error
	select {
	case err := <-errc:
		serveErr = fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	log.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, x := range all {
		if err := x.srv.Shutdown(sctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Warn("shutdown", "err", err)
		}
	}
	return serveErr
}

// defaultDataSocket is the data socket beside an admin socket, in a sibling
// directory of its own: an admin socket in a directory named "admin" gets
// one in "data" next to it (/run/pskvault/admin/pskvault.sock gets
// /run/pskvault/data/pskvault.sock, as in contrib/systemd); one in any other
// directory DIR gets DIR-data. The admin directory stays 0700 (0750) while
// the data directory is 0755, so TLS stacks reach only the data socket.
func defaultDataSocket(admin string) string {
	dir := filepath.Dir(admin)
	data := filepath.Base(dir) + "-data"
	if filepath.Base(dir) == "admin" {
		data = "data"
	}
	return filepath.Join(filepath.Dir(dir), data, filepath.Base(admin))
}

// chgrpSocket gives the admin group the admin socket and its directory.
func chgrpSocket(path string, gid uint32) error {
	for _, p := range []string{filepath.Dir(path), path} {
		if err := os.Lchown(p, -1, int(gid)); err != nil {
			return fmt.Errorf("give %s to the admin group: %w", p, err)
		}
	}
	return nil
}
