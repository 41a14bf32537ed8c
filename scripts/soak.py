#!/usr/bin/env python3
"""The hostile-client soak's load (run by scripts/soak.sh), loopback only.

Against a running `netecho serve` (its TCP/UDP address, optionally a TLS
port), for SECONDS seconds and all at once:

- slow clients: SLOW connections, each sending one byte every few seconds
  (spread over SLOW_EVERY) and reading its echo;
- a connect-and-reset storm: connect, send a little, close with SO_LINGER 0
  (an RST), as fast as RESET_RATE allows;
- clients that never read: NOREAD connections that write until the kernel
  takes no more (the server stops reading them at its backpressure cap);
- half-open connections: HALF connections that send, half-close (FIN) and
  then neither read nor close;
- UDP: oversized datagrams (over the server's --udp-max-size) and a flood
  from ever-new 127.x.y.z sources (the source set per datagram with
  IP_PKTINFO, so no root and one socket), at UDP_RATE per second;
- garbage on the TLS port, if one is given: random bytes and broken
  records, then a close;
- throughout, a normal client: one connection echoing 64 bytes every 20 ms
  (its round-trip times recorded), a fresh connection every 200 ms, and a
  UDP probe from 127.0.0.1 every 50 ms.

At the end it prints the server's CPU (all its processes), RSS, open
descriptors, the normal client's latency percentiles and failures, and the
hostile clients' counts. Exit status 1 if the normal client saw a failure.

    scripts/soak.py --tcp 127.0.0.1:PORT --udp 127.0.0.1:PORT --pid PID
                    [--tls 127.0.0.1:PORT] [--seconds 60] [--slow 2000] ...

Every loop is bounded by SECONDS (at most 3600) and by its own rate.
"""

import argparse
import errno
import ipaddress
import json
import os
import random
import selectors
import socket
import struct
import sys
import threading
import time
import urllib.request

MAX_SECONDS = 3600.0
IP_PKTINFO = 8  # <netinet/in.h>; Python's socket module lacks it.
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
PING = b"x" * 64
PING_EVERY = 0.020
NEWCONN_EVERY = 0.200
UDP_PROBE_EVERY = 0.050
IO_TIMEOUT = 5.0


def addr(text):
    host, _, port = text.rpartition(":")
    ip = ipaddress.ip_address(host.strip("[]"))
    if not ip.is_loopback:
        raise argparse.ArgumentTypeError(f"{text}: loopback only")
    return (str(ip), int(port))


