/* Unit tests of libpskvault's core against a fake daemon (tests/fake.h):
 * the request it sends, every answer it must accept or refuse, timeouts,
 * keep-alive, and daemon verification by uid. Run by make check under
 * AddressSanitizer and UndefinedBehaviorSanitizer. The real daemon is
 * exercised by the Go tests in clients/c (go test ./clients/c). */
#include "fake.h"
#include "pskvault.h"

#include <time.h>

static const char TLV[] = "application/vnd.pskvault.tlv";
static const unsigned char WIRE[] = {0x00, 0x02, 'i', 'd', 0x00, 0x01, 0x07, 0x03, 0x04, 0x00, 0x01};

static void key_fields(buf *b, size_t keylen, unsigned kdf)
{
	unsigned char key[64];
	memset(key, 0xab, sizeof key);
	put_field(b, 0x01, WIRE, sizeof WIRE);
	put_field(b, 0x02, "\x07", 1);
	put_u16(b, 0x03, 0x0304);
	put_u16(b, 0x04, kdf);
	put_field(b, 0x05, "id", 2);
	put_field(b, 0x07, "\x02", 1);
	put_field(b, 0x08, key, keylen);
	put_u16(b, 0x09, 1);
	put_u32(b, 0x0a, 0x03);
	put_u32(b, 0x0b, 16384);
	put_u32(b, 0x0c, 2);
	put_field(b, 0x0d, "\x00\x00\x00\x00\x71\x31\x45\x00", 8);
}

static pskvault *handle(const char *path, int timeout_ms)
{
	pskvault_config c;
	pskvault *pv = NULL;
	memset(&c, 0, sizeof c);
	c.socket_path = path;
	c.timeout_ms = timeout_ms;
	c.max_answer = 100000;
	if (pskvault_new(&c, &pv) != PSKVAULT_OK) {
		fprintf(stderr, "pskvault_new failed\n");
		exit(2);
	}
	return pv;
}

/* one_lookup runs a lookup against a fake that gives one answer. */
static int one_lookup(const unsigned char *ans, size_t n, int mode, pskvault_key *k, pskvault_detail *d)
{
	fake f;
	fake_answer a = {ans, n, mode};
	pskvault *pv;
	int rc;
	fake_start(&f, &a, 1);
	pv = handle(f.path, 400);
	rc = pskvault_lookup(pv, WIRE, sizeof WIRE, NULL, k, d);
	pskvault_free(pv);
	fake_stop(&f);
	return rc;
}

