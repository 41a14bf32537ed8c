#!/bin/sh
# The crossover of --zero-copy: server CPU per request of one model (MODEL,
# default epoll; uring splices too) with every connection spliced (on)
# against the buffer path (off), per message size, in one run
# (BENCHMARKING.md: server pinned to CPU 0 with one worker, netecho's
# checked load generator on CPU 1, 8 connections).
#
#   [MODEL=uring] scripts/zero-copy-crossover.sh [BIN] [SECS] [SIZES...]
#
# Prints one line per size: µs of server CPU per request for off and on,
# and on/off (below 1: splice pays). The window is SECS (default 3) after
# a 1 s warm-up; the CPU is read from /proc/PID/stat around the window.
set -eu
BIN=${1:-target/release/netecho}
SECS=${2:-3}
shift 2 2>/dev/null || shift $#
SIZES=${*:-4096 16384 32768 65536 262144 1048576}
MODEL=${MODEL:-epoll}
TCK=$(getconf CLK_TCK)
ticks() { awk '{ sub(/.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"; }
measure() { # size mode -> µs of server CPU per request
    out=$(mktemp)
    taskset -c 0 "$BIN" serve --model "$MODEL" --workers 1 --zero-copy "$2" \
        --listen 127.0.0.1:0 >"$out" 2>/dev/null &
    pid=$!
    for _ in $(seq 100); do [ -s "$out" ] && break; sleep 0.05; done
    addr=$(awk '/^listening tcp/ { print $3; exit }' "$out")
    taskset -c 1 "$BIN" bench "$addr" -c 8 -s "$1" -d 1 --warmup 0 -qq >/dev/null
    t0=$(ticks $pid)
    json=$(taskset -c 1 "$BIN" bench "$addr" -c 8 -s "$1" -d "$SECS" --warmup 0 --json -qq)
    t1=$(ticks $pid)
    kill $pid; wait $pid 2>/dev/null || true
    rm -f "$out"
    req=$(printf '%s' "$json" | sed 's/.*"requests":\([0-9]*\).*/\1/')
    bad=$(printf '%s' "$json" | sed 's/.*"mismatches":\([0-9]*\).*/\1/')
    [ "$bad" = 0 ] || { echo "size $1 $2: $bad mismatches" >&2; exit 1; }
    awk -v t=$((t1 - t0)) -v r="$req" -v h="$TCK" 'BEGIN { printf "%.2f", t / h / r * 1e6 }'
}
printf '%10s %12s %12s %8s\n' size "off µs/req" "on µs/req" on/off
for s in $SIZES; do
    off=$(measure "$s" off)
    on=$(measure "$s" on)
    printf '%10s %12s %12s %8s\n' "$s" "$off" "$on" \
        "$(awk -v a="$on" -v b="$off" 'BEGIN { printf "%.2f", a / b }')"
done
