/*
 * libpskvault core: the data socket, daemon verification, HTTP/1.1 framing
 * and the binary (TLV) form of docs/API.md. libc only.
 */
#define _GNU_SOURCE /* SO_PEERCRED, struct ucred, explicit_bzero, MSG_NOSIGNAL */
#include "pskvault.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define MAX_HEAD 16384      /* the daemon's answer heads are a few hundred bytes */
#define MAX_IDLE_CAP 16
#define DEFAULT_TIMEOUT_MS 2000
#define DEFAULT_MAX_ANSWER (1u << 20)

/* Tags of the binary form (docs/API.md). */
enum {
	TAG_IMPORTED_IDENTITY = 0x01,
	TAG_CONTEXT = 0x02,
	TAG_PROTOCOL = 0x03,
	TAG_KDF = 0x04,
	TAG_IDENTITY = 0x05,
	TAG_NODE = 0x06,
	TAG_ROLE = 0x07,
	TAG_IPSKX = 0x08,
	TAG_HASH = 0x09,
	TAG_FLAGS = 0x0a,
	TAG_MAX_EARLY_DATA = 0x0b,
	TAG_GENERATION = 0x0c,
	TAG_NOT_AFTER = 0x0d,
	TAG_OFFER = 0x20
};

static const char CONTENT_TYPE_TLV[] = "application/vnd.pskvault.tlv";

struct pskvault {
	struct sockaddr_un addr;
	socklen_t addr_len;
	int timeout_ms;
	size_t max_answer;
	int max_idle;
	uid_t trusted[4];
	int ntrusted;

	pthread_mutex_t mu; /* guards idle, nidle, pid */
	int idle[MAX_IDLE_CAP];
	int nidle;
	pid_t pid;
};

const char *pskvault_strerror(int status)
{
	switch (status) {
	case PSKVAULT_OK: return "success";
	case PSKVAULT_EINVAL: return "invalid argument";
	case PSKVAULT_ENOMEM: return "out of memory";
	case PSKVAULT_ECONNECT: return "cannot connect to the pskvault data socket (is the daemon running?)";
	case PSKVAULT_EUNTRUSTED: return "the process behind the socket is not a trusted pskvault daemon (its uid is not root, yours, user pskvault's or the configured one)";
	case PSKVAULT_ETIMEOUT: return "the pskvault daemon did not answer in time";
	case PSKVAULT_EIO: return "input/output error on the pskvault socket";
	case PSKVAULT_EPROTO: return "malformed answer from the pskvault daemon";
	case PSKVAULT_ETOOBIG: return "answer from the pskvault daemon too large";
	case PSKVAULT_ENOKEY: return "no key for this identity";
	case PSKVAULT_EREFUSED: return "the pskvault daemon refused (revoked, expired, target not allowed or policy)";
	case PSKVAULT_EUNAVAILABLE: return "the vault's TPM or token is unavailable";
	case PSKVAULT_EREQUEST: return "the pskvault daemon found the request malformed";
	case PSKVAULT_EDAEMON: return "error answer from the pskvault daemon";
	case PSKVAULT_EPOLICY: return "the key's policy does not allow this use";
	case PSKVAULT_ETLS: return "TLS library error";
	}
	return "unknown pskvault status";
}

size_t pskvault_kdf_len(uint16_t kdf)
{
	switch (kdf) {
	case PSKVAULT_KDF_SHA256: return 32;
	case PSKVAULT_KDF_SHA384: return 48;
	}
	return 0;
}

size_t pskvault_hex(char *out, size_t out_size, const uint8_t *in, size_t n)
{
	static const char digits[] = "0123456789abcdef";
	size_t i, w = 0;
	if (out == NULL || out_size == 0)
		return 0;
	for (i = 0; i < n && w + 2 < out_size; i++) {
		out[w++] = digits[in[i] >> 4];
		out[w++] = digits[in[i] & 15];
	}
	out[w] = '\0';
	return w;
}

void pskvault_key_clear(pskvault_key *k)
{
	if (k == NULL)
		return;
	explicit_bzero(k->ipskx, sizeof k->ipskx);
	if (k->imported_identity) {
		explicit_bzero(k->imported_identity, k->imported_identity_len);
		free(k->imported_identity);
	}
	if (k->identity) {
		explicit_bzero(k->identity, k->identity_len);
		free(k->identity);
	}
	if (k->context) {
		explicit_bzero(k->context, k->context_len);
		free(k->context);
	}
	memset(k, 0, sizeof *k);
}

