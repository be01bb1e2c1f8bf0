/* libpskvault-openssl: see include/pskvault_openssl.h. */
#define _GNU_SOURCE /* explicit_bzero */
#include "pskvault_openssl.h"

#include <openssl/err.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

typedef struct glue {
	pskvault *pv;
	int role;
	uint16_t kdf;
	int has_context;
	uint8_t *context;
	size_t context_len;
	char *server_node;
	pskvault_tls_event_fn *on_event;
	void *event_arg;
} glue;

/* The identity a client offered, kept until the SSL is freed. */
typedef struct offered {
	uint8_t *id;
	size_t len;
} offered;

static pthread_once_t index_once = PTHREAD_ONCE_INIT;
static int ctx_index = -1, ssl_index = -1;

static void glue_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp)
{
	glue *g = ptr;
	(void)parent, (void)ad, (void)idx, (void)argl, (void)argp;
	if (g == NULL)
		return;
	free(g->context);
	free(g->server_node);
	free(g);
}

static void offered_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp)
{
	offered *o = ptr;
	(void)parent, (void)ad, (void)idx, (void)argl, (void)argp;
	if (o == NULL)
		return;
	free(o->id);
	free(o);
}

static void make_indexes(void)
{
	ctx_index = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, glue_free);
	ssl_index = SSL_get_ex_new_index(0, NULL, NULL, NULL, offered_free);
}

static glue *glue_of(SSL *ssl)
{
	return SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), ctx_index);
}

static void report(const glue *g, const uint8_t *id, size_t len, int status, const pskvault_detail *d, uint32_t gen)
{
	pskvault_tls_event ev;
	if (g->on_event == NULL)
		return;
	ev.role = g->role;
	ev.identity = id;
	ev.identity_len = len;
	ev.status = status;
	ev.detail = d;
	ev.generation = gen;
	g->on_event(g->event_arg, &ev);
}

/* policy_ok: the connection still runs TLS 1.3 only and psk_dhe_ke only,
 * whatever the application changed after install. */
static int policy_ok(SSL *ssl)
{
	if (SSL_get_options(ssl) & SSL_OP_ALLOW_NO_DHE_KEX)
		return 0;
	if (SSL_get_min_proto_version(ssl) != TLS1_3_VERSION)
		return 0;
	return 1;
}

static uint16_t kdf_of_md(const EVP_MD *md)
{
	if (md == NULL)
		return 0;
	switch (EVP_MD_get_type(md)) {
	case NID_sha256: return PSKVAULT_KDF_SHA256;
	case NID_sha384: return PSKVAULT_KDF_SHA384;
	}
	return 0;
}

static const unsigned char SUITE_AES128_SHA256[2] = {0x13, 0x01};
static const unsigned char SUITE_AES256_SHA384[2] = {0x13, 0x02};

/* session_of builds the TLS 1.3 session for key k with cipher c. */
static SSL_SESSION *session_of(const pskvault_key *k, const SSL_CIPHER *c)
{
	SSL_SESSION *s = SSL_SESSION_new();
	if (s == NULL)
		return NULL;
	if (!SSL_SESSION_set1_master_key(s, k->ipskx, k->ipskx_len) || !SSL_SESSION_set_cipher(s, c) ||
	    !SSL_SESSION_set_protocol_version(s, TLS1_3_VERSION) ||
	    !SSL_SESSION_set_max_early_data(s, (k->flags & PSKVAULT_F_EARLY_DATA) ? k->max_early_data : 0)) {
		SSL_SESSION_free(s); /* cleanses the master key */
		return NULL;
	}
	return s;
}

