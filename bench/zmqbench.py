#!/usr/bin/python3
"""A libzmq PUB or SUB on a pgm:// or epgm:// endpoint for pgmtun's
benchmark (bench/zmq.go).

Runs under Debian's own python3 with Debian's python3-zmq (libzmq 4.3 built
with OpenPGM). Each message is one frame: a record of the interop format
(interop/record.go: a big-endian u32 sequence number, the CRC-32 of the
rest, then a pattern of the sequence number), every byte checked by the
subscriber; or the one-byte warm-up message "w", which a publisher repeats
until the subscriber has one, so that the timed records find the whole
path (socket, group, session) set up.

    zmqbench.py pub ENDPOINT --size S --count N [--rate KBIT]
        sends "w" every 10 ms until a line arrives on standard input (the
        subscriber reported "warm"), then records 0..N-1 as fast as libzmq
        takes them (ZMQ_XPUB_NODROP: a full queue blocks instead of
        dropping); reports one JSON line {"sent", "start", "end"} on
        standard output, then serves repairs until standard input ends.
    zmqbench.py sub ENDPOINT --size S --count N [--idle S] [--max S]
        reports "zmqbench: warm" on stderr at its first "w", receives until
        N records came, none came for --idle seconds, or --max seconds
        passed since the first, and reports one JSON line {"received",
        "first", "last", "stop", "gaps", "missing", "bad", "first_error"}
        on standard output: when the first and the last record arrived,
        and when it stopped receiving.

Times are CLOCK_MONOTONIC seconds (time.monotonic), the clock of every
namespace, so the benchmark compares them with its own.

Exit status: 0 done (even short of N: the caller judges), 1 nothing came
(or no go), 2 bad usage, 3 no PGM in libzmq.
"""

import argparse
import json
import select
import struct
import sys
import time
import zlib

import zmq

WARM = b"w"


def log(msg):
    sys.stderr.write("zmqbench: %s\n" % msg)
    sys.stderr.flush()


def tails(size):
    """The bytes after the sequence number of record seq, indexed by
    seq mod 256: the pattern depends on seq only through seq*131 mod 256."""
    out = []
    for k in range(256):
        pat = bytes((k * 131 + i * 7 + (i >> 8)) & 0xFF for i in range(8, size))
        out.append(struct.pack(">I", zlib.crc32(pat)) + pat)
    return out


def options(sock, args):
    sock.setsockopt(zmq.RATE, args.rate)
    sock.setsockopt(zmq.RECOVERY_IVL, args.recovery_ivl)
    sock.setsockopt(zmq.MULTICAST_HOPS, 1)
    sock.setsockopt(zmq.LINGER, 0)


def pub(ctx, args):
    t = tails(args.size)
    pack = struct.Struct(">I").pack
    sock = ctx.socket(zmq.PUB)
    options(sock, args)
    sock.setsockopt(zmq.XPUB_NODROP, 1)
    sock.connect(args.endpoint)
    deadline = time.monotonic() + args.timeout
    while True:
        try:
            sock.send(WARM, zmq.NOBLOCK)
        except zmq.Again:
            pass  # not connected yet
        ready, _, _ = select.select([sys.stdin], [], [], 0.01)
        if ready:
            sys.stdin.readline()
            break
        if time.monotonic() > deadline:
            log("no go after %gs" % args.timeout)
            return 1
    send = sock.send
    start = time.monotonic()
    for seq in range(args.count):
        send(pack(seq) + t[seq & 0xFF])
    end = time.monotonic()
    print(json.dumps({"sent": args.count, "start": start, "end": end}), flush=True)
    # The PGM session serves repairs while the socket is open.
    sys.stdin.read()
    sock.close()
    return 0


def sub(ctx, args):
    t = tails(args.size)
    unpack = struct.Struct(">I").unpack_from
    sock = ctx.socket(zmq.SUB)
    options(sock, args)
    sock.setsockopt(zmq.RCVHWM, 0)
    sock.setsockopt(zmq.SUBSCRIBE, b"")
    sock.setsockopt(zmq.RCVTIMEO, int(args.timeout * 1000))
    sock.connect(args.endpoint)
    recv, now = sock.recv, time.monotonic
    got = gaps = missing = bad = 0
    last, first_err = -1, ""
    first = end = 0.0
    try:
        while True:
            m = recv()
            if m == WARM:
                break
        log("warm")
        while True:
            m = recv()
            if m != WARM:
                break
        first = end = now()
        sock.setsockopt(zmq.RCVTIMEO, int(args.idle * 1000))
        while True:
            if m == WARM:
                pass
            elif len(m) != args.size:
                bad += 1
                first_err = first_err or "message of %d bytes, want %d" % (len(m), args.size)
            else:
                (seq,) = unpack(m)
                if m[4:] != t[seq & 0xFF]:
                    bad += 1
                    first_err = first_err or "record %d: bytes differ" % seq
                elif seq <= last:
                    bad += 1
                    first_err = first_err or "record %d after %d" % (seq, last)
                else:
                    if seq != last + 1:
                        gaps += 1
                        missing += seq - last - 1
                    last = seq
                    got += 1
            if last == args.count - 1 or got + bad >= args.count or end - first > args.max:
                break
            m = recv()
            end = now()
    except zmq.Again:
        pass
    stop = now()
    if last >= 0:
        missing += args.count - 1 - last
    print(json.dumps({"received": got, "first": first, "last": end, "stop": stop, "gaps": gaps,
                      "missing": missing, "bad": bad, "first_error": first_err}), flush=True)
    sock.close()
    return 0 if got + bad > 0 else 1


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("role", choices=["pub", "sub"])
    ap.add_argument("endpoint")
    ap.add_argument("--size", type=int, required=True)
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--rate", type=int, default=100, help="ZMQ_RATE, kbit/s (libzmq's default: 100)")
    ap.add_argument("--recovery-ivl", type=int, default=2000, help="ZMQ_RECOVERY_IVL, ms")
    ap.add_argument("--timeout", type=float, default=20, help="give up after this long without the warm-up (sub) or go (pub)")
    ap.add_argument("--idle", type=float, default=1, help="sub: stop after this long without a record")
    ap.add_argument("--max", type=float, default=4, help="sub: stop this long after the first record")
    args = ap.parse_args()
    if not zmq.has("pgm"):
        log("this libzmq has no PGM (zmq.has('pgm') is False)")
        return 3
    if args.size < 8 or args.count <= 0:
        ap.error("want --size >= 8 and --count > 0")
    ctx = zmq.Context()
    try:
        return pub(ctx, args) if args.role == "pub" else sub(ctx, args)
    finally:
        ctx.destroy(linger=0)


if __name__ == "__main__":
    sys.exit(main())
