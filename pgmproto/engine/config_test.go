package engine

import (
	"net/netip"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestDefaultConfig(t *testing.T) {
	c := DefaultConfig()
	require.NoError(t, c.Validate())
	d := c.withDefaults()
	assert.Equal(t, 1500, d.MaxTPDU)
	assert.Equal(t, 1456, d.MaxTSDU(), "OpenPGM's TSDU at MTU 1500")
	assert.Equal(t, 1436, d.maxTSDUFragment(), "OpenPGM's fragment payload: 16 × 1436 = 22 976")
	assert.Equal(t, DefaultMaxAPDU, d.MaxAPDU)
	assert.EqualValues(t, 10*400_000/1500, d.TXWSqns, "DefaultTXWSecs at the default rate in full packets")
	assert.Zero(t, d.RXWSqns, "the receive window follows the source")
	assert.Equal(t, DefaultRXWBudget, d.RXWBudget)
	assert.Equal(t, DefaultReceiveBudget, d.ReceiveBudget)
	assert.EqualValues(t, 1<<19, d.windowSqns(), "64 MiB of %d-byte slots, a power of two", rxSlotBytes)
	assert.Equal(t, 16*time.Second, d.FINTimeout, "four NAK cycles")
	assert.Equal(t, DefaultNetHeaderLen, d.NetHeaderLen)
	assert.Equal(t, 400_000, d.TXWMaxRate)
	assert.Equal(t, 400_000, d.MaxRate, "total rate defaults to the window rate")
	assert.Equal(t, 30*time.Second, d.AmbientSPM)
	assert.Equal(t, 100*time.Millisecond, d.HeartbeatSPM[0])
	assert.Equal(t, 300*time.Second, d.PeerExpiry)
	assert.Equal(t, 250*time.Millisecond, d.SPMRExpiry)
	assert.Equal(t, 50*time.Millisecond, d.NAKBOIvl)
	assert.Equal(t, 2*time.Second, d.NAKRptIvl)
	assert.Equal(t, 2*time.Second, d.NAKRdataIvl)
	assert.Equal(t, 50, d.NAKDataRetries)
	assert.Equal(t, 50, d.NAKNCFRetries)
	assert.Equal(t, 4100*time.Millisecond, d.Linger, "a NAK cycle and two back-offs")
	assert.False(t, d.timedTXW, "OpenPGM window mode by default")

	// The zero Config means the same.
	assert.NoError(t, Config{}.Validate())
	z := Config{}.withDefaults()
	assert.Equal(t, d.TXWSqns, z.TXWSqns)
	assert.Equal(t, d.HeartbeatSPM, z.HeartbeatSPM)
}

func TestConfigDefaultWindowFollowsRate(t *testing.T) {
	// OpenPGM mode, no window given: DefaultTXWSecs at the rate
	// (TXW_SECS × TXW_MAX_RTE ÷ TPDU), at most DefaultTXWMaxBytes.
	c := Config{TXWMaxRate: 1_000_000}.withDefaults()
	assert.False(t, c.timedTXW)
	assert.EqualValues(t, 10_000_000/1500, c.TXWSqns)
	assert.InDelta(t, DefaultTXWSecs, c.TXWSecs, float64(time.Millisecond))
	c = Config{TXWMaxRate: 1_000_000, MaxTPDU: 9000}.withDefaults()
	assert.EqualValues(t, 10_000_000/9000, c.TXWSqns)
	c = Config{TXWMaxRate: 1 << 30}.withDefaults()
	assert.EqualValues(t, DefaultTXWMaxBytes/1500, c.TXWSqns, "memory capped")
	assert.Less(t, c.TXWSecs, DefaultTXWSecs)
	// An explicit window is kept.
	assert.EqualValues(t, 100, Config{TXWSqns: 100, TXWMaxRate: 1_000_000}.withDefaults().TXWSqns)
}

func TestConfigDerivedWindow(t *testing.T) {
	// Winsock: 10 s at 1 MB/s is 10 MB: as many sequences as the smallest
	// data packet (20 B IP + 24 B PGM + 1 B) allows, the bytes capped at 10 MB.
	c := Config{TXWSecs: 10 * time.Second, TXWMaxRate: 1_000_000, RXWSecs: time.Second}.withDefaults()
	assert.True(t, c.timedTXW)
	assert.EqualValues(t, 10_000_000/45, c.TXWSqns)
	assert.Equal(t, 10_000_000, c.TXWBytes)
	assert.EqualValues(t, 400_000/1500, c.RXWSqns)
	// An explicit byte window is kept.
	c = Config{TXWSecs: 10 * time.Second, TXWMaxRate: 1_000_000, TXWBytes: 1 << 20}.withDefaults()
	assert.Equal(t, 1<<20, c.TXWBytes)
	// A small window caps the default MaxAPDU.
	c = Config{TXWSqns: 4}.withDefaults()
	assert.Equal(t, 4*1436, c.MaxAPDU)
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		mod  func(*Config)
		want string
	}{
		{"tiny MTU", func(c *Config) { c.MaxTPDU = 60 }, "MaxTPDU 60"},
		{"huge MTU", func(c *Config) { c.MaxTPDU = 70000 }, "MaxTPDU 70000"},
		{"negative APDU", func(c *Config) { c.MaxAPDU = -1 }, "MaxAPDU -1"},
		{"window too big", func(c *Config) { c.TXWSqns = 1 << 31 }, "transmit window"},
		{"negative bytes", func(c *Config) { c.TXWBytes = -5 }, "TXWBytes -5"},
		{"advance pct", func(c *Config) { c.TXWAdvancePct = 101 }, "TXWAdvancePct 101"},
		{"rates", func(c *Config) { c.ODATARate = -1 }, "ODATARate -1"},
		{"NAK limit", func(c *Config) { c.AddrNAKBurst = -1 }, "AddrNAKBurst -1"},
		{"late join", func(c *Config) { c.LateJoinPct = 80 }, "LateJoinPct 80"},
		{"timers", func(c *Config) { c.NAKBOIvl = -time.Second }, "receiver timers"},
		{"heartbeat", func(c *Config) { c.HeartbeatSPM = []time.Duration{time.Second, 0} }, "HeartbeatSPM[1]"},
		{"group", func(c *Config) { c.Group = netip.MustParseAddr("10.0.0.1") }, "not a multicast address"},
		{"linger", func(c *Config) { c.Linger = -1 }, "Linger"},
		{"APDU vs window", func(c *Config) { c.TXWSqns, c.MaxAPDU = 2, 10_000 }, "needs 7 fragments"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := DefaultConfig()
			tc.mod(&c)
			err := c.Validate()
			require.ErrorIs(t, err, ErrConfig)
			assert.Contains(t, err.Error(), tc.want)
			_, err = NewSource(c, t0)
			assert.ErrorIs(t, err, ErrConfig)
		})
	}
}

func TestConfigRoundTrip(t *testing.T) {
	// A Config read back from an engine means the same when reused.
	s, err := NewSource(testConfig(), t0)
	require.NoError(t, err)
	c := s.Config()
	assert.False(t, c.withDefaults().timedTXW, "still OpenPGM mode")
	s2, err := NewSource(c, t0)
	require.NoError(t, err)
	assert.Equal(t, s.Config(), s2.Config())
}
