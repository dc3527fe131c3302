/* Shared code of the pgmtun interop peers; see common.h. Written for
 * pgmtun against the public OpenPGM 5.3 API. */
#define _GNU_SOURCE
#include "common.h"

#include <errno.h>
#include <getopt.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

/* ---- checksum replacements ----------------------------------------------
 * Debian's libpgm 5.3.128 crashes (misaligned vector store) in its own
 * pgm_compat_csum_partial_copy once an APDU spans several packets. Linked
 * with -rdynamic, these definitions take precedence over the library's
 * exported ones. They return a 32-bit one's complement accumulator of the
 * 16-bit words in memory order, the form pgm_csum_fold and
 * pgm_csum_block_add expect. */

static uint32_t csum_words(const uint8_t *p, uint16_t len, uint32_t sum)
{
	uint64_t acc = sum;
	size_t i = 0;
	for (; i + 1 < len; i += 2) {
		uint16_t w;
		memcpy(&w, p + i, 2); /* memory order, any alignment */
		acc += w;
	}
	if (i < len) {
		uint16_t w = 0;
		memcpy(&w, p + i, 1); /* odd byte in the word's first position */
		acc += w;
	}
	while (acc >> 32)
		acc = (acc & 0xffffffffu) + (acc >> 32);
	return (uint32_t)acc;
}

uint32_t pgm_compat_csum_partial(const void *addr, uint16_t len, uint32_t csum)
{
	return csum_words(addr, len, csum);
}

uint32_t pgm_compat_csum_partial_copy(const void *src, void *dst, uint16_t len, uint32_t csum)
{
	memmove(dst, src, len);
	return csum_words(dst, len, csum);
}

/* ---- records ------------------------------------------------------------ */

static uint32_t crc_table[256];

static void crc_init(void)
{
	for (uint32_t n = 0; n < 256; n++) {
		uint32_t c = n;
		for (int k = 0; k < 8; k++)
			c = (c & 1) ? 0xedb88320u ^ (c >> 1) : c >> 1;
		crc_table[n] = c;
	}
}

uint32_t crc32_ieee(const uint8_t *p, size_t n)
{
	if (crc_table[1] == 0)
		crc_init();
	uint32_t c = 0xffffffffu;
	for (size_t i = 0; i < n; i++)
		c = crc_table[(c ^ p[i]) & 0xff] ^ (c >> 8);
	return c ^ 0xffffffffu;
}

static void put_be32(uint8_t *b, uint32_t v)
{
	b[0] = v >> 24; b[1] = v >> 16; b[2] = v >> 8; b[3] = v;
}

static uint32_t get_be32(const uint8_t *b)
{
	return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
}

void record_fill(uint8_t *b, size_t size, uint32_t seq)
{
	put_be32(b, seq);
	for (size_t i = RECORD_HDR; i < size; i++)
		b[i] = (uint8_t)(seq * 131u + (uint32_t)i * 7u + (uint32_t)(i >> 8));
	put_be32(b + 4, crc32_ieee(b + RECORD_HDR, size - RECORD_HDR));
}

int record_check(const uint8_t *b, size_t size, uint32_t seq, char *why, size_t whylen)
{
	uint32_t got = get_be32(b);
	if (got != seq) {
		snprintf(why, whylen, "sequence %u, want %u", got, seq);
		return -1;
	}
	uint32_t crc = crc32_ieee(b + RECORD_HDR, size - RECORD_HDR);
	if (crc != get_be32(b + 4)) {
		snprintf(why, whylen, "record %u: crc %08x, header says %08x", seq, crc, get_be32(b + 4));
		return -2;
	}
	for (size_t i = RECORD_HDR; i < size; i++) {
		uint8_t want = (uint8_t)(seq * 131u + (uint32_t)i * 7u + (uint32_t)(i >> 8));
		if (b[i] != want) {
			snprintf(why, whylen, "record %u byte %zu: %02x, want %02x", seq, i, b[i], want);
			return -3;
		}
	}
	return 0;
}

/* ---- time and waiting --------------------------------------------------- */

