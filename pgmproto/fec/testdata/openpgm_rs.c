/* Drives OpenPGM's own Reed-Solomon code (libpgm.a: pgm_rs_create,
 * pgm_rs_encode, pgm_rs_decode_parity_inline) for the Go codec's
 * equivalence test. These functions are global in Debian's static libpgm
 * but hidden in the shared one, so this program links libpgm.a.
 *
 *   openpgm_rs encode < k, len(2, big-endian), k×len data
 *     > the parity packets of code indices k..254, len bytes each
 *   openpgm_rs decode < k, len(2), k offsets, k×len block
 *     > the k data packets after pgm_rs_decode_parity_inline
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* pgm_rs_t as in OpenPGM 5.3's impl/reed_solomon.h */
typedef struct {
	uint8_t n, k;
	uint8_t *GM, *RM;
} rs_t;

void pgm_rs_create(rs_t *, uint8_t, uint8_t);
void pgm_rs_destroy(rs_t *);
void pgm_rs_encode(rs_t *, const uint8_t **, uint8_t, uint8_t *, uint16_t);
void pgm_rs_decode_parity_inline(rs_t *, uint8_t **, const uint8_t *, uint16_t);

static void readn(void *p, size_t n)
{
	if (fread(p, 1, n, stdin) != n) {
		fprintf(stderr, "openpgm_rs: short input\n");
		exit(2);
	}
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: openpgm_rs encode|decode\n");
		return 2;
	}
	uint8_t hdr[3];
	readn(hdr, 3);
	const unsigned k = hdr[0], len = (unsigned)hdr[1] << 8 | hdr[2];
	if (k < 1 || k > 128 || len < 1) {
		fprintf(stderr, "openpgm_rs: bad k or len\n");
		return 2;
	}
	rs_t rs;
	pgm_rs_create(&rs, 255, (uint8_t)k);
	uint8_t offsets[128];
	if (!strcmp(argv[1], "decode"))
		readn(offsets, k);
	uint8_t *buf = malloc((size_t)k * len), *out = malloc(len);
	uint8_t *pkt[128];
	readn(buf, (size_t)k * len);
	for (unsigned i = 0; i < k; i++)
		pkt[i] = buf + (size_t)i * len;
	if (!strcmp(argv[1], "encode")) {
		for (unsigned j = k; j < 255; j++) {
			pgm_rs_encode(&rs, (const uint8_t **)pkt, (uint8_t)j, out, (uint16_t)len);
			fwrite(out, 1, len, stdout);
		}
	} else {
		pgm_rs_decode_parity_inline(&rs, pkt, offsets, (uint16_t)len);
		fwrite(buf, 1, (size_t)k * len, stdout);
	}
	pgm_rs_destroy(&rs);
	free(buf);
	free(out);
	return fflush(stdout) ? 1 : 0;
}
