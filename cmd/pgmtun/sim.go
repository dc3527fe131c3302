package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/pgmtun/pgmtun/internal/simrun"
	"github.com/pgmtun/pgmtun/pgmproto/engine"
)

func init() {
	register(&command{
		name:  "sim",
		usage: "[flags] [--sweep AXIS=V1,V2,... [AXIS=...]]",
		summary: "run the deterministic simulator: one source, N receivers, seeded loss, delay, jitter,\n" +
			"reordering and duplication; report, JSON, pcap and SVG plots (same seed, same bytes)",
		flags: func(fs *flag.FlagSet) func(*env, []string) int {
			o := defaultSimOptions()
			c := &o.cfg
			fs.IntVar(&c.Receivers, "receivers", c.Receivers, "number of receivers (up to 10000)")
			fs.Var(&o.loss, "loss", "`percent` of packets lost on each source→receiver link (ODATA, RDATA, NCF, SPM alike)")
			fs.Var(&o.lossUp, "loss-up", "`percent` lost on each receiver's upstream link (its NAKs)")
			fs.Float64Var(&c.Down.Burst, "burst", 0, "mean loss burst in `packets`: above 1, Gilbert–Elliott bursts with the same mean loss\n(default 0: independent loss)")
			fs.DurationVar(&c.Delay, "delay", c.Delay, "one-way delay of every link")
			fs.DurationVar(&c.Jitter, "jitter", c.Jitter, "random extra delay, uniform in [0, jitter) (links stay FIFO)")
			fs.Var(&o.reorder, "reorder", "`percent` of packets held back --reorder-delay so later ones overtake them")
			fs.DurationVar(&c.ReorderDelay, "reorder-delay", c.ReorderDelay, "how long a reordered packet is held back")
			fs.Var(&o.duplicate, "duplicate", "`percent` of packets delivered twice")
			fs.Uint64Var(&c.Seed, "seed", c.Seed, "seed of everything random: the same seed gives byte-identical output")
			fs.Var(&o.size, "size", "message `size` (larger than one packet: OPT_FRAGMENT)")
			fs.Var(&o.bytes, "bytes", "how many `bytes` the source sends")
			fs.DurationVar(&o.duration, "duration", 0, "send for this long at --rate instead of --bytes")
			fs.Var(&o.rate, "rate", "source `rate` limit in bytes/s, IP headers included")
			fs.Var(&o.window, "txw-secs", "transmit window as `time`")
			fs.StringVar(&o.rdataRate, "rdata-rate", "", "the source's repair budget (RDATA and NCFs) in `bytes/s` within --rate\n(default two thirds of --rate; none: no separate limit)")
			fs.StringVar(&o.backoff, "nak-backoff", "adaptive", "NAK back-off: `adaptive`, uniform (OpenPGM) or exponential")
			fs.IntVar(&c.NAKGroupSize, "nak-group", 0, "receivers expected to share a loss, shapes --nak-backoff exponential (default 32)")
			fs.DurationVar(&c.NAKBOIvl, "nak-bo-ivl", c.NAKBOIvl, "NAK back-off interval")
			fs.DurationVar(&c.NAKRptIvl, "nak-rpt-ivl", c.NAKRptIvl, "wait for an NCF before repeating a NAK")
			fs.DurationVar(&c.NAKRdataIvl, "nak-rdata-ivl", c.NAKRdataIvl, "wait for RDATA after an NCF before NAKing again")
			fs.IntVar(&c.FEC.GroupSize, "fec-group", 0, "forward error correction: transmission group of `K` packets, a power of two 2..128\n(default 0: none); parity on demand unless --fec-proactive")
			fs.IntVar(&c.FEC.Proactive, "fec-proactive", 0, "with --fec-group: `H` parity packets sent after every group")
			fs.BoolVar(&o.fecOnDemand, "fec-ondemand", false, "with --fec-group and --fec-proactive: parity on demand as well")
			fs.IntVar(&c.FEC.BlockSize, "fec-block", 0, "with --fec-group: the code's block `N` (default 255)")
			fs.DurationVar(&c.Limit, "limit", 0, "stop after this much virtual time (default: sending time plus a minute)")
			fs.Var(&o.stats, "stats", "report on stdout in this `format`: text, json or none")
			fs.StringVar(&o.pcap, "pcap", "", "write every packet on the simulated LAN to `FILE` (pcap, raw IPv4)")
			fs.StringVar(&o.pcapDir, "pcap-dir", "", "write one capture per receiver, rN.pcap, to `DIR`: what it sent and what reached it")
			fs.StringVar(&o.plot, "plot", "", "write SVG plots to `DIR`")
			fs.StringVar(&o.sweep, "sweep", "", "run a grid: `AXIS=V1,V2,...` with axes receivers, loss, burst, delay, size, rate, nak-backoff, fec-group;\nfurther axes follow as arguments (--sweep receivers=1,8,32 loss=0,1,5)")
			fs.StringVar(&o.metrics, "metrics", "", "serve live metrics on `ADDR` (/metrics for Prometheus, /debug/vars JSON); loopback unless an IP is given")
			return func(e *env, args []string) int {
				if err := o.finish(args); err != nil {
					fmt.Fprintf(e.stderr, "pgmtun sim: %v\n", err)
					return exitUsage
				}
				return runSim(e, &o)
			}
		},
	})
}

