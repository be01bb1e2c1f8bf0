/*
 * gnutls-native: an RFC 9258-native TLS 1.3 peer built on GnuTLS >= 3.8.1,
 * for testing pskvault's consumers against an importer that is not ours.
 *
 * It holds the EPSK itself (read from a file, never from argv) and lets
 * GnuTLS import it (GNUTLS_PSK_KEY_EXT through the *_credentials_function3
 * callbacks, the only path on which GnuTLS 3.8 honours the flag): GnuTLS
 * derives ipskx from the EPSK and the ImportedIdentity and computes the
 * binder with "imp binder". The ImportedIdentity is serialized by
 * gnutls_psk_format_imported_identity.
 *
 *   gnutls-native format --identity-hex H [--context-hex C] [--kdf sha256|sha384]
 *       print the ImportedIdentity GnuTLS serializes, in hex
 *   gnutls-native server --identity-hex H [--context-hex C] [--kdf K] --epsk-file F
 *                        [--port P] [--naccept N] [--debug LEVEL]
 *       listen on 127.0.0.1:P (0: any free port; the line "listening on PORT"
 *       says which), complete up to N handshakes (default 1), echo one line
 *       per connection
 *   gnutls-native client --identity-hex H [--context-hex C] [--kdf K] --epsk-file F
 *                        --port P --message M [--debug LEVEL] [--priority STRING]
 *       connect to 127.0.0.1:P, send M and a newline, print the reply
 *
 * Lines on stdout: "listening on PORT", "identity matched: HEX" (server: the
 * ClientHello's identity is the one configured, and GnuTLS got the EPSK to
 * import), "unknown identity: HEX", "handshake ok: identity=HEX
 * cipher=NAME kx=NAME", "handshake failed: CODE TEXT [alert: NAME]",
 * "reply: TEXT", "received: TEXT". --priority replaces the GnuTLS priority
 * string (TLS 1.3, (EC)DHE-PSK, suites of the target KDF's hash), to play a
 * client that offers what pskvault's consumers must refuse. --debug sets GnuTLS's log level and sends
 * its log to stderr prefixed "gnutls|". Exit status 0 when every handshake
 * completed and the data crossed.
 *
 * The EPSK file holds the key in hex (what `pskvault psk create --format hex --out`
 * writes). The key buffer is wiped after use.
 */
#define _POSIX_C_SOURCE 200809L
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <gnutls/gnutls.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#if GNUTLS_VERSION_NUMBER < 0x030801
#error "gnutls-native needs GnuTLS >= 3.8.1 (RFC 9258 importer)"
#endif

static struct {
	gnutls_datum_t identity; /* external identity */
	gnutls_datum_t context;
	gnutls_digest_algorithm_t kdf;
	gnutls_datum_t imported; /* serialized ImportedIdentity */
	unsigned char epsk[128];
	size_t epsk_len;
} cfg;

static void die(const char *msg)
{
	fprintf(stderr, "gnutls-native: error: %s\n", msg);
	exit(2);
}

static void log_func(int level, const char *s)
{
	fprintf(stderr, "gnutls|<%d>| %s", level, s);
}

static int hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* unhex decodes s (whitespace ignored) into out (cap bytes); -1 on bad hex. */
static long unhex(const char *s, size_t n, unsigned char *out, size_t cap)
{
	size_t len = 0;
	int hi = -1;
	for (size_t i = 0; i < n; i++) {
		if (s[i] == ' ' || s[i] == '\n' || s[i] == '\r' || s[i] == '\t')
			continue;
		int v = hexval((unsigned char)s[i]);
		if (v < 0)
			return -1;
		if (hi < 0) {
			hi = v;
			continue;
		}
		if (len >= cap)
			return -1;
		out[len++] = (unsigned char)(hi << 4 | v);
		hi = -1;
	}
	return hi < 0 ? (long)len : -1;
}

static void datum_from_hex(const char *s, gnutls_datum_t *d, const char *what)
{
	size_t n = strlen(s);
	unsigned char *buf = malloc(n / 2 + 1);
	if (buf == NULL)
		die("out of memory");
	long len = unhex(s, n, buf, n / 2 + 1);
	if (len < 0) {
		fprintf(stderr, "gnutls-native: error: %s is not hex\n", what);
		exit(2);
	}
	d->data = buf;
	d->size = (unsigned)len;
}

