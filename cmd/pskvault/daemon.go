package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/pskvault/pskvault/api"
	"github.com/pskvault/pskvault/internal/config"
	"github.com/pskvault/pskvault/vault"
)

func init() {
	register(&command{name: "init", summary: "create a vault for this node",
		long: "Creates the state directory (0700) with the node's identifier and its backend: a software store, a TPM or a PKCS#11 token. Run it once, as the user the daemon will run as; it needs no daemon.",
		examples: []example{
			{"a software store for this user", "pskvault init --node-id node-a"},
			{"the system vault, keys in the TPM", "pskvault init --state-dir /var/lib/pskvault --node-id node-a --backend tpm --json"},
		},
		uses:  useStateDir,
		setup: setupInit})
	register(&command{name: "serve", summary: "run the daemon: own the vault, listen on the admin and data sockets",
		long: "Owns the vault in --state-dir and listens on the admin socket (--socket; PSK management, for root, the daemon's user and --admin-group) and the data socket (--data-socket; derive, lookup, offers for TLS stacks, per-PSK access lists). Reads --config at start and on SIGHUP; flags given here win over the file. Under systemd the sockets come from the .socket units.",
		examples: []example{
			{"as yourself, with the default paths", "pskvault serve"},
			{"as the system service runs it", "pskvault serve --state-dir /var/lib/pskvault --config /etc/pskvault/pskvault.toml"},
			{"admin socket only, verbose", "pskvault serve --data-socket none --log-level debug"},
		},
		uses:   useAll,
		noJSON: "it prints nothing on standard output: its log goes to standard error, its audit log to --audit-log",
		setup:  setupServe})
}