void pskvault_keys_free(pskvault_key *keys, size_t n)
{
	size_t i;
	if (keys == NULL)
		return;
	for (i = 0; i < n; i++)
		pskvault_key_clear(&keys[i]);
	free(keys);
}

static void detail_reset(pskvault_detail *d)
{
	if (d) {
		d->http_status = 0;
		d->code[0] = '\0';
		d->daemon_uid = -1;
		d->sys_errno = 0;
	}
}

int pskvault_new(const pskvault_config *cfg, pskvault **out)
{
	pskvault_config defaults;
	const char *path;
	size_t len;
	pskvault *pv;
	struct passwd pw, *pwp = NULL;
	char pwbuf[4096];

	if (out == NULL)
		return PSKVAULT_EINVAL;
	*out = NULL;
	if (cfg == NULL) {
		memset(&defaults, 0, sizeof defaults);
		cfg = &defaults;
	}
	path = cfg->socket_path ? cfg->socket_path : PSKVAULT_DEFAULT_SOCKET;
	len = strlen(path);
	if (len == 0 || len >= sizeof(((struct sockaddr_un *)0)->sun_path) || cfg->timeout_ms < 0)
		return PSKVAULT_EINVAL;
	pv = calloc(1, sizeof *pv);
	if (pv == NULL)
		return PSKVAULT_ENOMEM;
	pv->addr.sun_family = AF_UNIX;
	memcpy(pv->addr.sun_path, path, len + 1);
	pv->addr_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len + 1);
	pv->timeout_ms = cfg->timeout_ms ? cfg->timeout_ms : DEFAULT_TIMEOUT_MS;
	pv->max_answer = cfg->max_answer ? cfg->max_answer : DEFAULT_MAX_ANSWER;
	pv->max_idle = cfg->max_idle == 0 ? 4 : cfg->max_idle < 0 ? 0 : cfg->max_idle;
	if (pv->max_idle > MAX_IDLE_CAP)
		pv->max_idle = MAX_IDLE_CAP;
	pv->trusted[pv->ntrusted++] = 0;
	pv->trusted[pv->ntrusted++] = geteuid();
	if (getpwnam_r("pskvault", &pw, pwbuf, sizeof pwbuf, &pwp) == 0 && pwp != NULL)
		pv->trusted[pv->ntrusted++] = pwp->pw_uid;
	if (cfg->daemon_uid_set)
		pv->trusted[pv->ntrusted++] = cfg->daemon_uid;
	if (pthread_mutex_init(&pv->mu, NULL) != 0) {
		free(pv);
		return PSKVAULT_ENOMEM;
	}
	pv->pid = getpid();
	*out = pv;
	return PSKVAULT_OK;
}

void pskvault_free(pskvault *pv)
{
	int i;
	if (pv == NULL)
		return;
	if (pv->pid == getpid())
		for (i = 0; i < pv->nidle; i++)
			close(pv->idle[i]);
	pthread_mutex_destroy(&pv->mu);
	free(pv);
}

/* ---- connections ---- */

static int pool_pop(pskvault *pv);

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* waitfd polls fd for events until deadline: 0, or PSKVAULT_ETIMEOUT/EIO. */
static int waitfd(int fd, short events, int64_t deadline, pskvault_detail *d)
{
	for (;;) {
		struct pollfd p;
		int64_t left = deadline - now_ms();
		int r;
		if (left <= 0)
			return PSKVAULT_ETIMEOUT;
		p.fd = fd;
		p.events = events;
		p.revents = 0;
		r = poll(&p, 1, left > 1000000 ? 1000000 : (int)left);
		if (r > 0)
			return 0;
		if (r == 0)
			return PSKVAULT_ETIMEOUT;
		if (errno != EINTR) {
			if (d)
				d->sys_errno = errno;
			return PSKVAULT_EIO;
		}
	}
}

/* verify checks the uid behind a connected socket. */
static int verify(const pskvault *pv, int fd, pskvault_detail *d)
{
	struct ucred cred;
	socklen_t len = sizeof cred;
	int i;
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0 || len != sizeof cred) {
		if (d)
			d->sys_errno = errno;
		return PSKVAULT_EUNTRUSTED;
	}
	for (i = 0; i < pv->ntrusted; i++)
		if (cred.uid == pv->trusted[i])
			return PSKVAULT_OK;
	if (d)
		d->daemon_uid = (long)cred.uid;
	return PSKVAULT_EUNTRUSTED;
}

