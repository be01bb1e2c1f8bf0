/*
 * pskvault.h - libpskvault, the C client of a pskvault daemon's data socket.
 *
 * This header is the manual. libpskvault asks a local pskvault daemon for
 * RFC 9258 imported PSKs (ipskx) over its Unix data socket, in the binary
 * form of the socket protocol (docs/API.md, "Binary form"): HTTP/1.1 with
 * length-prefixed fields, no JSON, no hex. It depends on libc only (and the
 * libc's pthread mutex). The TLS glue for OpenSSL 3 and GnuTLS is in
 * separate libraries (pskvault_openssl.h, pskvault_gnutls.h) built on this.
 *
 * Three questions:
 *   - lookup (a TLS server): "which key goes with the PskIdentity bytes this
 *     ClientHello carried?"  pskvault_lookup()
 *   - offers (a TLS client): "which (identity, key) pairs do I offer to
 *     server node N?"  pskvault_offers()
 *   - derive (anyone allowed): "the imported key of external identity I for
 *     this context and target"  pskvault_derive()
 *
 * Conventions, for every function:
 *   - The return value is a status: PSKVAULT_OK (0) or a negative
 *     PSKVAULT_E* code; pskvault_strerror() names it. Nothing is printed,
 *     ever; nothing is logged.
 *   - On failure every output is left zeroed (keys: as after
 *     pskvault_key_clear()); the caller owns nothing to free.
 *   - Every function that talks to the daemon takes an optional
 *     pskvault_detail (NULL: not wanted) that says more: the HTTP status,
 *     the daemon's error code (e.g. "no_key", "revoked"), the uid of an
 *     untrusted daemon, the errno of a failed system call.
 *   - Lengths are explicit; no byte string is NUL-terminated unless its
 *     type is char *.
 *   - Outputs are caller-owned: a pskvault_key lives where the caller put
 *     it; the library allocates its variable-length parts and
 *     pskvault_key_clear() wipes (explicit_bzero) and frees them. The key
 *     bytes themselves are in a fixed array inside the struct, so a caller
 *     that keeps keys in locked memory can put the struct there.
 *   - Every buffer the library itself used for key material (the answer it
 *     read from the socket) is wiped before it is freed.
 *
 * Threads: a pskvault handle may be used from any number of threads at
 * once. It holds its configuration (read-only after pskvault_new) and a
 * small pool of idle keep-alive connections behind a mutex; there is no
 * global state. After fork() the child must not use a handle it inherited
 * with connections in flight; idle pooled connections are detected (by pid)
 * and dropped, never shared with the parent.
 *
 * Daemon verification: before anything is sent on a new connection the
 * library reads SO_PEERCRED of the connected socket. The daemon's uid must
 * be 0, the caller's effective uid, the uid of the system user "pskvault"
 * when that user exists (looked up once, in pskvault_new()), or
 * pskvault_config.daemon_uid when daemon_uid_set is non-zero. Any other uid
 * fails with PSKVAULT_EUNTRUSTED and detail->daemon_uid naming it; nothing
 * was sent.
 *
 * Timeouts: each request (connect, send, receive) must complete within
 * pskvault_config.timeout_ms, or fails with PSKVAULT_ETIMEOUT. A kept-alive
 * connection the daemon closed while idle (it closes them after 60 s) is
 * noticed before any answer byte and the request is sent once more on a
 * fresh connection; lookup, offers and derive change nothing, so this is
 * safe.
 *
 * Build: cc ... $(pkg-config --cflags --libs libpskvault). C99.
 */
#ifndef PSKVAULT_H
#define PSKVAULT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

#define PSKVAULT_VERSION "0.1.0"

/* Where pskvault serve puts its data socket when run as root (contrib/systemd). */
#define PSKVAULT_DEFAULT_SOCKET "/run/pskvault/data/pskvault.sock"