func setupInit(fs *flag.FlagSet, g *globals) func(context.Context, []string) error {
	node := fs.String("node-id", "", "this node's `identifier` (1-64 of A-Z a-z 0-9 . _ : -)")
	backend := fs.String("backend", "soft", "key backend `URI`: soft, tpm[:...], pkcs11:...")
	asJSON := fs.Bool("json", false, "print JSON: node_id, state_dir, backend")
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
		if *asJSON {
			return writeJSON(g.stdout, initJSON{NodeID: *node, StateDir: g.stateDir, Backend: *backend})
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
	auditFailure     string
	requestTimeout   time.Duration
	maxConns, perUID int
	mlock            string
	metricsListen    string
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
	fs.StringVar(&f.auditFailure, "audit-failure", "refuse", "`mode` when an audit line cannot be written: refuse (the request gets 503 audit_unavailable; changes are not made) or log (answer anyway, say so in the daemon log)")
	fs.DurationVar(&f.requestTimeout, "request-timeout", api.DefaultRequestTimeout, "`duration` one request may take once read: a TPM or token that has not answered by then gets it 503 backend_unavailable, and later requests fail at once until the device answers again")
	fs.IntVar(&f.maxConns, "max-conns", 128, "open connections allowed per socket")
	fs.IntVar(&f.perUID, "max-conns-per-uid", 16, "open connections allowed per caller uid (root and the daemon's user exempt)")
	fs.StringVar(&f.mlock, "mlock", "auto", "lock memory out of swap: auto, require or off")
	fs.StringVar(&f.metricsListen, "metrics-listen", "", "also serve GET /metrics and GET /healthz (nothing else) over TCP on `host:port`, e.g. 127.0.0.1:9464; no authentication: bind it to localhost or a network only the monitoring reaches (default: off; the admin socket serves GET /metrics either way)")
	fs.Var(&f.allowClient, "allow-client", "`principal` (user:NAME|UID, group:NAME|GID) allowed to derive client-role keys of every PSK without its own rule; repeatable")
	fs.Var(&f.allowServer, "allow-server", "`principal` allowed to derive server-role keys of every PSK without its own rule; repeatable")
	fs.StringVar(&f.config, "config", "", "configuration `file` (default "+defaultConfig+" when it exists; re-read on SIGHUP); flags given here win over it")
	return func(ctx context.Context, args []string) error {
		f.set = map[string]bool{}
		fs.Visit(func(fl *flag.Flag) { f.set[fl.Name] = true })
		// What the command line and the environment say, before the file:
		// a reload starts again from here.
		cmdG, cmdF := *g, f
		load := func() (*settings, error) {
			g2, f2 := cmdG, cmdF
			return loadSettings(&g2, &f2)
		}
		st, err := load()
		if err != nil {
			return err
		}
		return serve(ctx, g, st, load)
	}
}

// applyConfig fills in what the command line left unset from the
// configuration file.
func applyConfig(g *globals, f *serveFlags) error {
	path, explicit := configPath(f)
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
	if def, _ := defaultSocket(); c.AdminSocket != "" && !f.set["socket"] && os.Getenv("PSKVAULT_SOCKET") == "" && g.socket == def {
		g.socket = c.AdminSocket
	}
	if c.DataSocket != "" && g.dataSocket == "" {
		g.dataSocket = c.DataSocket
	}
	str("admin-group", &f.adminGroup, c.AdminGroup)
	str("audit-log", &f.auditLog, c.AuditLog)
	str("audit-failure", &f.auditFailure, c.AuditFailure)
	if c.RequestTimeout != 0 && !f.set["request-timeout"] {
		f.requestTimeout = c.RequestTimeout
	}
	str("log-level", &f.logLevel, c.LogLevel)
	str("mlock", &f.mlock, c.Mlock)
	str("metrics-listen", &f.metricsListen, c.MetricsListen)
	num("max-conns", &f.maxConns, c.MaxConns)
	num("max-conns-per-uid", &f.perUID, c.MaxConnsPerUID)
	return nil
}

// configPath is the file serve reads: --config, or the default one, which
// may be missing.
func configPath(f *serveFlags) (path string, explicit bool) {
	if f.config != "" {
		return f.config, true
	}
	return defaultConfig, false
}

func parseMode(flagName, s string) (os.FileMode, error) {
	m, err := strconv.ParseUint(s, 8, 32)
	if err != nil || (m != 0o600 && m != 0o660 && m != 0o666) {
		return 0, usagef("%s %q: want 0600, 0660 or 0666", flagName, s)
	}
	return os.FileMode(m), nil
}

// settings are what serve runs with: the command line, the environment and
// the configuration file resolved and checked. loadSettings makes them the
// same way at start and at each reload.
type settings struct {
	configFile            string
	stateDir              string
	socket, dataSocket    string // dataSocket "": none
	adminGroup            string // as given
	adminGID              *uint32
	adminMode, dataMode   os.FileMode
	maxConns, perUID      int
	mlock                 string
	logLevel              slog.Level
	auditLog              string // a path, or "-" for stderr
	auditFailure          string // api.AuditRefuse or api.AuditLogOnly
	requestTimeout        time.Duration
	metricsListen         string // host:port, "" for none
	access                *vault.Access
	cfgNodeID, cfgBackend string // from the file: must match the vault
}

// loadSettings applies the configuration file to g and f (copies of the
// command line's) and checks everything that can be checked before the
// vault is open.
func loadSettings(g *globals, f *serveFlags) (*settings, error) {
	if err := applyConfig(g, f); err != nil {
		return nil, err
	}
	st := &settings{stateDir: g.stateDir, socket: g.socket, mlock: f.mlock, maxConns: f.maxConns, perUID: f.perUID, adminGroup: f.adminGroup}
	st.configFile, _ = configPath(f)
	if err := st.logLevel.UnmarshalText([]byte(f.logLevel)); err != nil {
		return nil, usagef("--log-level %q: want debug, info, warn or error", f.logLevel)
	}
	switch f.mlock {
	case "auto", "require", "off":
	default:
		return nil, usagef("--mlock %q: want auto, require or off", f.mlock)
	}
	if f.requestTimeout <= 0 || f.requestTimeout > time.Hour {
		return nil, usagef("--request-timeout %v: want a positive duration up to 1h", f.requestTimeout)
	}
	st.requestTimeout = f.requestTimeout
	if f.metricsListen != "" {
		if _, _, err := net.SplitHostPort(f.metricsListen); err != nil {
			return nil, usagef("--metrics-listen %q: want host:port, e.g. 127.0.0.1:9464", f.metricsListen)
		}
		st.metricsListen = f.metricsListen
	}
	switch f.auditFailure {
	case api.AuditRefuse, api.AuditLogOnly:
		st.auditFailure = f.auditFailure
	default:
		return nil, usagef("--audit-failure %q: want refuse or log", f.auditFailure)
	}
	access := vault.DefaultAccess(uint32(os.Geteuid()))
	for _, p := range f.allowClient {
		pr, err := vault.ParsePrincipal(p)
		if err != nil {
			return nil, usagef("--allow-client: %v", err)
		}
		access.Default.Client = append(access.Default.Client, pr)
	}
	for _, p := range f.allowServer {
		pr, err := vault.ParsePrincipal(p)
		if err != nil {
			return nil, usagef("--allow-server: %v", err)
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
		st.cfgNodeID, st.cfgBackend = f.cfg.NodeID, f.cfg.Backend
	}
	st.access = access
	st.adminMode = 0o600
	if f.adminGroup != "" {
		pr, err := vault.ParsePrincipal("group:" + f.adminGroup)
		if err != nil {
			return nil, usagef("--admin-group: %v", err)
		}
		st.adminGID = &pr.ID
		st.adminMode = 0o660
	}
	if f.mode != "" {
		m, err := parseMode("--socket-mode", f.mode)
		if err != nil {
			return nil, err
		}
		st.adminMode = m
	}
	if st.adminMode == 0o666 {
		return nil, usagef("--socket-mode 0666: the admin socket is never open to everyone")
	}
	var err error
	if st.dataMode, err = parseMode("--data-socket-mode", f.dataMode); err != nil {
		return nil, err
	}
	switch g.dataSocket {
	case "":
		if g.socket != "" { // else: no admin socket path either; serve says so
			st.dataSocket = defaultDataSocket(g.socket)
		}
	case "none":
	default:
		st.dataSocket = g.dataSocket
	}
	if st.dataSocket != "" && filepath.Dir(st.dataSocket) == filepath.Dir(st.socket) {
		return nil, usagef("--data-socket must be in another directory than --socket: the directories' modes keep the admin socket private")
	}
	st.auditLog = f.auditLog
	if st.auditLog == "" {
		st.auditLog = filepath.Join(g.stateDir, "audit.log")
	}
	return st, nil
}

// checkVault checks what the file says about the vault against the vault.
func (st *settings) checkVault(v *vault.Vault) error {
	// The file's values are not repeated: only what the vault says.
	if st.cfgNodeID != "" && st.cfgNodeID != v.NodeID() {
		return fmt.Errorf("%s: node_id differs from the vault's: the vault in %s is node %q", st.configFile, st.stateDir, v.NodeID())
	}
	if st.cfgBackend != "" && st.cfgBackend != v.Config().Backend {
		return fmt.Errorf("%s: backend differs from the vault's: the vault in %s uses %q", st.configFile, st.stateDir, v.Config().Backend)
	}
	return nil
}

func serve(ctx context.Context, g *globals, st *settings, load func() (*settings, error)) error {
	// From now on SIGHUP reloads; one that arrives while the daemon starts
	// waits for the loop below.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)

	if st.socket == "" && os.Getenv("LISTEN_FDS") == "" {
		return errNoDefaultSocket // before anything is opened
	}
	level := new(slog.LevelVar)
	level.Set(st.logLevel)
	log := slog.New(slog.NewTextHandler(g.stderr, &slog.HandlerOptions{Level: level}))
	if err := harden(log, st.mlock); err != nil {
		return err
	}
	opts := api.Options{Log: log, MaxConns: st.maxConns, MaxConnsPerUID: st.perUID, Access: st.access, AdminGroup: st.adminGID, AuditFailure: st.auditFailure, RequestTimeout: st.requestTimeout}

	v, err := vault.Open(ctx, st.stateDir)
	if err != nil {
		if errors.Is(err, vault.ErrNotInitialized) {
			return withHint(err, "run 'pskvault --state-dir %s init --node-id NAME' first", st.stateDir)
		}
		return err
	}
	defer v.Close()
	if err := st.checkVault(v); err != nil {
		return err
	}
	logReconciliation(log, v.Reconciliation())
	if err := v.CompactionPending(); err != nil {
		log.Warn("vault.db's records were converted to sealed handles (vault.keys), but the file could not be rewritten to purge their old clear copies (no room for a second copy of it?); serving anyway, retrying as space allows",
			"err", err, "state_dir", st.stateDir)
	}
	go retryCompaction(ctx, v, log)

	audit := api.NewAudit(g.stderr)
	if st.auditLog != "-" {
		if audit, err = api.OpenAudit(st.auditLog); err != nil {
			return fmt.Errorf("open audit log: %w", err)
		}
	}
	defer audit.Close()
	opts.Audit = audit

	var adminL, dataL net.Listener
	activated, err := api.ActivationListeners()
	if err != nil {
		return err
	}
	dataSocket := st.dataSocket
	if activated != nil {
		adminL, dataL = activated["admin"], activated["data"]
		if adminL == nil || len(activated) > 2 || (len(activated) == 2 && dataL == nil) {
			return fmt.Errorf("socket activation: want sockets named admin and data (FileDescriptorName=), got %d", len(activated))
		}
		log.Info("using sockets from systemd", "count", len(activated))
		dataSocket = ""
		if dataL != nil {
			dataSocket = "(systemd)"
		}
	} else {
		if st.socket == "" {
			return errNoDefaultSocket
		}
		if adminL, err = api.Listen(st.socket, st.adminMode); err != nil {
			return err
		}
		if st.adminGID != nil {
			if err := chgrpSocket(st.socket, *st.adminGID); err != nil {
				adminL.Close()
				return err
			}
		}
		if st.dataSocket != "" {
			if dataL, err = api.Listen(st.dataSocket, st.dataMode); err != nil {
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
		srv  *api.SocketServer
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
	var metricsSrv *http.Server
	if st.metricsListen != "" {
		ml, err := net.Listen("tcp", st.metricsListen)
		if err != nil {
			return fmt.Errorf("metrics listener: %w", err)
		}
		if host, _, _ := net.SplitHostPort(st.metricsListen); !isLoopback(host) {
			log.Warn("the metrics listener is not on a loopback address: it has no authentication, so anyone who reaches it reads the metrics (no keys, identities or users: counts only)", "address", ml.Addr().String())
		}
		var merrc <-chan error
		metricsSrv, merrc = s.ServeMetrics(ml)
		go func() {
			if err := <-merrc; err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("metrics listener stopped", "err", err)
			}
		}()
		log.Info("serving metrics", "address", ml.Addr().String(), "paths", "/metrics /healthz")
	}
	log.Info("serving", "node", v.NodeID(), "backend", v.BackendInfo().Name, "socket", st.socket, "data_socket", dataSocket, "state_dir", st.stateDir, "audit_log", st.auditLog, "version", api.Version)
	errc := make(chan error, len(all))
	for _, x := range all {
		go func() { errc <- <-x.errc }()
	}
	rl := &reloader{log: log, level: level, audit: audit, v: v, stderr: g.stderr, running: st, load: load}
	var serveErr error
loop:
	for {
		select {
		case err := <-errc:
			serveErr = fmt.Errorf("serve: %w", err)
			break loop
		case <-ctx.Done():
			break loop
		case <-hup:
			rl.reload()
		}
	}
	log.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, x := range all {
		if err := x.srv.Shutdown(sctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Warn("shutdown", "err", err)
		}
	}
	if metricsSrv != nil {
		metricsSrv.Shutdown(sctx)
	}
	return serveErr
}

// isLoopback reports whether host (of a listen address) is a loopback
// address or "localhost".
func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
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

// compactionRetryEvery is how often the daemon checks whether a pending
// compaction of vault.db (after a full disk) can run now.
var compactionRetryEvery = 2 * time.Second

// retryCompaction runs a pending compaction of vault.db (vault.Open starts
// without one when the disk is full; a destructive change may leave one
// pending too) as soon as the file system has room for it, until ctx ends.
func retryCompaction(ctx context.Context, v *vault.Vault, log *slog.Logger) {
	t := time.NewTicker(compactionRetryEvery)
	defer t.Stop()
	var lastErr string
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if v.CompactionPending() == nil {
			lastErr = ""
			continue
		}
		done, err := v.RetryCompaction()
		switch {
		case done:
			log.Info("vault.db rewritten: the pending compaction is done")
			lastErr = ""
		case err != nil && err.Error() != lastErr && !errors.Is(err, vault.ErrNoSpace):
			// Said once per distinct failure, not every tick.
			log.Warn("compaction of vault.db still failing", "err", err)
			lastErr = err.Error()
		}
	}
}

// logReconciliation reports what vault.Open's reconciliation of records and
// backend keys did (after a crash) and what it could not do; `pskvault
// check` reports the same.
func logReconciliation(log *slog.Logger, r vault.Reconciliation) {
	if r.CreatesUndone+r.DeletesFinished+r.HandlesCleared > 0 {
		log.Info("finished what a crash interrupted", "creates_undone", r.CreatesUndone, "deletes_finished", r.DeletesFinished, "key_destroys_finished", r.HandlesCleared)
	}
	if len(r.KeysMissing) > 0 {
		log.Warn("the backend no longer holds the key of some PSKs; they are marked, and pskvault check lists them", "psks", r.KeysMissing)
	}
	for _, o := range r.Orphans {
		log.Warn("backend key carries this vault's tag but no record names it; kept (pskvault check lists it)", "handle", o)
	}
	for _, p := range r.Problems {
		log.Warn("reconciliation at start incomplete", "problem", p)
	}
}
