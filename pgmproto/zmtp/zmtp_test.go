package zmtp

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestFrameEncoding(t *testing.T) {
	for _, tc := range []struct {
		body   int
		more   bool
		header []byte
	}{
		{0, false, []byte{1, 0}},
		{0, true, []byte{1, 1}},
		{1, false, []byte{2, 0}},
		{253, false, []byte{254, 0}},                           // the largest short length
		{254, true, []byte{0xff, 0, 0, 0, 0, 0, 0, 0, 255, 1}}, // 255 needs the escape
		{255, false, []byte{0xff, 0, 0, 0, 0, 0, 0, 1, 0, 0}},
		{100_000, false, []byte{0xff, 0, 0, 0, 0, 0, 0x01, 0x86, 0xa1, 0}},
	} {
		t.Run(fmt.Sprint(tc.body, tc.more), func(t *testing.T) {
			body := bytes.Repeat([]byte{0xab}, tc.body)
			got := AppendFrame([]byte("x"), body, tc.more)
			require.Equal(t, "x", string(got[:1]))
			got = got[1:]
			assert.Equal(t, tc.header, got[:len(tc.header)])
			assert.Equal(t, body, got[len(tc.header):])
			assert.Equal(t, len(got), FrameLen(tc.body))
		})
	}
	assert.Equal(t, 2+3+10+300, MessageLen([]byte("abc"), make([]byte, 300)))
}

// encodeAll queues msgs and cuts the whole stream into TSDUs of size.
func encodeAll(t testing.TB, size int, msgs [][][]byte) [][]byte {
	t.Helper()
	var e Encoder
	for _, m := range msgs {
		require.NoError(t, e.Append(m...))
	}
	var out [][]byte
	for {
		p := e.Next(nil, size)
		if p == nil {
			break
		}
		out = append(out, p)
	}
	assert.Zero(t, e.Messages())
	assert.Zero(t, e.Buffered())
	return out
}

// decodeAll feeds tsdus (nil entries are gaps reported with Lost) and
// returns the messages, deep-copied, and the errors.
func decodeAll(d *Decoder, tsdus [][]byte) (msgs [][][]byte, errs []error) {
	for _, p := range tsdus {
		if p == nil {
			d.Lost()
			continue
		}
		d.Feed(p)
		for {
			m, err := d.Next()
			if err != nil {
				errs = append(errs, err)
				continue
			}
			if m == nil {
				break
			}
			c := make([][]byte, len(m))
			for i, f := range m {
				c[i] = bytes.Clone(f)
			}
			msgs = append(msgs, c)
		}
	}
	return msgs, errs
}

func msg(frames ...string) [][]byte {
	m := make([][]byte, len(frames))
	for i, f := range frames {
		m[i] = []byte(f)
	}
	return m
}

func TestEncoderOffsets(t *testing.T) {
	tsdus := encodeAll(t, 2+8, [][][]byte{msg("ab"), msg("cdefghij"), msg("", "k")})
	// Stream: 03 00 a b | 09 00 c d e f g h i j | 01 01 | 02 00 k
	want := [][]byte{
		{0, 0, 3, 0, 'a', 'b', 9, 0, 'c', 'd'},
		{0, 6, 'e', 'f', 'g', 'h', 'i', 'j', 1, 1},
		{0xff, 0xff, 2, 0, 'k'},
	}
	assert.Equal(t, want, tsdus)
	// A message starting in the middle.
	tsdus = encodeAll(t, 2+5, [][][]byte{msg("abc"), msg("d")})
	assert.Equal(t, [][]byte{{0, 0, 4, 0, 'a', 'b', 'c'}, {0, 0, 2, 0, 'd'}}, tsdus)
	tsdus = encodeAll(t, 2+6, [][][]byte{msg("abc"), msg("d")})
	assert.Equal(t, [][]byte{{0, 0, 4, 0, 'a', 'b', 'c', 2}, {0xff, 0xff, 0, 'd'}}, tsdus)

	var e Encoder
	assert.ErrorIs(t, e.Append(), ErrEmptyMessage)
	assert.Nil(t, e.Next(nil, 100))
}

