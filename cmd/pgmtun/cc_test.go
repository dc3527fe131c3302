package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// pgmtun send and recv with --cc pgmcc: the receiver is elected acker and
// ACKs, the data arrives whole, and the sender's JSON statistics carry
// the PGMCC state. With a receiver that does not run PGMCC the sender
// falls back to --rate and still delivers.
func TestSendRecvPGMCC(t *testing.T) {
	data := randomBytes(16, 300_000)
	for _, c := range []struct {
		name     string
		recvArgs []string
		acker    bool
	}{
		{"both ends", []string{"--cc", "pgmcc"}, true},
		{"receiver without", nil, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			common := append(append([]string{}, fastPGM...), "--stats", "json", "--rate", "2MB/s")
			tr := sendRecv(t, data, common, []string{"--cc", "pgmcc"}, c.recvArgs)
			require.Equal(t, exitOK, tr.sendCode, "send stderr:\n%s", tr.sendErr)
			require.Equal(t, exitOK, tr.recvCode, "recv stderr:\n%s", tr.recvErr)
			require.True(t, bytes.Equal(data, tr.out), "output differs from input")
			var srep senderReport
			require.NoError(t, json.Unmarshal([]byte(tr.sendErr), &srep), "%s", tr.sendErr)
			cc := srep.PGM.PGMCC
			require.True(t, cc.Enabled)
			if c.acker {
				assert.True(t, strings.HasPrefix(cc.Acker.String(), "10.1."), "acker %v", cc.Acker)
				assert.Positive(t, cc.AcksReceived)
			} else {
				assert.Zero(t, cc.AcksReceived)
				assert.True(t, cc.Fallback)
			}
		})
	}
	code, _, errOut := runWith(nil, "send", "--cc", "tcp")
	assert.NotEqual(t, exitOK, code)
	assert.Contains(t, errOut, "want none or pgmcc")
}