static int dial(const pskvault *pv, int64_t deadline, int *out, pskvault_detail *d)
{
	int fd, rc, err;
	socklen_t elen = sizeof err;

	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0) {
		if (d)
			d->sys_errno = errno;
		return errno == ENOMEM || errno == ENOBUFS ? PSKVAULT_ENOMEM : PSKVAULT_ECONNECT;
	}
	if (connect(fd, (const struct sockaddr *)&pv->addr, pv->addr_len) != 0) {
		if (errno != EINPROGRESS && errno != EAGAIN) {
			if (d)
				d->sys_errno = errno;
			close(fd);
			return PSKVAULT_ECONNECT;
		}
		/* A full listen backlog: wait for the daemon to accept. */
		if ((rc = waitfd(fd, POLLOUT, deadline, d)) != 0) {
			close(fd);
			return rc;
		}
		if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &elen) != 0 || err != 0) {
			if (d)
				d->sys_errno = err;
			close(fd);
			return PSKVAULT_ECONNECT;
		}
	}
	if ((rc = verify(pv, fd, d)) != PSKVAULT_OK) {
		close(fd);
		return rc;
	}
	*out = fd;
	return PSKVAULT_OK;
}

/* alive reports whether an idle connection is still open: the daemon sends
 * nothing between answers, so anything readable (end of file) means it hung
 * up. */
static int alive(int fd)
{
	struct pollfd p;
	p.fd = fd;
	p.events = POLLIN | POLLRDHUP;
	p.revents = 0;
	return poll(&p, 1, 0) == 0;
}

/* pool_get returns an idle connection that is still open, or -1. */
static int pool_get(pskvault *pv)
{
	int fd;
	for (;;) {
		fd = pool_pop(pv);
		if (fd < 0 || alive(fd))
			return fd;
		close(fd);
	}
}

static int pool_pop(pskvault *pv)
{
	int fd = -1, i;
	pthread_mutex_lock(&pv->mu);
	if (pv->pid != getpid()) {
		/* forked: these are the parent's connections; forget (never share) them */
		for (i = 0; i < pv->nidle; i++)
			close(pv->idle[i]);
		pv->nidle = 0;
		pv->pid = getpid();
	}
	if (pv->nidle > 0)
		fd = pv->idle[--pv->nidle];
	pthread_mutex_unlock(&pv->mu);
	return fd;
}

static void pool_put(pskvault *pv, int fd)
{
	pthread_mutex_lock(&pv->mu);
	if (pv->pid == getpid() && pv->nidle < pv->max_idle) {
		pv->idle[pv->nidle++] = fd;
		fd = -1;
	}
	pthread_mutex_unlock(&pv->mu);
	if (fd >= 0)
		close(fd);
}

/* ---- HTTP exchange ---- */

/* An answer read from the socket. body points into buf. buf may hold key
 * material: answer_free wipes it. */
typedef struct answer {
	uint8_t *buf;
	size_t cap;
	int status;
	int binary; /* Content-Type is the binary form */
	int keep;   /* the connection may be reused */
	const uint8_t *body;
	size_t body_len;
} answer;

static void answer_free(answer *a)
{
	if (a->buf) {
		explicit_bzero(a->buf, a->cap);
		free(a->buf);
	}
	memset(a, 0, sizeof *a);
}

static int send_all(int fd, struct iovec *iov, int iovcnt, int64_t deadline, pskvault_detail *d)
{
	while (iovcnt > 0) {
		struct msghdr m;
		ssize_t w;
		memset(&m, 0, sizeof m);
		m.msg_iov = iov;
		m.msg_iovlen = (size_t)iovcnt;
		w = sendmsg(fd, &m, MSG_NOSIGNAL);
		if (w < 0) {
			int rc;
			if (errno == EINTR)
				continue;
			if (errno != EAGAIN && errno != EWOULDBLOCK) {
				if (d)
					d->sys_errno = errno;
				return PSKVAULT_EIO;
			}
			if ((rc = waitfd(fd, POLLOUT, deadline, d)) != 0)
				return rc;
			continue;
		}
		while (iovcnt > 0 && (size_t)w >= iov->iov_len) {
			w -= (ssize_t)iov->iov_len;
			iov++;
			iovcnt--;
		}
		if (iovcnt > 0) {
			iov->iov_base = (char *)iov->iov_base + w;
			iov->iov_len -= (size_t)w;
		}
	}
	return 0;
}

