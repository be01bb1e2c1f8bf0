/*
 * pskvault_gnutls.h - libpskvault-gnutls: GnuTLS (3.7 or later) TLS 1.3
 * external PSKs asked of the pskvault daemon at every handshake.
 *
 * Link: $(pkg-config --cflags --libs libpskvault-gnutls).
 *
 * Use:
 *     pskvault_gnutls *g;
 *     pskvault_gnutls_server_new(pv, NULL, &g);          // or _client_new(pv, "node-b", NULL, &g)
 *     gnutls_init(&session, GNUTLS_SERVER | GNUTLS_NO_TICKETS);
 *     pskvault_gnutls_session_setup(g, session);         // priority + PSK credentials
 *     ... gnutls_handshake(session) ...
 *     pskvault_gnutls_verify(session);                   // TLS 1.3, (EC)DHE-PSK: or refuse the connection
 *     ...
 *     pskvault_gnutls_free(g);                           // after the last session using it
 *
 * Server: the credentials function (gnutls_psk_set_server_credentials_function2,
 * binary usernames) sends the PskIdentity bytes received (the RFC 9258
 * ImportedIdentity) to the daemon's lookup and hands GnuTLS the imported
 * key. Client: gnutls_psk_set_client_credentials_function2 takes the first
 * of the daemon's offers for the server node (newest usable generation) and
 * sends its ImportedIdentity bytes as the username.
 *
 * Policy, whatever the application configured:
 *   - session_setup sets the session's priorities to TLS 1.3 only,
 *     key exchange ECDHE-PSK / DHE-PSK only (psk_dhe_ke; never plain PSK,
 *     i.e. psk_ke), SHA-256 suites (AES-128-GCM, ChaCha20-Poly1305), no
 *     session tickets (%NO_TICKETS): a resumed session would skip the vault.
 *   - the credential functions hand out no key when the negotiated version
 *     (known on the server) is not TLS 1.3, or for a key whose target KDF is
 *     not HKDF_SHA256 (GnuTLS 3.7 computes external-PSK binders with
 *     SHA-256 only, so a SHA-384 key could never complete a handshake).
 *   - pskvault_gnutls_verify(session), after the handshake, checks TLS 1.3
 *     and an (EC)DHE-PSK key exchange; call it (the examples do) in case the
 *     application changed the priorities after setup.
 *   - early data: never. GnuTLS (3.7, 3.8) accepts 0-RTT only on resumption,
 *     and tickets are off.
 *   - identities: GnuTLS takes PSK usernames of at most 128 bytes
 *     (MAX_USERNAME_SIZE), so an ImportedIdentity (external identity +
 *     context + 6 bytes) longer than that never reaches the callback.
 *
 * GnuTLS 3.8's gnutls_psk_set_{server,client}_credentials_function3 add a
 * flags output to the callbacks; the one new flag, GNUTLS_PSK_KEY_EXT, says
 * "this key is an EPSK: run the RFC 9258 importer on it and use the
 * 'imp binder' label". pskvault hands out keys that are already imported
 * (ipskx), and there is no flag for an already-imported key, so that flag
 * is never right here: with it GnuTLS would import ipskx a second time and
 * no pskvault-fed peer could verify the binder. function3 with flags 0 is
 * exactly function2, so this library uses function2 on every version. A
 * GnuTLS 3.8 peer that imports natively (GNUTLS_PSK_KEY_EXT with the EPSK)
 * cannot complete a handshake with a pskvault-fed peer: different binder
 * label (docs/CONSUMERS.md).
 *
 * Revocation, expiry and rotation: every handshake asks the daemon; nothing
 * is cached; nothing to reload.
 *
 * Key material: the key handed to GnuTLS is gnutls_malloc'd, as the
 * credentials-function contract requires; GnuTLS owns it from then on and
 * frees it with its key-datum free, which zeroes it. The library's own
 * copy is wiped before the callback returns. Nothing is printed or logged;
 * the optional event callback gets identities and statuses, never keys.
 *
 * State: GnuTLS 3.7's credentials functions carry no user pointer, so this
 * library keeps a process-wide table from each pskvault_gnutls's
 * credentials to it, behind a mutex (entries added by _new, removed by
 * _free). Thread-safe as the pskvault handle is.
 */
#ifndef PSKVAULT_GNUTLS_H
#define PSKVAULT_GNUTLS_H

#include <gnutls/gnutls.h>

#include "pskvault.h"

#ifdef __cplusplus
extern "C" {
#endif

/* One key asked for, reported to the application (for its own log). */
typedef struct pskvault_gnutls_event {
	int role;                  /* PSKVAULT_ROLE_SERVER (lookup) or _CLIENT (offers) */
	const uint8_t *identity;   /* server: the PskIdentity bytes received; client: the one offered (NULL if none) */
	size_t identity_len;
	int status;                /* PSKVAULT_OK or why no key was handed out */
	const pskvault_detail *detail;
	uint32_t generation;       /* of the key used, 0 if none */
} pskvault_gnutls_event;

typedef struct pskvault_gnutls_opts {
	int has_context;          /* server: require exactly this RFC 9258 context; client: the context to ask offers for */
	const uint8_t *context;   /* copied */
	size_t context_len;
	void (*on_event)(void *arg, const pskvault_gnutls_event *ev); /* may be NULL */
	void *event_arg;
} pskvault_gnutls_opts;

typedef struct pskvault_gnutls pskvault_gnutls;

/* Creates server-side glue. pv is borrowed and must outlive *out. opts may
 * be NULL. Returns PSKVAULT_OK, PSKVAULT_EINVAL, PSKVAULT_ENOMEM or
 * PSKVAULT_ETLS (a GnuTLS call failed). */
int pskvault_gnutls_server_new(pskvault *pv, const pskvault_gnutls_opts *opts, pskvault_gnutls **out);

/* Creates client-side glue offering keys for server node server_node (copied). */
int pskvault_gnutls_client_new(pskvault *pv, const char *server_node, const pskvault_gnutls_opts *opts,
                               pskvault_gnutls **out);

/* Sets session's priorities (see above) and PSK credentials. Call after
 * gnutls_init and before gnutls_handshake. Returns PSKVAULT_OK or
 * PSKVAULT_ETLS. */
int pskvault_gnutls_session_setup(pskvault_gnutls *g, gnutls_session_t session);

/* After a completed handshake: PSKVAULT_OK for TLS 1.3 with an
 * (EC)DHE-PSK key exchange, PSKVAULT_EPOLICY otherwise. */
int pskvault_gnutls_verify(gnutls_session_t session);

/* Frees g (its credentials too). No session may still use it. NULL is fine. */
void pskvault_gnutls_free(pskvault_gnutls *g);

/* The priority string session_setup sets. */
#define PSKVAULT_GNUTLS_PRIORITY \
	"NORMAL:-VERS-ALL:+VERS-TLS1.3:-KX-ALL:+ECDHE-PSK:+DHE-PSK:-CIPHER-ALL:+AES-128-GCM:+CHACHA20-POLY1305:%NO_TICKETS"

#ifdef __cplusplus
}
#endif
#endif
