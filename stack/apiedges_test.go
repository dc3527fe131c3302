package stack

import (
	"errors"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgmtun/pgmtun/pgmproto/engine"
)

// assertSysErr checks that err matches both the package sentinel and the
// errno, and that its text has none of the engine's.
func assertSysErr(t *testing.T, err error, sentinel error, errno syscall.Errno) {
	t.Helper()
	require.Error(t, err)
	assert.ErrorIs(t, err, sentinel)
	assert.ErrorIs(t, err, errno)
	assert.NotContains(t, err.Error(), "engine")
}

func TestBindConnectListenRefuseBadAddresses(t *testing.T) {
	tn := newTestNet(t, 1)
	nd := tn.node() // 10.0.0.1
	mcast0 := netip.AddrPortFrom(group1, 0)
	cases := []struct {
		name string
		// run returns the first error of the socket calls.
		run     func(s *Socket) error
		wantErr bool
	}{
		{"bind group port 0", func(s *Socket) error { return s.Bind(mcast0) }, true},
		{"bind foreign unicast", func(s *Socket) error { return s.Bind(netip.MustParseAddrPort("10.0.0.99:7500")) }, true},
		{"bind foreign IPv6", func(s *Socket) error { return s.Bind(netip.MustParseAddrPort("[2001:db8::1]:0")) }, true},
		{"bind local unicast", func(s *Socket) error { return s.Bind(netip.MustParseAddrPort("10.0.0.1:0")) }, false},
		{"bind unspecified", func(s *Socket) error { return s.Bind(netip.AddrPort{}) }, false},
		{"listen unspecified port 0", func(s *Socket) error {
			return errors.Join(s.Bind(netip.AddrPort{}), s.Listen())
		}, true},
		{"connect port 0", func(s *Socket) error {
			return errors.Join(s.Bind(netip.AddrPort{}), s.Connect(mcast0))
		}, true},
		{"listen group port 7500", func(s *Socket) error {
			return errors.Join(s.Bind(groupPort), s.Listen())
		}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s, err := nd.p.Socket(SockRDM)
			require.NoError(t, err)
			defer s.Close()
			err = tc.run(s)
			if !tc.wantErr {
				require.NoError(t, err)
				return
			}
			assertSysErr(t, err, ErrInvalidOption, syscall.EINVAL)
		})
	}

	// The adapters refuse port 0 too, as *net.OpError.
	_, err := Dial(nd.p, SockRDM, mcast0)
	var oe *net.OpError
	require.ErrorAs(t, err, &oe)
	assertSysErr(t, err, ErrInvalidOption, syscall.EINVAL)
	_, err = Listen(nd.p, SockRDM, mcast0)
	require.ErrorAs(t, err, &oe)
	assertSysErr(t, err, ErrInvalidOption, syscall.EINVAL)
}

func TestMessageTooLargeMatchesEMSGSIZE(t *testing.T) {
	tn := newTestNet(t, 2)
	a, b := tn.node(), tn.node()
	b.listener(t, SockRDM, groupPort)
	cases := []struct {
		name string
		run  func(s *Socket) error
	}{
		{"send over max message size", func(s *Socket) error {
			_, err := s.Send(make([]byte, 1001))
			return err
		}},
		{"boundary over max message size", func(s *Socket) error { return s.SetMessageBoundary(1001) }},
		{"sends overrun the boundary", func(s *Socket) error {
			if err := s.SetMessageBoundary(10); err != nil {
				return err
			}
			_, err := s.Send(make([]byte, 11))
			return err
		}},
		{"net.Conn write", func(s *Socket) error {
			_, err := (&Conn{s: s}).Write(make([]byte, 1001))
			var oe *net.OpError
			if !errors.As(err, &oe) {
				t.Errorf("%T is not a *net.OpError", err)
			}
			return err
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			snd := a.sender(t, SockRDM, groupPort, func(s *Socket) { require.NoError(t, s.SetMaxMessageSize(1000)) })
			defer snd.Close()
			_, err := snd.Send(make([]byte, 1000)) // the limit itself is fine
			require.NoError(t, err)
			assertSysErr(t, tc.run(snd), ErrMessageTooLarge, syscall.EMSGSIZE)
		})
	}
}

