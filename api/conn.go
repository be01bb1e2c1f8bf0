package api

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Limits of one connection to the daemon. A slow or oversized client is
// cut off by them; a well-behaved one never meets them.
const (
	ReadHeaderTimeout = 5 * time.Second  // from a request's first byte to the end of its head
	ReadTimeout       = 10 * time.Second // from a request's first byte to the end of its body
	WriteTimeout      = 30 * time.Second // to write one answer
	IdleTimeout       = 60 * time.Second // between requests on a kept-alive connection
	MaxHeaderBytes    = 16 << 10         // request line and headers

	// DefaultRequestTimeout bounds the work on one request once it is read
	// (Options.RequestTimeout, serve --request-timeout).
	DefaultRequestTimeout = 5 * time.Second
)

// hangupWatchAfter is how long a request runs before the server starts
// watching its connection for the client hanging up: fast requests (nearly
// all) never pay for the watch.
const hangupWatchAfter = 20 * time.Millisecond

// watchHangup cancels a request's context when its client closes the
// connection while the request is still being served (a client that gave
// up), so the work stops and the connection is freed at once. It starts
// only after hangupWatchAfter, and polls the socket for POLLHUP, which a
// Unix stream socket reports when the peer has closed it entirely (not on
// a half-close, after which the client still waits for its answer). The
// returned stop ends the watch.
func watchHangup(c net.Conn, cancel context.CancelFunc) (stop func()) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return func() {}
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return func() {}
	}
	done := make(chan struct{})
	t := time.AfterFunc(hangupWatchAfter, func() {
		for {
			select {
			case <-done:
				return
			default:
			}
			hup := false
			cerr := raw.Control(func(fd uintptr) {
				// Events 0: only POLLHUP and POLLERR wake it, never data
				// the client sends ahead.
				fds := []unix.PollFd{{Fd: int32(fd)}}
				if n, err := unix.Poll(fds, 50); err == nil && n > 0 {
					hup = fds[0].Revents != 0 // POLLHUP, POLLERR or POLLNVAL
				}
			})
			if hup || cerr != nil {
				cancel()
				return
			}
		}
	})
	return func() {
		t.Stop()
		close(done)
	}
}

// SocketServer serves the socket protocol on one listener: HTTP/1.1 with
// keep-alive, one request at a time per connection, each read, answered
// and written on the connection's own goroutine.
//
// It replaces net/http's Server on the daemon's sockets for speed:
// net/http parks a second goroutine on every connection while a request
// is served (to notice the client going away) and wakes it and waits for
// it after every answer. Between processes each such hand-off is a thread
// wake-up, and on the project's 2-core VMs they made a status request to a
// bare net/http server 57–73 µs where this loop takes 27–40 µs
// (docs/BENCHMARKS.md). Requests are still parsed by net/http
// (http.ReadRequest, which also decodes chunked bodies), and answers are
// small and complete, so each goes out whole, in one write. A client that
// hangs up mid-request is noticed by a watch that starts only once the
// request has run for hangupWatchAfter (watchHangup), and every request is
// bounded by Options.RequestTimeout. What is given up: HTTP/2, and
// pipelining beyond strict request-after-answer order.
type SocketServer struct {
	s    *Server
	sock Socket
	l    net.Listener

	mu      sync.Mutex
	closing bool
	conns   map[net.Conn]bool // true while idle between requests
	done    sync.WaitGroup
	base    context.Context
	cancel  context.CancelFunc
	// stopping is closed when Shutdown or Close begins: it ends the
	// long-polls of POST /v1/watch at once.
	stopping chan struct{}
	stopOnce sync.Once

	acceptFails  int       // failed accepts since the last log line (under mu)
	acceptLogged time.Time // when that line was written

	// testHookRequestDone, when a test sets it, sees each connection's
	// read buffer after each request.
	testHookRequestDone atomic.Pointer[func(readBuf []byte)]
}

func newSocketServer(s *Server, sock Socket, l net.Listener) *SocketServer {
	ctx, cancel := context.WithCancel(context.Background())
	return &SocketServer{s: s, sock: sock, l: l, conns: map[net.Conn]bool{}, base: ctx, cancel: cancel, stopping: make(chan struct{})}
}