type simOptions struct {
	cfg                        simrun.Config
	loss, lossUp               percent
	reorder, duplicate         percent
	size, bytes, rate          byteSize
	window                     seconds
	duration                   time.Duration
	backoff                    string
	stats                      statsFormat
	pcap, pcapDir, plot, sweep string
	metrics                    string
	fecOnDemand                bool
	rdataRate                  string
	axes                       []simAxis
}

func defaultSimOptions() simOptions {
	c := simrun.Defaults()
	return simOptions{
		cfg: c, loss: percent(c.Down.Pct), size: byteSize(c.Size), bytes: byteSize(c.Bytes),
		rate: byteSize(c.Rate), window: seconds(c.TXW), stats: statsText,
	}
}

func parseBackoff(s string) (engine.NAKBackoff, error) {
	for _, b := range []engine.NAKBackoff{engine.NAKBackoffAdaptive, engine.NAKBackoffUniform, engine.NAKBackoffExponential} {
		if strings.EqualFold(s, b.String()) {
			return b, nil
		}
	}
	return 0, fmt.Errorf("nak-backoff %q: want adaptive, uniform or exponential", s)
}

// finish completes the configuration from the flags and the arguments.
func (o *simOptions) finish(args []string) error {
	c := &o.cfg
	c.Down.Pct, c.Up.Pct = float64(o.loss), float64(o.lossUp)
	c.Up.Burst = c.Down.Burst
	c.Reorder, c.Duplicate = float64(o.reorder)/100, float64(o.duplicate)/100
	c.Size, c.Bytes, c.Rate, c.TXW = int(o.size), int64(o.bytes), int(o.rate), time.Duration(o.window)
	b, err := parseBackoff(o.backoff)
	if err != nil {
		return errors.New("--" + err.Error())
	}
	c.NAKBackoff = b
	c.FEC.OnDemand = c.FEC.GroupSize > 0 && (o.fecOnDemand || c.FEC.Proactive == 0)
	switch o.rdataRate {
	case "":
	case "none":
		c.RDATARate = -1
	default:
		n, err := parseBytes(o.rdataRate)
		if err != nil || n == 0 {
			return fmt.Errorf("--rdata-rate %q: want bytes/s (e.g. 500kB/s) or none", o.rdataRate)
		}
		c.RDATARate = int(n)
	}
	if o.duration < 0 {
		return fmt.Errorf("--duration %v: must not be negative", o.duration)
	}
	if o.duration > 0 && c.Rate > 0 && c.Size > 0 {
		c.Bytes = simrun.BytesFor(o.duration, c.Rate, c.Size)
	}
	if o.sweep == "" && len(args) > 0 {
		return fmt.Errorf("unexpected argument %q (sweep axes need --sweep)", args[0])
	}
	if o.sweep != "" {
		for _, a := range append(strings.Fields(o.sweep), args...) {
			ax, err := parseAxis(a)
			if err != nil {
				return err
			}
			o.axes = append(o.axes, ax)
		}
		if o.pcap != "" || o.pcapDir != "" {
			return errors.New("--pcap and --pcap-dir capture one run: leave out --sweep")
		}
	}
	if o.pcapDir != "" && c.Receivers > maxPcapDirReceivers {
		return fmt.Errorf("--pcap-dir keeps a file open per receiver: at most %d receivers (--pcap captures the whole LAN)", maxPcapDirReceivers)
	}
	for _, p := range o.points() {
		if err := p.Validate(); err != nil {
			return err
		}
	}
	return nil
}

// maxPcapDirReceivers bounds the files --pcap-dir holds open.
const maxPcapDirReceivers = 256

// simAxis is one swept parameter.
type simAxis struct {
	name   string
	values []string
}