static void test_lookup_ok(void)
{
	static buf body, ans;
	fake f;
	fake_answer a;
	pskvault *pv;
	pskvault_key k;
	pskvault_detail d;
	pskvault_expect e;
	int rc;
	unsigned char want[32];
	const unsigned char *req_body;

	body.n = 0;
	key_fields(&body, 32, 1);
	put_field(&body, 0x7f, "later", 5); /* unknown: skipped */
	http_answer(&ans, 200, TLV, "", body.b, body.n);
	a.bytes = ans.b;
	a.len = ans.n;
	a.mode = ANS_NORMAL;
	fake_start(&f, &a, 1);
	pv = handle(f.path, 1000);
	memset(&e, 0, sizeof e);
	e.has_context = 1;
	e.context = (const uint8_t *)"\x07";
	e.context_len = 1;
	e.protocol = PSKVAULT_TLS13;
	rc = pskvault_lookup(pv, WIRE, sizeof WIRE, &e, &k, &d);
	CHECK(rc == PSKVAULT_OK, "lookup: %s", pskvault_strerror(rc));
	memset(want, 0xab, sizeof want);
	CHECK(k.ipskx_len == 32 && memcmp(k.ipskx, want, 32) == 0, "ipskx mismatch");
	CHECK(k.imported_identity_len == sizeof WIRE && memcmp(k.imported_identity, WIRE, sizeof WIRE) == 0, "imported identity");
	CHECK(k.identity_len == 2 && memcmp(k.identity, "id", 2) == 0, "identity");
	CHECK(k.context_len == 1 && k.context[0] == 7, "context");
	CHECK(k.protocol == 0x0304 && k.kdf == 1 && k.hash == 1 && k.role == PSKVAULT_ROLE_SERVER, "target/role");
	CHECK(k.flags == (PSKVAULT_F_DHE_REQUIRED | PSKVAULT_F_EARLY_DATA) && k.max_early_data == 16384, "policy");
	CHECK(k.generation == 2 && k.not_after == 0x71314500, "generation %u not_after %lld", k.generation, (long long)k.not_after);
	CHECK(d.http_status == 200 && d.code[0] == 0 && d.daemon_uid == -1, "detail");
	/* the request: POST /v1/lookup in the binary form, fields in order */
	CHECK(f.last_req_len > 0 && memcmp(f.last_req, "POST /v1/lookup HTTP/1.1\r\n", 26) == 0, "request line");
	CHECK(memmem(f.last_req, f.last_req_len, "\r\nContent-Type: application/vnd.pskvault.tlv\r\n", 46) != NULL, "content type");
	CHECK(memmem(f.last_req, f.last_req_len, "\r\nAccept: application/vnd.pskvault.tlv\r\n", 40) != NULL, "accept");
	req_body = (unsigned char *)memmem(f.last_req, f.last_req_len, "\r\n\r\n", 4) + 4;
	{
		static const unsigned char want_req[] = {
			0x01, 0, 0, 0, 11, 0x00, 0x02, 'i', 'd', 0x00, 0x01, 0x07, 0x03, 0x04, 0x00, 0x01,
			0x02, 0, 0, 0, 1, 0x07,
			0x03, 0, 0, 0, 2, 0x03, 0x04};
		CHECK((size_t)(f.last_req + f.last_req_len - req_body) == sizeof want_req && memcmp(req_body, want_req, sizeof want_req) == 0, "request body");
	}
	pskvault_key_clear(&k);
	CHECK(k.imported_identity == NULL && k.ipskx_len == 0 && k.ipskx[0] == 0, "clear");
	pskvault_key_clear(&k); /* twice is fine */
	/* keep-alive: a second lookup reuses the connection */
	rc = pskvault_lookup(pv, WIRE, sizeof WIRE, NULL, &k, NULL);
	CHECK(rc == PSKVAULT_OK && f.conns == 1, "keep-alive: rc %d conns %d", rc, f.conns);
	pskvault_key_clear(&k);
	pskvault_free(pv);
	fake_stop(&f);
}

static void test_stale_connection(void)
{
	static buf body, ans;
	fake f;
	fake_answer a;
	pskvault *pv;
	pskvault_key k;
	int rc, i;
	body.n = 0;
	key_fields(&body, 32, 1);
	http_answer(&ans, 200, TLV, "", body.b, body.n);
	/* the daemon closes every connection after answering without saying so
	 * (an idle timeout): each next request must retry once, transparently */
	a.bytes = ans.b;
	a.len = ans.n;
	a.mode = ANS_CLOSE_AFTER;
	fake_start(&f, &a, 1);
	pv = handle(f.path, 1000);
	for (i = 0; i < 3; i++) {
		rc = pskvault_lookup(pv, WIRE, sizeof WIRE, NULL, &k, NULL);
		CHECK(rc == PSKVAULT_OK, "lookup %d after a stale connection: %s", i, pskvault_strerror(rc));
		pskvault_key_clear(&k);
	}
	CHECK(f.conns == 3, "connections %d", f.conns);
	pskvault_free(pv);
	fake_stop(&f);
}