static void print_hex(FILE *f, const unsigned char *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		fprintf(f, "%02x", p[i]);
}

static void read_epsk(const char *path)
{
	char text[512];
	int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0) {
		fprintf(stderr, "gnutls-native: error: open %s: %s\n", path, strerror(errno));
		exit(2);
	}
	ssize_t n = read(fd, text, sizeof text);
	close(fd);
	if (n <= 0 || (size_t)n >= sizeof text)
		die("EPSK file is empty or too long");
	long len = unhex(text, (size_t)n, cfg.epsk, sizeof cfg.epsk);
	memset(text, 0, sizeof text);
	if (len < 16)
		die("EPSK file does not hold a hex key of at least 16 bytes");
	cfg.epsk_len = (size_t)len;
}

static int copy_epsk(gnutls_datum_t *key)
{
	key->data = gnutls_malloc(cfg.epsk_len);
	if (key->data == NULL)
		return -1;
	memcpy(key->data, cfg.epsk, cfg.epsk_len);
	key->size = (unsigned)cfg.epsk_len;
	return 0;
}

/* Server: the username is the PskIdentity.identity of the ClientHello. A
 * native importer configured with one EPSK answers for exactly the
 * ImportedIdentity it serializes itself. */
static int server_cb(gnutls_session_t s, const gnutls_datum_t *username, gnutls_datum_t *key,
		     gnutls_psk_key_flags *flags)
{
	(void)s;
	if (username->size != cfg.imported.size ||
	    memcmp(username->data, cfg.imported.data, username->size) != 0) {
		printf("unknown identity: ");
		print_hex(stdout, username->data, username->size);
		printf("\n");
		fflush(stdout);
		return -1;
	}
	printf("identity matched: ");
	print_hex(stdout, username->data, username->size);
	printf(" (EPSK handed to GnuTLS's importer)\n");
	fflush(stdout);
	if (copy_epsk(key) < 0)
		return -1;
	*flags = GNUTLS_PSK_KEY_EXT;
	return 0;
}

static int client_cb(gnutls_session_t s, gnutls_datum_t *username, gnutls_datum_t *key,
		     gnutls_psk_key_flags *flags)
{
	(void)s;
	username->data = gnutls_malloc(cfg.imported.size);
	if (username->data == NULL)
		return -1;
	memcpy(username->data, cfg.imported.data, cfg.imported.size);
	username->size = cfg.imported.size;
	if (copy_epsk(key) < 0)
		return -1;
	*flags = GNUTLS_PSK_KEY_EXT;
	return 0;
}

/* TLS 1.3 only, (EC)DHE-PSK only (psk_dhe_ke), and only the cipher suites
 * whose hash is the target KDF's. */
static const char *priority_override;

static const char *priority(void)
{
	if (priority_override != NULL)
		return priority_override;
	if (cfg.kdf == GNUTLS_DIG_SHA384)
		return "NORMAL:-VERS-ALL:+VERS-TLS1.3:-KX-ALL:+ECDHE-PSK:+DHE-PSK:-CIPHER-ALL:+AES-256-GCM";
	return "NORMAL:-VERS-ALL:+VERS-TLS1.3:-KX-ALL:+ECDHE-PSK:+DHE-PSK:-CIPHER-ALL:+AES-128-GCM:+CHACHA20-POLY1305";
}

/* The credentials' binder MAC must be the target KDF's hash: GnuTLS skips an
 * imported PSK whose target_kdf differs from it (a client then sends an empty
 * PSK list). GnuTLS 3.8 also runs the importer's HKDF with this hash
 * (derive_ipsk in lib/ext/pre_shared_key.c), not with the EPSK's own hash as
 * RFC 9258 section 5.1 says, so it agrees with other importers only when the
 * EPSK's hash and the target KDF's hash are the same. */
static gnutls_mac_algorithm_t binder_mac(void)
{
	return cfg.kdf == GNUTLS_DIG_SHA384 ? GNUTLS_MAC_SHA384 : GNUTLS_MAC_SHA256;
}

static void report_failure(gnutls_session_t s, int ret)
{
	printf("handshake failed: %d %s", ret, gnutls_strerror(ret));
	if (ret == GNUTLS_E_FATAL_ALERT_RECEIVED || ret == GNUTLS_E_WARNING_ALERT_RECEIVED)
		printf(" [alert: %s]", gnutls_alert_get_name(gnutls_alert_get(s)));
	printf("\n");
	fflush(stdout);
}

