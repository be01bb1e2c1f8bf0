/* A GnuTLS TLS 1.3 client whose PSK comes from pskvault's offers for the
 * server node at every handshake (libpskvault-gnutls). Sends a message and
 * prints the echo.
 *
 *   gnutls_echo_client --socket /run/pskvault/data/pskvault.sock --connect 127.0.0.1:8443 --peer node-b */
#include "common.h"
#include "pskvault_gnutls.h"

static flags F;

static void on_event(void *arg, const pskvault_gnutls_event *ev)
{
	(void)arg;
	log_event(F.quiet, "offer", ev->identity, ev->identity_len, ev->status, ev->generation);
}

static int one(pskvault_gnutls *g, int talk)
{
	gnutls_session_t s;
	int fd = tcp_connect(F.addr), r, ok = 0;
	if (fd < 0) {
		fprintf(stderr, "connect %s: %s\n", F.addr, strerror(errno));
		return 0;
	}
	if (gnutls_init(&s, GNUTLS_CLIENT | GNUTLS_NO_TICKETS) < 0 || pskvault_gnutls_session_setup(g, s) != PSKVAULT_OK) {
		fprintf(stderr, "session setup failed\n");
		close(fd);
		return 0;
	}
	gnutls_transport_set_int(s, fd);
	gnutls_handshake_set_timeout(s, 10000);
	do
		r = gnutls_handshake(s);
	while (r < 0 && gnutls_error_is_fatal(r) == 0);
	if (r == 0 && (r = pskvault_gnutls_verify(s)) != PSKVAULT_OK)
		fprintf(stderr, "handshake refused: %s\n", pskvault_strerror(r));
	else if (r == 0) {
		if (talk) {
			char buf[4096];
			ssize_t n;
			size_t len = strlen(F.message);
			char *desc = gnutls_session_get_desc(s);
			if (gnutls_record_send(s, F.message, len) == (ssize_t)len && (n = gnutls_record_recv(s, buf, sizeof buf - 1)) > 0) {
				buf[n] = 0;
				printf("handshake ok %s\necho: %s\n", desc ? desc : "", buf);
				ok = 1;
			} else
				fprintf(stderr, "no echo\n");
			gnutls_free(desc);
		} else
			ok = 1;
		gnutls_bye(s, GNUTLS_SHUT_WR);
	} else
		fprintf(stderr, "handshake failed: %s\n", gnutls_strerror(r));
	gnutls_deinit(s);
	close(fd);
	return ok;
}

int main(int argc, char **argv)
{
	pskvault *pv;
	pskvault_gnutls *g;
	pskvault_gnutls_opts o;
	const unsigned char *c;
	size_t clen;
	int has_ctx, rc, i, n, good = 0;
	double t0;

	signal(SIGPIPE, SIG_IGN);
	parse_flags(argc, argv, 0, &F);
	if (F.memory_key || F.sha384) {
		fprintf(stderr, "--memory-key and --sha384 are OpenSSL-example options\n");
		return 2;
	}
	if (gnutls_global_init() < 0)
		return 1;
	pv = open_vault(&F, &c, &clen, &has_ctx);
	memset(&o, 0, sizeof o);
	o.context = c;
	o.context_len = clen;
	o.on_event = on_event;
	if ((rc = pskvault_gnutls_client_new(pv, F.peer, &o, &g)) != PSKVAULT_OK) {
		fprintf(stderr, "pskvault_gnutls_client_new: %s\n", pskvault_strerror(rc));
		return 1;
	}
	n = F.count > 0 ? F.count : 1;
	t0 = now_s();
	for (i = 0; i < n; i++)
		good += one(g, n == 1);
	if (n > 1) {
		double dt = now_s() - t0;
		printf("handshakes=%d ok=%d seconds=%.3f rate=%.1f/s\n", n, good, dt, good / dt);
	}
	pskvault_gnutls_free(g);
	pskvault_free(pv);
	gnutls_global_deinit();
	return good == n ? 0 : 1;
}
