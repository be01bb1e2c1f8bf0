/* libpskvault-gnutls: see include/pskvault_gnutls.h. */
#define _GNU_SOURCE /* explicit_bzero, strdup */
#include "pskvault_gnutls.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

struct pskvault_gnutls {
	pskvault *pv;
	int role;
	int has_context;
	uint8_t *context;
	size_t context_len;
	char *server_node;
	void (*on_event)(void *arg, const pskvault_gnutls_event *ev);
	void *event_arg;
	gnutls_psk_server_credentials_t scred;
	gnutls_psk_client_credentials_t ccred;
	struct pskvault_gnutls *next; /* registry */
};

/* GnuTLS's credentials functions carry no user pointer: map credentials to
 * their glue. */
static pthread_mutex_t registry_mu = PTHREAD_MUTEX_INITIALIZER;
static struct pskvault_gnutls *registry;

static void reg_add(pskvault_gnutls *g)
{
	pthread_mutex_lock(&registry_mu);
	g->next = registry;
	registry = g;
	pthread_mutex_unlock(&registry_mu);
}

static void reg_del(pskvault_gnutls *g)
{
	pskvault_gnutls **p;
	pthread_mutex_lock(&registry_mu);
	for (p = &registry; *p; p = &(*p)->next)
		if (*p == g) {
			*p = g->next;
			break;
		}
	pthread_mutex_unlock(&registry_mu);
}

/* glue_of finds the glue whose credentials session uses. */
static pskvault_gnutls *glue_of(gnutls_session_t session)
{
	void *cred = NULL;
	pskvault_gnutls *g;
	if (gnutls_credentials_get(session, GNUTLS_CRD_PSK, &cred) < 0 || cred == NULL)
		return NULL;
	pthread_mutex_lock(&registry_mu);
	for (g = registry; g; g = g->next)
		if ((void *)g->scred == cred || (void *)g->ccred == cred)
			break;
	pthread_mutex_unlock(&registry_mu);
	return g;
}

