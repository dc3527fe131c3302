// Package wire is the RFC 3208 (PGM) wire codec: typed byte views for the
// common header, every packet type (SPM, POLL, POLR, ODATA, RDATA, NAK, NNAK,
// NCF, SPMR and PGMCC's ACK) and every option extension, builders that write
// into a caller's buffer, and the PGM checksum.
//
// # Reading
//
// Parse validates a packet once and returns a Packet whose fields are views
// into the caller's bytes. Parse never allocates on success and never panics,
// whatever the input; a malformed packet yields a *ParseError naming the field
// and the length that is wrong, matchable with errors.Is against ErrTruncated,
// ErrBadType, ErrBadAFI, ErrBadLength, ErrBadOption and ErrUnknownOption.
// Parse does not verify the checksum: call VerifyChecksum for that (a zero
// checksum field means the sender did not compute one).
//
//	p, err := wire.Parse(b)
//	if err != nil { ... }
//	switch p.Type() {
//	case wire.TypeODATA, wire.TypeRDATA:
//		d := p.Data() // d.SQN(), d.Trail(); p.Payload is the TSDU
//		if f, ok := p.Fragment(); ok { ... f.FirstSQN(), f.Offset(), f.APDULen() }
//	case wire.TypeNAK:
//		n := p.NAK()  // n.SQN(), n.SourceNLA(), n.GroupNLA()
//		if l, ok := p.NAKList(); ok { for i := 0; i < l.Len(); i++ { l.At(i) } }
//	}
//	for it := p.Options.Iter(); it.Next(); { o := it.Option(); ... }
//
// Unknown options are skipped unless their OPX bits say the packet must be
// discarded (RFC 3208 section 9.1), in which case Parse fails with
// ErrUnknownOption.
//
// # Writing
//
// A Builder writes one packet into a caller's buffer without allocating. Start
// with the packet type, chain the options in wire order, add the TSDU for data
// packets and call Finish, which writes OPT_LENGTH's total, the OPT_END bit, the
// header's OPT_PRESENT and OPT_NETSIG flags, the TSDU length and the checksum
// (summing a copied TSDU during the copy):
//
//	var b wire.Builder
//	n, err := b.ODATA(buf, wire.Downstream(tsi, dport), sqn, trail).
//		Fragment(first, off, apduLen).FIN().Payload(p).Finish()
//
// Downstream and Upstream put the ports the right way round for packets from
// the source and towards the source. PayloadBuf reserves the TSDU for callers
// that fill it themselves; Bytes returns the finished packet; ODATAToRDATA turns
// a kept ODATA into its repair in place. ExactFlags and RawOption reproduce
// received packets byte for byte (tests, proxies).
//
// # Checksum
//
// Checksum, SetChecksum and VerifyChecksum implement the PGM checksum (the
// Internet checksum over the whole PGM packet, no pseudo-header). Sum and
// PartialChecksum accumulate it over pieces, e.g. while copying payloads.
package wire
