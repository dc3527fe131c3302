package wire

// OpenPGM 5.3's PGMCC source keeps the partial sum of each TSDU beside the
// packet for its repairs, but stores it only once the ODATA has gone out.
// A packet its congestion window held back (queued, advertised by SPMs,
// then NAKed) is repaired with that sum still zero: the RDATA's checksum
// covers the header and options alone. The same packet, rewritten in
// place as RDATA, is also what the held-back send puts on the wire later.
// Seen in shared/pcaps/openpgm-pgmcc-noack.pcap (the two RDATA of
// sequence 1) and in the interop tests.

// HeldBackRepair reports whether b, whose checksum does not verify, is such
// a repair: an RDATA that carries OPT_PGMCC_DATA and whose checksum field
// is the checksum of its header and options without the TSDU. Only the
// TSDU is then unprotected; a receiver that takes it must count it.
func HeldBackRepair(b []byte) bool {
	p, err := Parse(b)
	if err != nil || p.Type() != TypeRDATA {
		return false
	}
	if _, ok := p.Option(OptPGMCCData); !ok {
		return false
	}
	return Checksum(b[:len(b)-len(p.Payload)]) == p.Header.Checksum()
}