/* ieq compares a[0..n) with the string b, ASCII case-insensitively. */
static int ieq(const char *a, size_t n, const char *b)
{
	size_t i;
	if (strlen(b) != n)
		return 0;
	for (i = 0; i < n; i++) {
		char x = a[i], y = b[i];
		if (x >= 'A' && x <= 'Z')
			x = (char)(x - 'A' + 'a');
		if (y >= 'A' && y <= 'Z')
			y = (char)(y - 'A' + 'a');
		if (x != y)
			return 0;
	}
	return 1;
}

/* hdr_eq: the header line is "name:..." (name case-insensitive). */
static int hdr_eq(const char *line, size_t n, const char *name)
{
	size_t l = strlen(name);
	return n >= l + 1 && line[l] == ':' && ieq(line, l, name);
}

/* hdr_value returns the trimmed value of a header line. */
static const char *hdr_value(const char *line, size_t n, const char *name, size_t *vlen)
{
	const char *v = line + strlen(name) + 1, *end = line + n;
	while (v < end && (*v == ' ' || *v == '\t'))
		v++;
	while (end > v && (end[-1] == ' ' || end[-1] == '\t'))
		end--;
	*vlen = (size_t)(end - v);
	return v;
}

/* parse_head parses the status line and headers in buf[0..n) (n excludes
 * the blank line). */
static int parse_head(const char *buf, size_t n, answer *a, size_t *content_len, pskvault_detail *d)
{
	const char *p = buf, *end = buf + n, *eol;
	int have_len = 0;
	size_t cl = 0;

	/* HTTP/1.1 200 OK */
	eol = memchr(p, '\r', (size_t)(end - p));
	if (eol == NULL)
		eol = end;
	if (eol - p < 12 || memcmp(p, "HTTP/1.", 7) != 0 || (p[7] != '0' && p[7] != '1') || p[8] != ' ' ||
	    p[9] < '1' || p[9] > '5' || p[10] < '0' || p[10] > '9' || p[11] < '0' || p[11] > '9' ||
	    (eol - p > 12 && p[12] != ' '))
		return PSKVAULT_EPROTO;
	a->status = (p[9] - '0') * 100 + (p[10] - '0') * 10 + (p[11] - '0');
	a->keep = p[7] == '1';
	p = eol;
	while (p < end) {
		size_t ln, vl;
		const char *v;
		if (end - p < 2 || p[0] != '\r' || p[1] != '\n')
			return PSKVAULT_EPROTO;
		p += 2;
		eol = memchr(p, '\r', (size_t)(end - p));
		if (eol == NULL)
			eol = end;
		ln = (size_t)(eol - p);
		if (hdr_eq(p, ln, "Content-Length")) {
			size_t i;
			v = hdr_value(p, ln, "Content-Length", &vl);
			if (have_len || vl == 0 || vl > 12)
				return PSKVAULT_EPROTO;
			for (i = 0; i < vl; i++) {
				if (v[i] < '0' || v[i] > '9')
					return PSKVAULT_EPROTO;
				cl = cl * 10 + (size_t)(v[i] - '0');
			}
			have_len = 1;
		} else if (hdr_eq(p, ln, "Content-Type")) {
			v = hdr_value(p, ln, "Content-Type", &vl);
			a->binary = ieq(v, vl, CONTENT_TYPE_TLV);
		} else if (hdr_eq(p, ln, "Connection")) {
			v = hdr_value(p, ln, "Connection", &vl);
			if (ieq(v, vl, "close"))
				a->keep = 0;
		} else if (hdr_eq(p, ln, "Transfer-Encoding")) {
			return PSKVAULT_EPROTO; /* the daemon always sends Content-Length */
		} else if (hdr_eq(p, ln, "Pskvault-Error") && d) {
			size_t i;
			v = hdr_value(p, ln, "Pskvault-Error", &vl);
			if (vl >= sizeof d->code)
				vl = sizeof d->code - 1;
			for (i = 0; i < vl; i++)
				d->code[i] = (v[i] >= 0x21 && v[i] <= 0x7e) ? v[i] : '?';
			d->code[vl] = '\0';
		}
		p = eol;
	}
	if (!have_len && a->status != 204)
		return PSKVAULT_EPROTO;
	*content_len = cl;
	return 0;
}

/* read_answer reads one complete answer. *got_any tells whether any byte
 * arrived (a stale kept-alive connection fails with none). */
