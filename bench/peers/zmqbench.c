/*
 * zmqbench: a libzmq PUB or SUB on a pgm:// or epgm:// endpoint for
 * pgmtun's benchmark (bench/zmq.go), in C so that the libzmq side costs
 * what libzmq costs and not an interpreter's call per message.
 *
 * Each message is one frame: a record of the interop format
 * (interop/record.go: a big-endian u32 sequence number, the CRC-32 of the
 * rest, then a pattern of the sequence number), every byte checked by the
 * subscriber; or the one-byte warm-up message "w", which a publisher
 * repeats until the subscriber has one, so that the timed records find
 * the whole path (socket, group, session) set up.
 *
 *   zmqbench pub ENDPOINT --size S --count N [--rate KBIT] [--recovery-ivl MS]
 *       sends "w" every 10 ms until a line arrives on standard input (the
 *       subscriber reported "warm"), then records 0..N-1 as fast as libzmq
 *       takes them (ZMQ_XPUB_NODROP: a full queue blocks instead of
 *       dropping); reports one JSON line {"sent", "start", "end"} on
 *       standard output, then serves repairs until standard input ends.
 *   zmqbench sub ENDPOINT --size S --count N [--idle S] [--max S] [--rcvhwm M]
 *       reports "zmqbench: warm" on stderr at its first "w", receives until
 *       N records came, none came for --idle seconds, or --max seconds
 *       passed since the first, and reports one JSON line {"received",
 *       "first", "last", "stop", "gaps", "missing", "bad", "first_error"}
 *       on standard output: when the first and the last record arrived,
 *       and when it stopped receiving. ZMQ_RCVHWM is --rcvhwm (0: none).
 *   zmqbench records --size S --count N
 *       writes records 0..N-1 back to back on standard output, built as
 *       pub builds them (for the benchmark's tests).
 *   zmqbench check --size S --count N
 *       reads S-byte messages from standard input ("w" is one byte and
 *       may come anywhere), checks them as sub does and reports sub's
 *       JSON line (for the benchmark's tests).
 *   zmqbench pgm
 *       exits 0 if this libzmq has PGM, 3 if not.
 *
 * Times are CLOCK_MONOTONIC seconds, the clock of every namespace, so the
 * benchmark compares them with its own.
 *
 * Exit status: 0 done (even short of N: the caller judges), 1 nothing came
 * (or no go, or a libzmq error), 2 bad usage, 3 no PGM in libzmq.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <zmq.h>

struct args {
	const char *role, *endpoint;
	long size, count, rate, recovery_ivl, rcvhwm;
	double timeout, idle, max;
};

static void logf_(const char *fmt, ...)
{
	va_list ap;
	fputs("zmqbench: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	fflush(stderr);
}

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* CRC-32 (IEEE, reflected 0xEDB88320), table-driven. */
static uint32_t crc_table[256];

static void crc_init(void)
{
	for (uint32_t i = 0; i < 256; i++) {
		uint32_t c = i;
		for (int k = 0; k < 8; k++)
			c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
		crc_table[i] = c;
	}
}

static uint32_t crc32_ieee(const uint8_t *p, size_t n)
{
	uint32_t c = 0xFFFFFFFFu;
	while (n--)
		c = crc_table[(c ^ *p++) & 0xFF] ^ (c >> 8);
	return c ^ 0xFFFFFFFFu;
}

static void put_be32(uint8_t *b, uint32_t v)
{
	b[0] = v >> 24, b[1] = v >> 16, b[2] = v >> 8, b[3] = v;
}

static uint32_t get_be32(const uint8_t *b)
{
	return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
}

/*
 * tails returns the bytes after the sequence number of every record,
 * size-4 bytes per seq mod 256: the pattern depends on seq only through
 * seq*131 mod 256, so 256 tails cover every record.
 */
static uint8_t *tails(long size)
{
	size_t n = (size_t)size - 4;
	uint8_t *t = malloc(256 * n);
	if (t == NULL)
		return NULL;
	for (uint32_t k = 0; k < 256; k++) {
		uint8_t *tail = t + k * n;
		for (long i = 8; i < size; i++)
			tail[i - 4] = (uint8_t)(k * 131 + (uint32_t)i * 7 + (uint32_t)(i >> 8));
		put_be32(tail, crc32_ieee(tail + 4, n - 4));
	}
	return t;
}

