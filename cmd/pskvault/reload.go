package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/pskvault/pskvault/api"
	"github.com/pskvault/pskvault/internal/config"
	"github.com/pskvault/pskvault/vault"
)

// reloader applies a new configuration on SIGHUP: the configuration file is
// read again under the rules of the start (flags on the command line win),
// checked in full, and only then applied: the access lists swapped in the
// vault at once, the log level set, and the audit log reopened (at its new
// path, when the file names another). On any problem nothing is applied and
// each problem is logged as `pskvault config check` prints it. Settings
// that only a restart can change are compared and reported. Every reload
// writes one audit line and one log line.
type reloader struct {
	log     *slog.Logger
	level   *slog.LevelVar
	audit   *api.Audit
	v       *vault.Vault
	stderr  io.Writer // the audit log when audit_log is "-"
	running *settings // what is in force
	load    func() (*settings, error)
}

func (r *reloader) reload() {
	next, err := r.load()
	if err == nil {
		err = next.checkVault(r.v)
	}
	if err == nil {
		// The last thing that can fail, and the first to apply: the audit
		// line of this reload goes to the new file.
		if err = r.openAudit(next.auditLog); err != nil {
			err = fmt.Errorf("open audit log: %w", err)
		}
	}
	if err != nil {
		r.failed(err)
		return
	}
	restart := r.running.restartNeeded(next)
	r.v.SetAccess(next.access)
	r.level.Set(next.logLevel)
	in := *r.running
	in.access, in.logLevel, in.auditLog, in.cfgNodeID, in.cfgBackend = next.access, next.logLevel, next.auditLog, next.cfgNodeID, next.cfgBackend
	r.running = &in

	var names []string
	for _, c := range restart {
		names = append(names, c.name)
		r.log.Warn("reload: setting needs a restart to take effect", "setting", c.name, "running", c.running, "configured", c.configured)
	}
	ae := &api.AuditEntry{Time: time.Now().UTC(), Socket: "signal", Op: "reload", Result: "ok"}
	if len(names) > 0 {
		ae.Reason = "needs a restart: " + strings.Join(names, ", ")
	}
	r.audit.Write(ae)
	attrs := []any{"result", "ok", "config", next.configFile, "psk_rules", len(next.access.PSKs), "log_level", next.logLevel, "audit_log", next.auditLog}
	if len(names) > 0 {
		attrs = append(attrs, "needs_restart", strings.Join(names, ","))
	}
	r.log.Info("reload", attrs...)
}

// failed keeps the running configuration. The running audit log is still
// reopened: logrotate's SIGHUP must not be lost to a broken file.
func (r *reloader) failed(err error) {
	problems := []string{oneLine(err.Error())}
	if ce := (*config.Error)(nil); errors.As(err, &ce) {
		problems = ce.Lines()
	}
	for _, p := range problems {
		r.log.Error("reload: configuration problem", "problem", p)
	}
	if err := r.openAudit(r.running.auditLog); err != nil {
		r.log.Error("reload: reopen audit log", "path", r.running.auditLog, "err", err)
	}
	r.audit.Write(&api.AuditEntry{Time: time.Now().UTC(), Socket: "signal", Op: "reload", Result: "failed", Reason: strings.Join(problems, "; ")})
	r.log.Error("reload", "result", "failed", "config", r.running.configFile, "problems", len(problems), "in_force", "the running configuration")
}

func (r *reloader) openAudit(path string) error {
	if path == "-" {
		r.audit.Redirect(r.stderr)
		return nil
	}
	return r.audit.Reopen(path)
}

// change is a setting whose configured value differs from the running one.
type change struct {
	name                string
	running, configured string
}

// restartNeeded lists the settings that differ in next but are fixed for
// the life of the process: the vault, the sockets and who may reach them,
// the connection caps, memory locking.
func (st *settings) restartNeeded(next *settings) []change {
	var out []change
	cmp := func(name, a, b string) {
		if a != b {
			out = append(out, change{name, a, b})
		}
	}
	group := func(st *settings) string {
		if st.adminGID == nil {
			return ""
		}
		return fmt.Sprintf("%s (gid %d)", st.adminGroup, *st.adminGID)
	}
	mode := func(m uint32) string { return fmt.Sprintf("%04o", m) }
	cmp("state_dir", st.stateDir, next.stateDir)
	cmp("admin_socket", st.socket, next.socket)
	cmp("data_socket", st.dataSocket, next.dataSocket)
	if (st.adminGID == nil) != (next.adminGID == nil) || st.adminGID != nil && *st.adminGID != *next.adminGID {
		out = append(out, change{"admin_group", group(st), group(next)})
	}
	cmp("socket_mode", mode(uint32(st.adminMode)), mode(uint32(next.adminMode)))
	cmp("data_socket_mode", mode(uint32(st.dataMode)), mode(uint32(next.dataMode)))
	cmp("max_conns", fmt.Sprint(st.maxConns), fmt.Sprint(next.maxConns))
	cmp("max_conns_per_uid", fmt.Sprint(st.perUID), fmt.Sprint(next.perUID))
	cmp("mlock", st.mlock, next.mlock)
	cmp("audit_failure", st.auditFailure, next.auditFailure)
	cmp("request_timeout", st.requestTimeout.String(), next.requestTimeout.String())
	cmp("metrics_listen", st.metricsListen, next.metricsListen)
	return out
}
