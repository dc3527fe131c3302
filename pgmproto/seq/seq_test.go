package seq

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestOrderAcrossWrap(t *testing.T) {
	tests := []struct {
		a, b          Num
		before, after bool
		diff          int32
	}{
		{1, 2, true, false, 1},
		{2, 1, false, true, -1},
		{5, 5, false, false, 0},
		{0xFFFFFFFF, 0, true, false, 1},
		{0, 0xFFFFFFFF, false, true, -1},
		{0xFFFFFFF0, 0x10, true, false, 0x20},
		{0, 0x7FFFFFFF, true, false, 0x7FFFFFFF},
		{0, 0x80000000, false, false, -0x80000000}, // half way: ambiguous, never "before"
	}
	for _, tt := range tests {
		assert.Equalf(t, tt.before, tt.a.Before(tt.b), "%#x before %#x", tt.a, tt.b)
		assert.Equalf(t, tt.after, tt.a.After(tt.b), "%#x after %#x", tt.a, tt.b)
		assert.Equalf(t, tt.diff, Diff(tt.a, tt.b), "diff %#x %#x", tt.a, tt.b)
	}
}

func TestInWindow(t *testing.T) {
	tests := []struct {
		n, trail, lead Num
		in             bool
		size           uint32
	}{
		{10, 10, 20, true, 11},
		{20, 10, 20, true, 11},
		{9, 10, 20, false, 11},
		{21, 10, 20, false, 11},
		{0, 0xFFFFFFF0, 5, true, 22},
		{0xFFFFFFEF, 0xFFFFFFF0, 5, false, 22},
		{6, 0xFFFFFFF0, 5, false, 22},
		{10, 10, 9, false, 0}, // empty window: lead = trail - 1
		{0, 1, 0, false, 0},
	}
	for _, tt := range tests {
		assert.Equalf(t, tt.in, tt.n.InWindow(tt.trail, tt.lead), "%#x in [%#x,%#x]", tt.n, tt.trail, tt.lead)
		assert.Equal(t, tt.size, WindowLen(tt.trail, tt.lead))
	}
}

func TestAddMinMax(t *testing.T) {
	assert.Equal(t, Num(1), Num(0xFFFFFFFF).Add(2))
	assert.Equal(t, Num(0xFFFFFFFF), Num(1).Add(-2))
	assert.Equal(t, Num(0), Num(0xFFFFFFFF).Next())
	assert.Equal(t, Num(3), Max(0xFFFFFFFE, 3))
	assert.Equal(t, Num(0xFFFFFFFE), Min(0xFFFFFFFE, 3))
	assert.True(t, Num(3).AfterEq(3))
	assert.True(t, Num(3).BeforeEq(3))
	assert.False(t, Num(4).BeforeEq(3))
}
