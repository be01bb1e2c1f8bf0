package tpm

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
	"github.com/google/go-tpm/tpm2/transport/linuxtpm"

	"github.com/pskvault/pskvault/vault"
)

// cmdTimeout bounds one command/response exchange with a swtpm socket. A
// real TPM device has its own kernel timeouts.
const cmdTimeout = 30 * time.Second

// link is one connection to a TPM. Send errors are wrapped in linkError so
// that run can tell "the TPM said no" from "the TPM is gone".
type link struct {
	inner     transport.TPMCloser
	conn      net.Conn // swtpm only, for deadlines
	simulator bool
	what      string
	// last is the buffer of the last response, wiped at the next Send and
	// by wipe (key material passes through responses: HMAC outputs, and
	// through commands: the PRK, parameter-encrypted, at Create).
	last []byte
}

type linkError struct{ err error }

func (e *linkError) Error() string { return e.err.Error() }
func (e *linkError) Unwrap() error { return e.err }

// Send sends one command. go-tpm builds a new buffer for every command and
// parses every response into new structures before it sends the next, so
// the command buffer is wiped as soon as it is sent and the response
// buffer (its whole capacity: go-tpm reads into a 4 KB buffer) at the next
// Send or wipe.
func (l *link) Send(cmd []byte) ([]byte, error) {
	l.wipe()
	if l.conn != nil {
		l.conn.SetDeadline(time.Now().Add(cmdTimeout))
	}
	rsp, err := l.inner.Send(cmd)
	clear(cmd)
	if err != nil {
		return nil, &linkError{err}
	}
	l.last = rsp
	return rsp, nil
}

// wipe clears the last response buffer. The backend calls it after each
// operation, once go-tpm has parsed the response.
func (l *link) wipe() {
	clear(l.last[:cap(l.last)])
	l.last = nil
}

func (l *link) Close() error { return l.inner.Close() }

// flush frees a transient object or session, ignoring errors: it is only
// used where the object is being given up anyway.
func (l *link) flush(h tpm2.TPMHandle) {
	tpm2.FlushContext{FlushHandle: h}.Execute(l)
}

// framedConn makes a stream socket look like a TPM character device: each
// Read returns exactly one whole response. go-tpm's RunCommandRaw does a
// single Read, which on a socket may return part of a response.
type framedConn struct{ net.Conn }

func (c framedConn) Read(p []byte) (int, error) {
	if len(p) < 10 {
		return 0, io.ErrShortBuffer
	}
	if _, err := io.ReadFull(c.Conn, p[:10]); err != nil {
		return 0, err
	}
	n := int(binary.BigEndian.Uint32(p[2:6]))
	if n < 10 || n > len(p) {
		return 0, fmt.Errorf("TPM response claims %d bytes (buffer %d): not a TPM 2.0 command stream", n, len(p))
	}
	if _, err := io.ReadFull(c.Conn, p[10:n]); err != nil {
		return 0, err
	}
	return n, nil
}

// dial opens the transport the configuration names.
func (b *Backend) dial() (*link, error) {
	c := b.cfg
	switch {
	case c.SwtpmTCP != "" || c.SwtpmUnix != "":
		network, addr := "tcp", c.SwtpmTCP
		if c.SwtpmUnix != "" {
			network, addr = "unix", c.SwtpmUnix
		}
		conn, err := net.DialTimeout(network, addr, 5*time.Second)
		if err != nil {
			return nil, fmt.Errorf("%w: cannot reach swtpm at %s: %v (is swtpm running with --server type=%s?)",
				vault.ErrBackendUnavailable, addr, unwrapOp(err), map[string]string{"tcp": "tcp", "unix": "unixio"}[network])
		}
		return &link{inner: transport.FromReadWriteCloser(framedConn{conn}), conn: conn, simulator: true, what: "swtpm " + addr}, nil
	default:
		devs := DefaultDevices
		if c.Device != "" {
			devs = []string{c.Device}
		}
		var errs []error
		for _, d := range devs {
			fi, err := os.Stat(d)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %v", d, unwrapOp(err)))
				continue
			}
			if fi.Mode()&os.ModeCharDevice == 0 {
				errs = append(errs, fmt.Errorf("%s is not a character device (for a swtpm socket use tpm:swtpm-unix=%s)", d, d))
				continue
			}
			t, err := linuxtpm.Open(d)
			if err != nil {
				switch {
				case errors.Is(err, os.ErrPermission):
					errs = append(errs, fmt.Errorf("%s: permission denied (run the daemon as a member of group tss, or fix the udev rule)", d))
				case errors.Is(err, syscall.EBUSY):
					errs = append(errs, fmt.Errorf("%s: busy (another process holds the raw device; use /dev/tpmrm0)", d))
				default:
					errs = append(errs, fmt.Errorf("%s: %v", d, unwrapOp(err)))
				}
				continue
			}
			b.desc = d
			return &link{inner: t, what: d}, nil
		}
		return nil, fmt.Errorf("%w: no usable TPM: %w", vault.ErrBackendUnavailable, errors.Join(errs...))
	}
}