static void test_errors(void)
{
	static buf ans, body;
	pskvault_key k;
	pskvault_detail d;
	int rc;
	struct {
		int status;
		const char *code;
		int want;
	} cases[] = {
		{404, "no_key", PSKVAULT_ENOKEY}, {403, "revoked", PSKVAULT_EREFUSED}, {503, "backend_unavailable", PSKVAULT_EUNAVAILABLE},
		{400, "bad_request", PSKVAULT_EREQUEST}, {500, "internal", PSKVAULT_EDAEMON}, {507, "insufficient_storage", PSKVAULT_EDAEMON},
	};
	size_t i;
	for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		char extra[80];
		const char *j = "{\"code\":\"x\",\"message\":\"y\"}\n";
		snprintf(extra, sizeof extra, "Pskvault-Error: %s\r\n", cases[i].code);
		http_answer(&ans, cases[i].status, "application/json", extra, j, strlen(j));
		rc = one_lookup(ans.b, ans.n, ANS_NORMAL, &k, &d);
		CHECK(rc == cases[i].want && d.http_status == cases[i].status && strcmp(d.code, cases[i].code) == 0,
		      "status %d: rc %d (%s) code %s", cases[i].status, rc, pskvault_strerror(rc), d.code);
		CHECK(k.imported_identity == NULL && k.ipskx_len == 0, "key left set on error");
	}
	/* a long, hostile error code is truncated and sanitised */
	http_answer(&ans, 404, "application/json", "Pskvault-Error: \x01\x02" "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n", "", 0);
	rc = one_lookup(ans.b, ans.n, ANS_NORMAL, &k, &d);
	CHECK(rc == PSKVAULT_ENOKEY && strlen(d.code) == sizeof d.code - 1 && d.code[0] == '?', "hostile code: %s", d.code);

	/* malformed answers */
	{
		struct {
			const char *name;
			const char *raw;
			int want;
		} raw[] = {
			{"not HTTP", "SSH-2.0-OpenSSH\r\n\r\n", PSKVAULT_EPROTO},
			{"no Content-Length", "HTTP/1.1 200 OK\r\nContent-Type: application/vnd.pskvault.tlv\r\n\r\n", PSKVAULT_EPROTO},
			{"chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 0\r\n\r\n", PSKVAULT_EPROTO},
			{"two Content-Lengths", "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\n", PSKVAULT_EPROTO},
			{"bad Content-Length", "HTTP/1.1 200 OK\r\nContent-Length: 1x\r\n\r\n", PSKVAULT_EPROTO},
			{"truncated body", "HTTP/1.1 200 OK\r\nContent-Type: application/vnd.pskvault.tlv\r\nContent-Length: 50\r\n\r\n\x01\x00", PSKVAULT_EIO},
			{"trailing bytes", "HTTP/1.1 404 OK\r\nContent-Length: 0\r\n\r\nHTTP/1.1", PSKVAULT_EPROTO},
			{"JSON 200", "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}", PSKVAULT_EPROTO},
			{"over max_answer", "HTTP/1.1 200 OK\r\nContent-Length: 100001\r\n\r\n", PSKVAULT_ETOOBIG},
			{"huge Content-Length", "HTTP/1.1 200 OK\r\nContent-Length: 999999999999\r\n\r\n", PSKVAULT_ETOOBIG},
			{"bad status", "HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n", PSKVAULT_EPROTO},
			{"empty key", "HTTP/1.1 200 OK\r\nContent-Type: application/vnd.pskvault.tlv\r\nContent-Length: 0\r\n\r\n", PSKVAULT_EPROTO},
		};
		for (i = 0; i < sizeof raw / sizeof raw[0]; i++) {
			rc = one_lookup((const unsigned char *)raw[i].raw, strlen(raw[i].raw), ANS_CLOSE_AFTER, &k, &d);
			CHECK(rc == raw[i].want, "%s: got %d (%s), want %d", raw[i].name, rc, pskvault_strerror(rc), raw[i].want);
		}
	}
	/* a head that never ends */
	{
		static unsigned char big[40000];
		memset(big, 'a', sizeof big);
		memcpy(big, "HTTP/1.1 200 OK\r\nX: ", 20);
		rc = one_lookup(big, sizeof big, ANS_CLOSE_AFTER, &k, &d);
		CHECK(rc == PSKVAULT_EPROTO, "endless head: %d", rc);
	}
	/* malformed keys */
	{
		unsigned char key[32] = {0};
		struct {
			const char *name;
			int kind;
		} bad[] = {{"duplicate ipskx", 0}, {"ipskx too long for the KDF", 1}, {"no imported identity", 2},
		           {"field beyond the body", 3}, {"short flags", 4}, {"ipskx over 64 bytes", 5}, {"truncated header", 6}};
		for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
			body.n = 0;
			switch (bad[i].kind) {
			case 0: key_fields(&body, 32, 1); put_field(&body, 0x08, key, 32); break;
			case 1: key_fields(&body, 48, 1); break;
			case 2: put_field(&body, 0x08, key, 32); break;
			case 3: key_fields(&body, 32, 1); body.b[body.n++] = 0x05; memcpy(body.b + body.n, "\x00\x00\x01\x00", 4); body.n += 4; break;
			case 4: key_fields(&body, 32, 1); body.n = 0; put_field(&body, 0x01, WIRE, sizeof WIRE); put_field(&body, 0x08, key, 32); put_field(&body, 0x0a, "\x01", 1); break;
			case 5: { unsigned char k2[65] = {0}; put_field(&body, 0x01, WIRE, sizeof WIRE); put_field(&body, 0x08, k2, 65); break; }
			case 6: key_fields(&body, 32, 1); body.b[body.n++] = 0x01; body.b[body.n++] = 0; break;
			}
			http_answer(&ans, 200, TLV, "", body.b, body.n);
			rc = one_lookup(ans.b, ans.n, ANS_NORMAL, &k, &d);
			CHECK(rc == PSKVAULT_EPROTO && k.ipskx_len == 0 && k.imported_identity == NULL, "%s: %d", bad[i].name, rc);
		}
	}
}