/* fill writes record seq into buf (size bytes). */
static void fill(uint8_t *buf, const uint8_t *t, long size, uint32_t seq)
{
	put_be32(buf, seq);
	memcpy(buf + 4, t + (size_t)(seq & 0xFF) * ((size_t)size - 4), (size_t)size - 4);
}

/* checker is a subscriber's count of the records it was given. */
struct checker {
	const uint8_t *t;
	long size, count;
	long got, gaps, missing, bad, last;
	char first_err[128];
};

static void check_init(struct checker *c, const uint8_t *t, long size, long count)
{
	memset(c, 0, sizeof *c);
	c->t = t, c->size = size, c->count = count, c->last = -1;
}

static void check_fail(struct checker *c, const char *fmt, ...)
{
	c->bad++;
	if (c->first_err[0] != '\0')
		return;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(c->first_err, sizeof c->first_err, fmt, ap);
	va_end(ap);
}

/* check counts message m of n bytes (not the warm-up). */
static void check(struct checker *c, const uint8_t *m, size_t n)
{
	if ((long)n != c->size) {
		check_fail(c, "message of %zu bytes, want %ld", n, c->size);
		return;
	}
	uint32_t seq = get_be32(m);
	if (memcmp(m + 4, c->t + (size_t)(seq & 0xFF) * ((size_t)c->size - 4), (size_t)c->size - 4) != 0) {
		check_fail(c, "record %" PRIu32 ": bytes differ", seq);
		return;
	}
	if ((long)seq <= c->last) {
		check_fail(c, "record %" PRIu32 " after %ld", seq, c->last);
		return;
	}
	if ((long)seq != c->last + 1) {
		c->gaps++;
		c->missing += (long)seq - c->last - 1;
	}
	c->last = seq;
	c->got++;
}

/* done: every record came, or as many messages as records. */
static int check_done(const struct checker *c)
{
	return c->last == c->count - 1 || c->got + c->bad >= c->count;
}

static void report_sub(struct checker *c, double first, double last, double stop)
{
	if (c->last >= 0)
		c->missing += c->count - 1 - c->last;
	/* first_err holds no quote or backslash: no JSON escaping needed. */
	printf("{\"received\": %ld, \"first\": %.9f, \"last\": %.9f, \"stop\": %.9f, \"gaps\": %ld, "
	       "\"missing\": %ld, \"bad\": %ld, \"first_error\": \"%s\"}\n",
	       c->got, first, last, stop, c->gaps, c->missing, c->bad, c->first_err);
	fflush(stdout);
}

static int setopt_int(void *sock, int opt, int v, const char *name)
{
	if (zmq_setsockopt(sock, opt, &v, sizeof v) != 0) {
		logf_("%s %d: %s", name, v, zmq_strerror(errno));
		return -1;
	}
	return 0;
}

static int options(void *sock, const struct args *a)
{
	return setopt_int(sock, ZMQ_RATE, (int)a->rate, "ZMQ_RATE") |
	       setopt_int(sock, ZMQ_RECOVERY_IVL, (int)a->recovery_ivl, "ZMQ_RECOVERY_IVL") |
	       setopt_int(sock, ZMQ_MULTICAST_HOPS, 1, "ZMQ_MULTICAST_HOPS") |
	       setopt_int(sock, ZMQ_LINGER, 0, "ZMQ_LINGER");
}

/* drain_stdin reads standard input until it ends. */
static void drain_stdin(void)
{
	char buf[256];
	while (read(0, buf, sizeof buf) > 0 || errno == EINTR)
		errno = 0;
}