double now_seconds(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

int remain_ms(pgm_sock_t *sock, int optname)
{
	struct timeval tv;
	socklen_t len = sizeof tv;
	if (!pgm_getsockopt(sock, IPPROTO_PGM, optname, &tv, &len))
		return 1;
	long ms = tv.tv_sec * 1000 + (tv.tv_usec + 999) / 1000;
	return ms < 0 ? 0 : (ms > 1000 ? 1000 : (int)ms);
}

void wait_socket(pgm_sock_t *sock, int ms)
{
	struct pollfd fds[8];
	int n = 8;
	memset(fds, 0, sizeof fds);
	if (pgm_poll_info(sock, fds, &n, POLLIN) < 0) {
		usleep(ms * 1000);
		return;
	}
	poll(fds, n, ms);
}

/* ---- options ------------------------------------------------------------ */

void opts_defaults(struct peer_opts *o)
{
	memset(o, 0, sizeof *o);
	o->port = 7500;
	o->size = 1000;
	o->chunk = 1400;
	o->rate = 0;
	o->txw = 1000;
	o->rxw = 1000;
	o->nak_bo_ivl = 50;
	o->nak_rpt_ivl = 2000;
	o->nak_rdata_ivl = 2000;
	o->nak_retries = 50;
	o->linger = 2;
	o->delay = 0.2;
	o->timeout = 60;
	o->idle = 0;
	o->hops = 16;
	o->mtu = 1500;
}

static void usage(const char *prog, bool sender)
{
	fprintf(stderr,
		"usage: %s -n \"ADDR;GROUP\" [options]\n"
		"  -n, --network ADDR;GROUP   interface address and multicast group\n"
		"  -p, --port N               PGM data-destination port (7500)\n"
		"  -u, --udp-encap N[,M]      UDP encapsulation: unicast port N, multicast port M (N)\n"
		"  -s, --size N               record size in bytes, >= 8 (1000)\n"
		"  -c, --count N              records to %s (0: until the session ends)\n"
		"  -m, --mode msg|stream      one record per APDU, or a byte stream (msg)\n"
		"      --chunk N              stream sender: bytes per send (1400)\n"
		"  -r, --rate N               max rate, bytes/s (0: 1 Gbit/s)\n"
		"      --pace N               sender: average record bytes/s, waited for between APDUs (0: off)\n"
		"      --txw N / --rxw N      window in sequences (1000)\n"
		"      --nak-bo-ivl/--nak-rpt-ivl/--nak-rdata-ivl MS, --nak-retries N\n"
		"      --sport N              PGM source port (sender)\n"
		"      --linger S             sender: serve repairs for S seconds after the last send (2)\n"
		"      --delay S              sender: pause between connect and data (0.2)\n"
		"      --timeout S            receiver: fail after S seconds (60)\n"
		"      --idle S               receiver: end after S seconds without data (0: never)\n"
		"      --hops N, --mtu N, -v\n",
		prog, sender ? "send" : "expect");
	exit(64);
}

void parse_opts(struct peer_opts *o, int argc, char **argv, const char *prog, bool sender)
{
	enum { O_CHUNK = 256, O_TXW, O_RXW, O_BO, O_RPT, O_RDATA, O_RETRIES, O_SPORT,
	       O_LINGER, O_DELAY, O_TIMEOUT, O_IDLE, O_HOPS, O_MTU, O_PACE };
	static const struct option lo[] = {
		{"network", required_argument, 0, 'n'}, {"port", required_argument, 0, 'p'},
		{"udp-encap", required_argument, 0, 'u'}, {"size", required_argument, 0, 's'},
		{"count", required_argument, 0, 'c'}, {"mode", required_argument, 0, 'm'},
		{"rate", required_argument, 0, 'r'}, {"chunk", required_argument, 0, O_CHUNK},
		{"txw", required_argument, 0, O_TXW}, {"rxw", required_argument, 0, O_RXW},
		{"nak-bo-ivl", required_argument, 0, O_BO}, {"nak-rpt-ivl", required_argument, 0, O_RPT},
		{"nak-rdata-ivl", required_argument, 0, O_RDATA},
		{"nak-retries", required_argument, 0, O_RETRIES}, {"sport", required_argument, 0, O_SPORT},
		{"linger", required_argument, 0, O_LINGER}, {"delay", required_argument, 0, O_DELAY},
		{"timeout", required_argument, 0, O_TIMEOUT}, {"idle", required_argument, 0, O_IDLE},
		{"hops", required_argument, 0, O_HOPS}, {"mtu", required_argument, 0, O_MTU},
		{"pace", required_argument, 0, O_PACE},
		{"verbose", no_argument, 0, 'v'}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0},
	};
	int c;
	opts_defaults(o);
	while ((c = getopt_long(argc, argv, "n:p:u:s:c:m:r:vh", lo, NULL)) != -1) {
		switch (c) {
		case 'n': o->network = optarg; break;
		case 'p': o->port = atoi(optarg); break;
		case 'u': {
			const char *comma = strchr(optarg, ',');
			o->udp_encap = atoi(optarg);
			o->udp_encap_mcast = comma ? atoi(comma + 1) : o->udp_encap;
			break;
		}
		case 's': o->size = strtoul(optarg, NULL, 10); break;
		case 'c': o->count = strtol(optarg, NULL, 10); break;
		case 'm':
			if (strcmp(optarg, "stream") == 0) o->stream = true;
			else if (strcmp(optarg, "msg") == 0) o->stream = false;
			else usage(prog, sender);
			break;
		case 'r': o->rate = strtol(optarg, NULL, 10); break;
		case O_CHUNK: o->chunk = strtoul(optarg, NULL, 10); break;
		case O_TXW: o->txw = atoi(optarg); break;
		case O_RXW: o->rxw = atoi(optarg); break;
		case O_BO: o->nak_bo_ivl = atoi(optarg); break;
		case O_RPT: o->nak_rpt_ivl = atoi(optarg); break;
		case O_RDATA: o->nak_rdata_ivl = atoi(optarg); break;
		case O_RETRIES: o->nak_retries = atoi(optarg); break;
		case O_SPORT: o->sport = atoi(optarg); break;
		case O_LINGER: o->linger = atof(optarg); break;
		case O_DELAY: o->delay = atof(optarg); break;
		case O_TIMEOUT: o->timeout = atof(optarg); break;
		case O_IDLE: o->idle = atof(optarg); break;
		case O_HOPS: o->hops = atoi(optarg); break;
		case O_MTU: o->mtu = atoi(optarg); break;
		case O_PACE: o->pace = strtol(optarg, NULL, 10); break;
		case 'v': o->verbose = true; break;
		default: usage(prog, sender);
		}
	}
	if (!o->network || o->size < RECORD_HDR || o->size > 65536 || o->chunk == 0 ||
	    o->port <= 0 || o->port > 65535 || o->count < 0 || o->pace < 0 || optind != argc)
		usage(prog, sender);
}