// acceptors is the number of goroutines accepting on each socket: with
// two, a connection flood from one user keeps one core busy accepting
// while the other still finds its way to the listen queue of well-behaved
// clients sooner.
const acceptors = 2

// serveAll runs n accept loops and returns the first one's end (closing
// the listener if it was an error, so that the others end too).
func (ss *SocketServer) serveAll(n int) error {
	errs := make(chan error, n)
	for range n {
		go func() { errs <- ss.serve() }()
	}
	err := <-errs
	if !errors.Is(err, http.ErrServerClosed) {
		ss.Close()
	}
	for range n - 1 {
		<-errs
	}
	return err
}

// serve accepts connections until the listener is closed. It returns
// http.ErrServerClosed after Shutdown or Close.
func (ss *SocketServer) serve() error {
	var backoff time.Duration
	for {
		c, err := ss.l.Accept()
		if err != nil {
			if ss.isClosing() {
				return http.ErrServerClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) {
				// Out of descriptors: wait for some to be freed, as
				// net/http does, instead of spinning or giving up.
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				ss.acceptFailed(err)
				time.Sleep(backoff)
				continue
			}
			return err
		}
		backoff = 0
		if !ss.track(c) {
			return http.ErrServerClosed
		}
		go ss.serveConn(c)
	}
}

// acceptFailed notes a failed accept (out of descriptors, typically): the
// first after a quiet spell is logged at once, the rest summed up in at
// most one line per refusalLogEvery, never one per failure (a connection
// flood while descriptors run out would otherwise write hundreds a second).
func (ss *SocketServer) acceptFailed(err error) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	ss.acceptFails++
	if now := time.Now(); now.Sub(ss.acceptLogged) >= refusalLogEvery {
		ss.s.log.Warn("accept failed; retrying with a backoff (summarized, at most one line every "+refusalLogEvery.String()+")", "socket", ss.sock, "err", err, "failures", ss.acceptFails)
		ss.acceptFails, ss.acceptLogged = 0, now
	}
}

// track registers a new connection, idle until its first request arrives,
// or closes it when the server is shutting down.
func (ss *SocketServer) track(c net.Conn) bool {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.closing {
		c.Close()
		return false
	}
	ss.conns[c] = true
	ss.done.Add(1)
	return true
}

// setIdle records whether c waits between requests. It fails once
// Shutdown has begun: leaving idle, the connection is then closed
// unanswered, as a client would see from an idle timeout, and its client
// retries elsewhere; returning to idle after an answer, it is closed
// rather than wait for a request (Shutdown closed the idle ones already).
func (ss *SocketServer) setIdle(c net.Conn, idle bool) bool {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.closing {
		return false
	}
	ss.conns[c] = idle
	if pc, ok := c.(*peerConn); ok {
		pc.idle.Store(idle) // the connection limits may close an idle one
	}
	return true
}

func (ss *SocketServer) isClosing() bool {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return ss.closing
}

// Shutdown stops accepting, closes idle connections at once and the others
// as soon as their answer is out, and waits for them until ctx ends; then
// it closes whatever is left.
func (ss *SocketServer) Shutdown(ctx context.Context) error {
	ss.stopOnce.Do(func() { close(ss.stopping) })
	ss.mu.Lock()
	ss.closing = true
	lerr := ss.l.Close()
	for c, idle := range ss.conns {
		if idle {
			c.Close()
		}
	}
	ss.mu.Unlock()
	finished := make(chan struct{})
	go func() { ss.done.Wait(); close(finished) }()
	select {
	case <-finished:
	case <-ctx.Done():
		ss.Close()
		<-finished
		return ctx.Err()
	}
	ss.cancel()
	if lerr != nil && !errors.Is(lerr, net.ErrClosed) {
		return lerr
	}
	return nil
}

