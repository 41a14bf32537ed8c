#!/usr/bin/env python3
"""How late --idle-timeout 1 fires, per model: 5 connections each, on
loopback, each pinged once and then left idle; prints ms after the 1 s.
Usage: scripts/timer-lateness.py [BINARY] [MODEL...]"""
import socket, subprocess, sys, time

binary = sys.argv[1] if len(sys.argv) > 1 else "target/release/netecho"
models = sys.argv[2:] or ["iterative", "fork", "prefork", "thread", "prethread", "epoll", "tokio", "uring"]
for m in models:
    p = subprocess.Popen([binary, "serve", "--listen", "127.0.0.1:0", "--model", m,
                          "--idle-timeout", "1", "--workers", "1"],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    host, port = p.stdout.readline().split()[2].rsplit(":", 1)
    late = []
    for _ in range(5):
        s = socket.create_connection((host, int(port)), timeout=5)
        s.sendall(b"x")
        s.recv(1)
        t = time.monotonic()
        s.recv(10)  # the server's FIN
        late.append((time.monotonic() - t - 1.0) * 1000)
        s.close()
    p.terminate()
    p.wait()
    print(m, " ".join("%.1f" % x for x in late), "ms late")