class Counts:
    """Counters shared by the load threads (guarded by one lock)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.c = {}

    def add(self, key, n=1):
        with self.lock:
            self.c[key] = self.c.get(key, 0) + n

    def get(self, key):
        with self.lock:
            return self.c.get(key, 0)


def slow_clients(a, n, every, end, counts):
    """n connections, each sending a byte every `every` seconds (staggered)."""
    sel = selectors.DefaultSelector()
    socks = []
    for i in range(n):
        if time.monotonic() >= end:
            break
        try:
            s = socket.create_connection(a, timeout=IO_TIMEOUT)
        except OSError:
            counts.add("slow connect failed")
            continue
        s.setblocking(False)
        due = time.monotonic() + every * i / max(n, 1)
        socks.append([s, due])
        sel.register(s, selectors.EVENT_READ, len(socks) - 1)
    counts.add("slow clients", len(socks))
    while time.monotonic() < end:
        now = time.monotonic()
        for entry in socks:
            s, due = entry
            if s is not None and now >= due:
                try:
                    s.send(b"s")
                    counts.add("slow bytes sent")
                except OSError:
                    counts.add("slow closed by server")
                    sel.unregister(s)
                    s.close()
                    entry[0] = None
                entry[1] = now + every
        for key, _ in sel.select(timeout=0.1):
            s = key.fileobj
            try:
                data = s.recv(4096)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if data:
                counts.add("slow bytes echoed", len(data))
            else:
                counts.add("slow closed by server")
                sel.unregister(s)
                s.close()
                socks[key.data][0] = None
    for s, _ in socks:
        if s is not None:
            s.close()


def reset_storm(a, rate, end, counts):
    """connect, send a little, close with an RST; at most `rate` per second."""
    linger = struct.pack("ii", 1, 0)
    gap = 1.0 / rate
    nxt = time.monotonic()
    while time.monotonic() < end:
        try:
            s = socket.create_connection(a, timeout=IO_TIMEOUT)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
            if random.random() < 0.5:
                s.send(b"reset me" * random.randint(1, 64))
            s.close()
            counts.add("resets")
        except OSError:
            counts.add("reset connect failed")
        nxt += gap
        pause = nxt - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        else:
            nxt = time.monotonic()


def never_read(a, n, end, counts):
    """n connections that write until the kernel takes nothing more, never read."""
    socks = []
    chunk = b"n" * 65536
    for _ in range(n):
        try:
            s = socket.create_connection(a, timeout=IO_TIMEOUT)
            s.setblocking(False)
            socks.append(s)
        except OSError:
            counts.add("noread connect failed")
    counts.add("noread clients", len(socks))
    while time.monotonic() < end:
        for i, s in enumerate(socks):
            if s is None:
                continue
            try:
                while True:
                    counts.add("noread bytes sent", s.send(chunk))
            except BlockingIOError:
                pass
            except OSError:
                counts.add("noread closed by server")
                s.close()
                socks[i] = None
        time.sleep(0.5)
    for s in socks:
        if s is not None:
            s.close()


def half_open(a, n, end, counts):
    """n connections that send, half-close, and then neither read nor close."""
    socks = []
    for _ in range(n):
        try:
            s = socket.create_connection(a, timeout=IO_TIMEOUT)
            s.sendall(b"half" * 256)
            s.shutdown(socket.SHUT_WR)
            socks.append(s)
        except OSError:
            counts.add("half connect failed")
    counts.add("half-open clients", len(socks))
    while time.monotonic() < end:
        time.sleep(0.2)
    for s in socks:
        s.close()


def udp_hostile(a, rate, big, end, counts):
    """Oversized datagrams and a flood from ever-new 127.x.y.z sources."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setblocking(False)
    # Not 127.0.0.1: that is the normal client's address, whose per-source
    # budget the oversized datagrams would spend.
    s.bind(("127.0.0.2", 0))
    payload = b"u" * 32
    oversized = b"O" * big
    gap = 1.0 / rate
    nxt = time.monotonic()
    k = 0
    while time.monotonic() < end:
        k += 1
        try:
            if k % 10 == 0:
                s.sendto(oversized, a)
                counts.add("udp oversized sent")
            else:
                src = bytes([127, 1 + (k >> 16) % 254, (k >> 8) & 255, 1 + k % 254])
                info = struct.pack("=i4s4s", 0, src, b"\0\0\0\0")
                s.sendmsg([payload], [(socket.IPPROTO_IP, IP_PKTINFO, info)], 0, a)
                counts.add("udp spoofed sent")
        except (BlockingIOError, OSError):
            counts.add("udp send failed")
        # Drain whatever came back to the real source (the oversized ones
        # never do).
        try:
            while True:
                s.recv(65536)
        except (BlockingIOError, OSError):
            pass
        nxt += gap
        pause = nxt - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        else:
            nxt = time.monotonic()
    s.close()


def tls_garbage(a, end, counts):
    """Random bytes, and TLS records with broken lengths, then a close."""
    shapes = [
        lambda: os.urandom(random.randint(1, 2048)),
        # A handshake record header that promises more than it sends.
        lambda: b"\x16\x03\x01\xff\xff" + os.urandom(32),
        # A ClientHello-looking start with a garbage body.
        lambda: b"\x16\x03\x01\x00\x40\x01\x00\x00\x3c\x03\x03" + os.urandom(64),
        # An alert and an application-data record before any handshake.
        lambda: b"\x15\x03\x03\x00\x02\x02\x28\x17\x03\x03\x00\x10" + os.urandom(16),
    ]
    while time.monotonic() < end:
        try:
            s = socket.create_connection(a, timeout=IO_TIMEOUT)
            s.settimeout(0.5)
            s.sendall(random.choice(shapes)())
            try:
                s.recv(4096)
            except OSError:
                pass
            s.close()
            counts.add("tls garbage sent")
        except OSError:
            counts.add("tls connect failed")
        time.sleep(0.01)