static int pub(void *ctx, const struct args *a, const uint8_t *t)
{
	void *sock = zmq_socket(ctx, ZMQ_PUB);
	if (sock == NULL || options(sock, a) != 0 || setopt_int(sock, ZMQ_XPUB_NODROP, 1, "ZMQ_XPUB_NODROP") != 0)
		return 1;
	if (zmq_connect(sock, a->endpoint) != 0) {
		logf_("connect %s: %s", a->endpoint, zmq_strerror(errno));
		return 1;
	}
	double deadline = now() + a->timeout;
	for (;;) {
		zmq_send(sock, "w", 1, ZMQ_DONTWAIT); /* EAGAIN: not connected yet */
		struct pollfd p = {.fd = 0, .events = POLLIN};
		if (poll(&p, 1, 10) > 0) {
			char line[64];
			if (read(0, line, sizeof line) <= 0) {
				logf_("standard input ended before the go");
				return 1;
			}
			break;
		}
		if (now() > deadline) {
			logf_("no go after %gs", a->timeout);
			return 1;
		}
	}
	uint8_t *buf = malloc((size_t)a->size);
	if (buf == NULL)
		return 1;
	double start = now();
	for (long seq = 0; seq < a->count; seq++) {
		fill(buf, t, a->size, (uint32_t)seq);
		while (zmq_send(sock, buf, (size_t)a->size, 0) < 0) {
			if (errno != EINTR) {
				logf_("send %ld: %s", seq, zmq_strerror(errno));
				return 1;
			}
		}
	}
	double end = now();
	printf("{\"sent\": %ld, \"start\": %.9f, \"end\": %.9f}\n", a->count, start, end);
	fflush(stdout);
	/* The PGM session serves repairs while the socket is open. */
	drain_stdin();
	free(buf);
	zmq_close(sock);
	return 0;
}

/* recv_msg receives into buf (cap bytes); it returns the message's length
 * (possibly more than cap: truncated) or -1 at the timeout. */
static int recv_msg(void *sock, uint8_t *buf, size_t cap)
{
	for (;;) {
		int n = zmq_recv(sock, buf, cap, 0);
		if (n >= 0)
			return n;
		if (errno != EINTR)
			return -1;
	}
}

static int is_warm(const uint8_t *m, int n)
{
	return n == 1 && m[0] == 'w';
}

static int sub(void *ctx, const struct args *a, const uint8_t *t)
{
	void *sock = zmq_socket(ctx, ZMQ_SUB);
	if (sock == NULL || options(sock, a) != 0 || setopt_int(sock, ZMQ_RCVHWM, (int)a->rcvhwm, "ZMQ_RCVHWM") != 0 ||
	    setopt_int(sock, ZMQ_RCVTIMEO, (int)(a->timeout * 1000), "ZMQ_RCVTIMEO") != 0)
		return 1;
	if (zmq_setsockopt(sock, ZMQ_SUBSCRIBE, "", 0) != 0 || zmq_connect(sock, a->endpoint) != 0) {
		logf_("subscribe/connect %s: %s", a->endpoint, zmq_strerror(errno));
		return 1;
	}
	size_t cap = (size_t)a->size + 1; /* one more: a longer message shows */
	uint8_t *m = malloc(cap);
	if (m == NULL)
		return 1;
	struct checker c;
	check_init(&c, t, a->size, a->count);
	double first = 0, end = 0;
	int n;
	while ((n = recv_msg(sock, m, cap)) >= 0 && !is_warm(m, n))
		;
	if (n >= 0) {
		logf_("warm");
		while ((n = recv_msg(sock, m, cap)) >= 0 && is_warm(m, n))
			;
	}
	if (n >= 0) {
		first = end = now();
		setopt_int(sock, ZMQ_RCVTIMEO, (int)(a->idle * 1000), "ZMQ_RCVTIMEO");
		for (;;) {
			if (!is_warm(m, n))
				check(&c, m, (size_t)n);
			if (check_done(&c) || end - first > a->max)
				break;
			if ((n = recv_msg(sock, m, cap)) < 0)
				break;
			end = now();
		}
	}
	report_sub(&c, first, end, now());
	free(m);
	zmq_close(sock);
	return c.got + c.bad > 0 ? 0 : 1;
}

/* records writes records 0..count-1 to standard output. */
static int records(const struct args *a, const uint8_t *t)
{
	uint8_t *buf = malloc((size_t)a->size);
	if (buf == NULL)
		return 1;
	for (long seq = 0; seq < a->count; seq++) {
		fill(buf, t, a->size, (uint32_t)seq);
		if (fwrite(buf, 1, (size_t)a->size, stdout) != (size_t)a->size)
			return 1;
	}
	free(buf);
	return fflush(stdout) == 0 ? 0 : 1;
}

/* check_stdin checks size-byte messages (and one-byte "w") from standard
 * input as sub checks what it receives; times are 0. */