static void test_offers(void)
{
	static buf one, body, ans;
	fake f;
	fake_answer a[2];
	pskvault *pv;
	pskvault_key *keys = NULL;
	size_t n = 99;
	int rc;
	const unsigned char *rb;

	one.n = 0;
	key_fields(&one, 48, 2);
	put_field(&one, 0x33, "x", 1);
	body.n = 0;
	put_field(&body, 0x20, one.b, one.n);
	put_field(&body, 0x44, "top-level future field", 22);
	one.n = 0;
	key_fields(&one, 48, 2);
	put_field(&body, 0x20, one.b, one.n);
	http_answer(&ans, 200, TLV, "", body.b, body.n);
	a[0].bytes = ans.b;
	a[0].len = ans.n;
	a[0].mode = ANS_NORMAL;
	a[1].bytes = (const unsigned char *)"HTTP/1.1 200 OK\r\nContent-Type: application/vnd.pskvault.tlv\r\nContent-Length: 0\r\n\r\n";
	a[1].len = strlen((const char *)a[1].bytes);
	a[1].mode = ANS_NORMAL;
	fake_start(&f, a, 2);
	pv = handle(f.path, 1000);
	rc = pskvault_offers(pv, "node-b", (const uint8_t *)"\x01\x02", 2, PSKVAULT_TLS13, PSKVAULT_KDF_SHA384, &keys, &n, NULL);
	CHECK(rc == PSKVAULT_OK && n == 2 && keys != NULL, "offers: %s n=%zu", pskvault_strerror(rc), n);
	if (rc == PSKVAULT_OK && n == 2)
		CHECK(keys[0].ipskx_len == 48 && keys[1].ipskx_len == 48 && keys[1].kdf == 2, "offer keys");
	rb = (unsigned char *)memmem(f.last_req, f.last_req_len, "\r\n\r\n", 4) + 4;
	{
		static const unsigned char want_req[] = {0x06, 0, 0, 0, 6, 'n', 'o', 'd', 'e', '-', 'b', 0x02, 0, 0, 0, 2, 1, 2,
		                                         0x03, 0, 0, 0, 2, 0x03, 0x04, 0x04, 0, 0, 0, 2, 0, 2};
		CHECK(memcmp(f.last_req, "POST /v1/offers ", 16) == 0 && (size_t)(f.last_req + f.last_req_len - rb) == sizeof want_req &&
		          memcmp(rb, want_req, sizeof want_req) == 0,
		      "offers request");
	}
	pskvault_keys_free(keys, n);
	rc = pskvault_offers(pv, "node-b", NULL, 0, PSKVAULT_TLS13, PSKVAULT_KDF_SHA384, &keys, &n, NULL);
	CHECK(rc == PSKVAULT_OK && n == 0 && keys == NULL, "no offers: %d n=%zu", rc, n);
	CHECK(pskvault_offers(pv, "", NULL, 0, PSKVAULT_TLS13, 1, &keys, &n, NULL) == PSKVAULT_EINVAL, "empty node");
	pskvault_free(pv);
	fake_stop(&f);
}