static void report_success(gnutls_session_t s)
{
	gnutls_datum_t user = {NULL, 0};
	printf("handshake ok: identity=");
	if (gnutls_psk_server_get_username2(s, &user) == 0 && user.data != NULL)
		print_hex(stdout, user.data, user.size);
	else
		print_hex(stdout, cfg.imported.data, cfg.imported.size);
	printf(" cipher=%s kx=%s version=%s\n", gnutls_cipher_get_name(gnutls_cipher_get(s)),
	       gnutls_kx_get_name(gnutls_kx_get(s)), gnutls_protocol_get_name(gnutls_protocol_get_version(s)));
	fflush(stdout);
}

/* read_line reads up to a newline (not kept) from the TLS session. */
static int read_line(gnutls_session_t s, char *buf, size_t cap)
{
	size_t len = 0;
	while (len + 1 < cap) {
		ssize_t n = gnutls_record_recv(s, buf + len, cap - 1 - len);
		if (n == GNUTLS_E_AGAIN || n == GNUTLS_E_INTERRUPTED)
			continue;
		if (n <= 0)
			return n == 0 ? (len > 0 ? 0 : -1) : (int)n;
		len += (size_t)n;
		char *nl = memchr(buf, '\n', len);
		if (nl != NULL) {
			*nl = '\0';
			return 0;
		}
	}
	buf[len] = '\0';
	return 0;
}

static gnutls_session_t new_session(unsigned flags, void *cred, int fd)
{
	gnutls_session_t s;
	const char *err = NULL;
	if (gnutls_init(&s, flags) < 0)
		die("gnutls_init");
	if (gnutls_priority_set_direct(s, priority(), &err) < 0)
		die("priority string refused");
	if (gnutls_credentials_set(s, GNUTLS_CRD_PSK, cred) < 0)
		die("gnutls_credentials_set");
	gnutls_transport_set_int(s, fd);
	gnutls_handshake_set_timeout(s, 10000);
	return s;
}

static int handshake(gnutls_session_t s)
{
	int ret;
	do {
		ret = gnutls_handshake(s);
	} while (ret < 0 && gnutls_error_is_fatal(ret) == 0);
	return ret;
}

static int run_server(int port, int naccept)
{
	gnutls_psk_server_credentials_t cred;
	if (gnutls_psk_allocate_server_credentials2(&cred, binder_mac()) < 0)
		die("allocate server credentials");
	gnutls_psk_set_server_credentials_function3(cred, server_cb);

	int ls = socket(AF_INET, SOCK_STREAM, 0);
	int one = 1;
	setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((unsigned short)port)};
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (ls < 0 || bind(ls, (struct sockaddr *)&a, sizeof a) < 0 || listen(ls, 16) < 0)
		die("cannot listen on 127.0.0.1");
	socklen_t alen = sizeof a;
	getsockname(ls, (struct sockaddr *)&a, &alen);
	printf("listening on %d\n", ntohs(a.sin_port));
	fflush(stdout);

	int failures = 0;
	for (int i = 0; i < naccept; i++) {
		int fd = accept(ls, NULL, NULL);
		if (fd < 0)
			die("accept");
		gnutls_session_t s = new_session(GNUTLS_SERVER, cred, fd);
		int ret = handshake(s);
		if (ret < 0) {
			report_failure(s, ret);
			failures++;
		} else {
			report_success(s);
			char line[4096];
			if (read_line(s, line, sizeof line) == 0) {
				printf("received: %s\n", line);
				fflush(stdout);
				size_t n = strlen(line);
				line[n] = '\n';
				gnutls_record_send(s, line, n + 1);
			} else {
				failures++;
			}
			gnutls_bye(s, GNUTLS_SHUT_WR);
		}
		gnutls_deinit(s);
		close(fd);
	}
	close(ls);
	gnutls_psk_free_server_credentials(cred);
	return failures == 0 ? 0 : 1;
}