def normal_client(tcp, udp, end, lat, counts):
    """The client that must be served throughout; records its round trips."""
    conn = None
    nxt_new = time.monotonic()
    nxt_udp = time.monotonic()
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.bind(("127.0.0.1", 0))
    probe.setblocking(False)
    while time.monotonic() < end:
        t0 = time.monotonic()
        try:
            if conn is None:
                conn = socket.create_connection(tcp, timeout=IO_TIMEOUT)
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn.sendall(PING)
            got = b""
            while len(got) < len(PING):
                part = conn.recv(len(PING) - len(got))
                if not part:
                    raise OSError(errno.ECONNRESET, "closed by the server")
                got += part
            if got != PING:
                counts.add("normal mismatches")
            lat.append(time.monotonic() - t0)
        except OSError as e:
            counts.add("normal failures")
            print(f"soak: normal client: {e}", file=sys.stderr)
            if conn is not None:
                conn.close()
            conn = None
        now = time.monotonic()
        if now >= nxt_new:
            nxt_new = now + NEWCONN_EVERY
            try:
                with socket.create_connection(tcp, timeout=IO_TIMEOUT) as c:
                    c.sendall(b"fresh")
                    c.shutdown(socket.SHUT_WR)
                    back = b""
                    while True:
                        part = c.recv(64)
                        if not part:
                            break
                        back += part
                if back != b"fresh":
                    counts.add("normal mismatches")
                counts.add("normal new connections")
            except OSError as e:
                counts.add("normal failures")
                print(f"soak: normal new connection: {e}", file=sys.stderr)
        if udp is not None and now >= nxt_udp:
            nxt_udp = now + UDP_PROBE_EVERY
            try:
                while True:
                    probe.recv(64)
                    counts.add("normal udp answered")
            except (BlockingIOError, OSError):
                pass
            # Each probe differs: the server drops a datagram repeating the
            # last one from its source, as an echo loop would.
            probe.sendto(b"probe %d" % counts.get("normal udp sent"), udp)
            counts.add("normal udp sent")
        pause = t0 + PING_EVERY - time.monotonic()
        if pause > 0:
            time.sleep(pause)
    time.sleep(0.2)
    try:
        while True:
            probe.recv(64)
            counts.add("normal udp answered")
    except (BlockingIOError, OSError):
        pass
    if conn is not None:
        conn.close()


def tree(pid):
    """pid and its descendants, from /proc."""
    kids = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    rest = f.read().rsplit(")", 1)[1].split()
                kids.setdefault(int(rest[1]), []).append(int(d))
            except (OSError, IndexError):
                pass
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def cpu_seconds(pids):
    """utime + stime (and reaped children's) of every process, in seconds."""
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/stat") as f:
                rest = f.read().rsplit(")", 1)[1].split()
            total += sum(int(x) for x in rest[11:15])
        except (OSError, IndexError):
            pass
    return total / CLK_TCK


def rss_mib(pids):
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/statm") as f:
                total += int(f.read().split()[1]) * PAGE
        except (OSError, IndexError):
            pass
    return total / (1 << 20)


def fds(pids):
    n = 0
    for p in pids:
        try:
            n += len(os.listdir(f"/proc/{p}/fd"))
        except OSError:
            pass
    return n


