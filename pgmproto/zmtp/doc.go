// Package zmtp is ZeroMQ's wire format over PGM, as libzmq 4.3 sends it on
// its pgm:// and epgm:// transports (and Crossroads I/O on xs_pgm): the
// byte layout of each TSDU, with no PGM header and no I/O.
//
// # Format
//
// Every TSDU (one PGM APDU, never fragmented: libzmq sends at most the
// socket's largest unfragmented TSDU) starts with a 2-byte big-endian
// offset of the first message that begins in it, NoOffset (0xFFFF) when
// none does. The rest is a byte stream of ZMTP/1.0 frames that runs on
// from one TSDU into the next:
//
//	length  1 byte, flags + body (1..254), or 0xFF and 8 bytes big-endian
//	flags   1 byte, bit 0 (FlagMore): another frame of this message follows
//	body    length-1 bytes
//
// A message is one or more frames, the last without FlagMore. Many small
// messages share one TSDU; a long one continues across several, its frame
// headers split anywhere.
//
// # Loss and late join
//
// A receiver that starts in the middle of a stream, or has lost data,
// cannot tell where a frame begins until a TSDU's offset says so. Decoder
// is not synchronised at first and after Lost: it skips TSDUs without an
// offset and resumes at the next offset, dropping the message it was
// assembling. It checks every offset against the frames it has decoded, so
// a stream that jumps (a gap nobody reported, a corrupt length) is caught
// at the next offset and never spliced into a message: a message is handed
// out whole, as sent, or not at all.
package zmtp
