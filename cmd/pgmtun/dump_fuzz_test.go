package main

import (
	"bytes"
	"io"
	"os"
	"testing"
)

// FuzzDump: whatever the capture holds, dump prints lines and a summary and returns;
// it never panics (option formatting included).
func FuzzDump(f *testing.F) {
	for _, name := range []string{"testdata/tun-nak-repair.pcapng", "../../testdata/pcaps/tun-nak-repair.pcap"} {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b[:min(len(b), 3000)])
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, o := range []dumpOptions{{udpPorts: portList{3055, 3056}}, {udpPorts: portList{3056}, verbose: true}} {
			st, _ := dump(io.Discard, bytes.NewReader(b), o)
			var out bytes.Buffer
			st.print(&out)
			if st.pgm < st.malformed || st.frames < st.pgm+st.other+st.undecodable {
				t.Fatalf("inconsistent counts: %+v", st)
			}
		}
	})
}
