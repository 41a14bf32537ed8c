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
- a kill storm: clients that come and go, and the forked child serving
  each one (fork, prefork) SIGKILLed the moment its FIN arrives, at most
  KILL_RATE per second (nothing to kill in the other models);
- UDP loops: a second reflector (a service port from 20000 on) holding two,
  then eight, alternating payloads in a loop with the server, at once and
  20 ms away, round after round of LOOP_ROUND seconds: each must be cut
  within a few bounces;
- the metrics attack, if --metrics is given: METRICS_IDLE silent and
  METRICS_SLOW trickling connections to /metrics, re-opened as the server
  drops them, while a scraper with a 10 s timeout (as Prometheus) reads
  the page every second: every scrape must succeed;
- throughout, a normal client: one connection echoing 64 bytes every 20 ms
  (its round-trip times recorded), a fresh connection every 200 ms, and a
  UDP probe from 127.0.0.1 every 50 ms, the same bytes every time (as ping
  sends them).

At the end it prints the server's CPU (all its processes), RSS, open
descriptors, the normal client's latency percentiles and failures, and the
hostile clients' counts; then, once every client has gone, that the
server counts no client (`netecho_connections_active` 0 within 20 s) and
still echoes. Exit status 1 if the normal client saw a failure, fewer than
90 % of its UDP probes were answered, a UDP loop was not cut, a scrape
failed, or the counters did not come back to zero.

    scripts/soak.py --tcp 127.0.0.1:PORT --udp 127.0.0.1:PORT --pid PID
                    [--tls 127.0.0.1:PORT] [--seconds 60] [--slow 2000] ...

Every loop is bounded by SECONDS (at most 3600) and by its own rate or
round length.
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
import urllib.parse
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
LOOP_ROUND = 3.0
# A loop is cut when the reflector got at most this many replies more than
# it sent payloads (each payload answered once, then a few bounces).
LOOP_SLACK = 3
SCRAPE_TIMEOUT = 10.0
SCRAPE_EVERY = 1.0
SETTLE = 20.0


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


def echo_once(a, data):
    """A fresh connection: sends data, half-closes, returns what came back
    before the server's FIN (OSError on any failure)."""
    with socket.create_connection(a, timeout=IO_TIMEOUT) as c:
        c.sendall(data)
        c.shutdown(socket.SHUT_WR)
        back = b""
        while True:
            part = c.recv(64)
            if not part:
                return back
            back += part


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
                if echo_once(tcp, b"fresh") != b"fresh":
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
            # The same bytes every time, as ping sends them: the loop guard
            # must tell a client's repeats from a loop.
            probe.sendto(b"the normal client's probe", udp)
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


