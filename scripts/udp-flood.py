#!/usr/bin/env python3
"""Measures what a UDP flood costs `netecho serve --udp`, on loopback only.

Starts the server (`--model epoll --udp --metrics`), then for DURATION seconds
sends datagrams at RATE per second, either each from a source never seen
before (`new`: 127.x.y.z addresses, set per datagram with IP_PKTINFO, so one
socket can speak for millions of sources) or from a few fixed sources
(`few`). Meanwhile a well-behaved client on 127.0.0.1 sends PROBES probes,
evenly spread, and counts its answers. At the end it prints the UDP (sidecar)
process's CPU time per datagram received, from /proc/PID/stat, and what
/metrics counted. The steady client talks for a second before the flood.

    scripts/udp-flood.py [--bin target/release/netecho] [--rate 15000]
                         [--duration 5] [--sources new|few] [--probes 20]

Bounded: it stops after DURATION seconds (at most 60) and kills the server.
"""

import argparse
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.request

IP_PKTINFO = 8  # Linux <netinet/in.h>; Python's socket module lacks it.
MAX_DURATION = 60.0
MAX_RATE = 200_000
FEW_SOURCES = 4
BATCH = 256
WARM_UP_PROBES = 5
CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    """utime + stime of a process, from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def children(pid):
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(p) for p in f.read().split()]


def scrape(url):
    with urllib.request.urlopen(url, timeout=5) as r:
        page = r.read().decode()
    out = {}
    for line in page.splitlines():
        m = re.match(r"^(netecho_udp_\S+) (\d+)$", line)
        if m:
            out[m.group(1)] = int(m.group(2))
    return out


def new_source(i):
    """The i-th of 16M loopback addresses 127.a.b.c, skipping .0 and .255."""
    i %= 254 * 256 * 256
    a, rest = divmod(i, 256 * 254)
    b, c = divmod(rest, 254)
    return bytes([127, a + 1 if a < 255 else 1, b, c + 1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", default="target/release/netecho")
    ap.add_argument("--rate", type=int, default=15_000)
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--sources", choices=["new", "few"], default="new")
    ap.add_argument("--probes", type=int, default=20)
    ap.add_argument("serve_args", nargs="*", help="extra `serve` flags, after --")
    args = ap.parse_args()
    duration = min(args.duration, MAX_DURATION)
    rate = min(args.rate, MAX_RATE)

    server = subprocess.Popen(
        [args.bin, "serve", "--model", "epoll", "--udp", "--listen", "127.0.0.1:0",
         "--metrics", "127.0.0.1:0", *args.serve_args],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    try:
        udp = metrics = None
        while udp is None or metrics is None:
            line = server.stdout.readline()
            if not line:
                sys.exit("server exited before listening")
            if line.startswith("listening udp "):
                host, port = line.split()[2].rsplit(":", 1)
                udp = (host, int(port))
            elif line.startswith("listening metrics "):
                metrics = line.split()[2]
        time.sleep(0.2)  # the sidecar forks right after the listening lines
        sidecar = children(server.pid)
        if len(sidecar) != 1:
            sys.exit(f"expected one sidecar process, found {sidecar}")
        sidecar = sidecar[0]

        flood = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        flood.bind(("0.0.0.0", 0))
        flood.setblocking(False)
        few = []
        for i in range(FEW_SOURCES):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind((f"127.0.1.{i + 1}", 0))
            s.setblocking(False)
            few.append(s)
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        probe.bind(("127.0.0.1", 0))
        probe.setblocking(False)
        dst = socket.inet_aton(udp[0])

        # The steady client talks for a second first, as a real one would
        # have before a flood starts (and as the policy needs to know it).
        for i in range(WARM_UP_PROBES):
            probe.sendto(b"warm %d" % i, udp)
            time.sleep(1.0 / WARM_UP_PROBES)
        try:
            while True:
                probe.recv(64)
        except BlockingIOError:
            pass

        before = scrape(metrics)
        cpu0 = cpu_seconds(sidecar)
        t0 = time.monotonic()
        sent = probes_sent = answers = sendfail = 0
        probe_every = duration / max(args.probes, 1)
        pad = b"x" * 24
        while True:
            now = time.monotonic()
            if now - t0 >= duration:
                break
            # At most one batch between clock reads, so a sender slower than
            # RATE still stops on time (and says how far it got).
            due = min(int((now - t0) * rate), sent + BATCH)
            while sent < due:
                # Distinct bytes each time: the same bytes again and again
                # from one source are a loop, and dropped as one.
                payload = struct.pack("=Q", sent) + pad
                try:
                    if args.sources == "new":
                        info = struct.pack("=i4s4s", 0, new_source(sent), b"\0\0\0\0")
                        flood.sendmsg([payload], [(socket.IPPROTO_IP, IP_PKTINFO, info)], 0, udp)
                    else:
                        few[sent % FEW_SOURCES].sendto(payload, udp)
                except BlockingIOError:
                    sendfail += 1
                sent += 1
            if probes_sent < args.probes and now - t0 >= probes_sent * probe_every:
                probe.sendto(b"probe %d" % probes_sent, udp)
                probes_sent += 1
            try:
                while True:
                    probe.recv(64)
                    answers += 1
            except BlockingIOError:
                pass
        elapsed = time.monotonic() - t0
        time.sleep(0.3)  # the last datagrams and answers
        try:
            while True:
                probe.recv(64)
                answers += 1
        except BlockingIOError:
            pass
        cpu = cpu_seconds(sidecar) - cpu0
        after = scrape(metrics)
    finally:
        server.send_signal(signal.SIGKILL)
        server.wait()

    got = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    received = got.get("netecho_udp_datagrams_total", 0) + sum(
        v for k, v in got.items() if k.startswith("netecho_udp_dropped_total"))
    print(f"sources={args.sources} rate={rate}/s duration={elapsed:.1f}s sent={sent} "
          f"send_failed={sendfail} received={received}")
    print(f"udp process cpu={cpu:.2f}s ({100 * cpu / elapsed:.0f}% of a core) "
          f"= {1e6 * cpu / max(received, 1):.2f} us per datagram received")
    print(f"probes from a steady source: {answers}/{probes_sent} answered")
    for k, v in sorted(got.items()):
        if v:
            print(f"  {k} +{v}")


if __name__ == "__main__":
    main()