def pct(sorted_vals, q):
    if not sorted_vals:
        return float("nan")
    i = min(len(sorted_vals) - 1, int(q * len(sorted_vals)))
    return sorted_vals[i]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tcp", type=addr, required=True)
    ap.add_argument("--udp", type=addr)
    ap.add_argument("--tls", type=addr)
    ap.add_argument("--pid", type=int, required=True, help="the server's pid")
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--slow", type=int, default=2000)
    ap.add_argument("--slow-every", type=float, default=3.0)
    ap.add_argument("--reset-rate", type=float, default=500.0)
    ap.add_argument("--noread", type=int, default=50)
    ap.add_argument("--half", type=int, default=200)
    ap.add_argument("--udp-rate", type=float, default=5000.0)
    ap.add_argument("--udp-big", type=int, default=4096, help="oversized datagram size")
    ap.add_argument("--metrics", help="the server's /metrics URL, to print its counts")
    args = ap.parse_args()
    seconds = min(max(args.seconds, 1.0), MAX_SECONDS)
    start = time.monotonic()
    end = start + seconds
    procs = tree(args.pid)
    cpu0 = cpu_seconds(procs)
    # The normal client in a process of its own, forked before any thread,
    # so the load threads' share of the interpreter lock is not in its
    # latency.
    rd, wr = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(rd)
        mine, lat = Counts(), []
        normal_client(args.tcp, args.udp, end, lat, mine)
        with os.fdopen(wr, "w") as out:
            json.dump({"lat": lat, "counts": mine.c}, out)
        os._exit(0)
    os.close(wr)
    counts = Counts()
    jobs = [
        threading.Thread(target=slow_clients, args=(args.tcp, args.slow, args.slow_every, end, counts)),
        threading.Thread(target=reset_storm, args=(args.tcp, args.reset_rate, end, counts)),
        threading.Thread(target=never_read, args=(args.tcp, args.noread, end, counts)),
        threading.Thread(target=half_open, args=(args.tcp, args.half, end, counts)),
    ]
    if args.udp is not None:
        jobs.append(threading.Thread(
            target=udp_hostile, args=(args.udp, args.udp_rate, args.udp_big, end, counts)))
    if args.tls is not None:
        jobs.append(threading.Thread(target=tls_garbage, args=(args.tls, end, counts)))
    for j in jobs:
        j.daemon = True
        j.start()
    peak_fds, peak_rss = 0, 0.0
    while time.monotonic() < end:
        time.sleep(min(1.0, max(0.0, end - time.monotonic())))
        procs = tree(args.pid)
        peak_fds = max(peak_fds, fds(procs))
        peak_rss = max(peak_rss, rss_mib(procs))
    procs = tree(args.pid)
    cpu = cpu_seconds(procs) - cpu0
    rss_end, fds_end = rss_mib(procs), fds(procs)
    for j in jobs:
        j.join(timeout=10)
    with os.fdopen(rd) as f:
        normal = json.load(f)
    os.waitpid(child, 0)
    lat = sorted(normal["lat"])
    for k, v in normal["counts"].items():
        counts.add(k, v)
    wall = time.monotonic() - start
    ms = lambda v: f"{v * 1000:.2f} ms"
    print(f"soak: {seconds:.0f} s against pid {args.pid} ({len(procs)} processes)")
    print(f"server CPU:          {cpu:.2f} s ({100 * cpu / wall:.1f} % of one core)")
    print(f"server RSS:          {rss_end:.1f} MiB at the end, {peak_rss:.1f} MiB at most")
    print(f"server descriptors:  {fds_end} at the end, {peak_fds} at most")
    print(f"normal client:       {len(lat)} round trips of 64 B, "
          f"p50 {ms(pct(lat, 0.50))}, p99 {ms(pct(lat, 0.99))}, max {ms(lat[-1] if lat else float('nan'))}")
    print(f"normal client:       {counts.get('normal new connections')} fresh connections, "
          f"{counts.get('normal failures')} failures, {counts.get('normal mismatches')} mismatches")
    if args.udp is not None:
        print(f"normal UDP probes:   {counts.get('normal udp answered')} of "
              f"{counts.get('normal udp sent')} answered")
    with counts.lock:
        hostile = {k: v for k, v in sorted(counts.c.items()) if not k.startswith("normal")}
    for k, v in hostile.items():
        print(f"  {k:<24} {v}")
    if args.metrics:
        try:
            with urllib.request.urlopen(args.metrics, timeout=IO_TIMEOUT) as r:
                text = r.read().decode()
            print("server /metrics (non-zero counts):")
            for line in text.splitlines():
                if line.startswith(("netecho_udp_dropped", "netecho_connections_closed",
                                    "netecho_connections_rejected", "netecho_udp_datagrams",
                                    "netecho_connections_accepted")) \
                        and not line.endswith(" 0"):
                    print(f"  {line}")
        except OSError as e:
            print(f"soak: /metrics: {e}", file=sys.stderr)
    bad = counts.get("normal failures") + counts.get("normal mismatches")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
