package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pgmtun/pgmtun/internal/netns"
	"github.com/pgmtun/pgmtun/pgmproto/wire"
)

// The command's rate limit on a real device (issue 14, item 8): `pgmtun
// send --rate 2MB/s` with every other flag at its default, through a TUN
// device, every PGM packet it writes timed on the kernel side. The limit
// counts IP bytes, so the share is IP bytes on the wire over the limit.
// The in-process rows (inproc/rate/*) measure the limiter alone; this one
// adds the command's defaults (window, SPMs, linger) and a real device.
const (
	sendRateLimit = 2_000_000 // bytes/s, as --rate 2MB/s
	sendRateSize  = 1000
	sendRateSecs  = 6
	mMinShare     = "lowest 1 s share"
	mMaxShare     = "highest 1 s share"
)

func sendRateCases(e *Env, runs int) []*Case {
	return []*Case{{ID: "tun/send-rate/2MBps", Group: gTUN, Runs: runs,
		Name:    "`pgmtun send --rate 2MB/s` (other flags default) into a TUN, 1000 B, 6 s: IP bytes on the device against the limit",
		Timeout: 60 * time.Second, Show: []string{mRateShare, mMinShare, mMaxShare}, Needs: []string{"root"},
		Run: sendRate(e)}}
}

// timedBytes is the IP length of every PGM packet a watch saw, with its
// arrival time and whether it was ODATA.
type timedBytes struct {
	mu   sync.Mutex
	at   []time.Time
	n    []int
	odat []bool
}

func (t *timedBytes) add(ip []byte, at time.Time) {
	p, ok := pgmOf(ip)
	t.mu.Lock()
	t.at = append(t.at, at)
	t.n = append(t.n, len(ip))
	t.odat = append(t.odat, ok && p.Type() == wire.TypeODATA)
	t.mu.Unlock()
}

func sendRate(e *Env) func(context.Context, *Run) (Metrics, error) {
	return func(ctx context.Context, r *Run) (Metrics, error) {
		bin, err := e.pgmtunCommand()
		if err != nil {
			return nil, err
		}
		dir, err := os.MkdirTemp(e.tmp, "sendrate-")
		if err != nil {
			return nil, err
		}
		r.Cleanup(func() { os.RemoveAll(dir) })
		count := sendRateSecs * sendRateLimit / (sendRateSize + 44)
		data := make([]byte, count*sendRateSize)
		rng := rand.New(rand.NewPCG(2, 0))
		for i := range data {
			data[i] = byte(rng.Uint32())
		}
		in := filepath.Join(dir, "in")
		if err := os.WriteFile(in, data, 0o600); err != nil {
			return nil, err
		}

		// The device is made here, up, with the packet socket on it, so the
		// socket sees the first packet; send attaches to it.
		const dev = "pgmtun-rate0"
		ns := netns.New(r)
		ns.MustRun(r, "ip", "tuntap", "add", "dev", dev, "mode", "tun")
		r.Cleanup(func() { ns.Run("ip", "link", "del", dev) })
		ns.MustRun(r, "ip", "link", "set", dev, "up")
		w := &timedBytes{}
		watch, err := watchPGM(ns, dev, w.add)
		if err != nil {
			return nil, err
		}
		stopped := false
		stop := func() uint32 {
			stopped = true
			return watch.close()
		}
		defer func() {
			if !stopped {
				stop()
			}
		}()

		snd, err := startScaleProc(ctx, r, ns, "send", bin, "send", "--tun", dev, "--addr", "10.213.71.2/24",
			"--network", ";"+benchGroup, "--port", strconv.Itoa(benchPort),
			"--size", strconv.Itoa(sendRateSize), "--rate", "2MB/s", "--in", in, "--stats", "json", "--progress", "off")
		if err != nil {
			return nil, err
		}
		select {
		case <-snd.done:
		case <-ctx.Done():
			return nil, fmt.Errorf("send still running at the time bound: %s", snd.stderr.String())
		}
		if snd.err != nil {
			return nil, fmt.Errorf("send: %v: %s", snd.err, snd.stderr.String())
		}
		var rep struct {
			Result string `json:"result"`
			Bytes  int64  `json:"bytes"`
		}
		if err := json.NewDecoder(strings.NewReader(snd.stderr.String())).Decode(&rep); err != nil {
			return nil, fmt.Errorf("send's --stats json: %v: %s", err, snd.stderr.String())
		}
		if rep.Bytes != int64(len(data)) {
			return nil, fmt.Errorf("send reports %d bytes of %d (%s)", rep.Bytes, len(data), rep.Result)
		}
		if drops := stop(); drops > 0 {
			return nil, fmt.Errorf("the packet socket dropped %d packets: counts short", drops)
		}
		// No ODATA carries more than an Ethernet MTU of data.
		m, series, err := rateShares(w.at, w.n, w.odat, (len(data)+1499)/1500, sendRateLimit)
		if err == nil {
			r.Logf("1 s shares: %s", series)
		}
		return m, err
	}
}

// rateShares measures the bytes of every packet from the first to the
// last ODATA (the last packet's own bytes excluded: the interval ends as
// it is sent) against limit, whole and in full one-second buckets.
func rateShares(at []time.Time, n []int, odata []bool, wantODATA, limit int) (Metrics, string, error) {
	first, last, nODATA := -1, -1, 0
	for i, o := range odata {
		if !o {
			continue
		}
		nODATA++
		if first < 0 {
			first = i
		}
		last = i
	}
	if nODATA < wantODATA {
		return nil, "", fmt.Errorf("%d ODATA on the device, want %d", nODATA, wantODATA)
	}
	span := at[last].Sub(at[first]).Seconds()
	if span < 2 {
		return nil, "", fmt.Errorf("the data took %.2f s: too short to measure", span)
	}
	total := 0
	var buckets []int
	for i := first; i < last; i++ {
		total += n[i]
		b := int(at[i].Sub(at[first]) / time.Second)
		for len(buckets) <= b {
			buckets = append(buckets, 0)
		}
		buckets[b] += n[i]
	}
	full := int(span) // buckets wholly inside the interval
	lo, hi := 0.0, 0.0
	var series []string
	for i, b := range buckets[:full] {
		s := float64(b) / float64(limit)
		series = append(series, fmt.Sprintf("%.3f", s))
		if i == 0 || s < lo {
			lo = s
		}
		if i == 0 || s > hi {
			hi = s
		}
	}
	return Metrics{
		mRateShare: float64(total) / span / float64(limit),
		mMinShare:  lo,
		mMaxShare:  hi,
	}, strings.Join(series, " "), nil
}