static int read_answer(const pskvault *pv, int fd, int64_t deadline, answer *a, int *got_any, pskvault_detail *d)
{
	size_t have = 0, head_end = 0, cl = 0, total = 0;
	int rc;

	a->cap = 4096;
	a->buf = malloc(a->cap);
	if (a->buf == NULL)
		return PSKVAULT_ENOMEM;
	for (;;) {
		ssize_t r;
		if (head_end == 0) {
			/* look for the end of the head */
			size_t i;
			for (i = 0; i + 3 < have; i++)
				if (a->buf[i] == '\r' && a->buf[i + 1] == '\n' && a->buf[i + 2] == '\r' && a->buf[i + 3] == '\n')
					break;
			if (i + 3 < have) {
				head_end = i + 4;
				if ((rc = parse_head((const char *)a->buf, i, a, &cl, d)) != 0)
					return rc;
				if (cl > pv->max_answer)
					return PSKVAULT_ETOOBIG;
				total = head_end + cl;
				if (total > a->cap) {
					uint8_t *nb = malloc(total);
					if (nb == NULL)
						return PSKVAULT_ENOMEM;
					memcpy(nb, a->buf, have);
					explicit_bzero(a->buf, a->cap);
					free(a->buf);
					a->buf = nb;
					a->cap = total;
				}
			} else if (have >= MAX_HEAD) {
				return PSKVAULT_EPROTO;
			}
		}
		if (head_end != 0 && have >= total) {
			if (have > total)
				return PSKVAULT_EPROTO; /* bytes after the answer: never from the daemon */
			a->body = a->buf + head_end;
			a->body_len = cl;
			return 0;
		}
		if (head_end == 0 && have == a->cap) {
			size_t ncap = a->cap * 2 > MAX_HEAD ? MAX_HEAD : a->cap * 2;
			uint8_t *nb = malloc(ncap);
			if (nb == NULL)
				return PSKVAULT_ENOMEM;
			memcpy(nb, a->buf, have);
			explicit_bzero(a->buf, a->cap);
			free(a->buf);
			a->buf = nb;
			a->cap = ncap;
		}
		r = recv(fd, a->buf + have, (head_end ? total : a->cap) - have, 0);
		if (r > 0) {
			have += (size_t)r;
			*got_any = 1;
			continue;
		}
		if (r == 0) {
			if (d)
				d->sys_errno = 0;
			return PSKVAULT_EIO; /* hung up before the end of the answer */
		}
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN && errno != EWOULDBLOCK) {
			if (d)
				d->sys_errno = errno;
			return PSKVAULT_EIO;
		}
		if ((rc = waitfd(fd, POLLIN, deadline, d)) != 0)
			return rc;
	}
}

/* exchange sends one request and reads its answer into *a. */
static int exchange(pskvault *pv, const char *method, const char *path, const uint8_t *body, size_t body_len,
                    answer *a, pskvault_detail *d)
{
	char head[512];
	int hl, attempt, rc = PSKVAULT_EIO;
	int64_t deadline = now_ms() + pv->timeout_ms;

	if (body)
		hl = snprintf(head, sizeof head,
		              "%s %s HTTP/1.1\r\nHost: pskvault\r\nUser-Agent: libpskvault/" PSKVAULT_VERSION
		              "\r\nContent-Type: %s\r\nAccept: %s\r\nContent-Length: %zu\r\n\r\n",
		              method, path, CONTENT_TYPE_TLV, CONTENT_TYPE_TLV, body_len);
	else
		hl = snprintf(head, sizeof head,
		              "%s %s HTTP/1.1\r\nHost: pskvault\r\nUser-Agent: libpskvault/" PSKVAULT_VERSION
		              "\r\nAccept: %s\r\n\r\n",
		              method, path, CONTENT_TYPE_TLV);
	if (hl < 0 || (size_t)hl >= sizeof head)
		return PSKVAULT_EINVAL;
	for (attempt = 0; attempt < 2; attempt++) {
		struct iovec iov[2];
		/* the retry always dials: another pooled connection may be stale too */
		int fd = attempt == 0 ? pool_get(pv) : -1, reused = fd >= 0, got_any = 0;
		if (!reused && (rc = dial(pv, deadline, &fd, d)) != 0)
			return rc;
		iov[0].iov_base = head;
		iov[0].iov_len = (size_t)hl;
		iov[1].iov_base = (void *)body;
		iov[1].iov_len = body_len;
		rc = send_all(fd, iov, body ? 2 : 1, deadline, d);
		if (rc == 0)
			rc = read_answer(pv, fd, deadline, a, &got_any, d);
		if (rc == 0) {
			if (a->keep)
				pool_put(pv, fd);
			else
				close(fd);
			return 0;
		}
		close(fd);
		answer_free(a);
		/* An idle connection the daemon closed: resend once on a new one. */
		if (!(reused && !got_any && rc == PSKVAULT_EIO))
			return rc;
		if (d)
			d->sys_errno = 0;
	}
	return rc;
}