def children(pid):
    """The server's child processes (the kernel's list, else from /proc)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(c) for c in f.read().split()]
    except OSError:
        return [p for p in tree(pid) if p != pid]


def hexaddr(a):
    """An IPv4 address and port as /proc/net/tcp writes them."""
    ip, port = a[0], a[1]
    return "%08X:%04X" % (struct.unpack("<I", socket.inet_aton(ip))[0], port)


def holder(server, pid, client):
    """The child of the server holding the server end of the connection
    from `client`, or None (a model that serves in one process)."""
    local, remote, inode = hexaddr(server), hexaddr(client), None
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            p = line.split()
            if p[1] == local and p[2] == remote:
                inode = p[9]
                break
    if inode is None:
        return None
    want = f"socket:[{inode}]"
    for c in children(pid):
        try:
            for fd in os.listdir(f"/proc/{c}/fd"):
                if os.readlink(f"/proc/{c}/fd/{fd}") == want:
                    return c
        except OSError:
            continue
    return None


def kill_storm(a, pid, rate, end, counts):
    """Clients that come and go; the child serving each is SIGKILLed the
    moment the client sees its FIN (after the child gave its slot back and
    before it exits): at most `rate` per second."""
    if ":" in a[0]:
        counts.add("kill storm: IPv4 only, skipped")
        return
    gap = 1.0 / max(rate, 0.1)
    msg = b"kill me at the FIN"
    while time.monotonic() < end:
        t0 = time.monotonic()
        try:
            with socket.create_connection(a, timeout=IO_TIMEOUT) as s:
                s.sendall(msg)
                got = b""
                while len(got) < len(msg):
                    part = s.recv(64)
                    if not part:
                        break
                    got += part
                child = holder(a, pid, s.getsockname())
                s.shutdown(socket.SHUT_WR)
                while s.recv(4096):
                    pass
                if child is None:
                    counts.add("kill storm: no child serves it")
                else:
                    try:
                        os.kill(child, 9)
                        counts.add("kill storm: children killed at the FIN")
                    except ProcessLookupError:
                        counts.add("kill storm: child gone before the kill")
        except OSError:
            counts.add("kill storm: connection failed")
        pause = t0 + gap - time.monotonic()
        if pause > 0:
            time.sleep(pause)


def reflector():
    """A UDP socket on a service port from 20000 on, as another echo server
    would have."""
    rng = random.Random()
    for _ in range(200):
        r = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            r.bind(("127.0.0.1", rng.randrange(20000, 30000)))
            return r
        except OSError:
            r.close()
    raise OSError(errno.EADDRINUSE, "no free port for the reflector")


def udp_loops(a, end, counts, worst):
    """Rounds of LOOP_ROUND seconds, each a reflector holding 2 or 8
    different payloads in a loop with the server, echoing at once or 20 ms
    later; records the replies over the payloads of the worst round."""
    shapes = [(2, 0.0), (8, 0.0), (2, 0.020), (8, 0.020)]
    i = 0
    while time.monotonic() + LOOP_ROUND <= end:
        payloads, delay = shapes[i % len(shapes)]
        i += 1
        try:
            r = reflector()
        except OSError:
            counts.add("udp loop: no reflector port")
            return
        r.settimeout(0.1)
        with r:
            for k in range(payloads):
                r.sendto(b"loop payload %d" % k, a)
            got, stop = 0, time.monotonic() + LOOP_ROUND
            while time.monotonic() < stop:
                try:
                    data, _ = r.recvfrom(2048)
                except OSError:
                    continue
                got += 1
                if delay:
                    time.sleep(delay)
                r.sendto(data, a)
        counts.add("udp loop rounds")
        extra = got - payloads
        if extra > LOOP_SLACK:
            counts.add("udp loops not cut")
            print(f"soak: a loop of {payloads} payloads ({delay * 1000:.0f} ms away) "
                  f"bounced {got} times in {LOOP_ROUND:.0f} s", file=sys.stderr)
        with counts.lock:
            if extra > worst[0]:
                worst[0], worst[1] = extra, f"{payloads} payloads, {delay * 1000:.0f} ms"


def metrics_hogs(url, idle, slow, end, counts):
    """`idle` silent and `slow` trickling connections to the metrics port
    (a request head, a byte a second), re-opened as the server drops them."""
    u = urllib.parse.urlsplit(url)
    where = (u.hostname, u.port)
    head = f"GET {u.path} HTTP/1.1\r\nHost: soak\r\nX-Slow: {'a' * 64}\r\n\r\n".encode()
    conns = {}  # socket -> (kind, bytes of `head` sent)

    def fill():
        want = {"idle": idle, "slow": slow}
        for kind, _ in conns.values():
            want[kind] -= 1
        for kind, n in want.items():
            for _ in range(n):
                try:
                    s = socket.create_connection(where, timeout=IO_TIMEOUT)
                    s.setblocking(False)
                    conns[s] = (kind, 0)
                    counts.add(f"metrics {kind} connections")
                except OSError:
                    counts.add("metrics hog connect failed")

    while time.monotonic() < end:
        fill()
        for s in list(conns):
            kind, sent = conns[s]
            try:
                if s.recv(4096) == b"":
                    raise OSError("closed")
            except BlockingIOError:
                pass
            except OSError:
                counts.add(f"metrics {kind} dropped by the server")
                del conns[s]
                s.close()
                continue
            if kind == "slow":
                try:
                    s.send(head[sent % len(head):sent % len(head) + 1])
                    conns[s] = (kind, sent + 1)
                except OSError:
                    pass
        time.sleep(1.0)
    for s in conns:
        s.close()


def scraper(url, end, counts, lat):
    """A scrape every SCRAPE_EVERY with a SCRAPE_TIMEOUT timeout, as
    Prometheus does; each must succeed."""
    while time.monotonic() < end:
        t0 = time.monotonic()
        try:
            with urllib.request.urlopen(url, timeout=SCRAPE_TIMEOUT) as r:
                r.read()
            lat.append(time.monotonic() - t0)
            counts.add("scrapes")
        except OSError as e:
            counts.add("scrapes failed")
            print(f"soak: scrape failed after {time.monotonic() - t0:.1f} s: {e}", file=sys.stderr)
        pause = t0 + SCRAPE_EVERY - time.monotonic()
        if pause > 0:
            time.sleep(pause)


def active_now(url):
    """`netecho_connections_active` on the server's page."""
    with urllib.request.urlopen(url, timeout=IO_TIMEOUT) as r:
        for line in r.read().decode().splitlines():
            if line.startswith("netecho_connections_active "):
                return int(line.split()[1])
    raise OSError("no netecho_connections_active on the page")