/* ---- socket setup ------------------------------------------------------- */

static void die_pgm(const char *what, pgm_error_t *err)
{
	fprintf(stderr, "%s: %s\n", what, err && err->message ? err->message : "failed");
	if (err)
		pgm_error_free(err);
	exit(70);
}

static void setopt(pgm_sock_t *sock, int level, int name, const void *v, socklen_t len, const char *what)
{
	if (!pgm_setsockopt(sock, level, name, v, len)) {
		fprintf(stderr, "pgm_setsockopt %s failed\n", what);
		exit(70);
	}
}
#define SETOPT(sock, name, val) setopt(sock, IPPROTO_PGM, name, &(val), sizeof(val), #name)

pgm_sock_t *open_socket(const struct peer_opts *o, bool sender)
{
	pgm_error_t *err = NULL;
	struct pgm_addrinfo_t *res = NULL;
	pgm_sock_t *sock = NULL;

	if (!o->verbose)
		pgm_min_log_level = PGM_LOG_LEVEL_FATAL;
	if (!pgm_init(&err))
		die_pgm("pgm_init", err);
	if (!pgm_getaddrinfo(o->network, NULL, &res, &err))
		die_pgm("pgm_getaddrinfo", err);
	if (!pgm_socket(&sock, res->ai_send_addrs[0].gsr_group.ss_family, SOCK_SEQPACKET,
			o->udp_encap ? IPPROTO_UDP : IPPROTO_PGM, &err))
		die_pgm("pgm_socket", err);
	if (o->udp_encap) {
		SETOPT(sock, PGM_UDP_ENCAP_UCAST_PORT, o->udp_encap);
		SETOPT(sock, PGM_UDP_ENCAP_MCAST_PORT, o->udp_encap_mcast);
	}
	const int yes = 1, no = 0;
	SETOPT(sock, sender ? PGM_SEND_ONLY : PGM_RECV_ONLY, yes);
	SETOPT(sock, PGM_MTU, o->mtu);
	if (sender) {
		const int ambient = 30 * 1000 * 1000;
		const int heartbeat[] = {100 * 1000, 100 * 1000, 100 * 1000, 100 * 1000, 1300 * 1000,
					 7 * 1000 * 1000, 16 * 1000 * 1000, 25 * 1000 * 1000, 30 * 1000 * 1000};
		const int rate = o->rate > 0 ? (int)o->rate : 125 * 1000 * 1000;
		SETOPT(sock, PGM_TXW_SQNS, o->txw);
		SETOPT(sock, PGM_TXW_MAX_RTE, rate);
		SETOPT(sock, PGM_AMBIENT_SPM, ambient);
		setopt(sock, IPPROTO_PGM, PGM_HEARTBEAT_SPM, heartbeat, sizeof heartbeat, "PGM_HEARTBEAT_SPM");
	} else {
		const int peer_expiry = 300 * 1000 * 1000, spmr_expiry = 250 * 1000;
		const int bo = o->nak_bo_ivl * 1000, rpt = o->nak_rpt_ivl * 1000,
			  rdata = o->nak_rdata_ivl * 1000;
		SETOPT(sock, PGM_RXW_SQNS, o->rxw);
		SETOPT(sock, PGM_PEER_EXPIRY, peer_expiry);
		SETOPT(sock, PGM_SPMR_EXPIRY, spmr_expiry);
		SETOPT(sock, PGM_NAK_BO_IVL, bo);
		SETOPT(sock, PGM_NAK_RPT_IVL, rpt);
		SETOPT(sock, PGM_NAK_RDATA_IVL, rdata);
		SETOPT(sock, PGM_NAK_DATA_RETRIES, o->nak_retries);
		SETOPT(sock, PGM_NAK_NCF_RETRIES, o->nak_retries);
	}

	struct pgm_sockaddr_t addr;
	memset(&addr, 0, sizeof addr);
	addr.sa_port = o->port;
	addr.sa_addr.sport = o->sport ? o->sport : (uint16_t)(1 + getpid() % 65000);
	{
		/* A GSI unique per process, so runs never collide. */
		struct { pid_t pid; double t; } seed = { getpid(), now_seconds() };
		if (!pgm_gsi_create_from_data(&addr.sa_addr.gsi, (const uint8_t *)&seed, sizeof seed))
			die_pgm("pgm_gsi_create_from_data", NULL);
	}
	struct pgm_interface_req_t if_req;
	memset(&if_req, 0, sizeof if_req);
	if_req.ir_interface = res->ai_recv_addrs[0].gsr_interface;
	if_req.ir_scope_id = 0;
	memcpy(&if_req.ir_address, &res->ai_send_addrs[0].gsr_addr, sizeof if_req.ir_address);
	if (!pgm_bind3(sock, &addr, sizeof addr, &if_req, sizeof if_req, &if_req, sizeof if_req, &err))
		die_pgm("pgm_bind3", err);

	for (unsigned i = 0; i < res->ai_recv_addrs_len; i++)
		setopt(sock, IPPROTO_PGM, PGM_JOIN_GROUP, &res->ai_recv_addrs[i],
		       sizeof(struct group_req), "PGM_JOIN_GROUP");
	setopt(sock, IPPROTO_PGM, PGM_SEND_GROUP, &res->ai_send_addrs[0],
	       sizeof(struct group_req), "PGM_SEND_GROUP");
	pgm_freeaddrinfo(res);

	const int loop = 0;
	SETOPT(sock, PGM_MULTICAST_LOOP, loop);
	SETOPT(sock, PGM_MULTICAST_HOPS, o->hops);
	SETOPT(sock, PGM_NOBLOCK, yes);
	(void)no;
	if (!pgm_connect(sock, &err))
		die_pgm("pgm_connect", err);
	return sock;
}
