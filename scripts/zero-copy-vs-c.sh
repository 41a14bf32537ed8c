#!/bin/sh
# The zero-copy workloads against the C baselines, in one run
# (BENCHMARKING.md: each server with one worker pinned to CPU 0, netecho's
# checked load generator on CPU 1, server CPU from /proc/PID/stat around the
# measured window):
#   1 MiB × 8 and 64 KiB × 8 request/response: µs of server CPU per request;
#   a full-duplex stream on 8 connections (netecho bench --stream): ms of
#   server CPU per MiB echoed;
#   64 B × 300: µs per request.
# Beside each figure: its ratio to C epoll's, and the p99 latency in µs.
# Rows: C epoll (benches/c/epoll_echo.c), C splice (benches/c/splice_echo.c),
# netecho's epoll and uring models with --zero-copy off and auto, and
# --model auto (what a user gets out of the box); the last column divides by
# C epoll's figure of the same workload. ROWS picks the netecho rows.
#
#   scripts/zero-copy-vs-c.sh [BIN] [SECS]
#   ROWS="uring:auto auto:auto" scripts/zero-copy-vs-c.sh
set -eu
BIN=${1:-target/release/netecho}
SECS=${2:-3}
ROWS=${ROWS:-epoll:off epoll:auto uring:off uring:auto auto:auto}
TCK=$(getconf CLK_TCK)
mkdir -p target
cc -O2 -Wall -o target/epoll_echo benches/c/epoll_echo.c
cc -O2 -Wall -o target/splice_echo benches/c/splice_echo.c
ticks() { awk '{ sub(/.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"; }
field() { printf '%s' "$1" | sed "s/.*\"$2\":\([0-9.]*\).*/\1/"; }
# measure SERVER LOAD-ARGS... -> server CPU per request (µs) or per MiB (ms)
measure() {
    server=$1
    shift
    out=$(mktemp)
    case $server in
    c-epoll) taskset -c 0 target/epoll_echo >"$out" 2>/dev/null & ;;
    c-splice) taskset -c 0 target/splice_echo >"$out" 2>/dev/null & ;;
    *) taskset -c 0 "$BIN" serve --model "${server%%:*}" --workers 1 \
        --zero-copy "${server#*:}" --listen 127.0.0.1:0 >"$out" 2>/dev/null & ;;
    esac
    pid=$!
    for _ in $(seq 100); do [ -s "$out" ] && break; sleep 0.05; done
    addr=$(awk '/^listening tcp/ { print $3; exit }' "$out")
    taskset -c 1 "$BIN" bench "$addr" "$@" -d 1 --warmup 0 -qq >/dev/null
    t0=$(ticks $pid)
    json=$(taskset -c 1 "$BIN" bench "$addr" "$@" -d "$SECS" --warmup 0 --json -qq)
    t1=$(ticks $pid)
    kill $pid
    wait $pid 2>/dev/null || true
    rm -f "$out"
    [ "$(field "$json" mismatches)" = 0 ] || { echo "$server $*: mismatches" >&2; exit 1; }
    case "$*" in
    *--stream*) awk -v t=$((t1 - t0)) -v b="$(field "$json" bytes)" -v h="$TCK" \
        'BEGIN { printf "%.3f -", t / h / (b / 1048576) * 1e3 }' ;;
    *) awk -v t=$((t1 - t0)) -v r="$(field "$json" requests)" -v h="$TCK" \
        -v p="$(field "$json" p99_us)" 'BEGIN { printf "%.2f %.0f", t / h / r * 1e6, p }' ;;
    esac
}
row() { # name load-args...
    name=$1
    shift
    set -- $(measure c-epoll "$@") "$@"
    base=$1 p99=$2
    shift 2
    printf '%s (%s; ratio to c-epoll; p99 µs)\n' "$name" "$(test "${1:-}" = --stream && echo 'ms CPU per MiB' || echo 'µs CPU per request')"
    printf '  %-12s %10s %8s %8s\n' c-epoll "$base" 1.00 "$p99"
    for s in c-splice $ROWS; do
        set -- $(measure $s "$@") "$@"
        v=$1 p99=$2
        shift 2
        printf '  %-12s %10s %8s %8s\n' "$s" "$v" "$(awk -v a="$v" -v b="$base" 'BEGIN { printf "%.2f", a / b }')" "$p99"
    done
}
row "1 MiB x 8" -c 8 -s 1048576
row "64 KiB x 8" -c 8 -s 65536
row "stream x 8" --stream -c 8
row "64 B x 300" -c 300 -s 64
