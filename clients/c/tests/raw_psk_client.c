/* Test tool: a GnuTLS PSK client with NO pskvault policy, to show that the
 * pskvault-fed servers refuse what they must. It takes the identity (bytes,
 * as hex) and the key from stdin ("IDHEX KEYHEX", never argv) and any
 * GnuTLS priority string, so it can offer exactly the right binary
 * ImportedIdentity with TLS 1.2 or with psk_ke only.
 *
 *   echo "$ID $KEY" | raw_psk_client --connect 127.0.0.1:8443 --priority 'NORMAL:-VERS-ALL:+VERS-TLS1.3:-KX-ALL:+PSK'
 *
 * Exit 0 and "handshake ok ..." when a handshake completes, 1 otherwise. */
#define _GNU_SOURCE
#include <gnutls/gnutls.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static int unhex(const char *h, unsigned char *out, size_t cap, size_t *n)
{
	size_t l = strlen(h), i;
	if (l % 2 || l / 2 > cap)
		return -1;
	for (i = 0; i < l / 2; i++) {
		unsigned x;
		if (sscanf(h + 2 * i, "%2x", &x) != 1)
			return -1;
		out[i] = (unsigned char)x;
	}
	*n = l / 2;
	return 0;
}

int main(int argc, char **argv)
{
	const char *addr = NULL, *prio = NULL, *port;
	char line[2048], host[256], *sp, *colon;
	unsigned char id[1024], key[64];
	size_t idl, kl;
	gnutls_datum_t u, k;
	gnutls_psk_client_credentials_t cred;
	gnutls_session_t s;
	struct addrinfo hints, *res;
	int i, fd, r;
	const char *err = NULL;

	for (i = 1; i + 1 < argc; i += 2) {
		if (!strcmp(argv[i], "--connect"))
			addr = argv[i + 1];
		else if (!strcmp(argv[i], "--priority"))
			prio = argv[i + 1];
	}
	if (addr == NULL || prio == NULL || fgets(line, sizeof line, stdin) == NULL || (sp = strchr(line, ' ')) == NULL) {
		fprintf(stderr, "usage: echo 'IDHEX KEYHEX' | %s --connect HOST:PORT --priority PRIORITY\n", argv[0]);
		return 2;
	}
	*sp++ = 0;
	sp[strcspn(sp, "\r\n")] = 0;
	if (unhex(line, id, sizeof id, &idl) || unhex(sp, key, sizeof key, &kl))
		return 2;
	explicit_bzero(line, sizeof line);
	colon = strrchr(addr, ':');
	if (colon == NULL || (size_t)(colon - addr) >= sizeof host)
		return 2;
	memcpy(host, addr, (size_t)(colon - addr));
	host[colon - addr] = 0;
	port = colon + 1;
	memset(&hints, 0, sizeof hints);
	hints.ai_socktype = SOCK_STREAM;
	if (getaddrinfo(host, port, &hints, &res) != 0)
		return 2;
	fd = socket(res->ai_family, SOCK_STREAM, 0);
	if (fd < 0 || connect(fd, res->ai_addr, res->ai_addrlen) != 0) {
		perror("connect");
		return 1;
	}
	freeaddrinfo(res);
	gnutls_global_init();
	gnutls_psk_allocate_client_credentials(&cred);
	u.data = id;
	u.size = (unsigned)idl;
	k.data = key;
	k.size = (unsigned)kl;
	if (gnutls_psk_set_client_credentials2(cred, &u, &k, GNUTLS_PSK_KEY_RAW) < 0)
		return 2;
	explicit_bzero(key, sizeof key);
	gnutls_init(&s, GNUTLS_CLIENT | GNUTLS_NO_TICKETS);
	if (gnutls_priority_set_direct(s, prio, &err) < 0) {
		fprintf(stderr, "bad priority at %s\n", err ? err : "?");
		return 2;
	}
	gnutls_credentials_set(s, GNUTLS_CRD_PSK, cred);
	gnutls_transport_set_int(s, fd);
	gnutls_handshake_set_timeout(s, 10000);
	do
		r = gnutls_handshake(s);
	while (r < 0 && !gnutls_error_is_fatal(r));
	if (r < 0) {
		printf("handshake failed: %s\n", gnutls_strerror(r));
		return 1;
	}
	printf("handshake ok version=%s kx=%s\n", gnutls_protocol_get_name(gnutls_protocol_get_version(s)), gnutls_kx_get_name(gnutls_kx_get(s)));
	gnutls_bye(s, GNUTLS_SHUT_WR);
	gnutls_deinit(s);
	gnutls_psk_free_client_credentials(cred);
	gnutls_global_deinit();
	return 0;
}