func TestNonBlockingSaysWhatWouldBlock(t *testing.T) {
	tn := newTestNet(t, 3)
	a, b := tn.node(), tn.node()
	lis := b.listener(t, SockRDM, groupPort)
	// 80 kbit/s and a 1 s window: 10 000 bytes.
	snd := a.sender(t, SockRDM, groupPort, func(s *Socket) {
		require.NoError(t, s.SetRateWindow(RateWindow{RateKbitsPerSec: 80, WindowSizeInMSecs: 1000}))
	})

	// Nothing sent yet: no session to accept.
	_, acceptErr := lis.Accept()

	// One message, received; then nothing to read.
	_, err := snd.Send([]byte("one"))
	require.NoError(t, err)
	var sess *Socket
	tn.run(2*time.Second, time.Millisecond, func() bool {
		s, err := lis.Accept()
		if err == nil {
			sess = s
		}
		return sess != nil
	})
	sess.SetNonBlocking(true)
	buf := make([]byte, 100)
	var n int
	tn.run(2*time.Second, time.Millisecond, func() bool {
		n, err = sess.Recv(buf)
		return err == nil
	})
	require.Equal(t, "one", string(buf[:n]))
	_, recvErr := sess.Recv(buf)
	_, readErr := (&Conn{s: sess}).Read(buf)

	// Fill the send window.
	var sendErr error
	for i := 0; i < 1000 && sendErr == nil; i++ {
		_, sendErr = snd.Send(message(i, 1000))
	}

	cases := []struct {
		name, want string
		err        error
	}{
		{"accept", "no session to accept", acceptErr},
		{"recv", "no data to receive", recvErr},
		{"net.Conn read", "no data to receive", readErr},
		{"send", "send window full", sendErr},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			require.Error(t, tc.err)
			assert.ErrorIs(t, tc.err, ErrWouldBlock)
			assert.ErrorIs(t, tc.err, syscall.EAGAIN)
			assert.ErrorIs(t, tc.err, syscall.EWOULDBLOCK)
			assert.Contains(t, tc.err.Error(), tc.want)
			assert.Contains(t, tc.err.Error(), "would block")
		})
	}
}

// Errors the engine's configuration check finds come back as the socket's
// own, naming the option to change.
func TestEngineConfigErrorsNameTheOption(t *testing.T) {
	tn := newTestNet(t, 4)
	nd := tn.node()
	zeroHeartbeat := func(s *Socket) error { return s.SetTimers(Timers{HeartbeatSPM: []time.Duration{0}}) }
	cases := []struct {
		name   string
		sender bool
		set    func(s *Socket) error
		option string
	}{
		{"sender message size over window", true, func(s *Socket) error { return s.SetMaxMessageSize(1 << 23) }, "SetMaxMessageSize"},
		{"sender zero heartbeat", true, zeroHeartbeat, "SetTimers"},
		{"receiver zero heartbeat", false, zeroHeartbeat, "SetTimers"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			check := func(err error) {
				t.Helper()
				assertSysErr(t, err, ErrInvalidOption, syscall.EINVAL)
				assert.NotErrorIs(t, err, engine.ErrConfig)
				assert.Contains(t, err.Error(), tc.option)
			}
			// The Socket API.
			s, err := nd.p.Socket(SockRDM)
			require.NoError(t, err)
			defer s.Close()
			if tc.sender {
				require.NoError(t, s.Bind(netip.AddrPort{}))
				require.NoError(t, tc.set(s))
				check(s.Connect(groupPort))
			} else {
				require.NoError(t, s.Bind(groupPort))
				require.NoError(t, tc.set(s))
				check(s.Listen())
			}
			// The adapters.
			var oe *net.OpError
			if tc.sender {
				_, err = Dial(nd.p, SockRDM, groupPort, WithSetup(tc.set))
			} else {
				_, err = Listen(nd.p, SockRDM, groupPort, WithSetup(tc.set))
			}
			require.ErrorAs(t, err, &oe)
			check(err)
		})
	}
}

// configErr names the setter for each kind of engine error; a renamed
// engine message shows up here.
func TestConfigErrMapsEngineFields(t *testing.T) {
	cases := []struct {
		cfg    engine.Config
		option string
	}{
		{engine.Config{LateJoinPct: 80}, "SetLateJoin"},
		{engine.Config{TXWAdvancePct: 101}, "SetSendWindowAdvance"},
		{engine.Config{NAKGroupSize: -1}, "SetNAKBackoff"},
		{engine.Config{MaxPeers: -1}, "SetMaxSessions"},
		{engine.Config{RXWBudget: -1}, "SetReceiveBudget"},
		{engine.Config{NAKDataRetries: -1}, "SetTimers"},
		{engine.Config{MaxTPDU: 40}, "MTU"},
		{engine.Config{MaxAPDU: 1 << 23}, "SetMaxMessageSize"},
		{engine.Config{Group: netip.MustParseAddr("10.1.1.1")}, "group address"},
	}
	for _, tc := range cases {
		t.Run(tc.option, func(t *testing.T) {
			verr := tc.cfg.Validate()
			require.ErrorIs(t, verr, engine.ErrConfig)
			err := configErr(verr)
			assertSysErr(t, err, ErrInvalidOption, syscall.EINVAL)
			assert.Contains(t, err.Error(), tc.option)
			// The engine's detail stays.
			detail := strings.TrimPrefix(verr.Error(), engine.ErrConfig.Error()+": ")
			assert.Contains(t, err.Error(), detail)
		})
	}
}