// unwrapOp drops the "dial tcp ..." / "stat ..." prefix, which repeats the
// address the message already names.
func unwrapOp(err error) error {
	var op *net.OpError
	if errors.As(err, &op) && op.Err != nil {
		return op.Err
	}
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// run executes f with exclusive use of the TPM, connecting (and setting up
// the storage parent) first if needed. If the connection breaks during f,
// everything loaded on it is forgotten and f runs once more on a fresh
// connection: that is how the backend rides out a swtpm restart.
func (b *Backend) run(ctx context.Context, op string, f func() error) error {
	select {
	case b.sem <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-b.sem }()
	if b.closed {
		return fmt.Errorf("tpm %s: backend is closed", op)
	}
	if b.parentAuthErr != nil {
		return b.parentAuthErr
	}
	for attempt := 0; ; attempt++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		err := b.connect()
		if err == nil {
			err = f()
			if b.link != nil {
				b.link.wipe() // the last response, parsed by now
			}
		}
		var le *linkError
		if !errors.As(err, &le) {
			return err
		}
		b.disconnect()
		if attempt == 1 {
			return fmt.Errorf("tpm %s: %w: connection to %s lost: %v", op, vault.ErrBackendUnavailable, b.where(), le.err)
		}
	}
}

func (b *Backend) where() string {
	switch {
	case b.cfg.SwtpmTCP != "":
		return "swtpm " + b.cfg.SwtpmTCP
	case b.cfg.SwtpmUnix != "":
		return "swtpm " + b.cfg.SwtpmUnix
	case b.desc != "":
		return b.desc
	}
	return "the TPM"
}

// connect makes sure there is a link and a storage parent on it.
func (b *Backend) connect() error {
	if b.link == nil {
		l, err := b.dial()
		if err != nil {
			return err
		}
		b.link = l
		if err := b.startup(); err != nil {
			return err
		}
		b.flushOrphans()
	}
	if b.parent == nil {
		p, err := b.setupParent()
		if err != nil {
			return err
		}
		b.parent = p
	}
	return nil
}

// disconnect drops the link and everything that was loaded on it.
func (b *Backend) disconnect() {
	if b.link != nil {
		b.link.Close()
	}
	b.link, b.parent = nil, nil
	b.cache.forget()
}

// startup sends TPM2_Startup when the TPM asks for it (a swtpm started
// without --flags startup-clear); kernels do this for real devices.
func (b *Backend) startup() error {
	_, err := tpm2.GetRandom{BytesRequested: 1}.Execute(b.link)
	if errors.Is(err, tpm2.TPMRCInitialize) {
		_, err = tpm2.Startup{StartupType: tpm2.TPMSUClear}.Execute(b.link)
	}
	if err != nil {
		return b.mapErr("startup", err)
	}
	return nil
}

// flushOrphans frees transient objects and sessions left on the TPM by a
// previous process that did not exit cleanly. On a swtpm socket (one client
// at a time) and on /dev/tpm0 (one opener at a time) whatever is loaded when
// we connect belongs to nobody; /dev/tpmrm0 shows us an empty space anyway.
// Without this, a crashed daemon could leave a raw swtpm (3 object slots)
// unusable until it restarts.
func (b *Backend) flushOrphans() {
	for _, first := range []tpm2.TPMHandle{0x80000000, 0x02000000, 0x03000000} {
		rsp, err := tpm2.GetCapability{Capability: tpm2.TPMCapHandles, Property: uint32(first), PropertyCount: 64}.Execute(b.link)
		if err != nil {
			continue
		}
		hs, err := rsp.CapabilityData.Data.Handles()
		if err != nil {
			continue
		}
		for _, h := range hs.Handle {
			if h>>24 == first>>24 {
				b.link.flush(h)
			}
		}
	}
}

