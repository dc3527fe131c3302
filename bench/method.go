package main

// methodText closes the report: what each case measures and how.
const methodText = `## Method

- **Limits.** *In-memory link*: one memlink port writes 1500-byte IPv4 packets
  in batches of 16 for one second, another port counts what the hub's pump
  delivers (the queue drops the excess, so the delivered rate is the limit).
  *TUN write*: a Go program writes 1500-byte IPv4/protocol-113 multicast packets
  to a TUN device's fd for one second; a raw IP socket on the kernel side (same
  namespace, group joined) counts what arrives. *TUN read*: the reverse — a raw
  socket sends 1500-byte packets to the group routed into the TUN device and the
  program reads the fd. No PGM in either.
- **Baseline.** The OpenPGM 5.3 C peers of interop/peers (Debian libpgm) in two
  namespaces joined by a veth pair, raw IP protocol 113, windows of 60 000
  sequences, rate limits 8, 16 and 24 MB/s for 64, 1000 and 8000 bytes (see
  below: with 1 GB/s OpenPGM's own receiver hits unrecoverable loss at 64 and
  1000 bytes). Throughput is the receiver's: records over the
  time from the first to the last record (every byte checked).
- **Through the kernel.** pgmtun's netstack on a TUN device (tun.Open +
  Device.Attach) in a namespace, the OpenPGM peer on the kernel side; and two
  netstacks on TAP devices enslaved to one Linux bridge (tun TAP mode, ARP and
  IGMP through the bridge). pgmtun senders to OpenPGM and over TAP use the
  baseline's rate limits (8, 16 and 24 MB/s for 64, 1000 and 8000 bytes: the
  highest at which OpenPGM's receiver kept up reliably; PGM has no flow control
  and an unlimited sender overruns any receiver here), elsewhere 250 MB/s
  (unbound); a 3 s window when rate-limited, else 1 s (the engine preallocates
  its window as rate × time); receivers a 16 MiB receive buffer and 200 ms NAK repeat/RDATA timers
  (the OpenPGM receivers get the same timers).
- **Receiver headroom.** The same OpenPGM sender steps its rate limit up from
  the fixed limit (×1, 1.5, 2, 3, 4, 6, 8; about half a second of records per
  step) until the receiver no longer delivers every record (reset, short or
  timeout): once to an OpenPGM receiver over veth, once to a pgmtun receiver
  through a TUN device. Reported: the highest step completed and the best
  receive rate among the completed steps (records over first-to-last record).
  At the fixed limits both receivers get what the sender sends, so only this
  ramp says whether pgmtun receives at least as fast as OpenPGM. Part of the
  difference is the path, not the receiver: the sender pays the kernel's
  delivery to the OpenPGM receiver's raw socket over veth, but only a queue
  into the TUN device. The OpenPGM sender tops out near 1 Gbit/s, so for the
  TUN read limit a pgmtun sender ramps into a pgmtun receiver over the TAP
  bridge instead (fixed limit ×1, 2, 4, 6, 8, 12, 16; records precomputed on
  the sending side, every byte checked on the receiving side; both stacks in
  the bench process, whose CPU is reported). *Receive capacity*
  ("headroom/flood"): like the TUN read limit, a raw socket on the kernel
  side sends into the device, here valid ODATA with one 1456-byte record per
  1500-byte packet, paced (in a process of its own that sends 100 µs of
  packets back to back and sleeps in nanosleep to the next slot, with no
  catch-up burst over 1 ms after a late wake-up) at 50 k
  to 300 k packets/s (steps of 25 k from 100 k), half a second
  per step and a new session each; a step passes only if every record
  arrives (nothing repairs), and the best complete rate is reported in IP
  bytes. The device has pgmtun's 4096-packet kernel queue
  (tun.DefaultRxQueueLen), as the limit's device does; "headroom/flood/q500"
  repeats it with Linux's 500, where one pause of the reader of 3 ms at
  150 k packets/s loses records (shown for scale).
- **Unlimited OpenPGM sender.** pgm_send with no rate limit (OpenPGM's
  limiter at 125 MB/s, its default window of 1000 sequences) into pgm_recv
  over veth, and into the built ` + "`pgmtun recv`" + ` with only its device and group
  flags (by turns), each receiver on its defaults. *Peak RSS* is the
  receiving process's (getrusage ru_maxrss: runtime, stack and buffers).
  *Peak held* is the receive engine's own peak (ReceiverStats.PeakBufferedBytes:
  payloads as allocated plus per-sequence state, the figure its memory
  budgets bound; data already handed to the socket's queue and not yet read
  is not in it). *Source window* is what OpenPGM's transmit window held: the
  widest trail–lead span of the SPMs it sent (read on the device by an
  AF_PACKET socket whose filter passes only SPMs; its heartbeats after the
  last record show the full window) times the mean TSDU per sequence
  (message size ÷ packets per message). *held ÷ source window* is their
  ratio per run. Ratios "against unlimited OpenPGM" elsewhere divide by the
  msgs/s (or Mbit/s) of pgm_send → pgm_recv here, measured in the same run;
  a run whose receiver lost data gives no figure.
- **In-process.** Two netstacks on a memlink hub (no delay, no loss, a queue of
  131 072 packets so the link never drops), real clock, a sender limited only
  at 250 MB/s and a receiver goroutine that checks every byte; throughput is the
  receiver's (first to last record), so it is how fast the receiving stack
  takes packets while the sender shares the CPU. *Rate limit*: the same with
  the sender limited to 4, 16 and 64 MB/s (IP bytes), at least half a second
  per run; the share of the limit is the on-wire rate from the record at
  10 % to the one at 90 % (the limiter sends its 3 ms burst at once).
- **Loss.** 20 000 messages of 1000 bytes at 16 MB/s (the OpenPGM limit for
  the size) in both paths, so goodput is measured at the same steady offered
  load; goodput is given over the whole transfer and in steady state (the
  records from 10 % to 90 % of the transfer, without the wait for the last
  repairs, which the repair latency shows). A seeded filter drops downstream PGM packets (SPM, ODATA, RDATA,
  NCF) at random at the receiver's link with the given probability, from the
  first ODATA on (the receiver's session starts there); NAKs are not dropped. Repair latency is, for each record whose ODATA was dropped, the
  time from the first drop to the record's delivery to the application
  (including the in-order wait). In-process: memlink's Drop hook; over TUN:
  the OpenPGM sender on the kernel side, the filter wraps the netstack's TUN
  link endpoint (inbound).
- **NAK implosion.** 400 ODATA, every 20th (5 %) lost by every receiver on its
  first transmission only (one lost packet every 50 ms or less), and every
  receiver must deliver all 400 in order. *Simulator*: pgmproto/sim with a
  one-way delay of 0.1 ms plus up to 0.1 ms jitter (a LAN), and of 1 ms plus up
  to 1 ms, OpenPGM example timers (NAK_BO_IVL 50 ms), a new seed per run.
  *In-process*: real stacks on memlink (no added delay, real clock), sender at
  400 kB/s (OpenPGM's default rate). Metrics are counted at the source:
  NAKed sequences received, NCFs sent and RDATA sent, each per lost packet.
  *First NAK ms*: the median time from the lost ODATA to the first NAK for it
  at the source (including the wait for the next packet to reveal the gap);
  *repair p50*: from the lost ODATA to its repair at a receiver. The "-exp"
  cases draw the NAK back-off from a truncated exponential distribution
  (SetNAKBackoff, group size 32) instead of OpenPGM's uniform one.
- **Cost.** CPU seconds (getrusage user+system) per GB delivered: for pgmtun the
  whole process during an in-process transfer (sender, receiver and link, so
  both ends), for OpenPGM both peer processes (RUSAGE_CHILDREN). Allocations
  per data packet from runtime.MemStats (Mallocs, TotalAlloc) over the same
  transfer, per ODATA+RDATA packet, both ends included. Memory: live heap after
  GC of an engine Receiver tracking 200 sessions (one SPM and one 1000-byte
  ODATA each), and of an engine Source whose transmit window holds 10 MB.
- **NAK floods.** A sender limited to 2 MB/s with a 2 s window (pgmtun on a
  TUN device's netstack, its repair rate the default two thirds; OpenPGM's pgm_send
  on the kernel side, no RDATA rate of its own, window 3 800 sequences) sends
  1000-byte records. A hostile receiver learns the session from the source's
  packets and, after 2 s of warm-up and 2 s of measurement, sends it valid
  NAKs (its TSI and NLAs, 63 sequences of the window each, in rotation) at
  100 or 20 000 a second for 4 s, then watches 2 s more. The same probe
  records every packet the source sends; *ODATA ÷ its share* divides ODATA's
  rate in the flood by the rate less the RDATA rate, *longest ODATA gap* runs
  from the flood's start to the end, *ODATA after flood* is the wait for the
  first ODATA after it (capped at 2 s).
- **Forward error correction.** The simulator (pgmproto/sim): 32 receivers
  1 ms from the source, 4 000 messages of 1000 bytes at 2 MB/s, each receiver
  losing 1 % or 5 % of what the source sends (ODATA, RDATA, NCF, SPM; NAKs
  pass), decided per packet and receiver from the run's seed so that the three
  repair modes of one run lose the same ODATA; every message checked at every
  receiver. Selective NAKs, on-demand parity (groups of 16) and one proactive
  parity packet per group plus on-demand, each with OpenPGM's NAK_RPT_IVL and
  NAK_RDATA_IVL (2 s) and with libzmq's (200 ms). Per ODATA lost at a receiver
  (summed over receivers): repair packets the source sent (RDATA, parity
  included), NAK packets the receivers sent, parity packets; repairs as a
  share of the ODATA sent; repair latency from the lost ODATA to its delivery
  in order. *Codec*: testing.Benchmark of pgmproto/fec on 1400-byte packets,
  one parity packet encoded, or 1 or 4 lost packets of 16 decoded; *core at
  100 MB/s* is the share of one core that 100 MB/s of group data costs with
  one such operation per group.
- **ZeroMQ against libzmq.** libzmq 4.3.4 (Debian's libzmq3-dev, driven by
  a C program, bench/peers/zmqbench.c, built when the benchmark starts) and
  pgmtun's package zmq in the bench process, PUB → SUB, one frame per
  message holding an interop record (every byte checked, gaps counted). *epgm*: two namespaces joined by a veth pair,
  every program on the kernel's UDP (pgmtun on the host UDP sockets,
  stack.NewHostProtocol): one path for all three rows. *pgm*: libzmq →
  libzmq over the veth pair (raw sockets); pgmtun on a netstack attached to
  a TUN device, libzmq on its kernel side. Every program of a row has the
  same ZMQ_RATE and a 2 s ZMQ_RECOVERY_IVL: 1 Gbit/s (above what any of them
  sends here: the rows measure speed) and 100 Mbit/s (every pair keeps up:
  the rows compare how each counts the rate). pgmtun's publisher runs
  with its defaults, the overrun back-off among them (README, "Overrun
  back-off"); libzmq's has nothing like it. Publishers hold ZeroMQ's
  default high-water mark of 1000 and wait at it (ZMQ_XPUB_NODROP,
  zmq.WithNoDrop); both subscribers, libzmq's and pgmtun's, have a receive
  mark of 262 144 messages (ZMQ_RCVHWM, zmq.WithRecvHWM), above a run's
  records, so that neither drops at its mark. A publisher repeats a
  one-byte warm-up message until the subscriber has one, then sends the
  records as fast as its socket takes them. *msgs/s* counts the records received whole and in
  order from the first arrival to the later of the last arrival and the
  publisher's last send (a subscriber stalled by loss is charged the
  sending time), or to when the subscriber stopped if earlier: 1 s after
  its last record, or 4 s after its first (a bound for loaded machines;
  a run's nominal transfer is half a second). *% arrived* is the share of
  the records sent. Times are CLOCK_MONOTONIC in all processes. The three rows of a transport, rate and size run by turns.
  *Highest rate every message arrived* ("zmq/headroom/*"): each pair steps
  ZMQ_RATE, both ends alike, through 50, 100, 200, 300, 400, 500, 700 and 1000 Mbit/s,
  a run of the kind above at each (about half a second of records at the
  limit), and stops after the first step where not every record arrived;
  the figure is the best msgs/s among the complete steps, with the
  ZMQ_RATE it came at and the highest complete one (0 when even 50 Mbit/s
  lost records). At 1 Gbit/s PGM's lack of flow control lets the faster
  publisher overrun the subscriber; this says what each pair carries whole.
- **Runs taken by turns.** The TUN write limit and the two pgmtun sending
  cases, each set of loss cases (in-process, over TUN) and of FEC cases, run their
  repetitions by turns (run 1 of each, then run 2, ...), so a drift of the
  machine's speed over the minutes a set takes falls on a case and its
  baseline alike.
`