/* status_of maps an error answer to a status. */
static int status_of(const answer *a, const pskvault_detail *d)
{
	const char *code = d ? d->code : "";
	switch (a->status) {
	case 404:
		return PSKVAULT_ENOKEY; /* no_key, not_found (or not allowed: same answer) */
	case 403:
		return PSKVAULT_EREFUSED;
	case 503:
		return PSKVAULT_EUNAVAILABLE;
	case 400:
	case 413:
	case 417:
	case 431:
		return PSKVAULT_EREQUEST;
	}
	(void)code;
	return PSKVAULT_EDAEMON;
}

/* ---- binary form ---- */

typedef struct wbuf {
	uint8_t *b;
	size_t n, cap;
	int oom;
} wbuf;

static void wb_put(wbuf *w, uint8_t tag, const uint8_t *v, size_t n)
{
	size_t need = w->n + 5 + n;
	if (w->oom)
		return;
	if (need > w->cap) {
		size_t ncap = need < 256 ? 256 : need * 2;
		uint8_t *nb = malloc(ncap);
		if (nb == NULL) {
			w->oom = 1;
			return;
		}
		if (w->b) {
			memcpy(nb, w->b, w->n);
			explicit_bzero(w->b, w->cap);
			free(w->b);
		}
		w->b = nb;
		w->cap = ncap;
	}
	w->b[w->n++] = tag;
	w->b[w->n++] = (uint8_t)(n >> 24);
	w->b[w->n++] = (uint8_t)(n >> 16);
	w->b[w->n++] = (uint8_t)(n >> 8);
	w->b[w->n++] = (uint8_t)n;
	if (n)
		memcpy(w->b + w->n, v, n);
	w->n += n;
}

static void wb_u16(wbuf *w, uint8_t tag, uint16_t x)
{
	uint8_t v[2];
	v[0] = (uint8_t)(x >> 8);
	v[1] = (uint8_t)x;
	wb_put(w, tag, v, 2);
}

static void wb_free(wbuf *w)
{
	if (w->b) {
		explicit_bzero(w->b, w->cap);
		free(w->b);
	}
	memset(w, 0, sizeof *w);
}

static uint32_t be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static int dup_bytes(uint8_t **dst, size_t *dlen, const uint8_t *v, size_t n)
{
	*dst = malloc(n ? n : 1);
	if (*dst == NULL)
		return PSKVAULT_ENOMEM;
	if (n)
		memcpy(*dst, v, n);
	*dlen = n;
	return 0;
}

/* parse_key decodes one key strictly (docs/API.md): unknown tags skipped,
 * known tags at most once and of their exact size, ImportedIdentity and
 * ipskx required, ipskx of the KDF's length. */