/* Status codes. */
enum {
	PSKVAULT_OK = 0,
	PSKVAULT_EINVAL = -1,       /* a bad argument (NULL, over a length limit, unknown code) */
	PSKVAULT_ENOMEM = -2,       /* out of memory */
	PSKVAULT_ECONNECT = -3,     /* cannot connect to the socket (no daemon?): detail->sys_errno */
	PSKVAULT_EUNTRUSTED = -4,   /* the process behind the socket runs as a uid not trusted: detail->daemon_uid */
	PSKVAULT_ETIMEOUT = -5,     /* the daemon did not answer within timeout_ms */
	PSKVAULT_EIO = -6,          /* a read or write failed, or the daemon hung up mid-answer: detail->sys_errno */
	PSKVAULT_EPROTO = -7,       /* the answer is malformed (not HTTP, not the binary form, a bad field) */
	PSKVAULT_ETOOBIG = -8,      /* the answer is over max_answer bytes */
	PSKVAULT_ENOKEY = -9,       /* no key: lookup/offers "no_key", derive "not_found" (or not allowed: same answer) */
	PSKVAULT_EREFUSED = -10,    /* the daemon refused (403): revoked, expired, target not allowed, key policy, ... */
	PSKVAULT_EUNAVAILABLE = -11,/* the daemon's TPM or token is unreachable (503) */
	PSKVAULT_EREQUEST = -12,    /* the daemon found the request malformed (400/413): detail->code says why */
	PSKVAULT_EDAEMON = -13,     /* any other error answer: detail->http_status and detail->code */
	PSKVAULT_EPOLICY = -14,     /* TLS glue: the key cannot be used as asked (unknown KDF, TLS version) */
	PSKVAULT_ETLS = -15         /* TLS glue: a TLS library call failed */
};

/* Returns a static, constant English description of status. Never NULL. */
const char *pskvault_strerror(int status);

/* RFC 9258 target_protocol and target_kdf codes, and EPSK hashes. */
#define PSKVAULT_TLS13 0x0304
#define PSKVAULT_DTLS13 0xfefc
#define PSKVAULT_KDF_SHA256 0x0001 /* HKDF_SHA256: 32-byte ipskx */
#define PSKVAULT_KDF_SHA384 0x0002 /* HKDF_SHA384: 48-byte ipskx */
#define PSKVAULT_HASH_SHA256 0x0001
#define PSKVAULT_HASH_SHA384 0x0002

/* Roles (pskvault_key.role, pskvault_derive_req.role). */
#define PSKVAULT_ROLE_CLIENT 1
#define PSKVAULT_ROLE_SERVER 2

/* Policy flags (pskvault_key.flags), from the vault's record of the PSK. */
#define PSKVAULT_F_DHE_REQUIRED 0x01u /* psk_dhe_ke only, never psk_ke */
#define PSKVAULT_F_EARLY_DATA 0x02u   /* 0-RTT data may be accepted (max_early_data bytes) */
#define PSKVAULT_F_LOW_ENTROPY 0x04u  /* imported with --allow-low-entropy */
#define PSKVAULT_F_GROUP 0x08u        /* a group PSK */
#define PSKVAULT_F_NODE_CONTEXT 0x10u /* context is the node-identifier context */
#define PSKVAULT_F_FINALIZED 0x20u    /* main key destroyed; kept imported keys only */

#define PSKVAULT_MAX_KEY 64 /* largest ipskx the library accepts (48 today) */

/* Configuration of a handle. Zero every field you do not set
 * (e.g. pskvault_config c = {0};): zero means the default. */
typedef struct pskvault_config {
	const char *socket_path; /* the data socket; NULL: PSKVAULT_DEFAULT_SOCKET. Copied. */
	int timeout_ms;          /* per request; 0: 2000 */
	int daemon_uid_set;      /* non-zero: also trust a daemon running as daemon_uid */
	uid_t daemon_uid;
	size_t max_answer;       /* largest answer body accepted; 0: 1 MiB */
	int max_idle;            /* idle keep-alive connections kept; 0: 4; negative: none
	                            (a new connection per request) */
} pskvault_config;

/* Extra information about a failure. All fields are set by every call that
 * takes one: http_status 0 and code "" when there was no error answer,
 * daemon_uid -1 unless PSKVAULT_EUNTRUSTED, sys_errno 0 unless a system call
 * failed. */
typedef struct pskvault_detail {
	int http_status;
	char code[40];   /* the daemon's error code (Pskvault-Error header), NUL-terminated */
	long daemon_uid;
	int sys_errno;
} pskvault_detail;

/* An imported key and what the vault says about it. Zero-initialise before
 * first use; pskvault_key_clear() after use (also after failures: harmless). */
typedef struct pskvault_key {
	uint8_t ipskx[PSKVAULT_MAX_KEY]; /* the imported PSK: SECRET */
	size_t ipskx_len;                /* 32 (HKDF_SHA256) or 48 (HKDF_SHA384) */
	uint8_t *imported_identity;      /* serialized ImportedIdentity: PskIdentity.identity on the wire */
	size_t imported_identity_len;
	uint8_t *identity;               /* external identity */
	size_t identity_len;
	uint8_t *context;                /* RFC 9258 context (may be empty: context_len 0) */
	size_t context_len;
	uint16_t protocol;               /* PSKVAULT_TLS13 / PSKVAULT_DTLS13 */
	uint16_t kdf;                    /* PSKVAULT_KDF_SHA256 / PSKVAULT_KDF_SHA384 */
	uint16_t hash;                   /* the EPSK's hash */
	int role;                        /* PSKVAULT_ROLE_*, 0 if the daemon sent none */
	uint32_t flags;                  /* PSKVAULT_F_* */
	uint32_t max_early_data;         /* 0 unless PSKVAULT_F_EARLY_DATA */
	uint32_t generation;             /* rotation generation, 1 for a PSK never rotated */
	int64_t not_after;               /* expiry, seconds since the epoch; 0: none */
} pskvault_key;

