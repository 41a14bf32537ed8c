#!/bin/sh
# ping's round trip for a large probe against client moving the same bytes,
# in one run (the claim: at 8 MiB on loopback ping is within 2x of client).
#
#   scripts/ping-vs-client.sh [BIN] [SIZE] [RUNS]
#
# Starts `serve` on CPU 0, then on CPU 1 takes the best of RUNS (default 5)
# `ping -s SIZE` round trips (default 8388608 bytes) and the best of RUNS
# `client` runs over SIZE bytes (wall time, which also pays the process
# start and the connect), and prints both and ping/client. Exit 1 above 2.
set -eu
BIN=${1:-target/release/netecho}
SIZE=${2:-8388608}
RUNS=${3:-5}
out=$(mktemp)
data=$(mktemp)
taskset -c 0 "$BIN" serve --listen 127.0.0.1:0 --workers 1 >"$out" 2>/dev/null &
pid=$!
trap 'kill $pid 2>/dev/null; rm -f "$out" "$data"' EXIT
for _ in $(seq 100); do [ -s "$out" ] && break; sleep 0.05; done
addr=$(awk '/^listening tcp/ { print $3; exit }' "$out")
head -c "$SIZE" /dev/urandom >"$data"
ping_ms=$(taskset -c 1 "$BIN" ping "$addr" -s "$SIZE" -c "$RUNS" -i 0.2 --timeout 10 --json |
    sed -n 's/.*"rtt_ms":{[^}]*"min":\([0-9.e+-]*\).*/\1/p')
client_ms=
for _ in $(seq "$RUNS"); do
    t0=$(date +%s%N)
    taskset -c 1 "$BIN" client "$addr" <"$data" >/dev/null
    t1=$(date +%s%N)
    ms=$(( (t1 - t0) / 1000000 ))
    if [ -z "$client_ms" ] || [ "$ms" -lt "$client_ms" ]; then client_ms=$ms; fi
done
awk -v p="$ping_ms" -v c="$client_ms" -v s="$SIZE" 'BEGIN {
    r = p / (c > 0 ? c : 1)
    printf "%d bytes: ping %.1f ms, client %d ms, ping/client %.2f\n", s, p, c, r
    exit (r > 2) }'