static int find_session_cb(SSL *ssl, const unsigned char *identity, size_t identity_len, SSL_SESSION **sess)
{
	glue *g = glue_of(ssl);
	pskvault_key k;
	pskvault_detail d;
	pskvault_expect e;
	const SSL_CIPHER *c;
	int rc;

	*sess = NULL;
	memset(&k, 0, sizeof k);
	memset(&d, 0, sizeof d);
	d.daemon_uid = -1;
	if (g == NULL)
		return 1;
	if (!policy_ok(ssl) || SSL_version(ssl) != TLS1_3_VERSION) {
		report(g, identity, identity_len, PSKVAULT_EPOLICY, &d, 0);
		return 1;
	}
	c = SSL_get_pending_cipher(ssl);
	memset(&e, 0, sizeof e);
	e.has_context = g->has_context;
	e.context = g->context;
	e.context_len = g->context_len;
	e.protocol = PSKVAULT_TLS13;
	e.kdf = c ? kdf_of_md(SSL_CIPHER_get_handshake_digest(c)) : 0;
	if (e.kdf == 0) {
		report(g, identity, identity_len, PSKVAULT_EPOLICY, &d, 0);
		return 1;
	}
	rc = pskvault_lookup(g->pv, identity, identity_len, &e, &k, &d);
	if (rc == PSKVAULT_OK && (k.kdf != e.kdf || k.protocol != PSKVAULT_TLS13 || k.ipskx_len != pskvault_kdf_len(e.kdf)))
		rc = PSKVAULT_EPOLICY;
	if (rc == PSKVAULT_OK) {
		/* The PSK's own suite is the canonical one of its hash, as on the
		 * client (use_session_cb): early data is encrypted under it. The
		 * handshake may still negotiate another suite of the same hash. */
		const SSL_CIPHER *own = SSL_CIPHER_find(ssl, e.kdf == PSKVAULT_KDF_SHA384 ? SUITE_AES256_SHA384 : SUITE_AES128_SHA256);
		*sess = own ? session_of(&k, own) : NULL;
		if (*sess == NULL)
			rc = PSKVAULT_ETLS;
	}
	report(g, identity, identity_len, rc, &d, rc == PSKVAULT_OK ? k.generation : 0);
	pskvault_key_clear(&k);
	/* No key: the handshake goes on without a PSK and fails for lack of a
	 * certificate, which is the refusal we want; 0 would be the same, with
	 * an internal_error alert instead of a handshake_failure. */
	return 1;
}

static int use_session_cb(SSL *ssl, const EVP_MD *md, const unsigned char **id, size_t *idlen, SSL_SESSION **sess)
{
	glue *g = glue_of(ssl);
	pskvault_key *keys = NULL;
	pskvault_detail d;
	size_t n = 0;
	offered *o;
	const SSL_CIPHER *c;
	int rc;

	*sess = NULL;
	*id = NULL;
	*idlen = 0;
	memset(&d, 0, sizeof d);
	d.daemon_uid = -1;
	if (g == NULL)
		return 1;
	if (!policy_ok(ssl)) {
		report(g, NULL, 0, PSKVAULT_EPOLICY, &d, 0);
		return 1;
	}
	/* after a HelloRetryRequest md is the negotiated suite's hash */
	if (md != NULL && kdf_of_md(md) != g->kdf) {
		report(g, NULL, 0, PSKVAULT_EPOLICY, &d, 0);
		return 1;
	}
	rc = pskvault_offers(g->pv, g->server_node, g->context, g->context_len, PSKVAULT_TLS13, g->kdf, &keys, &n, &d);
	if (rc == PSKVAULT_OK && n == 0)
		rc = PSKVAULT_ENOKEY;
	if (rc != PSKVAULT_OK) {
		report(g, NULL, 0, rc, &d, 0);
		pskvault_keys_free(keys, n);
		return 1;
	}
	/* offers are newest generation first: offer the first */
	c = SSL_CIPHER_find(ssl, keys[0].kdf == PSKVAULT_KDF_SHA384 ? SUITE_AES256_SHA384 : SUITE_AES128_SHA256);
	o = SSL_get_ex_data(ssl, ssl_index);
	if (o == NULL) {
		o = calloc(1, sizeof *o);
		if (o == NULL || !SSL_set_ex_data(ssl, ssl_index, o)) {
			free(o);
			pskvault_keys_free(keys, n);
			report(g, NULL, 0, PSKVAULT_ENOMEM, &d, 0);
			return 0;
		}
	}
	free(o->id);
	o->id = malloc(keys[0].imported_identity_len);
	o->len = keys[0].imported_identity_len;
	if (o->id == NULL || c == NULL || keys[0].kdf != g->kdf || (*sess = session_of(&keys[0], c)) == NULL) {
		rc = o->id == NULL ? PSKVAULT_ENOMEM : c == NULL ? PSKVAULT_ETLS : keys[0].kdf != g->kdf ? PSKVAULT_EPOLICY : PSKVAULT_ETLS;
		report(g, NULL, 0, rc, &d, 0);
		pskvault_keys_free(keys, n);
		return 1;
	}
	memcpy(o->id, keys[0].imported_identity, o->len);
	*id = o->id;
	*idlen = o->len;
	report(g, o->id, o->len, PSKVAULT_OK, &d, keys[0].generation);
	pskvault_keys_free(keys, n);
	return 1;
}

