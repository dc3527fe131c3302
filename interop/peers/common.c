/* Shared code of the pgmtun interop peers; see common.h. Written for
 * pgmtun against the public OpenPGM 5.3 API. */
#define _GNU_SOURCE
#include "common.h"

#include <errno.h>
#include <getopt.h>
#include <malloc.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
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

/* ---- parity ports -------------------------------------------------------
 * libpgm 5.3.128 builds parity RDATA in a buffer of its own and never sets
 * that header's source and destination ports: parity leaves with ports 0
 * and no receiver can match it to its session (TSI = GSI + source port).
 * libpgm sends through sendto, which this definition takes over the same
 * way (-rdynamic): a parity RDATA with ports 0 gets the session's ports
 * and its checksum again. */

static uint16_t parity_ports[2]; /* network order; 0: a socket without FEC */

ssize_t sendto(int fd, const void *buf, size_t len, int flags, const struct sockaddr *to, socklen_t tolen)
{
	const uint8_t *p = buf;
	if (parity_ports[0] != 0 && len >= 16 && len <= 65535 && p[4] == 0x05 /* RDATA */ &&
	    (p[5] & 0x80) /* parity */ && p[0] == 0 && p[1] == 0 && p[2] == 0 && p[3] == 0) {
		static uint8_t b[65536];
		memcpy(b, buf, len);
		memcpy(b, parity_ports, 4);
		b[6] = b[7] = 0;
		uint32_t sum = 0;
		for (size_t off = 0; off < len; off += 32768) {
			size_t n = len - off < 32768 ? len - off : 32768; /* even, so words stay aligned */
			sum = csum_words(b + off, (uint16_t)n, sum);
		}
		while (sum >> 16)
			sum = (sum & 0xffff) + (sum >> 16);
		uint16_t c = (uint16_t)~sum;
		if (c == 0)
			c = 0xffff;
		memcpy(b + 6, &c, 2);
		return syscall(SYS_sendto, fd, b, len, flags, to, tolen);
	}
	return syscall(SYS_sendto, fd, buf, len, flags, to, tolen);
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
	o->fec_block = 255;
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
		"      --fec-group K          PGM_USE_FEC: transmission groups of K packets (0: no FEC)\n"
		"      --fec-block N          FEC block: data + parity packets per group (255)\n"
		"      --fec-proactive H      parity packets sent after every group (0)\n"
		"      --fec-ondemand         parity on request; --fec-var-pktlen: OPT_VAR_PKTLEN\n"
		"      --pgmcc                PGM_USE_PGMCC (ack_bo_ivl 50 ms, ack_c 75, ack_c_p 500)\n"
		"      --hops N, --mtu N, -v\n",
		prog, sender ? "send" : "expect");
	exit(64);
}

void parse_opts(struct peer_opts *o, int argc, char **argv, const char *prog, bool sender)
{
	enum { O_CHUNK = 256, O_TXW, O_RXW, O_BO, O_RPT, O_RDATA, O_RETRIES, O_SPORT,
	       O_LINGER, O_DELAY, O_TIMEOUT, O_IDLE, O_HOPS, O_MTU, O_PACE,
	       O_FEC_GROUP, O_FEC_BLOCK, O_FEC_PRO, O_FEC_OND, O_FEC_VAR, O_PGMCC };
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
		{"fec-group", required_argument, 0, O_FEC_GROUP}, {"fec-block", required_argument, 0, O_FEC_BLOCK},
		{"fec-proactive", required_argument, 0, O_FEC_PRO}, {"fec-ondemand", no_argument, 0, O_FEC_OND},
		{"fec-var-pktlen", no_argument, 0, O_FEC_VAR}, {"pgmcc", no_argument, 0, O_PGMCC},
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
		case O_FEC_GROUP: o->fec_group = atoi(optarg); break;
		case O_FEC_BLOCK: o->fec_block = atoi(optarg); break;
		case O_FEC_PRO: o->fec_proactive = atoi(optarg); break;
		case O_FEC_OND: o->fec_ondemand = true; break;
		case O_FEC_VAR: o->fec_varpkt = true; break;
		case O_PGMCC: o->pgmcc = true; break;
		case 'v': o->verbose = true; break;
		default: usage(prog, sender);
		}
	}
	if (!o->network || o->size < RECORD_HDR || o->size > 65536 || o->chunk == 0 ||
	    o->port <= 0 || o->port > 65535 || o->count < 0 || o->pace < 0 || optind != argc ||
	    o->fec_group < 0 || o->fec_group > 255 || o->fec_block < 0 || o->fec_block > 255 ||
	    o->fec_proactive < 0 || o->fec_proactive > 255)
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