func TestRoundTrip(t *testing.T) {
	big := make([]byte, 100_000)
	for i := range big {
		big[i] = byte(i * 13)
	}
	sets := map[string][][][]byte{
		"edge sizes": {
			msg(""), {make([]byte, 254)}, {make([]byte, 255)}, {big},
			{[]byte("topic"), make([]byte, 254), make([]byte, 255), nil, big},
		},
		"small batched": func() (m [][][]byte) {
			for i := range 2000 {
				m = append(m, msg("t", fmt.Sprintf("message %d", i)))
			}
			return
		}(),
	}
	for name, msgs := range sets {
		for _, size := range []int{MinTSDU, 7, 12, 1436, 1456, 9000, MaxTSDU} {
			t.Run(fmt.Sprint(name, "/", size), func(t *testing.T) {
				tsdus := encodeAll(t, size, msgs)
				for _, p := range tsdus {
					require.LessOrEqual(t, len(p), size)
				}
				got, errs := decodeAll(&Decoder{}, tsdus)
				assert.Empty(t, errs)
				assertSameMessages(t, msgs, got)
			})
		}
	}
}

func assertSameMessages(t *testing.T, want, got [][][]byte) {
	t.Helper()
	require.Equal(t, len(want), len(got), "messages")
	for i := range want {
		require.Equal(t, len(want[i]), len(got[i]), "frames of message %d", i)
		for j := range want[i] {
			require.True(t, bytes.Equal(want[i][j], got[i][j]), "message %d frame %d", i, j)
		}
	}
}

// lossCorpus is a stream with a little of everything: small batched
// messages, multipart ones, frames with long lengths whose headers split
// across TSDUs, and messages longer than several TSDUs.
func lossCorpus(seed uint64, n int) [][][]byte {
	r := rand.New(rand.NewPCG(seed, 1))
	var msgs [][][]byte
	for i := range n {
		var m [][]byte
		nf := 1 + r.IntN(3)
		for j := range nf {
			n := r.IntN(40)
			switch r.IntN(12) {
			case 0:
				n = 250 + r.IntN(10)
			case 1:
				n = 500 + r.IntN(1500)
			}
			f := make([]byte, n)
			for k := range f {
				f[k] = byte(i*31 + j*7 + k)
			}
			if n > 0 {
				f[0] = byte(i)
			}
			m = append(m, f)
		}
		msgs = append(msgs, m)
	}
	return msgs
}

// isSubsequence reports whether got is a subsequence of want, and returns
// the index in want of each message of got.
func subsequence(want, got [][][]byte) ([]int, bool) {
	var idx []int
	i := 0
	for _, g := range got {
		for i < len(want) && !sameMessage(want[i], g) {
			i++
		}
		if i == len(want) {
			return idx, false
		}
		idx = append(idx, i)
		i++
	}
	return idx, true
}

func sameMessage(a, b [][]byte) bool {
	return slices.EqualFunc(a, b, func(x, y []byte) bool { return bytes.Equal(x, y) })
}

// starts returns, for each TSDU, the index of the first message that
// begins in it (or -1), by walking the stream.
func messageStarts(msgs [][][]byte, tsdus [][]byte) []int {
	first := make([]int, len(tsdus))
	pos, m := 0, 0
	stream := 0
	for i, p := range tsdus {
		first[i] = -1
		end := stream + len(p) - HeaderLen
		for m < len(msgs) && pos < end {
			if pos >= stream && first[i] < 0 {
				first[i] = m
			}
			pos += MessageLen(msgs[m]...)
			m++
		}
		stream = end
	}
	return first
}

// TestLossResync drops each TSDU in turn (and runs of them), reported as
// a loss: every message handed out is one that was sent, whole, in order,
// and every message that begins after the next offset in the stream
// arrives.
func TestLossResync(t *testing.T) {
	msgs := lossCorpus(1, 120)
	for _, size := range []int{40, 300, 1436} {
		tsdus := encodeAll(t, size, msgs)
		first := messageStarts(msgs, tsdus)
		for run := 1; run <= 3; run++ {
			for k := 0; k+run <= len(tsdus); k++ {
				in := slices.Clone(tsdus)
				for j := k; j < k+run; j++ {
					in[j] = nil
				}
				d := &Decoder{}
				got, errs := decodeAll(d, in)
				require.Empty(t, errs, "size %d, TSDUs %d..%d lost", size, k, k+run-1)
				idx, ok := subsequence(msgs, got)
				require.True(t, ok, "size %d, TSDUs %d..%d lost: a message not sent was handed out", size, k, k+run-1)
				// Everything from the first message that starts after the
				// gap arrives.
				resume := -1
				for j := k + run; j < len(tsdus); j++ {
					if first[j] >= 0 {
						resume = first[j]
						break
					}
				}
				if resume >= 0 {
					var after []int
					for _, i := range idx {
						if i >= resume {
							after = append(after, i)
						}
					}
					require.Equal(t, len(msgs)-resume, len(after), "size %d, TSDUs %d..%d lost: messages after the resync point", size, k, k+run-1)
				}
			}
		}
	}
}

