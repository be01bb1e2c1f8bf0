/* An OpenSSL 3 TLS 1.3 client whose PSK comes from pskvault's offers for
 * the server node at every handshake (libpskvault-openssl). Sends a
 * message and prints the echo.
 *
 *   ossl_echo_client --socket /run/pskvault/data/pskvault.sock --connect 127.0.0.1:8443 --peer node-b
 *
 * --count N: N handshakes in a row, then the rate (benchmark client).
 * --memory-key: no vault; "IMPORTED_IDENTITY_HEX KEY_HEX" from stdin. */
#include "common.h"
#include "pskvault_openssl.h"

#include <openssl/err.h>

static flags F;
static unsigned char mem_id[512], mem_key[64];
static size_t mem_idlen, mem_keylen;

static void on_event(void *arg, const pskvault_tls_event *ev)
{
	(void)arg;
	log_event(F.quiet, "offer", ev->identity, ev->identity_len, ev->status, ev->generation);
}

static int memory_use_session(SSL *ssl, const EVP_MD *md, const unsigned char **id, size_t *idlen, SSL_SESSION **sess)
{
	static const unsigned char s256[2] = {0x13, 0x01}, s384[2] = {0x13, 0x02};
	SSL_SESSION *s = SSL_SESSION_new();
	(void)md;
	*sess = NULL;
	if (s == NULL || !SSL_SESSION_set1_master_key(s, mem_key, mem_keylen) ||
	    !SSL_SESSION_set_cipher(s, SSL_CIPHER_find(ssl, mem_keylen == 48 ? s384 : s256)) ||
	    !SSL_SESSION_set_protocol_version(s, TLS1_3_VERSION) || !SSL_SESSION_set_max_early_data(s, F.early ? 16384 : 0)) {
		SSL_SESSION_free(s);
		return 0;
	}
	*sess = s;
	*id = mem_id;
	*idlen = mem_idlen;
	return 1;
}

static int one(SSL_CTX *ctx, int talk)
{
	int fd = tcp_connect(F.addr), ok = 0;
	SSL *ssl;
	if (fd < 0) {
		fprintf(stderr, "connect %s: %s\n", F.addr, strerror(errno));
		return 0;
	}
	ssl = SSL_new(ctx);
	SSL_set_fd(ssl, fd);
	if (F.early) {
		size_t w = 0;
		/* the key's session (max_early_data from the vault's record) decides
		 * whether OpenSSL sends it at all */
		if (SSL_write_early_data(ssl, F.early, strlen(F.early), &w) == 1)
			printf("early data sent\n");
		else {
			/* this connection is spent: start again without 0-RTT */
			printf("early data not sent\n");
			fflush(stdout);
			ERR_clear_error();
			SSL_free(ssl);
			close(fd);
			F.early = NULL;
			return one(ctx, talk);
		}
		fflush(stdout);
	}
	if (SSL_connect(ssl) == 1) {
		if (talk) {
			char buf[4096];
			int n, len = (int)strlen(F.message);
			if (SSL_write(ssl, F.message, len) == len && (n = SSL_read(ssl, buf, sizeof buf - 1)) > 0) {
				buf[n] = 0;
				printf("handshake ok version=%s cipher=%s\necho: %s\n", SSL_get_version(ssl), SSL_CIPHER_get_name(SSL_get_current_cipher(ssl)), buf);
				ok = 1;
			} else
				fprintf(stderr, "no echo\n");
		} else
			ok = 1;
		SSL_shutdown(ssl);
	} else {
		unsigned long e = ERR_get_error();
		fprintf(stderr, "handshake failed: %s\n", e ? ERR_reason_error_string(e) : "connection closed");
		ERR_clear_error();
	}
	SSL_free(ssl);
	close(fd);
	return ok;
}

int main(int argc, char **argv)
{
	SSL_CTX *ctx;
	pskvault *pv = NULL;
	const unsigned char *c;
	size_t clen;
	int has_ctx, i, n, good = 0;
	double t0;

	signal(SIGPIPE, SIG_IGN);
	parse_flags(argc, argv, 0, &F);
	ctx = SSL_CTX_new(TLS_client_method());
	if (ctx == NULL)
		return 1;
	if (F.memory_key) {
		if (read_memory_key(mem_id, &mem_idlen, mem_key, &mem_keylen) != 0) {
			fprintf(stderr, "--memory-key: want IDHEX KEYHEX on stdin\n");
			return 2;
		}
		SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
		SSL_CTX_set_psk_use_session_callback(ctx, memory_use_session);
	} else {
		pskvault_ossl_opts o;
		int rc;
		pv = open_vault(&F, &c, &clen, &has_ctx);
		memset(&o, 0, sizeof o);
		o.kdf = F.sha384 ? PSKVAULT_KDF_SHA384 : PSKVAULT_KDF_SHA256;
		o.context = c;
		o.context_len = clen;
		o.on_event = on_event;
		if ((rc = pskvault_ossl_client_install(ctx, pv, F.peer, &o)) != PSKVAULT_OK) {
			fprintf(stderr, "install: %s\n", pskvault_strerror(rc));
			return 1;
		}
	}
	n = F.count > 0 ? F.count : 1;
	t0 = now_s();
	for (i = 0; i < n; i++)
		good += one(ctx, n == 1);
	if (n > 1) {
		double dt = now_s() - t0;
		printf("handshakes=%d ok=%d seconds=%.3f rate=%.1f/s\n", n, good, dt, good / dt);
	}
	SSL_CTX_free(ctx);
	pskvault_free(pv);
	explicit_bzero(mem_key, sizeof mem_key);
	return good == n ? 0 : 1;
}