static void test_derive_request(void)
{
	static buf body, ans;
	fake f;
	fake_answer a;
	pskvault *pv;
	pskvault_key k;
	pskvault_derive_req r;
	int rc;
	const unsigned char *rb;
	static const unsigned char want_req[] = {0x05, 0, 0, 0, 3, 'a', 'b', 'c', 0x02, 0, 0, 0, 0, 0x03, 0, 0, 0, 2, 0xfe, 0xfc,
	                                         0x04, 0, 0, 0, 2, 0, 1, 0x06, 0, 0, 0, 1, 'p', 0x07, 0, 0, 0, 1, 1};
	body.n = 0;
	key_fields(&body, 32, 1);
	http_answer(&ans, 200, TLV, "", body.b, body.n);
	a.bytes = ans.b;
	a.len = ans.n;
	a.mode = ANS_NORMAL;
	fake_start(&f, &a, 1);
	pv = handle(f.path, 1000);
	memset(&r, 0, sizeof r);
	r.identity = (const uint8_t *)"abc";
	r.identity_len = 3;
	r.protocol = PSKVAULT_DTLS13;
	r.kdf = PSKVAULT_KDF_SHA256;
	r.peer = "p";
	r.role = PSKVAULT_ROLE_CLIENT;
	rc = pskvault_derive(pv, &r, &k, NULL);
	CHECK(rc == PSKVAULT_OK, "derive: %s", pskvault_strerror(rc));
	rb = (unsigned char *)memmem(f.last_req, f.last_req_len, "\r\n\r\n", 4) + 4;
	CHECK(memcmp(f.last_req, "POST /v1/derive ", 16) == 0 && (size_t)(f.last_req + f.last_req_len - rb) == sizeof want_req &&
	          memcmp(rb, want_req, sizeof want_req) == 0,
	      "derive request");
	pskvault_key_clear(&k);
	r.role = 3;
	CHECK(pskvault_derive(pv, &r, &k, NULL) == PSKVAULT_EINVAL, "bad role accepted");
	pskvault_free(pv);
	fake_stop(&f);
}