// TestLateJoin starts the decoder at each TSDU of a stream, as a receiver
// that joins late: it hands out exactly the messages from the first one
// that begins in what it sees.
func TestLateJoin(t *testing.T) {
	msgs := lossCorpus(2, 200)
	tsdus := encodeAll(t, 200, msgs)
	first := messageStarts(msgs, tsdus)
	for k := range tsdus {
		got, errs := decodeAll(&Decoder{}, tsdus[k:])
		require.Empty(t, errs)
		want := [][][]byte(nil)
		for j := k; j < len(tsdus); j++ {
			if first[j] >= 0 {
				want = msgs[first[j]:]
				break
			}
		}
		assertSameMessages(t, want, got)
	}
}

// TestUnreportedGap skips TSDUs without telling the decoder (the stack
// always reports gaps; this is the check behind it): where the offsets
// show the jump, the decoder reports ErrInconsistent and drops the message
// it was assembling, so whatever it hands out was sent, as sent. A jump
// that lands exactly on a message start cannot be seen; in this seeded
// stream none does.
func TestUnreportedGap(t *testing.T) {
	msgs := lossCorpus(3, 300)
	tsdus := encodeAll(t, 300, msgs)
	caught := 0
	for k := 1; k < len(tsdus)-1; k++ {
		in := slices.Delete(slices.Clone(tsdus), k, k+1)
		got, errs := decodeAll(&Decoder{}, in)
		for _, err := range errs {
			require.ErrorIs(t, err, ErrInconsistent)
		}
		if len(errs) > 0 {
			caught++
		}
		_, ok := subsequence(msgs, got)
		require.True(t, ok, "TSDU %d skipped: a message not sent was handed out", k)
	}
	assert.Greater(t, caught, (len(tsdus)-2)/2, "most unreported gaps are caught by an offset")
}

func TestDecoderErrors(t *testing.T) {
	for _, tc := range []struct {
		name  string
		tsdus [][]byte
		want  []error
		msgs  [][][]byte
	}{
		{"short TSDU", [][]byte{{0}}, []error{ErrMalformed}, nil},
		{"offset past the end", [][]byte{{0, 5, 2, 0, 'a'}}, []error{ErrMalformed}, nil},
		{"zero length", [][]byte{{0, 0, 0, 2, 0, 'a'}}, []error{ErrMalformed}, nil},
		{"zero long length", [][]byte{{0, 0, 0xff, 0, 0, 0, 0, 0, 0, 0, 0}}, []error{ErrMalformed}, nil},
		{"huge length", [][]byte{{0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0}}, []error{ErrTooLarge}, nil},
		{"then resync at the next offset", [][]byte{
			{0, 0, 0, 2, 0, 'a'},
			{0xff, 0xff, 2, 0, 'b'},
			{0, 0, 2, 0, 'c'},
		}, []error{ErrMalformed}, [][][]byte{msg("c")}},
		{"message starts in a TSDU that says none does", [][]byte{
			{0, 0, 2, 0, 'a'},
			{0xff, 0xff, 2, 0, 'b'},
			{0, 0, 2, 0, 'c'},
		}, []error{ErrInconsistent}, [][][]byte{msg("a"), msg("c")}},
		{"message runs over the offset", [][]byte{
			{0, 0, 5, 1, 'a', 'b', 'c', 'd'},
			{0, 2, 'e', 'f', 2, 0, 'g'},
		}, []error{ErrInconsistent}, [][][]byte{msg("g")}},
		{"message ends before the offset", [][]byte{
			{0, 0, 3, 0, 'a', 'b'},
			{0, 3, 2, 0, 'c', 2, 0, 'd'},
		}, []error{ErrInconsistent}, [][][]byte{msg("ab"), msg("d")}},
		{"libzmq's end-of-data offset", [][]byte{
			{0, 0, 5, 0, 'a', 'b', 'c'},
			{0, 1, 'd'},
			{0, 0, 2, 0, 'e'},
		}, nil, [][][]byte{msg("abcd"), msg("e")}},
		{"joining at an end-of-data offset", [][]byte{
			{0, 1, 'd'},
			{0, 0, 2, 0, 'e'},
		}, nil, [][][]byte{msg("e")}},
		{"end-of-data offset in the middle of a message", [][]byte{
			{0, 0, 5, 0, 'a', 'b'},
			{0, 1, 'c'},
			{0, 0, 2, 0, 'd'},
		}, []error{ErrInconsistent}, [][][]byte{msg("d")}},
		{"long header runs over the offset", [][]byte{
			{0, 0, 2, 1, 'a', 0xff, 0},
			{0, 2, 0, 0, 2, 0, 'b'},
		}, []error{ErrInconsistent}, [][][]byte{msg("b")}},
		{"skipped until an offset", [][]byte{
			{0xff, 0xff, 9, 9, 9},
			{0, 1, 9, 2, 0, 'a'},
		}, nil, [][][]byte{msg("a")}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, errs := decodeAll(&Decoder{}, tc.tsdus)
			require.Len(t, errs, len(tc.want), "%v", errs)
			for i := range errs {
				assert.ErrorIs(t, errs[i], tc.want[i])
			}
			assertSameMessages(t, tc.msgs, got)
		})
	}
}

