package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/pskvault/pskvault/vault"
)

// The daemon's Prometheus metrics (docs/API.md, "Metrics"). They live in a
// registry of the server's own, never the process-wide default one, and
// carry no identity, uid or other per-key or per-caller label: the label
// values are a fixed, small set (results, roles, endpoints, backend
// operations, refusal reasons), so that the number of series is bounded
// and nothing a scrape shows says which PSK or which user did what (that is
// the audit log's job, which only the operator reads).
//
// Everything on the request path is created up front and reached without
// building label strings: one histogram observation and at most one
// counter increment per request, one observation per backend call.

// Results of a derivation, the `result` label of pskvault_derives_total.
const (
	resultOK           = "ok"
	resultDenied       = "denied"        // the caller is not in the PSK's access list
	resultNotFound     = "not_found"     // no such PSK (or, for lookup, no key for the wire identity)
	resultExpired      = "expired"       // past not_after
	resultRevoked      = "revoked"       // revoked, swept or marked for deletion
	resultPolicy       = "policy"        // refused by the PSK's policy: node, target, role, key policy, RFC 9257 rules
	resultBackendError = "backend_error" // the TPM or token did not answer, or no longer holds the key
	resultBadRequest   = "bad_request"   // the request itself was malformed
	resultAuditError   = "audit_error"   // derived, but refused because its audit line could not be written
	resultInternal     = "internal"
)

var deriveResults = []string{resultOK, resultDenied, resultNotFound, resultExpired, resultRevoked, resultPolicy, resultBackendError, resultBadRequest, resultAuditError, resultInternal}

// Roles, the `role` label: this node's role in the derivation; "none"
// when the request failed before one was known.
var deriveRoles = []string{"client", "server", "none"}

// Refusal reasons, the `reason` label of pskvault_refused_connections_total.
const (
	refusedConnLimit = "conn_limit"          // the socket's connection cap (or its unreserved share) is reached
	refusedUIDLimit  = "uid_limit"           // the caller's uid holds its per-uid cap
	refusedNoCreds   = "no_peer_credentials" // SO_PEERCRED could not be read
	refusedNotAdmin  = "not_admin"           // a request on the admin socket from a caller who is not root, the daemon's user or in the admin group
)

var refusalReasons = []string{refusedConnLimit, refusedUIDLimit, refusedNoCreds, refusedNotAdmin}

// Buckets of the latency histograms: from the tens of microseconds of a
// soft derivation to the seconds of a stalled device (the default request
// timeout is 5 s).
var (
	requestBuckets = []float64{50e-6, 100e-6, 200e-6, 500e-6, 1e-3, 2e-3, 5e-3, 10e-3, 25e-3, 50e-3, 100e-3, 250e-3, 500e-3, 1, 2.5, 5, 10}
	backendBuckets = []float64{10e-6, 25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3, 100e-3, 250e-3, 500e-3, 1, 2.5, 5}
)

// metrics are a server's collectors.
type metrics struct {
	reg *prometheus.Registry

	derives    map[string]map[string]prometheus.Counter // result -> role
	requests   map[Socket]map[string]prometheus.Observer
	backendDur map[string]prometheus.Observer
	backendErr map[string]prometheus.Counter
	auditFails prometheus.Counter
	refused    map[Socket]map[string]prometheus.Counter

	observeBackend vault.BackendObserver // what the vault calls after each backend call
}

// endpoints are the `endpoint` label values: the audit log's names of the
// routes, and "other" for paths that are none of them.
var endpoints = []string{"status", "list", "show", "delete", "import", "create", "derive", "lookup", "offers", "watch", "keys", "metrics", "health", "other"}