/* ---- FEC ----------------------------------------------------------------
 * libpgm 5.3.128 never sets its socket's tg_sqn_shift (log2 k; upstream
 * master neither), so a source reads every ODATA as the end of a
 * transmission group: with proactive parity it queues parity for group
 * "sequence | h" after each packet and pgm_txw_retransmit_try_peek, which
 * uses the window's correct shift, dereferences NULL from _pgm_txw_peek for
 * the group's packets not sent yet (SIGSEGV after the first few ODATA); and
 * it reads parity NAKs as NAKs for a group of one packet. The field is the
 * byte after the six PGM_USE_FEC sets in the private struct pgm_sock_t
 * (use_proactive_parity, use_ondemand_parity, use_var_pktlen, rs_n, rs_k,
 * rs_proactive_h): found by setting two different FEC settings and keeping
 * the one offset where both appear, then set here. */

static void fec_fields(const struct pgm_fecinfo_t *f, uint8_t b[6])
{
	b[0] = f->proactive_packets > 0;
	b[1] = f->ondemand_parity_enabled;
	b[2] = f->var_pktlen_enabled;
	b[3] = f->block_size;
	b[4] = f->group_size;
	b[5] = f->proactive_packets;
}

static void set_fec(pgm_sock_t *sock, const struct peer_opts *o)
{
	const struct pgm_fecinfo_t probe[2] = {
		{.block_size = 255, .proactive_packets = 1, .group_size = 2, .ondemand_parity_enabled = true},
		{.block_size = 200, .proactive_packets = 0, .group_size = 64, .var_pktlen_enabled = true},
	};
	const uint8_t *mem = (const uint8_t *)sock;
	const size_t size = malloc_usable_size(sock);
	uint8_t *match = calloc(size, 1);
	for (int p = 0; p < 2; p++) {
		uint8_t want[6];
		fec_fields(&probe[p], want);
		SETOPT(sock, PGM_USE_FEC, probe[p]);
		for (size_t i = 0; i + 7 <= size; i++)
			if (memcmp(mem + i, want, 6) == 0 && mem[i + 6] == 0)
				match[i]++;
	}
	size_t at = 0, n = 0;
	for (size_t i = 0; i < size; i++)
		if (match[i] == 2) {
			at = i;
			n++;
		}
	free(match);
	if (n != 1) {
		fprintf(stderr, "PGM_USE_FEC: found %zu places for tg_sqn_shift in the socket, want 1\n", n);
		exit(70);
	}
	/* libpgm checks the values (power of two k ≤ 128, h ≤ n − k). */
	struct pgm_fecinfo_t fec = {
		.block_size = (uint8_t)o->fec_block,
		.proactive_packets = (uint8_t)o->fec_proactive,
		.group_size = (uint8_t)o->fec_group,
		.ondemand_parity_enabled = o->fec_ondemand,
		.var_pktlen_enabled = o->fec_varpkt,
	};
	SETOPT(sock, PGM_USE_FEC, fec);
	uint8_t shift = 0;
	while ((1u << shift) < fec.group_size)
		shift++;
	((uint8_t *)sock)[at + 6] = shift;
}

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
	if (o->fec_group > 0)
		set_fec(sock, o);
	if (o->pgmcc) {
		/* OpenPGM's example values (daytime.c, purinrecv.c). */
		const struct pgm_pgmccinfo_t cc = {.ack_bo_ivl = 50 * 1000, .ack_c = 75, .ack_c_p = 500};
		SETOPT(sock, PGM_USE_PGMCC, cc);
	}
	if (sender) {
		const int ambient = 30 * 1000 * 1000;
		const int heartbeat[] = {100 * 1000, 100 * 1000, 100 * 1000, 100 * 1000, 1300 * 1000,
					 7 * 1000 * 1000, 16 * 1000 * 1000, 25 * 1000 * 1000, 30 * 1000 * 1000};
		const int rate = o->rate > 0 ? (int)o->rate : 125 * 1000 * 1000;
		if (o->fec_group > 0) {
			/* libpgm sizes its parity buffer by the TPDU only for a
			 * window in seconds: with PGM_TXW_SQNS it is empty and the
			 * first parity packet aborts (pgm_skb_over_panic). Seconds
			 * holding at least txw packets at the rate instead. */
			const int secs = (int)(((long long)o->txw * o->mtu + rate - 1) / rate);
			SETOPT(sock, PGM_TXW_SECS, secs);
		} else {
			SETOPT(sock, PGM_TXW_SQNS, o->txw);
		}
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
	/* pgm_bind3 refuses a source port equal to the data port, with no
	 * error message; a pid-derived one hits it now and then. */
	if (!o->sport && addr.sa_addr.sport == addr.sa_port)
		addr.sa_addr.sport = (uint16_t)(addr.sa_addr.sport % 65000 + 1);
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
	if (sender && o->fec_group > 0) {
		parity_ports[0] = htons(addr.sa_addr.sport);
		parity_ports[1] = htons((uint16_t)o->port);
	}

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