static int parse_key(const uint8_t *b, size_t n, pskvault_key *k)
{
	uint32_t seen = 0;
	int rc = 0;
	memset(k, 0, sizeof *k);
	while (n > 0) {
		uint8_t tag;
		size_t len;
		const uint8_t *v;
		if (n < 5) {
			rc = PSKVAULT_EPROTO;
			break;
		}
		tag = b[0];
		len = be32(b + 1);
		if (len > n - 5) {
			rc = PSKVAULT_EPROTO;
			break;
		}
		v = b + 5;
		b += 5 + len;
		n -= 5 + len;
		if (tag == 0 || tag > TAG_NOT_AFTER)
			continue; /* unknown: a later version's field */
		if (seen & (1u << tag)) {
			rc = PSKVAULT_EPROTO;
			break;
		}
		seen |= 1u << tag;
		switch (tag) {
		case TAG_IMPORTED_IDENTITY:
			rc = len == 0 || len > 65535 ? PSKVAULT_EPROTO : dup_bytes(&k->imported_identity, &k->imported_identity_len, v, len);
			break;
		case TAG_CONTEXT:
			rc = len > 65535 ? PSKVAULT_EPROTO : dup_bytes(&k->context, &k->context_len, v, len);
			break;
		case TAG_IDENTITY:
			rc = len > 65535 ? PSKVAULT_EPROTO : dup_bytes(&k->identity, &k->identity_len, v, len);
			break;
		case TAG_IPSKX:
			if (len == 0 || len > sizeof k->ipskx)
				rc = PSKVAULT_EPROTO;
			else {
				memcpy(k->ipskx, v, len);
				k->ipskx_len = len;
			}
			break;
		case TAG_PROTOCOL:
		case TAG_KDF:
		case TAG_HASH:
			if (len != 2) {
				rc = PSKVAULT_EPROTO;
				break;
			}
			if (tag == TAG_PROTOCOL)
				k->protocol = (uint16_t)(v[0] << 8 | v[1]);
			else if (tag == TAG_KDF)
				k->kdf = (uint16_t)(v[0] << 8 | v[1]);
			else
				k->hash = (uint16_t)(v[0] << 8 | v[1]);
			break;
		case TAG_ROLE:
			if (len != 1)
				rc = PSKVAULT_EPROTO;
			else
				k->role = v[0];
			break;
		case TAG_FLAGS:
		case TAG_MAX_EARLY_DATA:
		case TAG_GENERATION:
			if (len != 4) {
				rc = PSKVAULT_EPROTO;
				break;
			}
			if (tag == TAG_FLAGS)
				k->flags = be32(v);
			else if (tag == TAG_MAX_EARLY_DATA)
				k->max_early_data = be32(v);
			else
				k->generation = be32(v);
			break;
		case TAG_NOT_AFTER: {
			uint64_t s;
			if (len != 8) {
				rc = PSKVAULT_EPROTO;
				break;
			}
			s = (uint64_t)be32(v) << 32 | be32(v + 4);
			if (s > (uint64_t)INT64_MAX)
				rc = PSKVAULT_EPROTO;
			else
				k->not_after = (int64_t)s;
			break;
		}
		default:
			break; /* TAG_NODE: not part of a key */
		}
		if (rc)
			break;
	}
	if (rc == 0 && (k->imported_identity == NULL || k->ipskx_len == 0))
		rc = PSKVAULT_EPROTO;
	if (rc == 0 && k->kdf != 0 && pskvault_kdf_len(k->kdf) != 0 && k->ipskx_len != pskvault_kdf_len(k->kdf))
		rc = PSKVAULT_EPROTO;
	if (rc == 0 && !(k->flags & PSKVAULT_F_EARLY_DATA))
		k->max_early_data = 0;
	if (rc)
		pskvault_key_clear(k);
	return rc;
}

/* key_answer turns an answer into one key, or a status. */
static int key_answer(answer *a, pskvault_key *out, pskvault_detail *d)
{
	if (d)
		d->http_status = a->status;
	if (a->status != 200)
		return status_of(a, d);
	if (!a->binary)
		return PSKVAULT_EPROTO;
	if (d)
		d->code[0] = '\0';
	return parse_key(a->body, a->body_len, out);
}

static int check_key_out(pskvault_key *out)
{
	if (out == NULL)
		return PSKVAULT_EINVAL;
	memset(out, 0, sizeof *out);
	return 0;
}

int pskvault_ping(pskvault *pv, pskvault_detail *detail)
{
	answer a;
	int rc;
	detail_reset(detail);
	if (pv == NULL)
		return PSKVAULT_EINVAL;
	memset(&a, 0, sizeof a);
	rc = exchange(pv, "GET", "/v1/status", NULL, 0, &a, detail);
	if (rc == 0) {
		if (detail)
			detail->http_status = a.status;
		if (a.status != 200)
			rc = status_of(&a, detail);
	}
	answer_free(&a);
	return rc;
}

int pskvault_lookup(pskvault *pv, const uint8_t *wire, size_t wire_len, const pskvault_expect *expect,
                    pskvault_key *out, pskvault_detail *detail)
{
	wbuf w;
	answer a;
	int rc;
	detail_reset(detail);
	if (check_key_out(out) != 0 || pv == NULL || wire == NULL || wire_len == 0 || wire_len > 65535)
		return PSKVAULT_EINVAL;
	if (expect && ((expect->has_context && expect->context == NULL && expect->context_len != 0) ||
	               expect->context_len > 65535))
		return PSKVAULT_EINVAL;
	memset(&w, 0, sizeof w);
	memset(&a, 0, sizeof a);
	wb_put(&w, TAG_IMPORTED_IDENTITY, wire, wire_len);
	if (expect) {
		if (expect->has_context)
			wb_put(&w, TAG_CONTEXT, expect->context, expect->context_len);
		if (expect->protocol)
			wb_u16(&w, TAG_PROTOCOL, expect->protocol);
		if (expect->kdf)
			wb_u16(&w, TAG_KDF, expect->kdf);
	}
	if (w.oom) {
		wb_free(&w);
		return PSKVAULT_ENOMEM;
	}
	rc = exchange(pv, "POST", "/v1/lookup", w.b, w.n, &a, detail);
	wb_free(&w);
	if (rc == 0)
		rc = key_answer(&a, out, detail);
	answer_free(&a);
	return rc;
}

