/* pgm_recv: an OpenPGM receiver for pgmtun's interop tests and benchmarks.
 *
 * Receives records (see common.h) and checks every byte: in msg mode each
 * APDU must be exactly one record, in stream mode the APDUs are joined into
 * a byte stream and cut into records. Records must arrive in order from 0.
 * Exit status: 0 all COUNT records (or, with --count 0, everything until
 * the session ended) arrived intact. OpenPGM 5.3 does not report a
 * source's FIN to receivers, so with --count 0 the session "ends" after
 * --idle seconds without data (default 2 then); 2 corruption or a gap; 3 unrecoverable
 * loss reported by OpenPGM (session reset); 4 timeout; 70 setup failure.
 * Prints one summary line on stdout. */
#include "common.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static struct peer_opts o;
static long records, apdus, resets;
static unsigned long long bytes;
static double first_at, last_at;

static void summary(const char *status, const char *why)
{
	double el = last_at > first_at ? last_at - first_at : 0;
	printf("pgm_recv: status=%s records=%ld apdus=%ld bytes=%llu resets=%ld elapsed=%.6f "
	       "msgs_per_s=%.1f mbit_per_s=%.3f%s%s\n",
	       status, records, apdus, bytes, resets, el, el > 0 ? records / el : 0,
	       el > 0 ? bytes * 8 / el / 1e6 : 0, why ? " why=" : "", why ? why : "");
	fflush(stdout);
}

static void fail(int code, const char *status, const char *why)
{
	summary(status, why);
	exit(code);
}

/* stream state: a partial record carried between APDUs */
static uint8_t *partial;
static size_t have;

static void check_record(const uint8_t *p)
{
	char why[160];
	if (record_check(p, o.size, (uint32_t)records, why, sizeof why) != 0)
		fail(2, "corrupt", why);
	records++;
}

static void on_apdu(pgm_sock_t *sock, const struct pgm_msgv_t *m)
{
	(void)sock;
	size_t len = 0;
	for (uint32_t i = 0; i < m->msgv_len; i++)
		len += m->msgv_skb[i]->len;
	apdus++;
	bytes += len;
	last_at = now_seconds();
	if (records == 0 && have == 0 && apdus == 1)
		first_at = last_at;
	if (!o.stream) {
		char why[96];
		if (len != o.size) {
			snprintf(why, sizeof why, "apdu %ld has %zu bytes, want %zu", apdus, len, o.size);
			fail(2, "corrupt", why);
		}
		if (m->msgv_len == 1) {
			check_record(m->msgv_skb[0]->data);
			return;
		}
	}
	for (uint32_t i = 0; i < m->msgv_len; i++) {
		const uint8_t *p = m->msgv_skb[i]->data;
		size_t n = m->msgv_skb[i]->len;
		while (n > 0) {
			size_t take = o.size - have;
			if (take > n)
				take = n;
			memcpy(partial + have, p, take);
			have += take;
			p += take;
			n -= take;
			if (have == o.size) {
				check_record(partial);
				have = 0;
			}
		}
	}
}

int main(int argc, char **argv)
{
	parse_opts(&o, argc, argv, "pgm_recv", false);
	if (o.count == 0 && o.idle == 0)
		o.idle = 2; /* the only end OpenPGM lets a receiver see */
	partial = malloc(o.size);
	pgm_sock_t *sock = open_socket(&o, false);
	fputs("pgm_recv: ready\n", stderr); /* interop.Proc.Ready waits for this */
	fflush(stderr);
	double deadline = now_seconds() + o.timeout;
	pgm_error_t *err = NULL;
	struct pgm_msgv_t msgv[16];

	while (o.count == 0 || records < o.count) {
		size_t n = 0;
		int st = pgm_recvmsgv(sock, msgv, 16, 0, &n, &err);
		int wait = 0;
		switch (st) {
		case PGM_IO_STATUS_NORMAL: {
			/* n bytes spread over whole APDUs, one msgv each */
			size_t done = 0;
			for (int i = 0; i < 16 && done < n; i++) {
				size_t l = 0;
				for (uint32_t k = 0; k < msgv[i].msgv_len; k++)
					l += msgv[i].msgv_skb[k]->len;
				on_apdu(sock, &msgv[i]);
				done += l;
				if (o.count > 0 && records >= o.count)
					break;
			}
			continue;
		}
		case PGM_IO_STATUS_TIMER_PENDING:
			wait = remain_ms(sock, PGM_TIME_REMAIN);
			break;
		case PGM_IO_STATUS_RATE_LIMITED:
			wait = remain_ms(sock, PGM_RATE_REMAIN);
			break;
		case PGM_IO_STATUS_WOULD_BLOCK:
			wait = 100;
			break;
		case PGM_IO_STATUS_RESET:
			resets++;
			if (err) {
				pgm_error_free(err);
				err = NULL;
			}
			fail(3, "reset", "unrecoverable data loss");
			break;
		case PGM_IO_STATUS_FIN:
		case PGM_IO_STATUS_EOF:
			goto ended;
		default:
			fail(70, "error", err && err->message ? err->message : "pgm_recvmsgv");
		}
		double now = now_seconds();
		if (now >= deadline)
			fail(4, "timeout", NULL);
		if (o.idle > 0 && apdus > 0 && now - last_at >= o.idle)
			goto ended;
		wait_socket(sock, wait > 0 ? wait : 1);
	}
ended:
	if (o.count > 0 && records < o.count)
		fail(2, "short", "session ended before all records arrived");
	if (have != 0)
		fail(2, "short", "stream ended inside a record");
	summary("ok", NULL);
	pgm_close(sock, false);
	pgm_shutdown();
	return 0;
}