// Close stops accepting and closes every connection at once.
func (ss *SocketServer) Close() error {
	ss.stopOnce.Do(func() { close(ss.stopping) })
	ss.mu.Lock()
	ss.closing = true
	err := ss.l.Close()
	for c := range ss.conns {
		c.Close()
	}
	ss.mu.Unlock()
	ss.cancel()
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

// connReader is the connection as the request parser sees it: reads are
// capped (MaxHeaderBytes while a request head is read), and the buffer
// bufio reads into is remembered so that it can be wiped once it has served
// a request body (an import carries key bytes).
type connReader struct {
	c      net.Conn
	remain int64
	buf    []byte
}

func (r *connReader) Read(p []byte) (int, error) {
	if r.remain <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > r.remain {
		p = p[:r.remain]
	}
	if r.buf == nil {
		r.buf = p[:cap(p)] // bufio's buffer: its first fill reads into all of it
	}
	n, err := r.c.Read(p)
	r.remain -= int64(n)
	return n, err
}

func (ss *SocketServer) serveConn(c net.Conn) {
	defer func() {
		if p := recover(); p != nil {
			ss.s.log.Error("panic serving connection", "socket", ss.sock, "panic", fmt.Sprint(p))
		}
		c.Close()
		ss.mu.Lock()
		delete(ss.conns, c)
		ss.mu.Unlock()
		ss.done.Done()
	}()
	ctx := stoppingContext(ss.s.connContext(ss.base, ss.sock, c), ss.stopping)
	cr := &connReader{c: c}
	br := bufio.NewReaderSize(cr, 4096)
	defer func() { clear(cr.buf) }()
	w := &responseWriter{header: http.Header{}}
	defer w.wipe()
	for first := true; ; first = false {
		// Wait for the next request's first byte.
		wait := IdleTimeout
		if first {
			wait = ReadHeaderTimeout
		}
		c.SetReadDeadline(time.Now().Add(wait))
		cr.remain = MaxHeaderBytes + 4096
		if _, err := br.Peek(1); err != nil {
			return
		}
		if !ss.setIdle(c, false) {
			return
		}
		start := time.Now()
		c.SetReadDeadline(start.Add(ReadHeaderTimeout))
		req, err := http.ReadRequest(br)
		if err != nil {
			ss.badRequest(c, w, cr.remain <= 0, err)
			return
		}
		cr.remain = math.MaxInt64
		c.SetReadDeadline(start.Add(ReadTimeout))
		keep, ok := ss.checkRequest(c, w, req)
		if !ok {
			return
		}
		w.reset()
		rctx, rcancel := context.WithCancel(ctx)
		rctx = context.WithValue(rctx, keyExtendRead, func() { c.SetReadDeadline(time.Now().Add(ReadTimeout)) })
		stopWatch := watchHangup(c, rcancel)
		ss.s.ServeHTTP(w, req.WithContext(rctx))
		stopWatch()
		rcancel()
		// The next request must start at its first byte: read what the
		// handler left of this body, and close rather than read much.
		if n, err := io.CopyN(io.Discard, req.Body, MaxBody+1); err != io.EOF || n > MaxBody {
			keep = false
		}
		req.Body.Close()
		if w.code == http.StatusRequestEntityTooLarge || ss.isClosing() {
			keep = false
		}
		if br.Buffered() == 0 {
			clear(cr.buf)
		}
		if hook := ss.testHookRequestDone.Load(); hook != nil {
			(*hook)(cr.buf)
		}
		c.SetWriteDeadline(time.Now().Add(WriteTimeout))
		err = w.send(c, req, keep)
		w.wipe()
		if err != nil || !keep || !ss.setIdle(c, true) {
			return
		}
	}
}

// checkRequest applies HTTP/1.1's rules that http.ReadRequest leaves to the
// server. It answers and returns ok=false for a request it refuses, and
// reports whether the connection may be kept after this one.
func (ss *SocketServer) checkRequest(c net.Conn, w *responseWriter, req *http.Request) (keep, ok bool) {
	refuse := func(code int, msg string) (bool, bool) {
		w.reset()
		writeError(w, code, CodeBadRequest, msg)
		c.SetWriteDeadline(time.Now().Add(WriteTimeout))
		w.send(c, req, false)
		return false, false
	}
	if req.ProtoMajor != 1 {
		return refuse(http.StatusHTTPVersionNotSupported, "only HTTP/1.x is served")
	}
	// (http.ReadRequest moves the Host header to req.Host.)
	if req.ProtoAtLeast(1, 1) && req.Host == "" {
		return refuse(http.StatusBadRequest, "an HTTP/1.1 request needs a Host header")
	}
	if e := req.Header.Get("Expect"); e != "" {
		if !strings.EqualFold(e, "100-continue") || !req.ProtoAtLeast(1, 1) {
			return refuse(http.StatusExpectationFailed, "unsupported Expect header")
		}
		if req.ContentLength > MaxBody {
			w.reset()
			writeError(w, http.StatusRequestEntityTooLarge, CodeTooLarge, fmt.Sprintf("request body over %d bytes", MaxBody))
			c.SetWriteDeadline(time.Now().Add(WriteTimeout))
			w.send(c, req, false)
			return false, false
		}
		// curl sends Expect: 100-continue for bodies over 1 KiB and
		// waits a second for this line before sending the body.
		c.SetWriteDeadline(time.Now().Add(WriteTimeout))
		if _, err := io.WriteString(c, "HTTP/1.1 100 Continue\r\n\r\n"); err != nil {
			return false, false
		}
	}
	// HTTP/1.0 clients get one answer per connection.
	return !req.Close && req.ProtoAtLeast(1, 1), true
}

// badRequest answers a request that could not be parsed, when there is
// anyone to answer, and the connection is then closed.
func (ss *SocketServer) badRequest(c net.Conn, w *responseWriter, tooLarge bool, err error) {
	var ne net.Error
	switch {
	case tooLarge:
		w.reset()
		writeError(w, http.StatusRequestHeaderFieldsTooLarge, CodeTooLarge, fmt.Sprintf("request head over %d bytes", MaxHeaderBytes))
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.As(err, &ne):
		return // hung up or timed out mid-request: nobody to answer
	default:
		w.reset()
		writeError(w, http.StatusBadRequest, CodeBadRequest, "malformed HTTP request")
	}
	c.SetWriteDeadline(time.Now().Add(WriteTimeout))
	w.send(c, nil, false)
}

// responseWriter collects a whole answer, which send writes in one go.
type responseWriter struct {
	header http.Header
	code   int
	body   bytes.Buffer
	head   []byte
}

func (w *responseWriter) Header() http.Header { return w.header }

func (w *responseWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
}

func (w *responseWriter) Write(p []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	return w.body.Write(p)
}

func (w *responseWriter) reset() {
	clear(w.header)
	w.code = 0
	w.wipe()
}

// copyTo hands a collected answer to another writer (ServeHTTP called
// outside the socket server, as in tests), and wipes it.
func (w *responseWriter) copyTo(dst http.ResponseWriter) {
	for k, v := range w.header {
		dst.Header()[k] = v
	}
	code := w.code
	if code == 0 {
		code = http.StatusOK
	}
	dst.WriteHeader(code)
	dst.Write(w.body.Bytes())
	w.wipe()
}

// wipe zeroes the body, which may hold a derived key.
func (w *responseWriter) wipe() {
	clear(w.body.Bytes()[:w.body.Cap()])
	w.body.Reset()
}

// send writes the status line, headers and body with one writev(2).
func (w *responseWriter) send(c net.Conn, req *http.Request, keep bool) error {
	code := w.code
	if code == 0 {
		code = http.StatusOK
	}
	bodyAllowed := code >= 200 && code != http.StatusNoContent && code != http.StatusNotModified
	if !bodyAllowed {
		w.body.Reset()
	}
	h := w.header
	delete(h, "Transfer-Encoding")
	if bodyAllowed {
		h.Set("Content-Length", strconv.Itoa(w.body.Len()))
		if w.body.Len() > 0 && h.Get("Content-Type") == "" {
			h.Set("Content-Type", "application/octet-stream")
		}
	}
	if keep {
		delete(h, "Connection")
	} else {
		h.Set("Connection", "close")
	}
	head := bytes.NewBuffer(w.head[:0])
	fmt.Fprintf(head, "HTTP/1.1 %03d %s\r\n", code, http.StatusText(code))
	h.Write(head)
	head.WriteString("\r\n")
	w.head = head.Bytes()
	bufs := net.Buffers{w.head}
	if bodyAllowed && (req == nil || req.Method != http.MethodHead) && w.body.Len() > 0 {
		bufs = append(bufs, w.body.Bytes())
	}
	_, err := bufs.WriteTo(c)
	return err
}
