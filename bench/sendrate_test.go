package main

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A source at exactly the limit reads 1.0; one that stalls for half of
// its third second shows it in that bucket and in the whole.
func TestRateShares(t *testing.T) {
	const limit = 1_000_000
	t0 := time.Unix(1000, 0)
	mk := func(stall bool) ([]time.Time, []int, []bool) {
		var at []time.Time
		var n []int
		var od []bool
		for i := 0; i <= 4000; i++ { // 1000-byte packets every ms: 1 MB/s
			d := time.Duration(i) * time.Millisecond
			if stall && d >= 2*time.Second && d < 2500*time.Millisecond {
				continue
			}
			at = append(at, t0.Add(d))
			n = append(n, 1000)
			od = append(od, i%100 != 0) // every 100th an SPM
		}
		return at, n, od
	}

	at, n, od := mk(false)
	m, series, err := rateShares(at, n, od, 100, limit)
	require.NoError(t, err)
	assert.InDelta(t, 1.0, m[mRateShare], 0.001)
	assert.InDelta(t, 1.0, m[mMinShare], 0.001)
	assert.Equal(t, "1.000 1.000 1.000", series[:17])

	at, n, od = mk(true)
	m, _, err = rateShares(at, n, od, 100, limit)
	require.NoError(t, err)
	assert.InDelta(t, 0.875, m[mRateShare], 0.002)
	assert.InDelta(t, 0.5, m[mMinShare], 0.002)
	assert.InDelta(t, 1.0, m[mMaxShare], 0.002)

	_, _, err = rateShares(at, n, od, len(od), limit)
	assert.Error(t, err, "fewer ODATA than asked for")
}