var simAxes = map[string]func(c *simrun.Config, v string) error{
	"receivers": func(c *simrun.Config, v string) (err error) { c.Receivers, err = strconv.Atoi(v); return },
	"loss": func(c *simrun.Config, v string) error {
		var p percent
		err := p.Set(v)
		c.Down.Pct = float64(p)
		return err
	},
	"burst": func(c *simrun.Config, v string) (err error) {
		c.Down.Burst, err = strconv.ParseFloat(v, 64)
		c.Up.Burst = c.Down.Burst
		return
	},
	"delay": func(c *simrun.Config, v string) (err error) { c.Delay, err = time.ParseDuration(v); return },
	"size": func(c *simrun.Config, v string) error {
		n, err := parseBytes(v)
		c.Size = int(n)
		return err
	},
	"rate": func(c *simrun.Config, v string) error {
		n, err := parseBytes(v)
		c.Rate = int(n)
		return err
	},
	"nak-backoff": func(c *simrun.Config, v string) (err error) { c.NAKBackoff, err = parseBackoff(v); return },
	"fec-group": func(c *simrun.Config, v string) (err error) {
		c.FEC.GroupSize, err = strconv.Atoi(v)
		c.FEC.OnDemand = c.FEC.GroupSize > 0 && (c.FEC.OnDemand || c.FEC.Proactive == 0)
		return
	},
}

func parseAxis(s string) (simAxis, error) {
	name, vals, ok := strings.Cut(s, "=")
	set := simAxes[name]
	if !ok || set == nil || vals == "" {
		return simAxis{}, fmt.Errorf("--sweep %q: want AXIS=V1,V2,... with AXIS one of receivers, loss, burst, delay, size, rate, nak-backoff, fec-group", s)
	}
	ax := simAxis{name: name, values: strings.Split(vals, ",")}
	for _, v := range ax.values {
		var c simrun.Config
		if err := set(&c, v); err != nil {
			return simAxis{}, fmt.Errorf("--sweep %s: bad value %q", name, v)
		}
	}
	return ax, nil
}

// simPoint is one run of a sweep: its configuration and axis values.
type simPoint struct {
	simrun.Config
	at map[string]string
}

// points returns the grid, first axis outermost (one point without --sweep).
func (o *simOptions) points() []simPoint {
	pts := []simPoint{{Config: o.cfg, at: map[string]string{}}}
	for _, ax := range o.axes {
		var next []simPoint
		for _, p := range pts {
			for _, v := range ax.values {
				q := simPoint{Config: p.Config, at: map[string]string{ax.name: v}}
				for k, x := range p.at {
					q.at[k] = x
				}
				_ = simAxes[ax.name](&q.Config, v)
				if o.duration > 0 && (ax.name == "rate" || ax.name == "size") {
					q.Bytes = simrun.BytesFor(o.duration, q.Rate, q.Size)
				}
				next = append(next, q)
			}
		}
		pts = next
	}
	return pts
}

func runSim(e *env, o *simOptions) int {
	ctx, stop := signalContext()
	defer stop()
	var live *metricsServer
	if o.metrics != "" {
		var err error
		if live, err = startMetrics(o.metrics, e.stderr); err != nil {
			fmt.Fprintf(e.stderr, "pgmtun sim: %v\n", err)
			return exitUsage
		}
		defer live.close()
	}
	if o.plot != "" {
		if err := os.MkdirAll(o.plot, 0o755); err != nil {
			fmt.Fprintf(e.stderr, "pgmtun sim: --plot: %v\n", err)
			return exitFail
		}
	}
	if len(o.axes) > 0 {
		return runSweep(ctx, e, o, live)
	}
	rep, err := simOnce(ctx, o, live)
	if rep != nil {
		switch o.stats {
		case statsJSON:
			_ = writeJSON(e.stdout, rep)
		case statsText:
			rep.WriteText(e.stdout, 32)
		}
	}
	if err == nil && o.plot != "" {
		err = writeRunPlots(o.plot, rep)
	}
	if err != nil {
		fmt.Fprintf(e.stderr, "pgmtun sim: %v\n", err)
		return exitFail
	}
	if !rep.OK {
		return exitFail
	}
	return exitOK
}