func newMetrics(s *Server) *metrics {
	m := &metrics{reg: prometheus.NewRegistry()}
	backend := s.v.BackendInfo().Name
	constLabels := prometheus.Labels{"backend": backend}

	derives := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name:        "pskvault_derives_total",
		Help:        "Derivations asked for on the derive and lookup endpoints, by result and this node's role.",
		ConstLabels: constLabels,
	}, []string{"result", "role"})
	m.derives = map[string]map[string]prometheus.Counter{}
	for _, res := range deriveResults {
		m.derives[res] = map[string]prometheus.Counter{}
		for _, role := range deriveRoles {
			m.derives[res][role] = derives.WithLabelValues(res, role)
		}
	}

	requests := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "pskvault_request_duration_seconds",
		Help:    "Time to serve a request on a socket, from its head read to its answer ready (audit line included), by socket and endpoint.",
		Buckets: requestBuckets,
	}, []string{"socket", "endpoint"})
	m.requests = map[Socket]map[string]prometheus.Observer{}
	for _, sock := range []Socket{SocketAdmin, SocketData} {
		m.requests[sock] = map[string]prometheus.Observer{}
		for _, ep := range endpoints {
			m.requests[sock][ep] = requests.WithLabelValues(string(sock), ep)
		}
	}

	backendDur := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:        "pskvault_backend_operation_duration_seconds",
		Help:        "Time the key backend took per call, by operation (hmac, store, delete, random; the health probe is a random call).",
		ConstLabels: constLabels,
		Buckets:     backendBuckets,
	}, []string{"op"})
	backendErr := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name:        "pskvault_backend_operation_errors_total",
		Help:        "Backend calls that failed, by operation.",
		ConstLabels: constLabels,
	}, []string{"op"})
	m.backendDur, m.backendErr = map[string]prometheus.Observer{}, map[string]prometheus.Counter{}
	for _, op := range []string{vault.OpHMAC, vault.OpStore, vault.OpDelete, vault.OpRandom} {
		m.backendDur[op] = backendDur.WithLabelValues(op)
		m.backendErr[op] = backendErr.WithLabelValues(op)
	}
	m.observeBackend = func(op string, took time.Duration, err error) {
		if o := m.backendDur[op]; o != nil {
			o.Observe(took.Seconds())
		}
		if err != nil && !errors.Is(err, context.Canceled) {
			if c := m.backendErr[op]; c != nil {
				c.Inc()
			}
		}
	}
	s.v.SetBackendObserver(m.observeBackend)

	up := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name:        "pskvault_backend_up",
		Help:        "1 when the key backend answers, 0 when it is stalled or unreachable (the state that makes requests fail with backend_unavailable; probed at most once a second).",
		ConstLabels: constLabels,
	}, func() float64 {
		if s.checkBackend() != nil {
			return 0
		}
		return 1
	})

	m.auditFails = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "pskvault_audit_write_failures_total",
		Help: "Audit lines that could not be written (each refused its request unless audit_failure = \"log\").",
	})
	refused := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "pskvault_refused_connections_total",
		Help: "Connections refused over the caps or for want of peer credentials, and requests refused on the admin socket to callers who are not admins, by socket and reason.",
	}, []string{"socket", "reason"})
	m.refused = map[Socket]map[string]prometheus.Counter{}
	for _, sock := range []Socket{SocketAdmin, SocketData} {
		m.refused[sock] = map[string]prometheus.Counter{}
		for _, r := range refusalReasons {
			m.refused[sock][r] = refused.WithLabelValues(string(sock), r)
		}
	}
	info := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "pskvault_build_info",
		Help:        "Always 1: the daemon's version, node and backend.",
		ConstLabels: prometheus.Labels{"version": Version, "node": s.v.NodeID(), "backend": backend},
	})
	info.Set(1)

	m.reg.MustRegister(derives, requests, backendDur, backendErr, up, m.auditFails, refused, info, &vaultCollector{v: s.v, backend: backend},
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// countDerive counts one derivation request.
func (m *metrics) countDerive(result, role string) {
	byRole := m.derives[result]
	if byRole == nil {
		byRole = m.derives[resultInternal]
	}
	c := byRole[role]
	if c == nil {
		c = byRole["none"]
	}
	c.Inc()
}

// observeRequest records a request's duration.
func (m *metrics) observeRequest(sock Socket, endpoint string, took time.Duration) {
	o := m.requests[sock][endpoint]
	if o == nil {
		o = m.requests[sock]["other"]
		if o == nil {
			return
		}
	}
	o.Observe(took.Seconds())
}

// refusedCounter is the counter of one socket's refusals for reason.
func (m *metrics) refusedCounter(sock Socket, reason string) prometheus.Counter {
	return m.refused[sock][reason]
}

// resultOf is the derive result for a vault error.
func resultOf(err error) string {
	switch {
	case err == nil:
		return resultOK
	case errors.Is(err, vault.ErrDenied):
		return resultDenied
	case errors.Is(err, vault.ErrNotFound):
		return resultNotFound
	case errors.Is(err, vault.ErrExpired):
		return resultExpired
	case errors.Is(err, vault.ErrRevoked):
		return resultRevoked
	case errors.Is(err, vault.ErrBackendUnavailable), errors.Is(err, vault.ErrKeyNotFound):
		return resultBackendError
	case errors.Is(err, errBadRequest), errors.Is(err, vault.ErrInvalid):
		return resultBadRequest
	}
	if _, _, ok := policyError(err); ok {
		return resultPolicy
	}
	for _, e := range []error{vault.ErrNotParty, vault.ErrTargetNotAllowed, vault.ErrKeyPolicy, vault.ErrUnsupported} {
		if errors.Is(err, e) {
			return resultPolicy
		}
	}
	return resultInternal
}

// resultOfCode is the derive result of a request answered with an error
// code before (or without) a derivation: a malformed request, mostly.
func resultOfCode(status int, code string) string {
	switch code {
	case "":
		if status < 300 {
			return resultOK
		}
		return resultInternal
	case CodeNotFound, CodeNoKey:
		return resultNotFound
	case CodeAuditUnavailable:
		return resultAuditError
	case CodeUnavailable, CodeKeyMissing:
		return resultBackendError
	case CodeExpired:
		return resultExpired
	case CodeRevoked:
		return resultRevoked
	case CodeInternal:
		return resultInternal
	case CodeForbidden:
		return resultDenied
	}
	if status >= 400 && status < 500 && status != http.StatusForbidden && status != http.StatusGone {
		return resultBadRequest
	}
	return resultPolicy
}

// vaultCollector reads the vault's counts at each scrape: O(1) (vault.Stats
// walks no record).
type vaultCollector struct {
	v       *vault.Vault
	backend string
}

var (
	descPSKs       = prometheus.NewDesc("pskvault_psks", "PSK records by state: active, expired (active but past not_after, until psk sweep destroys their keys), revoked.", []string{"state"}, nil)
	descNextExpiry = prometheus.NewDesc("pskvault_psk_next_expiry_seconds", "Seconds until the earliest not_after among the active PSKs still ahead (absent when none has one).", nil, nil)
)

func (c *vaultCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descPSKs
	ch <- descNextExpiry
}

func (c *vaultCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.v.Stats()
	ch <- prometheus.MustNewConstMetric(descPSKs, prometheus.GaugeValue, float64(st.Active), "active")
	ch <- prometheus.MustNewConstMetric(descPSKs, prometheus.GaugeValue, float64(st.Expired), "expired")
	ch <- prometheus.MustNewConstMetric(descPSKs, prometheus.GaugeValue, float64(st.Revoked), "revoked")
	if !st.NextExpiry.IsZero() {
		ch <- prometheus.MustNewConstMetric(descNextExpiry, prometheus.GaugeValue, time.Until(st.NextExpiry).Seconds())
	}
}

// metricsHandler serves the exposition (GET /metrics on the admin socket
// and on the metrics listener).
func (s *Server) metricsHandler() http.Handler {
	return promhttp.HandlerFor(s.metrics.reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
}

// Registry is the server's metrics registry (for tests and embedding).
func (s *Server) Registry() *prometheus.Registry { return s.metrics.reg }

// healthEvery is how long a backend probe's answer is reused: a flood of
// health checks or scrapes costs the device at most one call a second.
const healthEvery = time.Second

// healthProbeTimeout bounds one probe (less when the request timeout is
// shorter).
const healthProbeTimeout = 2 * time.Second

type healthCache struct {
	mu  sync.Mutex
	at  time.Time
	err error
}

// checkBackend reports whether the backend answers: the guard's state
// (vault.BackendAvailable: no call stuck past its deadline, and the last
// call answered), refreshed by a real probe when the last one is older
// than healthEvery. A flood of health checks or scrapes thus costs the
// device at most one call a second (one that arrives during a probe waits
// for it), while a request's own backend call moves the answer at once.
func (s *Server) checkBackend() error {
	s.probe.mu.Lock()
	defer s.probe.mu.Unlock()
	if s.probe.at.IsZero() || time.Since(s.probe.at) >= healthEvery {
		ctx, cancel := context.WithTimeout(context.Background(), min(s.opts.RequestTimeout, healthProbeTimeout))
		s.probe.err = s.v.ProbeBackend(ctx)
		cancel()
		s.probe.at = time.Now()
	}
	if s.v.BackendAvailable() {
		return nil
	}
	if stalled, since := s.v.BackendStalled(); stalled {
		return fmt.Errorf("%w: a call has been running past its request's deadline since %s", vault.ErrBackendUnavailable, since.UTC().Format(time.RFC3339))
	}
	if s.probe.err != nil {
		return s.probe.err
	}
	return fmt.Errorf("%w: its last call was not answered", vault.ErrBackendUnavailable)
}

// health answers GET /v1/health: 200 when the backend answers (a real,
// cached probe) and the audit log can be written or is not required; 503
// with the reason's code otherwise. The data socket's answer says what,
// never which device.
func (s *Server) health(w http.ResponseWriter, r *http.Request) {
	sock, _ := r.Context().Value(keySocket).(Socket)
	s.writeHealth(w, sock != SocketAdmin)
}

func (s *Server) writeHealth(w http.ResponseWriter, public bool) {
	w.Header().Set("Cache-Control", "no-store")
	if err := s.checkBackend(); err != nil {
		msg := "the key backend (TPM or token) is unavailable or did not answer in time"
		if !public {
			msg += ": " + err.Error()
		}
		writeError(w, http.StatusServiceUnavailable, CodeUnavailable, msg)
		return
	}
	if s.auditBroken.Load() && s.opts.AuditFailure != AuditLogOnly {
		writeError(w, http.StatusServiceUnavailable, CodeAuditUnavailable, "the audit log cannot be written, so keys are not handed out (audit_failure = \"refuse\")")
		return
	}
	writeJSON(w, http.StatusOK, Health{Status: "ok", Backend: s.v.BackendInfo().Name})
}

// Health is the answer of GET /v1/health when the daemon can serve.
type Health struct {
	Status  string `json:"status"` // "ok"
	Backend string `json:"backend"`
}