func TestSetReceiveBudget(t *testing.T) {
	tn := newTestNet(t, 5)
	nd := tn.node()
	cases := []struct {
		name              string
		perSession, total int
		wantErr           bool
		wantRXW, wantRecv int
	}{
		{"defaults", 0, 0, false, engine.DefaultRXWBudget, engine.DefaultReceiveBudget},
		{"both", 1 << 20, 8 << 20, false, 1 << 20, 8 << 20},
		{"total only", 0, 16 << 20, false, engine.DefaultRXWBudget, 16 << 20},
		{"negative per session", -1, 0, true, 0, 0},
		{"negative total", 0, -1, true, 0, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s, err := nd.p.Socket(SockRDM)
			require.NoError(t, err)
			defer s.Close()
			require.NoError(t, s.Bind(groupPort))
			err = s.SetReceiveBudget(tc.perSession, tc.total)
			if tc.wantErr {
				assertSysErr(t, err, ErrInvalidOption, syscall.EINVAL)
				return
			}
			require.NoError(t, err)
			require.NoError(t, s.Listen())
			cfg := s.lis.eng.r.Config()
			assert.Equal(t, tc.wantRXW, cfg.RXWBudget)
			assert.Equal(t, tc.wantRecv, cfg.ReceiveBudget)
			assert.ErrorIs(t, s.SetReceiveBudget(1, 1), ErrOptionTooLate)
		})
	}
}

func TestDialListenOptionErrors(t *testing.T) {
	tn := newTestNet(t, 6)
	nd := tn.node()
	mine := errors.New("mine")
	cases := []struct {
		name     string
		opt      Option
		want     error
		wantEINV bool
	}{
		{"rate below 1 kbit/s", WithRate(100), ErrInvalidOption, true},
		{"negative rate", WithRate(-1), ErrInvalidOption, true},
		{"window below 1 ms", WithWindow(time.Microsecond), ErrInvalidOption, true},
		{"negative budget", WithReceiveBudget(-1, 0), ErrInvalidOption, true},
		{"negative timer", WithTimers(Timers{NAKBOIvl: -time.Second}), ErrInvalidOption, true},
		{"setup error", WithSetup(func(*Socket) error { return mine }), mine, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, derr := Dial(nd.p, SockRDM, groupPort, tc.opt)
			_, lerr := Listen(nd.p, SockRDM, groupPort, tc.opt)
			for _, err := range []error{derr, lerr} {
				var oe *net.OpError
				require.ErrorAs(t, err, &oe)
				assert.ErrorIs(t, err, tc.want)
				if tc.wantEINV {
					assert.ErrorIs(t, err, syscall.EINVAL)
				}
			}
		})
	}
	// A failed Listen closed its socket: the group and port can be
	// listened on again, and nil options are ignored.
	l, err := Listen(nd.p, SockRDM, groupPort, nil)
	require.NoError(t, err)
	require.NoError(t, l.Close())
}

// A Dial/Listen pair with rate and window options moves data faster than
// the 400 000 B/s default allows; without them it does not. Time is the
// stacks' fake clock.
func TestDialListenOptionsRate(t *testing.T) {
	const total = 600_000
	cases := []struct {
		name             string
		opts             []Option
		rate             int // expected engine rate, B/s
		minRate, maxRate float64
	}{
		// The rate counts IP headers, so payload comes a little slower;
		// the first 3 ms of the rate may leave at once.
		{"defaults", nil, 400_000, 300_000, 420_000},
		{"4 MB/s", []Option{WithRate(4_000_000), WithWindow(time.Second), WithReceiveBudget(8<<20, 0)}, 4_000_000, 2_000_000, 4_200_000},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tn := newTestNet(t, int64(10+i))
			a, b := tn.node(), tn.node()
			l, err := Listen(b.p, SockStream, groupPort, tc.opts...)
			require.NoError(t, err)
			defer l.Close()
			l.Socket().SetNonBlocking(true)
			c, err := Dial(a.p, SockStream, groupPort, tc.opts...)
			require.NoError(t, err)
			defer c.Close()
			c.Socket().SetNonBlocking(true)

			// The options reached the engines.
			scfg := c.Socket().snd.eng.src.Config()
			assert.Equal(t, tc.rate, scfg.TXWMaxRate)
			assert.Zero(t, l.Socket().lis.eng.r.Config().RXWSqns, "the receive window follows the source")

			data := message(7, total)
			sent, got := 0, make([]byte, 0, total)
			var rc *Conn
			buf := make([]byte, 64<<10)
			elapsed := tn.run(time.Minute, time.Millisecond, func() bool {
				if sent < total {
					n, err := c.Write(data[sent:])
					sent += n
					if err != nil {
						require.ErrorIs(t, err, ErrWouldBlock)
					}
				}
				if rc == nil {
					if rc, err = l.AcceptContext(t.Context()); err != nil {
						require.ErrorIs(t, err, ErrWouldBlock)
						return false
					}
					rc.Socket().SetNonBlocking(true)
				}
				for {
					n, err := rc.Read(buf)
					got = append(got, buf[:n]...)
					if err != nil {
						require.ErrorIs(t, err, ErrWouldBlock)
						break
					}
				}
				return len(got) == total
			})
			require.Equal(t, data, got)
			rate := float64(total) / elapsed.Seconds()
			t.Logf("%d bytes in %v of stack time: %.0f B/s", total, elapsed, rate)
			assert.GreaterOrEqual(t, rate, tc.minRate)
			assert.LessOrEqual(t, rate, tc.maxRate)
		})
	}
}
