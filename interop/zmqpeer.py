#!/usr/bin/python3
"""A libzmq PUB or SUB on a pgm:// or epgm:// endpoint, for pgmtun's interop tests.

Runs under Debian's own python3 with Debian's python3-zmq (libzmq 4.3 built
with OpenPGM); PGM needs root (a raw socket). Messages travel to and from
files in one format, written and read by the Go tests:

    per message: u32 frame count, then per frame: u32 length, the bytes
    (big-endian)

    zmqpeer.py pub ENDPOINT --in FILE [--rate KBIT] [--interval S]
        reports "zmqpeer: sending", sends every message of FILE, reports
        "zmqpeer: sent N" on stderr, then keeps serving repairs until
        standard input ends.
    zmqpeer.py sub ENDPOINT --out FILE --count N [--subscribe PREFIX]...
        reports "zmqpeer: ready" on stderr once connected, writes the
        first N messages it receives to FILE and exits.

Exit status: 0 done, 1 failed (timeout), 2 bad usage, 3 no PGM in libzmq.
"""

import argparse
import struct
import sys
import time

import zmq


def log(msg):
    sys.stderr.write("zmqpeer: %s\n" % msg)
    sys.stderr.flush()


def read_messages(path):
    msgs = []
    with open(path, "rb") as f:
        data = f.read()
    pos = 0
    while pos < len(data):
        (n,) = struct.unpack_from(">I", data, pos)
        pos += 4
        frames = []
        for _ in range(n):
            (size,) = struct.unpack_from(">I", data, pos)
            pos += 4
            frames.append(data[pos:pos + size])
            pos += size
        msgs.append(frames)
    return msgs


def write_messages(path, msgs):
    with open(path, "wb") as f:
        for frames in msgs:
            f.write(struct.pack(">I", len(frames)))
            for fr in frames:
                f.write(struct.pack(">I", len(fr)))
                f.write(fr)


def options(sock, args):
    sock.setsockopt(zmq.RATE, args.rate)
    sock.setsockopt(zmq.RECOVERY_IVL, args.recovery_ivl)
    sock.setsockopt(zmq.MULTICAST_HOPS, args.hops)
    sock.setsockopt(zmq.LINGER, 0)


def pub(ctx, args):
    sock = ctx.socket(zmq.PUB)
    options(sock, args)
    sock.setsockopt(zmq.SNDHWM, 0)  # never drop: the test checks every message
    msgs = read_messages(args.input)
    sock.connect(args.endpoint)
    time.sleep(args.delay)
    log("sending")
    for frames in msgs:
        sock.send_multipart(frames)
        if args.interval:
            time.sleep(args.interval)
    log("sent %d" % len(msgs))
    # The PGM session serves repairs while the socket is open.
    sys.stdin.read()
    sock.close()
    return 0


def sub(ctx, args):
    sock = ctx.socket(zmq.SUB)
    options(sock, args)
    sock.setsockopt(zmq.RCVHWM, 0)
    for p in args.subscribe or [""]:
        sock.setsockopt(zmq.SUBSCRIBE, p.encode())
    sock.setsockopt(zmq.RCVTIMEO, int(args.timeout * 1000))
    sock.connect(args.endpoint)
    # libzmq opens the PGM socket on its I/O thread: give it a moment.
    time.sleep(0.3)
    log("ready")
    msgs = []
    try:
        while len(msgs) < args.count:
            msgs.append(sock.recv_multipart())
    except zmq.Again:
        log("timeout after %d of %d messages" % (len(msgs), args.count))
        write_messages(args.out, msgs)
        return 1
    write_messages(args.out, msgs)
    log("received %d" % len(msgs))
    sock.close()
    return 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("role", choices=["pub", "sub"])
    ap.add_argument("endpoint")
    ap.add_argument("--in", dest="input")
    ap.add_argument("--out")
    ap.add_argument("--count", type=int, default=0)
    ap.add_argument("--subscribe", action="append")
    ap.add_argument("--rate", type=int, default=20000, help="ZMQ_RATE, kbit/s")
    ap.add_argument("--recovery-ivl", type=int, default=10000, help="ZMQ_RECOVERY_IVL, ms")
    ap.add_argument("--hops", type=int, default=1)
    ap.add_argument("--delay", type=float, default=0.5, help="pub: seconds between connect and the first message")
    ap.add_argument("--interval", type=float, default=0, help="pub: seconds between messages")
    ap.add_argument("--timeout", type=float, default=30, help="sub: give up after this long without a message")
    args = ap.parse_args()
    if not zmq.has("pgm"):
        log("this libzmq has no PGM (zmq.has('pgm') is False)")
        return 3
    if args.role == "pub" and not args.input:
        ap.error("pub needs --in")
    if args.role == "sub" and (not args.out or args.count <= 0):
        ap.error("sub needs --out and --count")
    ctx = zmq.Context()
    try:
        return pub(ctx, args) if args.role == "pub" else sub(ctx, args)
    finally:
        ctx.destroy(linger=0)


if __name__ == "__main__":
    sys.exit(main())
