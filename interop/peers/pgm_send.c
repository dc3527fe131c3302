/* pgm_send: an OpenPGM source for pgmtun's interop tests and benchmarks.
 *
 * Sends COUNT records of SIZE bytes (see common.h) to the group, one record
 * per APDU (msg mode) or as a byte stream cut into CHUNK-byte sends (stream
 * mode), then keeps serving repairs for LINGER seconds and closes with FIN.
 * A non-blocking OpenPGM source serves one queued repair per receive call,
 * so the program calls pgm_recv on its own socket between APDUs and while
 * lingering. OpenPGM checks a whole APDU against a token bucket of about
 * 1 ms of --rate: APDUs larger than that never leave (reported after 5 s).
 * `--dump SEQ SIZE` prints one record (format check).
 * Prints one summary line on stdout; exits 0 on success. */
#include "common.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* SIGTERM/SIGINT end the linger early (the close is still graceful) or,
 * while sending, stop the program with status "interrupted". */
static volatile sig_atomic_t stop_linger;
static void on_signal(int sig) { (void)sig; stop_linger = 1; }

/* serve processes incoming NAKs/SPMRs and due timers for up to ms. */
static void serve(pgm_sock_t *sock, int ms)
{
	char buf[4096];
	size_t n;
	pgm_error_t *err = NULL;
	double end = now_seconds() + ms / 1000.0;
	int idle_calls = 0;
	for (;;) {
		int st = pgm_recv(sock, buf, sizeof buf, 0, &n, &err);
		if (err) {
			pgm_error_free(err);
			err = NULL;
		}
		int wait;
		switch (st) {
		case PGM_IO_STATUS_NORMAL:
			idle_calls = 0;
			continue; /* a repair or control packet was handled */
		case PGM_IO_STATUS_TIMER_PENDING:
			wait = remain_ms(sock, PGM_TIME_REMAIN);
			break;
		case PGM_IO_STATUS_RATE_LIMITED:
			wait = remain_ms(sock, PGM_RATE_REMAIN);
			break;
		default:
			wait = 10;
		}
		/* A call may have sent one repair while reporting would-block, and
		 * the repair queue has no descriptor to poll: call again a few
		 * times before sleeping. */
		if (st != PGM_IO_STATUS_RATE_LIMITED && ++idle_calls < 64)
			continue;
		idle_calls = 0;
		double left = end - now_seconds();
		if (left <= 0 || stop_linger)
			return;
		if (wait > left * 1000)
			wait = (int)(left * 1000) + 1;
		wait_socket(sock, wait);
		if (now_seconds() >= end)
			return;
	}
}

/* pump calls receive up to n times without waiting, serving up to n queued
 * repairs (one per call), and stops at a rate limit. */
static void pump(pgm_sock_t *sock, int n)
{
	char buf[4096];
	size_t got;
	pgm_error_t *err = NULL;
	for (int i = 0; i < n; i++) {
		int st = pgm_recv(sock, buf, sizeof buf, 0, &got, &err);
		if (err) {
			pgm_error_free(err);
			err = NULL;
		}
		if (st == PGM_IO_STATUS_RATE_LIMITED)
			return;
	}
}

/* send_all sends len bytes as one APDU. While a send is suspended (rate
 * limit or full socket buffer) OpenPGM holds its transmit window locked
 * and the same arguments must be passed again: receiving on the socket
 * then would deadlock, so only plain waits happen here. */
static void send_all(pgm_sock_t *sock, const uint8_t *p, size_t len)
{
	double give_up = now_seconds() + 5;
	for (;;) {
		if (stop_linger) {
			fprintf(stdout, "pgm_send: status=interrupted\n");
			exit(1);
		}
		if (now_seconds() > give_up) {
			/* OpenPGM checks a whole APDU against its token bucket, which
			 * holds about 1 ms of the rate: a larger APDU never fits. */
			fprintf(stdout, "pgm_send: status=error why=send stalled for 5 s "
				"(an APDU larger than 1 ms of --rate never passes OpenPGM's rate limit)\n");
			exit(1);
		}
		size_t written = 0;
		int st = pgm_send(sock, p, len, &written);
		switch (st) {
		case PGM_IO_STATUS_NORMAL:
			return;
		case PGM_IO_STATUS_RATE_LIMITED: {
			int ms = remain_ms(sock, PGM_RATE_REMAIN);
			usleep((ms > 0 ? ms : 1) * 1000);
			break;
		}
		case PGM_IO_STATUS_WOULD_BLOCK:
			usleep(500);
			break;
		case PGM_IO_STATUS_CONGESTION:
			/* PGM_USE_PGMCC: no token until an ACK arrives or the ACK
			 * timer runs out, and only a receive call reads ACKs and
			 * runs timers (OpenPGM's examples receive on another
			 * thread). send_odata holds no lock here: its packet is
			 * in the window, the window's spinlock released. Its
			 * ACK timeout (3 s) always returns a token, so this
			 * wait is not the rate-limit stall the give-up is for. */
			serve(sock, 1);
			give_up = now_seconds() + 5;
			break;
		default:
			fprintf(stdout, "pgm_send: status=error send_status=%d\n", st);
			exit(1);
		}
	}
}