// retryable TPM warnings: the command was not executed and may be resent.
var retryable = []error{tpm2.TPMRCRetry, tpm2.TPMRCYielded, tpm2.TPMRCTesting, tpm2.TPMRCNVRate}

// retry runs f until it does not fail with a retryable TPM warning, at most
// 6 times with growing pauses (about 0.3 s in all).
func retry(f func() error) error {
	var err error
	for i := 0; i < 6; i++ {
		if err = f(); err == nil {
			return nil
		}
		again := false
		for _, w := range retryable {
			if errors.Is(err, w) {
				again = true
			}
		}
		if !again {
			return err
		}
		time.Sleep(time.Duration(10<<i) * time.Millisecond)
	}
	return err
}

// parentErr is mapErr for a command authorized by the storage parent
// (Create, Load, Import): an authorization failure there is latched
// (parentAuthErr) so that pskvault never drives the TPM into
// dictionary-attack lockout by retrying a parent whose auth value is not
// empty. The caller holds sem.
func (b *Backend) parentErr(op string, err error) error {
	if errors.Is(err, tpm2.TPMRCAuthFail) || errors.Is(err, tpm2.TPMRCBadAuth) {
		b.parentAuthErr = fmt.Errorf("tpm %s: %w: the TPM refused the storage parent's authorization (TPM_RC_AUTH_FAIL/BAD_AUTH): "+
			"pskvault expects the storage parent at 0x81000001 to have an empty auth value; to keep a DA-protected parent from locking the TPM out, "+
			"pskvault will not try it again until restarted", op, vault.ErrBackendUnavailable)
		return b.parentAuthErr
	}
	return b.mapErr(op, err)
}

// mapErr turns a TPM return code into an error that says what happened and
// what to do. It never includes command parameters (no key bytes).
func (b *Backend) mapErr(op string, err error) error {
	if err == nil {
		return nil
	}
	var le *linkError
	if errors.As(err, &le) {
		return err // run handles it
	}
	switch {
	case errors.Is(err, tpm2.TPMRCLockout):
		return fmt.Errorf("tpm %s: %w: the TPM is in dictionary-attack lockout (TPM_RC_LOCKOUT); pskvault keys are NoDA and pskvault tries a refused storage parent at most once per start, "+
			"so other programs' failed authorizations are the likely cause: wait for the lockout to expire or run tpm2_dictionarylockout --clear-lockout", op, vault.ErrBackendUnavailable)
	case errors.Is(err, tpm2.TPMRCAuthFail), errors.Is(err, tpm2.TPMRCBadAuth):
		return fmt.Errorf("tpm %s: authorization failed (TPM_RC_AUTH_FAIL/BAD_AUTH): the object's auth value does not match; "+
			"pskvault expects the storage parent at 0x81000001 to have an empty auth value", op)
	case errors.Is(err, tpm2.TPMRCObjectMemory):
		return fmt.Errorf("tpm %s: %w: the TPM has no free transient object slot (TPM_RC_OBJECT_MEMORY) even after flushing pskvault's cached keys; "+
			"another program holds them (tpm2_getcap handles-transient, tpm2_flushcontext -t), or use /dev/tpmrm0", op, vault.ErrBackendUnavailable)
	case errors.Is(err, tpm2.TPMRCSessionMemory), errors.Is(err, tpm2.TPMRCSessionHandles):
		return fmt.Errorf("tpm %s: %w: the TPM has no free session slot (TPM_RC_SESSION_MEMORY); another program holds them (tpm2_flushcontext -l)", op, vault.ErrBackendUnavailable)
	case errors.Is(err, tpm2.TPMRCRetry), errors.Is(err, tpm2.TPMRCYielded), errors.Is(err, tpm2.TPMRCTesting):
		return fmt.Errorf("tpm %s: %w: the TPM stayed busy (TPM_RC_RETRY) through 6 attempts; try again", op, vault.ErrBackendUnavailable)
	case errors.Is(err, tpm2.TPMRCInitialize), errors.Is(err, tpm2.TPMRCReboot), errors.Is(err, tpm2.TPMRCFailure):
		return fmt.Errorf("tpm %s: %w: the TPM is not operational (%v)", op, vault.ErrBackendUnavailable, err)
	case errors.Is(err, tpm2.TPMRCPolicyFail), errors.Is(err, tpm2.TPMRCPCRChanged):
		return fmt.Errorf("tpm %s: %w", op, vault.ErrKeyPolicy)
	}
	return fmt.Errorf("tpm %s: %w", op, err)
}