static int run_client(int port, const char *message)
{
	gnutls_psk_client_credentials_t cred;
	if (gnutls_psk_allocate_client_credentials2(&cred, binder_mac()) < 0)
		die("allocate client credentials");
	gnutls_psk_set_client_credentials_function3(cred, client_cb);

	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((unsigned short)port)};
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a) < 0)
		die("cannot connect");
	gnutls_session_t s = new_session(GNUTLS_CLIENT, cred, fd);
	int ret = handshake(s);
	int status = 1;
	if (ret < 0) {
		report_failure(s, ret);
	} else {
		report_success(s);
		char line[4096];
		size_t n = strlen(message);
		if (n + 1 > sizeof line)
			die("message too long");
		memcpy(line, message, n);
		line[n] = '\n';
		if (gnutls_record_send(s, line, n + 1) == (ssize_t)(n + 1) && read_line(s, line, sizeof line) == 0) {
			printf("reply: %s\n", line);
			status = 0;
		} else {
			printf("no reply\n");
		}
		gnutls_bye(s, GNUTLS_SHUT_RDWR);
	}
	fflush(stdout);
	gnutls_deinit(s);
	close(fd);
	gnutls_psk_free_client_credentials(cred);
	return status;
}

int main(int argc, char **argv)
{
	if (argc < 2)
		die("usage: gnutls-native format|server|client [flags] (see the source)");
	const char *mode = argv[1], *id_hex = NULL, *ctx_hex = "", *kdf = "sha256", *epsk_file = NULL,
		   *message = NULL;
	int port = 0, naccept = 1, debug = 0;
	for (int i = 2; i < argc; i++) {
		const char *f = argv[i];
		if (i + 1 >= argc)
			die("flag without a value");
		const char *v = argv[++i];
		if (strcmp(f, "--identity-hex") == 0)
			id_hex = v;
		else if (strcmp(f, "--context-hex") == 0)
			ctx_hex = v;
		else if (strcmp(f, "--kdf") == 0)
			kdf = v;
		else if (strcmp(f, "--epsk-file") == 0)
			epsk_file = v;
		else if (strcmp(f, "--message") == 0)
			message = v;
		else if (strcmp(f, "--port") == 0)
			port = atoi(v);
		else if (strcmp(f, "--naccept") == 0)
			naccept = atoi(v);
		else if (strcmp(f, "--debug") == 0)
			debug = atoi(v);
		else if (strcmp(f, "--priority") == 0)
			priority_override = v;
		else {
			fprintf(stderr, "gnutls-native: error: unknown flag %s\n", f);
			return 2;
		}
	}
	if (id_hex == NULL)
		die("--identity-hex is required");
	datum_from_hex(id_hex, &cfg.identity, "--identity-hex");
	datum_from_hex(ctx_hex, &cfg.context, "--context-hex");
	if (strcmp(kdf, "sha256") == 0)
		cfg.kdf = GNUTLS_DIG_SHA256;
	else if (strcmp(kdf, "sha384") == 0)
		cfg.kdf = GNUTLS_DIG_SHA384;
	else
		die("--kdf must be sha256 or sha384");

	if (gnutls_global_init() < 0)
		die("gnutls_global_init");
	if (debug > 0) {
		gnutls_global_set_log_function(log_func);
		gnutls_global_set_log_level(debug);
	}
	int ret = gnutls_psk_format_imported_identity(&cfg.identity, &cfg.context, GNUTLS_TLS1_3, cfg.kdf,
						      &cfg.imported);
	if (ret < 0) {
		fprintf(stderr, "gnutls-native: error: gnutls_psk_format_imported_identity: %s\n", gnutls_strerror(ret));
		return 2;
	}
	if (strcmp(mode, "format") == 0) {
		print_hex(stdout, cfg.imported.data, cfg.imported.size);
		printf("\n");
		return 0;
	}
	if (epsk_file == NULL)
		die("--epsk-file is required");
	read_epsk(epsk_file);
	int status;
	if (strcmp(mode, "server") == 0)
		status = run_server(port, naccept);
	else if (strcmp(mode, "client") == 0) {
		if (message == NULL || port <= 0)
			die("client needs --port and --message");
		status = run_client(port, message);
	} else
		die("mode must be format, server or client");
	gnutls_memset(cfg.epsk, 0, sizeof cfg.epsk);
	gnutls_free(cfg.imported.data);
	free(cfg.identity.data);
	free(cfg.context.data);
	gnutls_global_deinit();
	return status;
}
