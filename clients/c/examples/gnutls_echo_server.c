/* A GnuTLS TLS 1.3 echo server whose PSKs come from pskvault at every
 * handshake (libpskvault-gnutls). Logs the PskIdentity received, in hex,
 * and the outcome of each handshake; never a key.
 *
 *   gnutls_echo_server --socket /run/pskvault/data/pskvault.sock --listen 127.0.0.1:8443 */
#include "common.h"
#include "pskvault_gnutls.h"

static flags F;

static void on_event(void *arg, const pskvault_gnutls_event *ev)
{
	(void)arg;
	log_event(F.quiet, "lookup", ev->identity, ev->identity_len, ev->status, ev->generation);
}

int main(int argc, char **argv)
{
	pskvault *pv;
	pskvault_gnutls *g;
	pskvault_gnutls_opts o;
	const unsigned char *c;
	size_t clen;
	int has_ctx, lfd, served = 0, rc;

	signal(SIGPIPE, SIG_IGN);
	parse_flags(argc, argv, 1, &F);
	if (F.memory_key || F.sha384) {
		fprintf(stderr, "--memory-key and --sha384 are OpenSSL-example options\n");
		return 2;
	}
	if (gnutls_global_init() < 0)
		return 1;
	pv = open_vault(&F, &c, &clen, &has_ctx);
	memset(&o, 0, sizeof o);
	o.has_context = has_ctx;
	o.context = c;
	o.context_len = clen;
	o.on_event = on_event;
	if ((rc = pskvault_gnutls_server_new(pv, &o, &g)) != PSKVAULT_OK) {
		fprintf(stderr, "pskvault_gnutls_server_new: %s\n", pskvault_strerror(rc));
		return 1;
	}
	lfd = tcp_listen(F.addr);
	if (lfd < 0) {
		fprintf(stderr, "listen %s: %s\n", F.addr, strerror(errno));
		return 1;
	}
	printf("listening %s\n", F.addr);
	fflush(stdout);
	while (F.count == 0 || served < F.count) {
		gnutls_session_t s;
		int fd = accept(lfd, NULL, NULL), r;
		if (fd < 0)
			continue;
		served++;
		if (gnutls_init(&s, GNUTLS_SERVER | GNUTLS_NO_TICKETS) < 0 || pskvault_gnutls_session_setup(g, s) != PSKVAULT_OK) {
			fprintf(stderr, "session setup failed\n");
			return 1;
		}
		gnutls_transport_set_int(s, fd);
		gnutls_handshake_set_timeout(s, 10000);
		do
			r = gnutls_handshake(s);
		while (r < 0 && gnutls_error_is_fatal(r) == 0);
		if (r == 0 && (r = pskvault_gnutls_verify(s)) != PSKVAULT_OK) {
			printf("handshake refused: %s\n", pskvault_strerror(r));
			fflush(stdout);
		} else if (r == 0) {
			char buf[4096];
			ssize_t n;
			char *desc = gnutls_session_get_desc(s);
			if (!F.quiet) {
				printf("handshake ok %s\n", desc ? desc : "");
				fflush(stdout);
			}
			gnutls_free(desc);
			while ((n = gnutls_record_recv(s, buf, sizeof buf)) > 0 || n == GNUTLS_E_AGAIN || n == GNUTLS_E_INTERRUPTED)
				if (n > 0 && gnutls_record_send(s, buf, (size_t)n) != n)
					break;
			gnutls_bye(s, GNUTLS_SHUT_WR);
		} else {
			printf("handshake failed: %s\n", gnutls_strerror(r));
			fflush(stdout);
		}
		gnutls_deinit(s);
		close(fd);
	}
	close(lfd);
	pskvault_gnutls_free(g);
	pskvault_free(pv);
	gnutls_global_deinit();
	return 0;
}
