/* Shared code of the example programs: flags, TCP, logging of identities
 * (hex, never keys). */
#ifndef PSKVAULT_EXAMPLE_COMMON_H
#define PSKVAULT_EXAMPLE_COMMON_H
#define _GNU_SOURCE
#include <errno.h>
#include <netdb.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "pskvault.h"

typedef struct flags {
	const char *socket;  /* --socket: the daemon's data socket */
	const char *addr;    /* --listen / --connect HOST:PORT */
	const char *peer;    /* --peer: the server node (client) */
	const char *context_hex; /* --context-hex */
	const char *message; /* --message (client) */
	long daemon_uid;     /* --daemon-uid */
	int count;           /* --count: handshakes (client), connections (server; 0: forever) */
	int memory_key;      /* --memory-key: read "IMPORTED_IDENTITY_HEX KEY_HEX" from stdin; no vault (benchmark baseline) */
	int sha384;          /* --sha384: keys for HKDF_SHA384 (OpenSSL only) */
	int quiet;           /* --quiet: log failures only */
	const char *early;   /* client --early-data TEXT: send TEXT as 0-RTT data; server --early-data: accept it where the key allows */
} flags;

static inline void usage(const char *prog, int server)
{
	fprintf(stderr, "usage: %s --socket DATA_SOCKET %s HOST:PORT%s [--context-hex HEX] [--daemon-uid UID] [--count N] [--memory-key] [--sha384] [--quiet] [--early-data%s]\n",
	        prog, server ? "--listen" : "--connect", server ? "" : " --peer SERVER_NODE [--message TEXT]", server ? "" : " TEXT");
	exit(2);
}

static inline void parse_flags(int argc, char **argv, int server, flags *f)
{
	int i;
	memset(f, 0, sizeof *f);
	f->daemon_uid = -1;
	f->message = "hello through pskvault";
	for (i = 1; i < argc; i++) {
		const char *a = argv[i];
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (!strcmp(a, "--memory-key"))
			f->memory_key = 1;
		else if (!strcmp(a, "--sha384"))
			f->sha384 = 1;
		else if (!strcmp(a, "--quiet"))
			f->quiet = 1;
		else if (server && !strcmp(a, "--early-data"))
			f->early = "";
		else if (v == NULL)
			usage(argv[0], server);
		else if (!strcmp(a, "--socket"))
			f->socket = v, i++;
		else if (!strcmp(a, server ? "--listen" : "--connect"))
			f->addr = v, i++;
		else if (!server && !strcmp(a, "--peer"))
			f->peer = v, i++;
		else if (!server && !strcmp(a, "--early-data"))
			f->early = v, i++;
		else if (!server && !strcmp(a, "--message"))
			f->message = v, i++;
		else if (!strcmp(a, "--context-hex"))
			f->context_hex = v, i++;
		else if (!strcmp(a, "--daemon-uid"))
			f->daemon_uid = strtol(v, NULL, 10), i++;
		else if (!strcmp(a, "--count"))
			f->count = atoi(v), i++;
		else
			usage(argv[0], server);
	}
	if (f->addr == NULL || (!f->memory_key && f->socket == NULL) || (!server && !f->memory_key && f->peer == NULL))
		usage(argv[0], server);
}

static inline int unhex(const char *h, unsigned char *out, size_t cap, size_t *n)
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

/* read_memory_key reads "IDHEX KEYHEX" from stdin (never argv). */
static inline int read_memory_key(unsigned char *id, size_t *idlen, unsigned char *key, size_t *keylen)
{
	char line[1024], *sp;
	int rc;
	if (fgets(line, sizeof line, stdin) == NULL || (sp = strchr(line, ' ')) == NULL)
		return -1;
	*sp = 0;
	line[strcspn(sp + 1, "\r\n") + (size_t)(sp + 1 - line)] = 0;
	rc = unhex(line, id, 512, idlen) || unhex(sp + 1, key, 64, keylen) ? -1 : 0;
	explicit_bzero(line, sizeof line);
	return rc;
}

static inline pskvault * open_vault(const flags *f, const unsigned char **ctx, size_t *ctxlen, int *has_ctx)
{
	static unsigned char cbuf[1024];
	pskvault_config c;
	pskvault *pv;
	pskvault_detail d;
	int rc;
	memset(&c, 0, sizeof c);
	c.socket_path = f->socket;
	if (f->daemon_uid >= 0) {
		c.daemon_uid_set = 1;
		c.daemon_uid = (uid_t)f->daemon_uid;
	}
	*ctx = NULL;
	*ctxlen = 0;
	*has_ctx = 0;
	if (f->context_hex) {
		if (unhex(f->context_hex, cbuf, sizeof cbuf, ctxlen) != 0) {
			fprintf(stderr, "--context-hex: not hex\n");
			exit(2);
		}
		*ctx = cbuf;
		*has_ctx = 1;
	}
	if ((rc = pskvault_new(&c, &pv)) != PSKVAULT_OK) {
		fprintf(stderr, "pskvault: %s\n", pskvault_strerror(rc));
		exit(1);
	}
	if ((rc = pskvault_ping(pv, &d)) != PSKVAULT_OK) {
		if (rc == PSKVAULT_EUNTRUSTED)
			fprintf(stderr, "pskvault: %s: %s runs as uid %ld\n", pskvault_strerror(rc), f->socket, d.daemon_uid);
		else
			fprintf(stderr, "pskvault: %s (%s)\n", pskvault_strerror(rc), d.sys_errno ? strerror(d.sys_errno) : d.code);
		exit(1);
	}
	return pv;
}

static inline int split_addr(const char *addr, char *host, size_t hs, const char **port)
{
	const char *c = strrchr(addr, ':');
	if (c == NULL || (size_t)(c - addr) >= hs)
		return -1;
	memcpy(host, addr, (size_t)(c - addr));
	host[c - addr] = 0;
	*port = c + 1;
	return 0;
}

static inline int tcp_listen(const char *addr)
{
	char host[256];
	const char *port;
	struct addrinfo hints, *res;
	int fd, one = 1;
	memset(&hints, 0, sizeof hints);
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE;
	if (split_addr(addr, host, sizeof host, &port) != 0 || getaddrinfo(host[0] ? host : NULL, port, &hints, &res) != 0)
		return -1;
	fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	if (fd < 0 || bind(fd, res->ai_addr, res->ai_addrlen) != 0 || listen(fd, 128) != 0) {
		freeaddrinfo(res);
		return -1;
	}
	freeaddrinfo(res);
	return fd;
}

static inline int tcp_connect(const char *addr)
{
	char host[256];
	const char *port;
	struct addrinfo hints, *res;
	int fd;
	memset(&hints, 0, sizeof hints);
	hints.ai_socktype = SOCK_STREAM;
	if (split_addr(addr, host, sizeof host, &port) != 0 || getaddrinfo(host, port, &hints, &res) != 0)
		return -1;
	fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, res->ai_addr, res->ai_addrlen) != 0) {
		if (fd >= 0)
			close(fd);
		freeaddrinfo(res);
		return -1;
	}
	freeaddrinfo(res);
	return fd;
}

static inline void log_event(int quiet, const char *what, const uint8_t *id, size_t idlen, int status, uint32_t gen)
{
	char hex[2 * 512 + 1];
	if (quiet && status == PSKVAULT_OK)
		return;
	pskvault_hex(hex, sizeof hex, id, idlen);
	printf("%s identity=%s status=%s generation=%u\n", what, id ? hex : "-", status == PSKVAULT_OK ? "ok" : pskvault_strerror(status), gen);
	fflush(stdout);
}

static inline double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}
#endif