static void report(const pskvault_gnutls *g, const uint8_t *id, size_t len, int status, const pskvault_detail *d, uint32_t gen)
{
	pskvault_gnutls_event ev;
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

/* give hands GnuTLS a gnutls_malloc'd copy of the key. */
static int give(const pskvault_key *k, gnutls_datum_t *key)
{
	key->data = gnutls_malloc(k->ipskx_len);
	if (key->data == NULL)
		return PSKVAULT_ENOMEM;
	memcpy(key->data, k->ipskx, k->ipskx_len);
	key->size = (unsigned)k->ipskx_len;
	return PSKVAULT_OK;
}

static int server_cb(gnutls_session_t session, const gnutls_datum_t *username, gnutls_datum_t *key)
{
	pskvault_gnutls *g = glue_of(session);
	pskvault_key k;
	pskvault_detail d;
	pskvault_expect e;
	int rc;

	memset(&k, 0, sizeof k);
	memset(&d, 0, sizeof d);
	d.daemon_uid = -1;
	key->data = NULL;
	key->size = 0;
	if (g == NULL)
		return -1;
	if (gnutls_protocol_get_version(session) != GNUTLS_TLS1_3) {
		report(g, username->data, username->size, PSKVAULT_EPOLICY, &d, 0);
		return -1;
	}
	memset(&e, 0, sizeof e);
	e.has_context = g->has_context;
	e.context = g->context;
	e.context_len = g->context_len;
	e.protocol = PSKVAULT_TLS13;
	e.kdf = PSKVAULT_KDF_SHA256;
	if (username->size == 0)
		rc = PSKVAULT_ENOKEY;
	else
		rc = pskvault_lookup(g->pv, username->data, username->size, &e, &k, &d);
	if (rc == PSKVAULT_OK && (k.kdf != PSKVAULT_KDF_SHA256 || k.ipskx_len != 32))
		rc = PSKVAULT_EPOLICY;
	if (rc == PSKVAULT_OK)
		rc = give(&k, key);
	report(g, username->data, username->size, rc, &d, rc == PSKVAULT_OK ? k.generation : 0);
	pskvault_key_clear(&k);
	return rc == PSKVAULT_OK ? 0 : -1;
}

static int client_cb(gnutls_session_t session, gnutls_datum_t *username, gnutls_datum_t *key)
{
	pskvault_gnutls *g = glue_of(session);
	pskvault_key *keys = NULL;
	pskvault_detail d;
	size_t n = 0;
	int rc;

	memset(&d, 0, sizeof d);
	d.daemon_uid = -1;
	username->data = key->data = NULL;
	username->size = key->size = 0;
	if (g == NULL)
		return -1;
	rc = pskvault_offers(g->pv, g->server_node, g->context, g->context_len, PSKVAULT_TLS13, PSKVAULT_KDF_SHA256, &keys, &n, &d);
	if (rc == PSKVAULT_OK && n == 0)
		rc = PSKVAULT_ENOKEY;
	if (rc == PSKVAULT_OK && (keys[0].kdf != PSKVAULT_KDF_SHA256 || keys[0].ipskx_len != 32))
		rc = PSKVAULT_EPOLICY;
	if (rc == PSKVAULT_OK) {
		username->data = gnutls_malloc(keys[0].imported_identity_len);
		if (username->data == NULL)
			rc = PSKVAULT_ENOMEM;
		else {
			memcpy(username->data, keys[0].imported_identity, keys[0].imported_identity_len);
			username->size = (unsigned)keys[0].imported_identity_len;
			rc = give(&keys[0], key);
			if (rc != PSKVAULT_OK) {
				gnutls_free(username->data);
				username->data = NULL;
				username->size = 0;
			}
		}
	}
	report(g, rc == PSKVAULT_OK ? username->data : NULL, rc == PSKVAULT_OK ? username->size : 0, rc, &d,
	       rc == PSKVAULT_OK ? keys[0].generation : 0);
	pskvault_keys_free(keys, n);
	return rc == PSKVAULT_OK ? 0 : -1;
}

static int glue_new(pskvault *pv, int role, const char *server_node, const pskvault_gnutls_opts *opts, pskvault_gnutls **out)
{
	pskvault_gnutls *g;
	if (out == NULL)
		return PSKVAULT_EINVAL;
	*out = NULL;
	if (pv == NULL || (opts && opts->context == NULL && opts->context_len != 0) || (opts && opts->context_len > 65535))
		return PSKVAULT_EINVAL;
	g = calloc(1, sizeof *g);
	if (g == NULL)
		return PSKVAULT_ENOMEM;
	g->pv = pv;
	g->role = role;
	if (opts) {
		g->has_context = opts->has_context || opts->context_len > 0;
		g->on_event = opts->on_event;
		g->event_arg = opts->event_arg;
		g->context_len = opts->context_len;
		if (opts->context_len) {
			if ((g->context = malloc(opts->context_len)) == NULL) {
				free(g);
				return PSKVAULT_ENOMEM;
			}
			memcpy(g->context, opts->context, opts->context_len);
		}
	}
	if (server_node && (g->server_node = strdup(server_node)) == NULL) {
		pskvault_gnutls_free(g);
		return PSKVAULT_ENOMEM;
	}
	if (role == PSKVAULT_ROLE_SERVER) {
		if (gnutls_psk_allocate_server_credentials(&g->scred) < 0) {
			pskvault_gnutls_free(g);
			return PSKVAULT_ETLS;
		}
		gnutls_psk_set_server_credentials_function2(g->scred, server_cb);
	} else {
		if (gnutls_psk_allocate_client_credentials(&g->ccred) < 0) {
			pskvault_gnutls_free(g);
			return PSKVAULT_ETLS;
		}
		gnutls_psk_set_client_credentials_function2(g->ccred, client_cb);
	}
	reg_add(g);
	*out = g;
	return PSKVAULT_OK;
}

int pskvault_gnutls_server_new(pskvault *pv, const pskvault_gnutls_opts *opts, pskvault_gnutls **out)
{
	return glue_new(pv, PSKVAULT_ROLE_SERVER, NULL, opts, out);
}

int pskvault_gnutls_client_new(pskvault *pv, const char *server_node, const pskvault_gnutls_opts *opts, pskvault_gnutls **out)
{
	if (server_node == NULL || server_node[0] == '\0') {
		if (out)
			*out = NULL;
		return PSKVAULT_EINVAL;
	}
	return glue_new(pv, PSKVAULT_ROLE_CLIENT, server_node, opts, out);
}

int pskvault_gnutls_session_setup(pskvault_gnutls *g, gnutls_session_t session)
{
	const char *err = NULL;
	if (g == NULL || session == NULL)
		return PSKVAULT_EINVAL;
	if (gnutls_priority_set_direct(session, PSKVAULT_GNUTLS_PRIORITY, &err) < 0)
		return PSKVAULT_ETLS;
	if (gnutls_credentials_set(session, GNUTLS_CRD_PSK, g->role == PSKVAULT_ROLE_SERVER ? (void *)g->scred : (void *)g->ccred) < 0)
		return PSKVAULT_ETLS;
	return PSKVAULT_OK;
}

int pskvault_gnutls_verify(gnutls_session_t session)
{
	gnutls_kx_algorithm_t kx;
	if (session == NULL || gnutls_protocol_get_version(session) != GNUTLS_TLS1_3)
		return PSKVAULT_EPOLICY;
	kx = gnutls_kx_get(session);
	if (kx != GNUTLS_KX_ECDHE_PSK && kx != GNUTLS_KX_DHE_PSK)
		return PSKVAULT_EPOLICY;
	if (gnutls_auth_get_type(session) != GNUTLS_CRD_PSK)
		return PSKVAULT_EPOLICY;
	return PSKVAULT_OK;
}

void pskvault_gnutls_free(pskvault_gnutls *g)
{
	if (g == NULL)
		return;
	reg_del(g);
	if (g->scred)
		gnutls_psk_free_server_credentials(g->scred);
	if (g->ccred)
		gnutls_psk_free_client_credentials(g->ccred);
	free(g->context);
	free(g->server_node);
	free(g);
}