int pskvault_derive(pskvault *pv, const pskvault_derive_req *req, pskvault_key *out, pskvault_detail *detail)
{
	wbuf w;
	answer a;
	int rc;
	detail_reset(detail);
	if (check_key_out(out) != 0 || pv == NULL || req == NULL || req->identity == NULL || req->identity_len == 0 ||
	    req->identity_len > 65535 || (req->context == NULL && req->context_len != 0) || req->context_len > 65535 ||
	    req->protocol == 0 || req->kdf == 0 || (req->role != 0 && req->role != PSKVAULT_ROLE_CLIENT && req->role != PSKVAULT_ROLE_SERVER))
		return PSKVAULT_EINVAL;
	memset(&w, 0, sizeof w);
	memset(&a, 0, sizeof a);
	wb_put(&w, TAG_IDENTITY, req->identity, req->identity_len);
	wb_put(&w, TAG_CONTEXT, req->context, req->context_len);
	wb_u16(&w, TAG_PROTOCOL, req->protocol);
	wb_u16(&w, TAG_KDF, req->kdf);
	if (req->peer && req->peer[0])
		wb_put(&w, TAG_NODE, (const uint8_t *)req->peer, strlen(req->peer));
	if (req->role) {
		uint8_t r = (uint8_t)req->role;
		wb_put(&w, TAG_ROLE, &r, 1);
	}
	if (w.oom) {
		wb_free(&w);
		return PSKVAULT_ENOMEM;
	}
	rc = exchange(pv, "POST", "/v1/derive", w.b, w.n, &a, detail);
	wb_free(&w);
	if (rc == 0)
		rc = key_answer(&a, out, detail);
	answer_free(&a);
	return rc;
}

int pskvault_offers(pskvault *pv, const char *server_node, const uint8_t *context, size_t context_len,
                    uint16_t protocol, uint16_t kdf, pskvault_key **out, size_t *n, pskvault_detail *detail)
{
	wbuf w;
	answer a;
	int rc;
	size_t cnt = 0, i;
	const uint8_t *b;
	size_t left;
	pskvault_key *keys = NULL;

	detail_reset(detail);
	if (out)
		*out = NULL;
	if (n)
		*n = 0;
	if (pv == NULL || out == NULL || n == NULL || server_node == NULL || server_node[0] == '\0' ||
	    strlen(server_node) > 255 || (context == NULL && context_len != 0) || context_len > 65535 || protocol == 0 || kdf == 0)
		return PSKVAULT_EINVAL;
	memset(&w, 0, sizeof w);
	memset(&a, 0, sizeof a);
	wb_put(&w, TAG_NODE, (const uint8_t *)server_node, strlen(server_node));
	wb_put(&w, TAG_CONTEXT, context, context_len);
	wb_u16(&w, TAG_PROTOCOL, protocol);
	wb_u16(&w, TAG_KDF, kdf);
	if (w.oom) {
		wb_free(&w);
		return PSKVAULT_ENOMEM;
	}
	rc = exchange(pv, "POST", "/v1/offers", w.b, w.n, &a, detail);
	wb_free(&w);
	if (rc != 0)
		goto done;
	if (detail)
		detail->http_status = a.status;
	if (a.status != 200) {
		rc = status_of(&a, detail);
		goto done;
	}
	if (!a.binary) {
		rc = PSKVAULT_EPROTO;
		goto done;
	}
	/* count the offers, checking the framing */
	for (b = a.body, left = a.body_len; left > 0;) {
		size_t len;
		if (left < 5 || (len = be32(b + 1)) > left - 5) {
			rc = PSKVAULT_EPROTO;
			goto done;
		}
		if (b[0] == TAG_OFFER)
			cnt++;
		b += 5 + len;
		left -= 5 + len;
	}
	if (cnt == 0)
		goto done;
	keys = calloc(cnt, sizeof *keys);
	if (keys == NULL) {
		rc = PSKVAULT_ENOMEM;
		goto done;
	}
	for (b = a.body, left = a.body_len, i = 0; left > 0;) {
		size_t len = be32(b + 1);
		if (b[0] == TAG_OFFER) {
			if ((rc = parse_key(b + 5, len, &keys[i])) != 0) {
				pskvault_keys_free(keys, cnt);
				keys = NULL;
				goto done;
			}
			i++;
		}
		b += 5 + len;
		left -= 5 + len;
	}
	*out = keys;
	*n = cnt;
done:
	answer_free(&a);
	return rc;
}
