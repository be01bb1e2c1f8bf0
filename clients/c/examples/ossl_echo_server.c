/* An OpenSSL 3 TLS 1.3 echo server whose PSKs come from pskvault at every
 * handshake (libpskvault-openssl). Logs the PskIdentity received, in hex,
 * and the outcome of each handshake; never a key.
 *
 *   ossl_echo_server --socket /run/pskvault/data/pskvault.sock --listen 127.0.0.1:8443
 *
 * --memory-key (benchmark baseline): no vault; one key read from stdin as
 * "IMPORTED_IDENTITY_HEX KEY_HEX", held in memory, same server otherwise. */
#include "common.h"
#include "pskvault_openssl.h"

#include <openssl/err.h>

static flags F;
static unsigned char mem_id[512], mem_key[64];
static size_t mem_idlen, mem_keylen;

static void on_event(void *arg, const pskvault_tls_event *ev)
{
	(void)arg;
	log_event(F.quiet, "lookup", ev->identity, ev->identity_len, ev->status, ev->generation);
}

/* The in-memory baseline: the same session the library builds, from a key
 * in memory. */
static int memory_find_session(SSL *ssl, const unsigned char *id, size_t idlen, SSL_SESSION **sess)
{
	static const unsigned char s256[2] = {0x13, 0x01}, s384[2] = {0x13, 0x02};
	SSL_SESSION *s;
	*sess = NULL;
	if (idlen != mem_idlen || memcmp(id, mem_id, idlen) != 0)
		return 1;
	s = SSL_SESSION_new();
	if (s == NULL || !SSL_SESSION_set1_master_key(s, mem_key, mem_keylen) ||
	    !SSL_SESSION_set_cipher(s, SSL_CIPHER_find(ssl, mem_keylen == 48 ? s384 : s256)) || !SSL_SESSION_set_protocol_version(s, TLS1_3_VERSION) ||
	    !SSL_SESSION_set_max_early_data(s, F.early ? 16384 : 0)) {
		SSL_SESSION_free(s);
		return 0;
	}
	*sess = s;
	return 1;
}

int main(int argc, char **argv)
{
	SSL_CTX *ctx;
	pskvault *pv = NULL;
	int lfd, served = 0;
	const unsigned char *c;
	size_t clen;
	int has_ctx;

	signal(SIGPIPE, SIG_IGN);
	parse_flags(argc, argv, 1, &F);
	ctx = SSL_CTX_new(TLS_server_method());
	if (ctx == NULL)
		return 1;
	if (F.memory_key) {
		if (read_memory_key(mem_id, &mem_idlen, mem_key, &mem_keylen) != 0) {
			fprintf(stderr, "--memory-key: want IDHEX KEYHEX on stdin\n");
			return 2;
		}
		SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
		SSL_CTX_set_num_tickets(ctx, 0);
		SSL_CTX_set_ciphersuites(ctx, mem_keylen == 48 ? "TLS_AES_256_GCM_SHA384" : "TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256");
		SSL_CTX_set_psk_find_session_callback(ctx, memory_find_session);
	} else {
		pskvault_ossl_opts o;
		int rc;
		pv = open_vault(&F, &c, &clen, &has_ctx);
		memset(&o, 0, sizeof o);
		o.kdf = F.sha384 ? PSKVAULT_KDF_SHA384 : PSKVAULT_KDF_SHA256;
		o.has_context = has_ctx;
		o.context = c;
		o.context_len = clen;
		o.on_event = on_event;
		if ((rc = pskvault_ossl_server_install(ctx, pv, &o)) != PSKVAULT_OK) {
			fprintf(stderr, "install: %s\n", pskvault_strerror(rc));
			return 1;
		}
	}
	if (F.early) {
		/* the server is willing; each key's session says whether it may */
		SSL_CTX_set_max_early_data(ctx, 16384);
		SSL_CTX_set_recv_max_early_data(ctx, 16384);
	}
	lfd = tcp_listen(F.addr);
	if (lfd < 0) {
		fprintf(stderr, "listen %s: %s\n", F.addr, strerror(errno));
		return 1;
	}
	printf("listening %s\n", F.addr);
	fflush(stdout);
	while (F.count == 0 || served < F.count) {
		int fd = accept(lfd, NULL, NULL);
		SSL *ssl;
		if (fd < 0)
			continue;
		served++;
		ssl = SSL_new(ctx);
		SSL_set_fd(ssl, fd);
		if (F.early) {
			char eb[1024];
			size_t got = 0, rd;
			int r;
			do {
				rd = 0;
				r = SSL_read_early_data(ssl, eb + got, sizeof eb - 1 - got, &rd);
				got += rd;
			} while (r == SSL_READ_EARLY_DATA_SUCCESS && got < sizeof eb - 1);
			eb[got] = 0;
			if (r != SSL_READ_EARLY_DATA_ERROR) {
				printf("early data %s: %s\n", SSL_get_early_data_status(ssl) == SSL_EARLY_DATA_ACCEPTED ? "accepted" : "rejected", eb);
				fflush(stdout);
			}
		}
		if (SSL_accept(ssl) == 1) {
			char buf[4096];
			int n;
			if (!F.quiet) {
				printf("handshake ok version=%s cipher=%s\n", SSL_get_version(ssl), SSL_CIPHER_get_name(SSL_get_current_cipher(ssl)));
				fflush(stdout);
			}
			while ((n = SSL_read(ssl, buf, sizeof buf)) > 0)
				if (SSL_write(ssl, buf, n) != n)
					break;
			SSL_shutdown(ssl);
		} else {
			unsigned long e = ERR_get_error();
			printf("handshake failed: %s\n", e ? ERR_reason_error_string(e) : "connection closed");
			fflush(stdout);
			ERR_clear_error();
		}
		SSL_free(ssl);
		close(fd);
	}
	close(lfd);
	SSL_CTX_free(ctx);
	pskvault_free(pv);
	explicit_bzero(mem_key, sizeof mem_key);
	return 0;
}