/* sent is called after each APDU: serve repairs between sends. */
static void sent(pgm_sock_t *sock, long apdus)
{
	pump(sock, apdus % 32 == 0 ? 64 : 2);
}

/* pace serves repairs until bytes sent since start fit --pace: OpenPGM's
 * own limiter cannot pass an APDU larger than 1 ms of its rate, so large
 * APDUs at a low average rate are paced here instead. */
static void pace(pgm_sock_t *sock, const struct peer_opts *o, double start, unsigned long long bytes)
{
	if (o->pace <= 0)
		return;
	double wait = start + (double)bytes / o->pace - now_seconds();
	if (wait > 0)
		serve(sock, (int)(wait * 1000) + 1);
}

int main(int argc, char **argv)
{
	struct peer_opts o;
	if (argc == 4 && strcmp(argv[1], "--dump") == 0) {
		/* --dump SEQ SIZE writes one record to stdout (format check). */
		size_t size = strtoul(argv[3], NULL, 10);
		if (size < RECORD_HDR)
			return 64;
		uint8_t *b = malloc(size);
		record_fill(b, size, (uint32_t)strtoul(argv[2], NULL, 10));
		return fwrite(b, 1, size, stdout) == size ? 0 : 1;
	}
	parse_opts(&o, argc, argv, "pgm_send", true);
	signal(SIGTERM, on_signal);
	signal(SIGINT, on_signal);
	if (o.count == 0) {
		fprintf(stderr, "pgm_send: --count must be > 0\n");
		return 64;
	}
	pgm_sock_t *sock = open_socket(&o, true);
	serve(sock, (int)(o.delay * 1000));

	uint8_t *rec = malloc(o.size);
	double start = now_seconds();
	long apdus = 0;
	unsigned long long bytes = 0;
	if (!o.stream) {
		for (long i = 0; i < o.count; i++) {
			record_fill(rec, o.size, (uint32_t)i);
			send_all(sock, rec, o.size);
			sent(sock, ++apdus);
			bytes += o.size;
			pace(sock, &o, start, bytes);
		}
	} else {
		/* The stream is the records back to back; sends cut it anywhere. */
		uint8_t *chunk = malloc(o.chunk);
		size_t fill = 0, off = o.size;
		long next = 0;
		for (;;) {
			if (off == o.size) {
				if (next == o.count)
					break;
				record_fill(rec, o.size, (uint32_t)next++);
				off = 0;
			}
			size_t n = o.size - off;
			if (n > o.chunk - fill)
				n = o.chunk - fill;
			memcpy(chunk + fill, rec + off, n);
			fill += n;
			off += n;
			if (fill == o.chunk) {
				send_all(sock, chunk, fill);
				sent(sock, ++apdus);
				bytes += fill;
				fill = 0;
			}
		}
		if (fill > 0) {
			send_all(sock, chunk, fill);
			apdus++;
			bytes += fill;
		}
		free(chunk);
	}
	double elapsed = now_seconds() - start;
	serve(sock, (int)(o.linger * 1000));
	pgm_close(sock, true);
	pgm_shutdown();
	free(rec);

	printf("pgm_send: status=ok records=%ld apdus=%ld bytes=%llu elapsed=%.6f msgs_per_s=%.1f mbit_per_s=%.3f\n",
	       o.count, apdus, bytes, elapsed, elapsed > 0 ? o.count / elapsed : 0,
	       elapsed > 0 ? bytes * 8 / elapsed / 1e6 : 0);
	return 0;
}