/* Wipes k->ipskx and every buffer k points to, frees them and zeroes *k.
 * NULL and already-cleared keys are fine. */
void pskvault_key_clear(pskvault_key *k);

/* Clears and frees an array returned by pskvault_offers(). NULL is fine. */
void pskvault_keys_free(pskvault_key *keys, size_t n);

typedef struct pskvault pskvault;

/* Creates a handle. cfg may be NULL (all defaults). Connects to nothing yet.
 * Returns PSKVAULT_EINVAL for a socket path too long for sockaddr_un, or
 * PSKVAULT_ENOMEM. On success *out is the caller's, freed with
 * pskvault_free(). */
int pskvault_new(const pskvault_config *cfg, pskvault **out);

/* Closes pooled connections and frees the handle. NULL is fine. No call on
 * pv may be running or start. */
void pskvault_free(pskvault *pv);

/* Connects, verifies the daemon (SO_PEERCRED) and asks GET /v1/status.
 * PSKVAULT_OK means a trusted daemon answers on the socket. */
int pskvault_ping(pskvault *pv, pskvault_detail *detail);

/* What a TLS server expects of a lookup; NULL: anything the vault holds. */
typedef struct pskvault_expect {
	int has_context;          /* non-zero: the context must be exactly this (may be empty) */
	const uint8_t *context;
	size_t context_len;
	uint16_t protocol;        /* 0: any; else must match the ImportedIdentity's */
	uint16_t kdf;             /* 0: any */
} pskvault_expect;

/* Lookup (TLS server side): the key for the PskIdentity.identity bytes
 * wire[0..wire_len) received in a ClientHello. The daemon decodes them
 * strictly as an RFC 9258 ImportedIdentity and checks that this node is the
 * PSK's server, the caller's access, state, expiry, target and context.
 * Every refusal is PSKVAULT_ENOKEY (detail->code "no_key"): the reason is
 * in the daemon's audit log only. On PSKVAULT_OK *out holds the key (the
 * caller clears it); otherwise *out is zeroed. wire_len must be 1..65535. */
int pskvault_lookup(pskvault *pv, const uint8_t *wire, size_t wire_len,
                    const pskvault_expect *expect, pskvault_key *out,
                    pskvault_detail *detail);

/* Offers (TLS client side): every key this node offers to server node
 * server_node (NUL-terminated) for this context and target, newest
 * generation first. On PSKVAULT_OK *out is a malloc'd array of *n keys
 * (NULL when *n is 0), freed with pskvault_keys_free(*out, *n). Nothing to
 * offer is PSKVAULT_OK with *n == 0. */
int pskvault_offers(pskvault *pv, const char *server_node,
                    const uint8_t *context, size_t context_len,
                    uint16_t protocol, uint16_t kdf,
                    pskvault_key **out, size_t *n, pskvault_detail *detail);

typedef struct pskvault_derive_req {
	const uint8_t *identity; /* external identity, required */
	size_t identity_len;
	const uint8_t *context;  /* may be NULL when context_len is 0 */
	size_t context_len;
	uint16_t protocol;       /* required */
	uint16_t kdf;            /* required */
	const char *peer;        /* group PSKs: the peer node; NULL otherwise */
	int role;                /* group PSKs: this node's PSKVAULT_ROLE_*; 0 otherwise */
} pskvault_derive_req;

/* Derive: the imported key of one external identity. Unknown PSKs and
 * PSKs the caller may not derive both give PSKVAULT_ENOKEY; revoked,
 * expired or disallowed targets PSKVAULT_EREFUSED. */
int pskvault_derive(pskvault *pv, const pskvault_derive_req *req,
                    pskvault_key *out, pskvault_detail *detail);

/* Helpers for the TLS glue and for logging identities (never keys). */

/* ipskx length for a target KDF: 32, 48, or 0 for an unknown code. */
size_t pskvault_kdf_len(uint16_t kdf);

/* Writes the lowercase hex of in[0..n) and a NUL to out, which holds
 * out_size bytes; truncates (still NUL-terminated) when it is too small.
 * Returns the length written, excluding the NUL. For identities only. */
size_t pskvault_hex(char *out, size_t out_size, const uint8_t *in, size_t n);

#ifdef __cplusplus
}
#endif
#endif /* PSKVAULT_H */