// simOnce runs o's configuration with its captures.
func simOnce(ctx context.Context, o *simOptions, live *metricsServer) (*simrun.Report, error) {
	opts := simrun.Options{Ladder: o.plot != ""}
	var files []*os.File
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	create := func(name string) (*os.File, error) {
		f, err := os.Create(name)
		if err == nil {
			files = append(files, f)
		}
		return f, err
	}
	if o.pcap != "" {
		f, err := create(o.pcap)
		if err != nil {
			return nil, fmt.Errorf("--pcap: %w", err)
		}
		opts.LAN = f
	}
	if o.pcapDir != "" {
		if err := os.MkdirAll(o.pcapDir, 0o755); err != nil {
			return nil, fmt.Errorf("--pcap-dir: %w", err)
		}
		rx := make([]io.Writer, o.cfg.Receivers+1)
		for r := 1; r <= o.cfg.Receivers; r++ {
			f, err := create(filepath.Join(o.pcapDir, fmt.Sprintf("r%d.pcap", r)))
			if err != nil {
				return nil, fmt.Errorf("--pcap-dir: %w", err)
			}
			rx[r] = f
		}
		opts.Receiver = func(r int) io.Writer { return rx[r] }
	}
	opts.Live, opts.LiveEvery = live.simUpdate("sim"), 200*time.Millisecond
	rep, err := simrun.Run(ctx, o.cfg, opts)
	for _, f := range files {
		if cerr := f.Close(); cerr != nil && err == nil {
			err = cerr
		}
	}
	files = nil
	return rep, err
}

func runSweep(ctx context.Context, e *env, o *simOptions, live *metricsServer) int {
	pts := o.points()
	upd := live.simUpdate("sim")
	var reps []*simrun.Report
	status := exitOK
	for i, p := range pts {
		start := time.Now()
		opts := simrun.Options{Live: upd, LiveEvery: 200 * time.Millisecond}
		rep, err := simrun.Run(ctx, p.Config, opts)
		if err != nil {
			fmt.Fprintf(e.stderr, "pgmtun sim: %s: %v\n", pointName(o.axes, p), err)
			return exitFail
		}
		if !rep.OK {
			status = exitFail
		}
		fmt.Fprintf(e.stderr, "run %d/%d: %s: %.2f NAKs per loss, repair p50 %.1f ms, %d of %d receivers ok (%.1fs)\n",
			i+1, len(pts), pointName(o.axes, p), rep.NAKsPerLoss, rep.RepairP50Ms, rep.OKCount, rep.Receivers, time.Since(start).Seconds())
		reps = append(reps, rep)
	}
	switch o.stats {
	case statsJSON:
		type run struct {
			At     map[string]string `json:"at"`
			Report *simrun.Report    `json:"report"`
		}
		out := struct {
			Axes []string `json:"axes"`
			Runs []run    `json:"runs"`
		}{}
		for _, ax := range o.axes {
			out.Axes = append(out.Axes, ax.name)
		}
		for i, p := range pts {
			out.Runs = append(out.Runs, run{p.at, reps[i]})
		}
		_ = writeJSON(e.stdout, out)
	case statsText:
		printSweep(e.stdout, o.axes, pts, reps)
	}
	if o.plot != "" {
		if err := writeSweepPlots(o.plot, o.axes, pts, reps); err != nil {
			fmt.Fprintf(e.stderr, "pgmtun sim: %v\n", err)
			return exitFail
		}
	}
	return status
}

func pointName(axes []simAxis, p simPoint) string {
	var s []string
	for _, ax := range axes {
		s = append(s, ax.name+"="+p.at[ax.name])
	}
	return strings.Join(s, " ")
}

func printSweep(w io.Writer, axes []simAxis, pts []simPoint, reps []*simrun.Report) {
	c := pts[0].Config
	fmt.Fprintf(w, "simulator sweep, seed %d: %d runs of 1 source → N receivers, %d-byte messages\n\n", c.Seed, len(pts), c.Size)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	for _, ax := range axes {
		fmt.Fprintf(tw, "%s\t", ax.name)
	}
	fmt.Fprintln(tw, "lost pkts\tNAKs/loss\tNCFs/loss\tRDATA/loss\tfirst NAK ms\trepair p50 ms\tp99 ms\tgoodput kB/s\treceivers ok\t")
	for i, p := range pts {
		r := reps[i]
		for _, ax := range axes {
			fmt.Fprintf(tw, "%s\t", p.at[ax.name])
		}
		fmt.Fprintf(tw, "%d\t%.3f\t%.3f\t%.3f\t%.2f\t%.2f\t%.2f\t%.1f\t%d/%d\t\n", r.LostPackets, r.NAKsPerLoss, r.NCFsPerLoss, r.RDATAPerLoss,
			r.FirstNAKMs, r.RepairP50Ms, r.RepairP99Ms, r.Goodput/1e3, r.OKCount, r.Receivers)
	}
	tw.Flush()
}
