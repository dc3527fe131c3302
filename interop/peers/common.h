/* Shared code of the pgmtun interop peers (pgm_send, pgm_recv): options,
 * socket setup, the checked record format, and correct replacements for
 * libpgm's exported checksum helpers. */
#ifndef PGMTUN_PEERS_COMMON_H
#define PGMTUN_PEERS_COMMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <poll.h> /* before pgm.h: enables pgm_poll_info */
#include <pgm/pgm.h>

/* Record layout, identical to interop/record.go:
 *   [0:4]  sequence number, big-endian
 *   [4:8]  CRC-32 (IEEE) of bytes [8:size], big-endian
 *   [8:]   pattern byte i = (seq*131 + i*7 + (i>>8)) & 0xff
 */
#define RECORD_HDR 8

struct peer_opts {
	const char *network;   /* "ADDR;GROUP" */
	int port;              /* PGM data-destination port */
	int udp_encap;         /* 0: raw IP protocol 113; else UDP port (unicast) */
	int udp_encap_mcast;   /* UDP multicast port (udp_encap unless given) */
	int sport;             /* PGM source port (sender); 0 picks one */
	size_t size;           /* record size in bytes */
	long count;            /* records to send / expect (0: until the end) */
	bool stream;           /* stream mode: records are a byte stream */
	size_t chunk;          /* stream mode sender: bytes per send */
	long rate;             /* TXW_MAX_RTE, bytes per second */
	long pace;             /* sender: record bytes per second between APDUs (0: none) */
	int txw;               /* transmit window, sequences */
	int rxw;               /* receive window, sequences */
	int nak_bo_ivl;        /* ms */
	int nak_rpt_ivl;       /* ms */
	int nak_rdata_ivl;     /* ms */
	int nak_retries;       /* data and NCF retries */
	double linger;         /* sender: seconds to keep serving repairs */
	double delay;          /* sender: seconds between connect and first data */
	double timeout;        /* receiver: give up after this many seconds */
	double idle;           /* receiver: end after this long without data */
	int hops;              /* multicast TTL */
	int mtu;
	bool verbose;
	/* PGM_USE_FEC (struct pgm_fecinfo_t) when fec_group > 0 */
	int fec_group;         /* k: packets per transmission group */
	int fec_block;         /* n: data + parity per group (255) */
	int fec_proactive;     /* h: parity packets after every group */
	bool fec_ondemand;     /* parity on request */
	bool fec_varpkt;       /* OPT_VAR_PKTLEN: groups of unequal TSDUs */
	bool pgmcc;            /* PGM_USE_PGMCC (ack_bo_ivl 50 ms, ack_c 75, ack_c_p 500) */
};

void opts_defaults(struct peer_opts *o);
/* parse_opts fills o from argv; it exits with status 64 on bad usage. */
void parse_opts(struct peer_opts *o, int argc, char **argv, const char *prog, bool sender);

/* open_socket creates, configures, binds and connects a non-blocking PGM
 * socket; it exits with status 70 on failure. */
pgm_sock_t *open_socket(const struct peer_opts *o, bool sender);

uint32_t crc32_ieee(const uint8_t *p, size_t n);
void record_fill(uint8_t *b, size_t size, uint32_t seq);
/* record_check returns 0 if b holds record seq, else a negative code. */
int record_check(const uint8_t *b, size_t size, uint32_t seq, char *why, size_t whylen);

double now_seconds(void);
/* wait_socket polls the socket's descriptors for input for at most ms. */
void wait_socket(pgm_sock_t *sock, int ms);
/* remain_ms returns the PGM_TIME_REMAIN or PGM_RATE_REMAIN in ms. */
int remain_ms(pgm_sock_t *sock, int optname);

#endif
