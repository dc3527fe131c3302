package main

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/pgmtun/pgmtun/interop"
)

func TestRecordCacheMatchesFillRecord(t *testing.T) {
	for _, size := range []int{interop.RecordHeaderLen, 64, 1000, 8000} {
		rc := newRecordCache(size)
		want := make([]byte, size)
		// Past 256 (reuse with a patched sequence) and near 2^32.
		for _, seq := range []uint32{0, 1, 255, 256, 257, 511, 1000, 70000, 1<<32 - 1} {
			interop.FillRecord(want, seq)
			require.Equal(t, want, rc.record(seq), "size %d seq %d", size, seq)
			require.NoError(t, interop.CheckRecord(rc.record(seq), seq))
		}
	}
}
