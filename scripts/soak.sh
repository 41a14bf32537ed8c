#!/usr/bin/env bash
# The hostile-client soak (issue 14), loopback only, bounded in time:
#
#   scripts/soak.sh [SECONDS]          # default 60
#
# Starts `netecho serve` on 127.0.0.1 (TCP, UDP with --udp-max-size 1024 so
# that the soak's 4 KiB datagrams are oversized, and TLS when `serve --help`
# lists --tls-listen), then runs scripts/soak.py against it: thousands of
# slow clients, a connect-and-reset storm, clients that never read,
# half-open connections, oversized and source-spoofed UDP, garbage on the
# TLS port, a kill storm (the forked child serving a client SIGKILLed at its
# FIN: SOAK_MODEL=fork or prefork), UDP loops through a second reflector,
# idle and trickling connections to /metrics under a scraper with a 10 s
# timeout; meanwhile a normal client is served and timed. At the end it
# prints the server's CPU, RSS, descriptors and the normal client's p99,
# checks that the server counts no client once all have gone and still
# echoes, then stops the server with SIGTERM.
#
# Environment: NETECHO (the binary; default target/release/netecho, built
# if missing), SOAK_MODEL (default auto), SOAK_SLOW (slow clients, 2000),
# SOAK_ARGS (more soak.py flags, e.g. "--reset-rate 1000 --noread 100").
# Exit status: soak.py's (1 if the normal client saw a failure).
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-${SOAK_SECONDS:-60}}"
model="${SOAK_MODEL:-auto}"
slow="${SOAK_SLOW:-2000}"
bin="${NETECHO:-target/release/netecho}"
if [ ! -x "$bin" ]; then
    echo "soak: building $bin" >&2
    cargo build --release -q
fi
# Thousands of client sockets in one process, and as many in the server.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

args=(serve --model "$model" --listen 127.0.0.1:0 --udp --udp-max-size 1024 --metrics 127.0.0.1:0)
if "$bin" serve --help | grep -q -- '--tls-listen'; then
    args+=(--tls-listen 127.0.0.1:0)
fi
out="$(mktemp)"
err="$(mktemp)"
NETECHO_LOG=warn "$bin" "${args[@]}" >"$out" 2>"$err" &
pid=$!
cleanup() {
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    rm -f "$out" "$err"
}
trap cleanup EXIT

# The `listening` lines say where it serves (10 s at most).
for _ in $(seq 100); do
    grep -q '^listening metrics ' "$out" && break
    sleep 0.1
done
tcp="$(awk '$1 == "listening" && $2 == "tcp" {print $3; exit}' "$out")"
udp="$(awk '$1 == "listening" && $2 == "udp" {print $3; exit}' "$out")"
tls="$(awk '$1 == "listening" && $2 == "tls" {print $3; exit}' "$out")"
metrics="$(awk '$1 == "listening" && $2 == "metrics" {print $3; exit}' "$out")"
if [ -z "$tcp" ]; then
    echo "soak: the server did not start:" >&2
    cat "$err" >&2
    exit 1
fi
echo "soak: $bin ${args[*]} (pid $pid) on tcp $tcp, udp $udp${tls:+, tls $tls}; $seconds s"
soak=(scripts/soak.py --tcp "$tcp" --udp "$udp" --pid "$pid" --seconds "$seconds" --slow "$slow" --metrics "$metrics")
[ -n "$tls" ] && soak+=(--tls "$tls")
# shellcheck disable=SC2206 # SOAK_ARGS is meant to split into flags
[ -n "${SOAK_ARGS:-}" ] && soak+=(${SOAK_ARGS})
rc=0
python3 "${soak[@]}" || rc=$?
if ! kill -0 "$pid" 2>/dev/null; then
    echo "soak: the server died during the soak:" >&2
    cat "$err" >&2
    exit 1
fi
warnings="$(grep -c WARN "$err" || true)"
echo "server log: $warnings warning lines (rate-limited: at most one per kind per 5 s)"
exit "$rc"