static void test_timeout_and_connect(void)
{
	fake f;
	fake_answer a = {(const unsigned char *)"", 0, ANS_SILENT};
	pskvault *pv;
	pskvault_key k;
	pskvault_detail d;
	struct timespec t0, t1;
	long ms;
	int rc;
	fake_start(&f, &a, 1);
	pv = handle(f.path, 300);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	rc = pskvault_lookup(pv, WIRE, sizeof WIRE, NULL, &k, &d);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	ms = (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000;
	CHECK(rc == PSKVAULT_ETIMEOUT && ms >= 290 && ms < 3000, "silent daemon: rc %d after %ld ms", rc, ms);
	pskvault_free(pv);
	fake_stop(&f);

	pv = handle("/nonexistent/pskvault.sock", 300);
	rc = pskvault_lookup(pv, WIRE, sizeof WIRE, NULL, &k, &d);
	CHECK(rc == PSKVAULT_ECONNECT && d.sys_errno == ENOENT, "no socket: rc %d errno %d", rc, d.sys_errno);
	rc = pskvault_ping(pv, &d);
	CHECK(rc == PSKVAULT_ECONNECT, "ping without daemon: %d", rc);
	pskvault_free(pv);
}

static void test_untrusted_uid(void)
{
	static buf body, ans;
	fake f;
	fake_answer a;
	pskvault_config c;
	pskvault *pv;
	pskvault_key k;
	pskvault_detail d;
	int report[2], rc;
	pid_t pid;
	size_t got;

	if (getuid() != 0) {
		fprintf(stderr, "test_untrusted_uid: needs root to run a fake daemon as another uid; the Go tests cover it with setpriv\n");
		if (getenv("PSKVAULT_REQUIRE_SIMULATORS"))
			failures++;
		return;
	}
	body.n = 0;
	key_fields(&body, 32, 1);
	http_answer(&ans, 200, TLV, "", body.b, body.n);
	a.bytes = ans.b;
	a.len = ans.n;
	a.mode = ANS_NORMAL;
	pid = fake_start_as(&f, &a, 1, 65533, 65533, report);
	memset(&c, 0, sizeof c);
	c.socket_path = f.path;
	c.timeout_ms = 1000;
	if (pskvault_new(&c, &pv) != 0)
		exit(2);
	rc = pskvault_lookup(pv, WIRE, sizeof WIRE, NULL, &k, &d);
	CHECK(rc == PSKVAULT_EUNTRUSTED && d.daemon_uid == 65533, "uid 65533 daemon: rc %d uid %ld", rc, d.daemon_uid);
	rc = pskvault_ping(pv, &d);
	CHECK(rc == PSKVAULT_EUNTRUSTED, "ping: %d", rc);
	pskvault_free(pv);
	/* configured explicitly: trusted */
	c.daemon_uid_set = 1;
	c.daemon_uid = 65533;
	if (pskvault_new(&c, &pv) != 0)
		exit(2);
	rc = pskvault_lookup(pv, WIRE, sizeof WIRE, NULL, &k, &d);
	CHECK(rc == PSKVAULT_OK, "configured daemon uid: %s", pskvault_strerror(rc));
	pskvault_key_clear(&k);
	pskvault_free(pv);
	got = fake_stop_child(&f, pid, report);
	/* only the one trusted lookup reached the daemon: the refused
	 * connections sent nothing */
	CHECK(got != (size_t)-1 && got > 0 && got < 200, "bytes received by the untrusted daemon: %zu (want one request)", got);
}

static void *thread_lookups(void *arg)
{
	pskvault *pv = arg;
	int i;
	for (i = 0; i < 40; i++) {
		pskvault_key k;
		int rc = pskvault_lookup(pv, WIRE, sizeof WIRE, NULL, &k, NULL);
		CHECK(rc == PSKVAULT_OK, "thread lookup: %s", pskvault_strerror(rc));
		pskvault_key_clear(&k);
	}
	return NULL;
}

static void test_threads(void)
{
	static buf body, ans;
	fake f;
	fake_answer a;
	pskvault *pv;
	pthread_t th[4];
	int i;
	body.n = 0;
	key_fields(&body, 32, 1);
	http_answer(&ans, 200, TLV, "", body.b, body.n);
	a.bytes = ans.b;
	a.len = ans.n;
	a.mode = ANS_CLOSE_AFTER; /* the fake serves one connection at a time */
	fake_start(&f, &a, 1);
	pv = handle(f.path, 5000);
	for (i = 0; i < 4; i++)
		pthread_create(&th[i], NULL, thread_lookups, pv);
	for (i = 0; i < 4; i++)
		pthread_join(th[i], NULL);
	pskvault_free(pv);
	fake_stop(&f);
}

static void test_args(void)
{
	pskvault *pv = NULL;
	pskvault_config c;
	pskvault_key k;
	char hex[5];
	memset(&c, 0, sizeof c);
	c.socket_path = "/tmp/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
	CHECK(pskvault_new(&c, &pv) == PSKVAULT_EINVAL && pv == NULL, "long socket path");
	CHECK(pskvault_new(NULL, NULL) == PSKVAULT_EINVAL, "NULL out");
	CHECK(pskvault_new(NULL, &pv) == PSKVAULT_OK, "defaults");
	CHECK(pskvault_lookup(pv, WIRE, 0, NULL, &k, NULL) == PSKVAULT_EINVAL, "empty wire");
	CHECK(pskvault_lookup(pv, WIRE, 65536, NULL, &k, NULL) == PSKVAULT_EINVAL, "wire too long");
	CHECK(pskvault_lookup(pv, WIRE, sizeof WIRE, NULL, NULL, NULL) == PSKVAULT_EINVAL, "NULL out");
	pskvault_free(pv);
	pskvault_free(NULL);
	pskvault_key_clear(NULL);
	pskvault_keys_free(NULL, 3);
	CHECK(strcmp(pskvault_strerror(12345), "unknown pskvault status") == 0, "strerror");
	CHECK(pskvault_hex(hex, sizeof hex, (const uint8_t *)"\xab\xcd\xef", 3) == 4 && strcmp(hex, "abcd") == 0, "hex truncates");
	CHECK(pskvault_kdf_len(1) == 32 && pskvault_kdf_len(2) == 48 && pskvault_kdf_len(3) == 0, "kdf len");
}

int main(void)
{
	signal(SIGPIPE, SIG_IGN); /* the fake's writes; the library itself never needs this */
	test_args();
	test_lookup_ok();
	test_stale_connection();
	test_errors();
	test_offers();
	test_derive_request();
	test_timeout_and_connect();
	test_untrusted_uid();
	test_threads();
	if (failures) {
		fprintf(stderr, "test_core: %d failures\n", failures);
		return 1;
	}
	printf("test_core: ok\n");
	return 0;
}
