package client

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"syscall"
	"time"
)

// syncTransport is the client's http.RoundTripper: each exchange runs on the
// caller's goroutine over a pooled keep-alive connection to one Unix socket.
//
// net/http's Transport hands every request to two goroutines per connection
// (a writer and a reader). Between processes each such hand-off costs a
// thread wake-up; on the project's 2-core VMs that made a derive through the
// daemon about 150 µs where a synchronous exchange takes about 95 µs
// (docs/BENCHMARKS.md). The daemon's answers are small and always complete,
// so a write-then-read exchange loses nothing.
type syncTransport struct {
	socket string
	trust  *trust         // checks the daemon of every new connection
	idle   chan *syncConn // idle keep-alive connections
}

type syncConn struct {
	net.Conn
	br *bufio.Reader
	bw *bufio.Writer
}

const maxIdleConns = 16

func newSyncTransport(socket string, tr *trust) *syncTransport {
	return &syncTransport{socket: socket, trust: tr, idle: make(chan *syncConn, maxIdleConns)}
}

// get returns an idle connection (reused=true) or dials a new one; with
// fresh, always a new one.
func (t *syncTransport) get(ctx context.Context, fresh bool) (sc *syncConn, reused bool, err error) {
	if !fresh {
		select {
		case sc := <-t.idle:
			return sc, true, nil
		default:
		}
	}
	c, err := (&net.Dialer{}).DialContext(ctx, "unix", t.socket)
	if err != nil {
		return nil, false, err
	}
	// Who listens is checked before the first byte is written.
	if err := t.trust.check(t.socket, c); err != nil {
		c.Close()
		return nil, false, err
	}
	return &syncConn{Conn: c, br: bufio.NewReaderSize(c, 4096), bw: bufio.NewWriterSize(c, 4096)}, false, nil
}

// put keeps a connection whose last answer was read to the end, or closes it.
func (t *syncTransport) put(sc *syncConn) {
	select {
	case t.idle <- sc:
	default:
		sc.Close()
	}
}

// CloseIdleConnections closes every idle connection; later requests dial
// anew. http.Client.CloseIdleConnections calls it.
func (t *syncTransport) CloseIdleConnections() {
	for {
		select {
		case sc := <-t.idle:
			sc.Close()
		default:
			return
		}
	}
}

// RoundTrip sends req and reads the answer's head; the body is read by the
// caller, and closing it hands the connection back.
func (t *syncTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	// A streamed body (a batch import) cannot be sent twice: it never goes
	// out on a kept-alive connection the daemon may have closed meanwhile,
	// where it would fail instead of being retried below.
	replayable := req.Body == nil || req.Body == http.NoBody || req.GetBody != nil
	for attempt := 0; ; attempt++ {
		sc, reused, err := t.get(req.Context(), !replayable)
		if err != nil {
			return nil, err
		}
		resp, err := t.exchange(sc, req)
		if err == nil {
			return resp, nil
		}
		sc.Close()
		// A kept-alive connection the daemon closed while idle fails before
		// any answer, and the daemon never saw the request: send it once more
		// on a fresh connection.
		if !reused || attempt > 0 || !staleConn(err) || req.Context().Err() != nil {
			return nil, err
		}
		if req.Body != nil && req.Body != http.NoBody {
			if req.GetBody == nil {
				return nil, err
			}
			if req.Body, err = req.GetBody(); err != nil {
				return nil, err
			}
		}
	}
}

func staleConn(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET)
}

func (t *syncTransport) exchange(sc *syncConn, req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	if dl, ok := ctx.Deadline(); ok {
		sc.SetDeadline(dl)
	} else {
		sc.SetDeadline(time.Time{})
	}
	// A cancelled context unblocks the exchange at once.
	stop := context.AfterFunc(ctx, func() { sc.SetDeadline(time.Unix(1, 0)) })
	fail := func(err error) (*http.Response, error) {
		stop()
		// The socket deadline is the context's: report it as the context's.
		if cerr := ctx.Err(); cerr != nil {
			return nil, cerr
		}
		if _, ok := ctx.Deadline(); ok && errors.Is(err, os.ErrDeadlineExceeded) {
			return nil, context.DeadlineExceeded
		}
		return nil, err
	}
	if err := req.Write(sc.bw); err != nil {
		return fail(err)
	}
	if err := sc.bw.Flush(); err != nil {
		return fail(err)
	}
	resp, err := http.ReadResponse(sc.br, req)
	if err != nil {
		return fail(err)
	}
	resp.Body = &syncBody{ReadCloser: resp.Body, t: t, sc: sc, stop: stop, keep: !resp.Close}
	return resp, nil
}

// syncBody returns its connection to the pool once the answer has been read
// to the end and closed; anything else closes the connection.
type syncBody struct {
	io.ReadCloser
	t    *syncTransport
	sc   *syncConn
	stop func() bool
	keep bool
	eof  bool
	done bool
}

func (b *syncBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err == io.EOF {
		b.eof = true
	} else if err != nil {
		b.keep = false
	}
	return n, err
}

func (b *syncBody) Close() error {
	if b.done {
		return nil
	}
	b.done = true
	if !b.eof && b.keep {
		// Drain a short unread rest so the connection can be reused.
		if _, err := io.CopyN(io.Discard, b.ReadCloser, 64<<10); err == io.EOF {
			b.eof = true
		}
	}
	err := b.ReadCloser.Close()
	cancelled := !b.stop()
	if b.keep && b.eof && !cancelled {
		b.sc.SetDeadline(time.Time{})
		b.t.put(b.sc)
	} else {
		b.sc.Close()
	}
	return err
}
