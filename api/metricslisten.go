package api

import (
	"net"
	"net/http"
	"sync"
)

// maxMetricsConns caps the connections of the metrics listener: a scraper
// or an orchestrator needs one or two.
const maxMetricsConns = 16

// ServeMetrics serves the metrics listener on l (serve --metrics-listen):
// GET /metrics (the exposition) and GET /healthz (GET /v1/health as the
// data socket answers it), nothing else: no key, no PSK and no admin
// endpoint is reachable through it. It has no authentication, so it
// belongs on localhost or a network only the monitoring system reaches.
// The returned server is stopped with Shutdown or Close; the channel
// receives Serve's end.
func (s *Server) ServeMetrics(l net.Listener) (*http.Server, <-chan error) {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", s.metricsHandler())
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { s.writeHealth(w, true) })
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, CodeNotFound, "the metrics listener serves GET /metrics and GET /healthz only")
	})
	hs := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: ReadHeaderTimeout,
		ReadTimeout:       ReadTimeout,
		WriteTimeout:      WriteTimeout,
		IdleTimeout:       IdleTimeout,
		MaxHeaderBytes:    MaxHeaderBytes,
		ErrorLog:          nil,
	}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(&capListener{Listener: l, sem: make(chan struct{}, maxMetricsConns)}) }()
	return hs, errc
}

// capListener holds at most cap(sem) connections open: the next Accept
// waits until one closes.
type capListener struct {
	net.Listener
	sem chan struct{}
}

func (l *capListener) Accept() (net.Conn, error) {
	l.sem <- struct{}{}
	c, err := l.Listener.Accept()
	if err != nil {
		<-l.sem
		return nil, err
	}
	return &capConn{Conn: c, release: func() { <-l.sem }}, nil
}

type capConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *capConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}
