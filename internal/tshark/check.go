package tshark

import (
	"testing"
)

// CheckPGM has tshark dissect file and reports through t.Errorf every PGM packet with
// a bad checksum, and every packet with expert info or a malformed mark (which is how
// tshark reports PGM it cannot take apart). decodeAs are -d rules (DefaultDecodeAs for
// OpenPGM's UDP encapsulation). It returns the number of PGM packets by type name as
// tshark shows it ("0x04" for ODATA, ...).
//
// Wireshark 4.0 does not know SPMR (type 0x0c): it shows such packets as data, so
// they are neither counted nor checked here.
func CheckPGM(t testing.TB, file string, decodeAs []string) map[string]int {
	t.Helper()
	rows := Fields(t, file, "pgm || _ws.expert", decodeAs,
		"frame.number", "pgm.hdr.type", "pgm.hdr.cksum.status", "_ws.expert.message")
	byType := map[string]int{}
	for _, r := range rows {
		if r[3] != "" {
			t.Errorf("%s: frame %s: tshark: %s", file, r[0], r[3])
		}
		if r[1] == "" {
			continue
		}
		byType[r[1]]++
		if st := Last(r[2]); st != ChecksumGood {
			t.Errorf("%s: frame %s: PGM type %s: checksum status %q, want good", file, r[0], r[1], st)
		}
	}
	return byType
}
