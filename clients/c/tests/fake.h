/*
 * A tiny fake pskvault daemon for the C unit tests: it listens on a Unix
 * socket in a thread (or in a child process running as another uid) and
 * answers each request with the next canned answer. Test-only code.
 */
#ifndef PSKVAULT_TEST_FAKE_H
#define PSKVAULT_TEST_FAKE_H
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

static int failures;
#define CHECK(cond, ...)                                                                   \
	do {                                                                               \
		if (!(cond)) {                                                             \
			failures++;                                                        \
			fprintf(stderr, "%s:%d: check failed: %s: ", __FILE__, __LINE__, #cond); \
			fprintf(stderr, __VA_ARGS__);                                      \
			fprintf(stderr, "\n");                                             \
		}                                                                          \
	} while (0)

enum { ANS_NORMAL = 0, ANS_CLOSE_AFTER = 1, ANS_SILENT = 2 };

typedef struct fake_answer {
	const unsigned char *bytes;
	size_t len;
	int mode;
} fake_answer;

typedef struct fake {
	char dir[64];
	char path[128];
	int lfd;
	pthread_t th;
	int stop;
	const fake_answer *answers;
	size_t nanswers;
	size_t next;
	int conns;
	unsigned char last_req[70000];
	size_t last_req_len;
	size_t total_in; /* bytes received over all connections */
} fake;

/* fake_read_request reads one request (head + Content-Length body). 0 on EOF. */
static size_t fake_read_request(fake *f, int c)
{
	size_t have = 0, need = 0;
	for (;;) {
		ssize_t r;
		struct pollfd p = {c, POLLIN, 0};
		if (need && have >= need)
			break;
		if (poll(&p, 1, 100) == 0) {
			if (f->stop)
				return 0;
			continue;
		}
		r = read(c, f->last_req + have, sizeof f->last_req - have);
		if (r <= 0)
			return 0;
		have += (size_t)r;
		f->total_in += (size_t)r;
		if (!need) {
			unsigned char *e = memmem(f->last_req, have, "\r\n\r\n", 4);
			if (e) {
				size_t hl = (size_t)(e - f->last_req) + 4, cl = 0;
				char *p2 = memmem(f->last_req, hl, "Content-Length: ", 16);
				if (p2)
					cl = strtoul(p2 + 16, NULL, 10);
				need = hl + cl;
			}
		}
	}
	f->last_req_len = have;
	return have;
}

static void *fake_serve(void *arg)
{
	fake *f = arg;
	while (!f->stop) {
		struct pollfd p = {f->lfd, POLLIN, 0};
		int c;
		if (poll(&p, 1, 50) <= 0)
			continue;
		c = accept(f->lfd, NULL, NULL);
		if (c < 0)
			continue;
		f->conns++;
		for (;;) {
			const fake_answer *a;
			if (fake_read_request(f, c) == 0)
				break;
			a = &f->answers[f->next++ % f->nanswers];
			if (a->mode == ANS_SILENT) {
				while (!f->stop)
					usleep(10000);
				break;
			}
			if (write(c, a->bytes, a->len) != (ssize_t)a->len)
				break;
			if (a->mode == ANS_CLOSE_AFTER)
				break;
		}
		close(c);
	}
	return NULL;
}

static int fake_listen(fake *f)
{
	struct sockaddr_un sa;
	memset(&sa, 0, sizeof sa);
	sa.sun_family = AF_UNIX;
	strcpy(sa.sun_path, f->path);
	f->lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (f->lfd < 0 || bind(f->lfd, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(f->lfd, 16) != 0) {
		perror("fake listen");
		return -1;
	}
	return 0;
}

/* fake_start serves answers in a thread of this process. */
static void fake_start(fake *f, const fake_answer *answers, size_t n)
{
	memset(f, 0, sizeof *f);
	strcpy(f->dir, "/tmp/pskvault-ctest-XXXXXX");
	if (mkdtemp(f->dir) == NULL) {
		perror("mkdtemp");
		exit(2);
	}
	snprintf(f->path, sizeof f->path, "%s/s.sock", f->dir);
	f->answers = answers;
	f->nanswers = n;
	if (fake_listen(f) != 0)
		exit(2);
	pthread_create(&f->th, NULL, fake_serve, f);
}

static void fake_stop(fake *f)
{
	f->stop = 1;
	pthread_join(f->th, NULL);
	close(f->lfd);
	unlink(f->path);
	rmdir(f->dir);
}

/* fake_start_as serves in a child process that listens as uid:gid; the
 * child writes the number of request bytes it received to report[1] when
 * it is killed (SIGTERM). Returns the child's pid. */
static volatile sig_atomic_t fake_child_stop;
static void fake_child_term(int sig)
{
	(void)sig;
	fake_child_stop = 1;
}

static pid_t fake_start_as(fake *f, const fake_answer *answers, size_t n, uid_t uid, gid_t gid, int report[2])
{
	pid_t pid;
	memset(f, 0, sizeof *f);
	strcpy(f->dir, "/tmp/pskvault-ctest-XXXXXX");
	if (mkdtemp(f->dir) == NULL || chmod(f->dir, 0777) != 0) {
		perror("mkdtemp");
		exit(2);
	}
	snprintf(f->path, sizeof f->path, "%s/s.sock", f->dir);
	f->answers = answers;
	f->nanswers = n;
	if (pipe(report) != 0)
		exit(2);
	pid = fork();
	if (pid == 0) {
		struct sigaction sa;
		memset(&sa, 0, sizeof sa);
		sa.sa_handler = fake_child_term;
		sigaction(SIGTERM, &sa, NULL);
		close(report[0]);
		if (setresgid(gid, gid, gid) != 0 || setresuid(uid, uid, uid) != 0)
			_exit(3);
		if (fake_listen(f) != 0)
			_exit(4);
		/* serve until told to stop */
		pthread_create(&f->th, NULL, fake_serve, f);
		while (!fake_child_stop)
			usleep(5000);
		f->stop = 1;
		pthread_join(f->th, NULL);
		if (write(report[1], &f->total_in, sizeof f->total_in) < 0)
			_exit(5);
		_exit(0);
	}
	close(report[1]);
	/* wait for the socket */
	for (int i = 0; i < 400; i++) {
		struct stat st;
		if (stat(f->path, &st) == 0)
			break;
		usleep(5000);
	}
	return pid;
}

static size_t fake_stop_child(fake *f, pid_t pid, int report[2])
{
	size_t got = (size_t)-1;
	kill(pid, SIGTERM);
	if (read(report[0], &got, sizeof got) != (ssize_t)sizeof got)
		got = (size_t)-1;
	waitpid(pid, NULL, 0);
	close(report[0]);
	unlink(f->path);
	rmdir(f->dir);
	return got;
}

/* ---- building answers ---- */

typedef struct buf {
	unsigned char b[300000];
	size_t n;
} buf;

static void put_field(buf *b, unsigned tag, const void *v, size_t n)
{
	b->b[b->n++] = (unsigned char)tag;
	b->b[b->n++] = (unsigned char)(n >> 24);
	b->b[b->n++] = (unsigned char)(n >> 16);
	b->b[b->n++] = (unsigned char)(n >> 8);
	b->b[b->n++] = (unsigned char)n;
	memcpy(b->b + b->n, v, n);
	b->n += n;
}

static void put_u16(buf *b, unsigned tag, unsigned x)
{
	unsigned char v[2] = {(unsigned char)(x >> 8), (unsigned char)x};
	put_field(b, tag, v, 2);
}

static void put_u32(buf *b, unsigned tag, unsigned long x)
{
	unsigned char v[4] = {(unsigned char)(x >> 24), (unsigned char)(x >> 16), (unsigned char)(x >> 8), (unsigned char)x};
	put_field(b, tag, v, 4);
}

/* http_answer wraps body as an HTTP answer into out. */
static void http_answer(buf *out, int status, const char *ctype, const char *extra, const void *body, size_t n)
{
	out->n = (size_t)snprintf((char *)out->b, sizeof out->b, "HTTP/1.1 %d X\r\nContent-Type: %s\r\n%sContent-Length: %zu\r\n\r\n", status, ctype, extra, n);
	memcpy(out->b + out->n, body, n);
	out->n += n;
}
#endif
