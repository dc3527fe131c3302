// Package conformance holds the end-to-end codec tests: real OpenPGM captures read with
// internal/pcapio and decoded with pgmproto/wire must agree field by field with
// Wireshark's dissector (tshark), and packets built with wire's builders, written to a
// pcap by pcapio, must decode in tshark as well-formed PGM with good checksums.
//
// The package has no code of its own; it exists for its tests.
package conformance
