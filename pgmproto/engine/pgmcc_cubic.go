package engine

import (
	"math"
	"time"
)

// PGMCC's window grows as CUBIC's (RFC 9438), in packets and seconds.
//
// Why not a window per RTT, as TCP Reno and Rizzo's paper: the acker's
// round trip crosses two userspace netstacks, so PGMCC's RTT is several
// times that of a kernel TCP flow over the same queue, and with the loss
// events that flow's bursts set, a per-RTT increase gives a throughput
// that falls as 1/RTT². CUBIC grows with the time since the last cut
// (the RTT only shifts the curve by one RTT), which is what Linux's
// default TCP does: the two flows then reach the same window in the same
// time, whatever their RTTs. Below the curve, the Reno-friendly estimate
// (AIMD(ccAlpha, ccBeta)) is the floor, as in CUBIC: at short RTTs and
// small windows that is the faster of the two.

// cubicC is CUBIC's C (packets/s³).
const cubicC = 0.4

// cubic is the window function's state between loss events.
type cubic struct {
	wMax   float64   // window at the last cut, fast convergence's 0.85 of it on a shrinking path; 0: none
	origin float64   // the curve's plateau: wMax, or the window at the epoch's start when above it
	k      float64   // seconds from the epoch's start to the plateau
	wEst   float64   // Reno-friendly estimate (RFC 9438 section 4.3)
	epoch  time.Time // start of this congestion-avoidance stage; zero: not begun
	last   time.Time // the last ACK that grew the window
}

// cut records a loss event at window w and returns the cut window (β·w).
// Fast convergence (RFC 9438 section 4.7): a window that peaked below the
// last plateau means a new flow is taking its share, so the plateau is
// set lower, to let the newcomer grow.
func (c *cubic) cut(w float64) float64 {
	if w < c.wMax {
		c.wMax = w * (1 + ccBeta) / 2
	} else {
		c.wMax = w
	}
	c.epoch = time.Time{}
	return w * ccBeta
}

// restart forgets the plateau: after a timeout (RFC 9438 section 4.8)
// or on a new acker's path, the next stage's curve starts convex from
// the window it begins at.
func (c *cubic) restart() { *c = cubic{} }

// grow returns window w after n new ACKs at now in congestion avoidance;
// rtt is the acker's smoothed RTT. The first such ACK after a cut starts
// the stage (the end of recovery, as Linux's epoch start). The window
// never shrinks here; along the curve it grows by at most half of itself
// per window of ACKs (RFC 9438's target clamp).
//
// A silence of the ACKs longer than an RTT does not move the curve on:
// the source was idle, or the host did not run its stack for a while (a
// loaded machine stalls the netstacks 100–450 ms at a time), and a curve
// that ran on while nothing was learnt about the path would come back to
// a window that bursts into the queue (RFC 9438 section 5.8; Linux shifts
// the epoch after idle the same way).
func (c *cubic) grow(now time.Time, w, n float64, rtt time.Duration) float64 {
	if !c.epoch.IsZero() {
		if gap := now.Sub(c.last) - max(rtt, 10*time.Millisecond); gap > 0 {
			c.epoch = c.epoch.Add(gap)
		}
	}
	c.last = now
	if c.epoch.IsZero() {
		c.epoch, c.wEst = now, w
		if w < c.wMax {
			c.k, c.origin = math.Cbrt((c.wMax-w)/cubicC), c.wMax
		} else {
			c.k, c.origin = 0, w
		}
	}
	t := now.Sub(c.epoch).Seconds()
	c.wEst += ccAlpha * n / w
	target := min(max(c.window(t+rtt.Seconds()), w), 1.5*w)
	// The faster of the two (as Linux): below the curve the estimate
	// is the window (the Reno-friendly region).
	return max(min(w+n*(target-w)/w, target), c.wEst)
}

// window is W_cubic(t), t seconds into the stage.
func (c *cubic) window(t float64) float64 {
	d := t - c.k
	return cubicC*d*d*d + c.origin
}
