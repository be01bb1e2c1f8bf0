/*
 * pskvault_openssl.h - libpskvault-openssl: TLS 1.3 external PSKs for
 * OpenSSL 3, asked of the pskvault daemon at every handshake.
 *
 * Link: $(pkg-config --cflags --libs libpskvault-openssl) (it pulls in
 * libpskvault and OpenSSL's libssl/libcrypto).
 *
 * Server: pskvault_ossl_server_install(ctx, pv, opts) installs an
 * SSL_CTX_set_psk_find_session_callback. For each ClientHello it sends the
 * PskIdentity *bytes* received (the RFC 9258 ImportedIdentity) to the
 * daemon's lookup, and builds the SSL_SESSION from the answer: the imported
 * key as master key, TLS1_3_VERSION, the TLS 1.3 cipher suite whose hash is
 * the key's target KDF's (SHA-256: TLS_AES_128_GCM_SHA256; SHA-384:
 * TLS_AES_256_GCM_SHA384; the same suite the client side gives the key, so
 * 0-RTT data is encrypted alike at both ends) when the negotiated suite has
 * that hash (the handshake itself may use TLS_CHACHA20_POLY1305_SHA256), and
 * max_early_data only when the vault's record allows early data (else 0,
 * so OpenSSL refuses 0-RTT under this key).
 *
 * Client: pskvault_ossl_client_install(ctx, pv, server_node, opts)
 * installs an SSL_CTX_set_psk_use_session_callback fed by the daemon's
 * offers for server_node: the first offer (the newest usable generation)
 * with its ImportedIdentity bytes as the PskIdentity.
 *
 * Policy, enforced whatever the application configures:
 *   - TLS 1.3 only: install sets the context's minimum and maximum protocol
 *     version to TLS1_3_VERSION and removes the TLS 1.2-style PSK callbacks
 *     (SSL_CTX_set_psk_{server,client}_callback NULL); the callbacks hand
 *     out no key on a connection whose minimum version was lowered again.
 *   - psk_dhe_ke only, never psk_ke: install clears SSL_OP_ALLOW_NO_DHE_KEX;
 *     a connection on which it is set again gets no key.
 *   - no resumption on the server (no tickets, no session cache): a resumed
 *     session would skip the vault, and with it a revocation.
 *   - early data only where the record allows it (max_early_data of the
 *     session from the vault's answer).
 *   - the cipher suite: install restricts the context's TLS 1.3 suites to
 *     those of opts->kdf's hash (default SHA-256), so the suite OpenSSL
 *     negotiates can carry the key (OpenSSL picks the suite before it asks
 *     for the PSK, and skips a PSK whose hash differs).
 *
 * Revocation, expiry and rotation: every handshake asks the daemon; nothing
 * is cached, so a revoked or expired key fails the next handshake and a
 * rotated one is used from the next handshake on. Nothing to reload.
 *
 * Key material: the key is copied into the SSL_SESSION with
 * SSL_SESSION_set1_master_key (OpenSSL cleanses it when the session is
 * freed); the library's own copy (pskvault_key) is wiped before the
 * callback returns. Nothing is printed or logged; the optional event
 * callback gets identities and statuses, never keys.
 *
 * State: install stores its configuration in the SSL_CTX's ex_data (freed
 * with the SSL_CTX) and the client's identity in the SSL's ex_data (freed
 * with the SSL). The ex_data indexes are allocated once per process
 * (pthread_once). The pskvault handle is borrowed: it must outlive the
 * SSL_CTX. Thread-safe as the pskvault handle is.
 */
#ifndef PSKVAULT_OPENSSL_H
#define PSKVAULT_OPENSSL_H

#include <openssl/ssl.h>

#include "pskvault.h"

#ifdef __cplusplus
extern "C" {
#endif

/* One key asked for, reported to the application (for its own log). */
typedef struct pskvault_tls_event {
	int role;                  /* PSKVAULT_ROLE_SERVER (lookup) or _CLIENT (offers) */
	const uint8_t *identity;   /* server: the PskIdentity bytes received; client: the one offered (NULL if none) */
	size_t identity_len;
	int status;                /* PSKVAULT_OK or why no key was used */
	const pskvault_detail *detail;
	uint32_t generation;       /* of the key used, 0 if none */
} pskvault_tls_event;

typedef void pskvault_tls_event_fn(void *arg, const pskvault_tls_event *ev);

typedef struct pskvault_ossl_opts {
	uint16_t kdf;             /* target KDF of the keys: PSKVAULT_KDF_SHA256 (0 = this) or _SHA384 */
	int has_context;          /* server: require exactly this RFC 9258 context; client: the context to ask offers for */
	const uint8_t *context;   /* copied by install */
	size_t context_len;
	pskvault_tls_event_fn *on_event; /* may be NULL; called from the handshake's thread */
	void *event_arg;
} pskvault_ossl_opts;

/* Installs the server side on ctx (see above). opts may be NULL. Returns
 * PSKVAULT_OK, PSKVAULT_EINVAL, PSKVAULT_ENOMEM or PSKVAULT_ETLS (an
 * OpenSSL call failed; see ERR_get_error()). Call it once per SSL_CTX. */
int pskvault_ossl_server_install(SSL_CTX *ctx, pskvault *pv, const pskvault_ossl_opts *opts);

/* Installs the client side on ctx, offering keys for server node
 * server_node (copied). Same returns. */
int pskvault_ossl_client_install(SSL_CTX *ctx, pskvault *pv, const char *server_node, const pskvault_ossl_opts *opts);

#ifdef __cplusplus
}
#endif
#endif