func TestDecoderLimits(t *testing.T) {
	tsdus := encodeAll(t, 100, [][][]byte{
		{make([]byte, 50), make([]byte, 50)}, // 100 bytes: too many
		msg("ok"),
		msg("a", "b", "c"), // 3 frames: too many
		msg("a", "b"),
	})
	d := NewDecoder(Limits{MaxMessage: 99, MaxFrames: 2})
	got, errs := decodeAll(d, tsdus)
	require.Len(t, errs, 2)
	for _, err := range errs {
		assert.ErrorIs(t, err, ErrTooLarge)
	}
	// The first error drops the rest of the first TSDU; the second TSDU's
	// offset resumes at "ok"; the second error drops the rest of it.
	assertSameMessages(t, [][][]byte{msg("ok")}, got)
	st := d.Stats()
	assert.EqualValues(t, 2, st.Errors)
	assert.EqualValues(t, 2, st.Dropped)
	assert.EqualValues(t, len(got), st.Messages)
}

func TestFeedBeforeDrained(t *testing.T) {
	d := &Decoder{}
	d.Feed([]byte{0, 0, 2, 0, 'a', 2, 0, 'b', 3})
	m, err := d.Next()
	require.NoError(t, err)
	require.Equal(t, msg("a"), m)
	// The rest of the TSDU is abandoned: resume at the next offset only.
	d.Feed([]byte{0xff, 0xff, 0, 'c', 2, 0, 'd'})
	m, err = d.Next()
	assert.NoError(t, err)
	assert.Nil(t, m)
	assert.False(t, d.Synced())
	assert.EqualValues(t, 1, d.Stats().Skipped)
}

func TestLostReportsDrop(t *testing.T) {
	d := &Decoder{}
	assert.False(t, d.Lost())
	d.Feed([]byte{0, 0, 5, 0, 'a'})
	m, err := d.Next()
	require.NoError(t, err)
	require.Nil(t, m)
	assert.True(t, d.Partial())
	assert.True(t, d.Lost())
	assert.False(t, d.Partial())
	assert.EqualValues(t, 1, d.Stats().Dropped)
}

// The decoder reuses its memory and, for messages inside one TSDU, hands
// out views of it: no allocation per TSDU in the steady state. Spilled
// messages reuse the decoder's buffer.
func TestDecoderAllocs(t *testing.T) {
	var msgs [][][]byte
	for i := range 200 {
		msgs = append(msgs, msg("topic", fmt.Sprintf("body %d", i)), [][]byte{make([]byte, 3000)})
	}
	tsdus := encodeAll(t, 1436, msgs)
	d := &Decoder{}
	run := func() {
		for _, p := range tsdus {
			d.Feed(p)
			for {
				m, err := d.Next()
				if m == nil && err == nil {
					break
				}
			}
		}
	}
	run()
	assert.Zero(t, testing.AllocsPerRun(5, run))
}

func TestEncoderAllocs(t *testing.T) {
	var e Encoder
	dst := make([]byte, 0, 1436)
	frames := [][]byte{[]byte("topic"), make([]byte, 100)}
	run := func() {
		for range 100 {
			_ = e.Append(frames...)
		}
		for p := e.Next(dst, 1436); p != nil; p = e.Next(dst, 1436) {
		}
	}
	run()
	assert.Zero(t, testing.AllocsPerRun(5, run))
}

func TestOffset(t *testing.T) {
	_, ok := Offset([]byte{1})
	assert.False(t, ok)
	o, ok := Offset([]byte{1, 2, 3})
	assert.True(t, ok)
	assert.EqualValues(t, 0x102, o)
}