static int check_stdin(const struct args *a, const uint8_t *t)
{
	struct checker c;
	check_init(&c, t, a->size, a->count);
	uint8_t *m = malloc((size_t)a->size);
	if (m == NULL)
		return 1;
	for (;;) {
		if (fread(m, 1, 1, stdin) != 1)
			break;
		if (m[0] == 'w')
			continue;
		size_t n = 1 + fread(m + 1, 1, (size_t)a->size - 1, stdin);
		check(&c, m, n);
		if (check_done(&c))
			break;
	}
	report_sub(&c, 0, 0, 0);
	free(m);
	return 0;
}

static int usage(void)
{
	fprintf(stderr, "usage: zmqbench pub|sub ENDPOINT --size S --count N [--rate KBIT] [--recovery-ivl MS]\n"
			"       [--timeout S] [--idle S] [--max S] [--rcvhwm M]\n"
			"       zmqbench records|check --size S --count N\n"
			"       zmqbench pgm\n");
	return 2;
}

static int parse_long(const char *s, long *v)
{
	char *e;
	errno = 0;
	*v = strtol(s, &e, 10);
	return errno == 0 && e != s && *e == '\0' ? 0 : -1;
}

static int parse_double(const char *s, double *v)
{
	char *e;
	errno = 0;
	*v = strtod(s, &e);
	return errno == 0 && e != s && *e == '\0' ? 0 : -1;
}

int main(int argc, char **argv)
{
	struct args a = {.rate = 100, .recovery_ivl = 2000, .size = -1, .count = -1, .timeout = 20, .idle = 1, .max = 4};
	if (argc < 2)
		return usage();
	a.role = argv[1];
	int i = 2;
	int net = strcmp(a.role, "pub") == 0 || strcmp(a.role, "sub") == 0;
	if (strcmp(a.role, "pgm") == 0) {
		if (!zmq_has("pgm")) {
			logf_("this libzmq has no PGM (zmq_has(\"pgm\") is false)");
			return 3;
		}
		return 0;
	}
	if (!net && strcmp(a.role, "records") != 0 && strcmp(a.role, "check") != 0)
		return usage();
	if (net) {
		if (argc < 3)
			return usage();
		a.endpoint = argv[i++];
	}
	for (; i + 1 < argc; i += 2) {
		const char *k = argv[i], *v = argv[i + 1];
		int bad;
		if (strcmp(k, "--size") == 0)
			bad = parse_long(v, &a.size);
		else if (strcmp(k, "--count") == 0)
			bad = parse_long(v, &a.count);
		else if (strcmp(k, "--rate") == 0)
			bad = parse_long(v, &a.rate);
		else if (strcmp(k, "--recovery-ivl") == 0)
			bad = parse_long(v, &a.recovery_ivl);
		else if (strcmp(k, "--rcvhwm") == 0)
			bad = parse_long(v, &a.rcvhwm);
		else if (strcmp(k, "--timeout") == 0)
			bad = parse_double(v, &a.timeout);
		else if (strcmp(k, "--idle") == 0)
			bad = parse_double(v, &a.idle);
		else if (strcmp(k, "--max") == 0)
			bad = parse_double(v, &a.max);
		else
			bad = -1;
		if (bad) {
			logf_("bad option %s %s", k, v);
			return usage();
		}
	}
	if (i != argc)
		return usage();
	if (a.size < 8 || a.count <= 0 || a.count > 0xFFFFFFFFL || a.rcvhwm < 0) {
		logf_("want --size >= 8, --count > 0 and --rcvhwm >= 0");
		return 2;
	}
	crc_init();
	uint8_t *t = tails(a.size);
	if (t == NULL)
		return 1;
	if (strcmp(a.role, "records") == 0)
		return records(&a, t);
	if (strcmp(a.role, "check") == 0)
		return check_stdin(&a, t);
	if (!zmq_has("pgm")) {
		logf_("this libzmq has no PGM (zmq_has(\"pgm\") is false)");
		return 3;
	}
	void *ctx = zmq_ctx_new();
	if (ctx == NULL)
		return 1;
	int rc = strcmp(a.role, "pub") == 0 ? pub(ctx, &a, t) : sub(ctx, &a, t);
	zmq_ctx_term(ctx);
	free(t);
	return rc;
}