static int install(SSL_CTX *ctx, pskvault *pv, int role, const char *server_node, const pskvault_ossl_opts *opts)
{
	glue *g;
	uint16_t kdf = opts && opts->kdf ? opts->kdf : PSKVAULT_KDF_SHA256;
	const char *suites;

	if (ctx == NULL || pv == NULL || pskvault_kdf_len(kdf) == 0 ||
	    (opts && opts->context == NULL && opts->context_len != 0) || (opts && opts->context_len > 65535))
		return PSKVAULT_EINVAL;
	if (pthread_once(&index_once, make_indexes) != 0 || ctx_index < 0 || ssl_index < 0)
		return PSKVAULT_ETLS;
	suites = kdf == PSKVAULT_KDF_SHA384 ? "TLS_AES_256_GCM_SHA384" : "TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256";
	g = calloc(1, sizeof *g);
	if (g == NULL)
		return PSKVAULT_ENOMEM;
	g->pv = pv;
	g->role = role;
	g->kdf = kdf;
	if (opts) {
		g->has_context = opts->has_context || opts->context_len > 0;
		g->on_event = opts->on_event;
		g->event_arg = opts->event_arg;
		g->context_len = opts->context_len;
		g->context = malloc(opts->context_len ? opts->context_len : 1);
		if (g->context == NULL) {
			free(g);
			return PSKVAULT_ENOMEM;
		}
		if (opts->context_len)
			memcpy(g->context, opts->context, opts->context_len);
	}
	if (server_node && (g->server_node = strdup(server_node)) == NULL) {
		free(g->context);
		free(g);
		return PSKVAULT_ENOMEM;
	}
	if (!SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION) || !SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION) ||
	    !SSL_CTX_set_ciphersuites(ctx, suites)) {
		glue_free(NULL, g, NULL, 0, 0, NULL);
		return PSKVAULT_ETLS;
	}
	SSL_CTX_clear_options(ctx, SSL_OP_ALLOW_NO_DHE_KEX);
	{
		/* replaces (and frees) any earlier install on this context */
		glue *old = SSL_CTX_get_ex_data(ctx, ctx_index);
		if (!SSL_CTX_set_ex_data(ctx, ctx_index, g)) {
			glue_free(NULL, g, NULL, 0, 0, NULL);
			return PSKVAULT_ETLS;
		}
		glue_free(NULL, old, NULL, 0, 0, NULL);
	}
	if (role == PSKVAULT_ROLE_SERVER) {
		/* no resumption: a resumed session would skip the vault */
		SSL_CTX_set_num_tickets(ctx, 0);
		SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
		SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
		SSL_CTX_set_psk_server_callback(ctx, NULL);
		SSL_CTX_set_psk_find_session_callback(ctx, find_session_cb);
	} else {
		SSL_CTX_set_psk_client_callback(ctx, NULL);
		SSL_CTX_set_psk_use_session_callback(ctx, use_session_cb);
	}
	return PSKVAULT_OK;
}

int pskvault_ossl_server_install(SSL_CTX *ctx, pskvault *pv, const pskvault_ossl_opts *opts)
{
	return install(ctx, pv, PSKVAULT_ROLE_SERVER, NULL, opts);
}

int pskvault_ossl_client_install(SSL_CTX *ctx, pskvault *pv, const char *server_node, const pskvault_ossl_opts *opts)
{
	if (server_node == NULL || server_node[0] == '\0')
		return PSKVAULT_EINVAL;
	return install(ctx, pv, PSKVAULT_ROLE_CLIENT, server_node, opts);
}