def settled(tcp, url):
    """After the load: the counters back at zero (within SETTLE seconds)
    and a fresh client echoed. Returns the failures, as lines."""
    bad, last = [], None
    if url:
        stop = time.monotonic() + SETTLE
        while time.monotonic() < stop:
            try:
                last = active_now(url)
            except OSError as e:
                last = f"unreadable ({e})"
            if last == 0:
                break
            time.sleep(0.2)
        print(f"after the soak:      netecho_connections_active {last}")
        if last != 0:
            bad.append(f"{SETTLE:.0f} s after every client left, the server counts {last} clients")
    try:
        back = echo_once(tcp, b"after the soak")
        if back != b"after the soak":
            bad.append(f"a fresh client after the soak got {back!r}")
    except OSError as e:
        bad.append(f"a fresh client after the soak: {e}")
    print(f"after the soak:      a fresh client {'echoed' if not bad or not bad[-1].startswith('a fresh') else 'failed'}")
    return bad


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
    ap.add_argument("--metrics", help="the server's /metrics URL: its counts are printed, "
                    "and the metrics attack runs against it")
    ap.add_argument("--kill-rate", type=float, default=20.0,
                    help="kill-storm clients per second (0: none)")
    ap.add_argument("--no-loops", action="store_true", help="no UDP loop rounds")
    ap.add_argument("--metrics-idle", type=int, default=20)
    ap.add_argument("--metrics-slow", type=int, default=20)
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
    if args.kill_rate > 0:
        jobs.append(threading.Thread(
            target=kill_storm, args=(args.tcp, args.pid, args.kill_rate, end, counts)))
    loop_worst = [0, "none"]
    if args.udp is not None and not args.no_loops:
        jobs.append(threading.Thread(target=udp_loops, args=(args.udp, end, counts, loop_worst)))
    scrape_lat = []
    if args.metrics:
        jobs.append(threading.Thread(
            target=metrics_hogs,
            args=(args.metrics, args.metrics_idle, args.metrics_slow, end, counts)))
        jobs.append(threading.Thread(target=scraper, args=(args.metrics, end, counts, scrape_lat)))
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
              f"{counts.get('normal udp sent')} answered (the same bytes each time)")
    if args.udp is not None and not args.no_loops:
        print(f"UDP loops:           {counts.get('udp loop rounds')} rounds, "
              f"{counts.get('udp loops not cut')} not cut; worst {loop_worst[0]} replies "
              f"past the payloads ({loop_worst[1]})")
    if args.metrics:
        sl = sorted(scrape_lat)
        print(f"scrapes (10 s limit): {counts.get('scrapes')} ok, {counts.get('scrapes failed')} failed, "
              f"p50 {ms(pct(sl, 0.50))}, max {ms(sl[-1] if sl else float('nan'))}")
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
    failed = settled(args.tcp, args.metrics)
    if counts.get("normal failures") + counts.get("normal mismatches"):
        failed.append("the normal client saw failures or mismatches")
    sent, answered = counts.get("normal udp sent"), counts.get("normal udp answered")
    if args.udp is not None and answered < 0.9 * sent:
        failed.append(f"only {answered} of {sent} identical UDP probes were answered")
    if counts.get("udp loops not cut"):
        failed.append(f"{counts.get('udp loops not cut')} UDP loops were not cut")
    if counts.get("scrapes failed"):
        failed.append(f"{counts.get('scrapes failed')} scrapes failed")
    for f in failed:
        print(f"soak: FAILED: {f}", file=sys.stderr)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
