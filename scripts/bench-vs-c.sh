#!/usr/bin/env bash
# Is `netecho bench` the bottleneck? Runs it and a minimal C epoll load
# generator (benches/c/loadgen.c) against the same netecho server, one after
# the other, and compares requests per CPU-second of each generator.
#
#   server      pinned to CPU 0 (taskset -c 0)
#   generators  pinned to CPU 1, one thread each (netecho bench --threads 1)
#   CPU time    user + system seconds of the generator process, startup and
#               connect included: getrusage(RUSAGE_SELF) at its end, which
#               both report (loadgen's `cpu_s`, bench's JSON `cpu_s`), to the
#               microsecond; /usr/bin/time's figure (to 10 ms) is shown beside
#
# A ratio >= 1.0 means netecho bench spends no more CPU per request than the
# C generator, even though it also checks every byte and times every request.
#
# usage: scripts/bench-vs-c.sh [SECS] [CONNS] [SIZE] [REPEAT]
# env:   MODEL (server model, default epoll), NETECHO (binary, default
#        target/release/netecho, built if missing)
set -euo pipefail
cd "$(dirname "$0")/.."

secs=${1:-5}
conns=${2:-50}
size=${3:-64}
repeat=${4:-5}
model=${MODEL:-epoll}
netecho=${NETECHO:-target/release/netecho}

[[ -x $netecho ]] || cargo build --release --quiet
loadgen=target/loadgen
mkdir -p target
gcc -O2 -Wall -o "$loadgen" benches/c/loadgen.c

tmp=$(mktemp -d)
server_pid=
cleanup() {
	[[ -n $server_pid ]] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
	rm -rf "$tmp"
}
trap cleanup EXIT

taskset -c 0 "$netecho" serve --listen 127.0.0.1:0 --model "$model" --workers 1 \
	>"$tmp/serve.out" 2>/dev/null &
server_pid=$!
for _ in $(seq 100); do
	grep -q '^listening tcp' "$tmp/serve.out" 2>/dev/null && break
	sleep 0.05
done
port=$(sed -n 's/^listening tcp 127\.0\.0\.1:\([0-9]*\)$/\1/p' "$tmp/serve.out")
[[ -n $port ]] || { echo "bench-vs-c: the server did not start" >&2; exit 1; }

# cpu_of FILE: user+system seconds that /usr/bin/time wrote to FILE.
cpu_of() { awk '{ print $1 + $2 }' "$1"; }

echo "server: netecho serve --model $model --workers 1 on CPU 0, port $port"
echo "load:   $conns connections, $size B messages, $secs s per run, $repeat runs, CPU 1"
printf '%-4s %-14s %12s %9s %7s %14s\n' run generator requests cpu_s time_s req/cpu_s
ratios=()
for run in $(seq "$repeat"); do
	/usr/bin/time -f '%U %S' -o "$tmp/c.time" \
		taskset -c 1 "$loadgen" 127.0.0.1 "$port" "$conns" "$size" "$secs" >"$tmp/c.out"
	c_req=$(awk '/^requests/ { print $2 }' "$tmp/c.out")
	c_cpu=$(awk '/^cpu_s/ { print $2 }' "$tmp/c.out")
	c_time=$(cpu_of "$tmp/c.time")

	/usr/bin/time -f '%U %S' -o "$tmp/n.time" \
		taskset -c 1 "$netecho" bench "127.0.0.1:$port" --threads 1 -c "$conns" -s "$size" \
		-d "$secs" --warmup 0 --json >"$tmp/n.json"
	n_req=$(sed -n 's/.*"requests":\([0-9]*\).*/\1/p' "$tmp/n.json")
	n_cpu=$(sed -n 's/.*"cpu_s":\([0-9.]*\).*/\1/p' "$tmp/n.json")
	n_time=$(cpu_of "$tmp/n.time")

	c_eff=$(awk -v r="$c_req" -v c="$c_cpu" 'BEGIN { printf "%.0f", (c > 0 ? r / c : 0) }')
	n_eff=$(awk -v r="$n_req" -v c="$n_cpu" 'BEGIN { printf "%.0f", (c > 0 ? r / c : 0) }')
	printf '%-4s %-14s %12s %9s %7s %14s\n' "$run" "C loadgen" "$c_req" "$c_cpu" "$c_time" "$c_eff"
	printf '%-4s %-14s %12s %9s %7s %14s\n' "$run" "netecho bench" "$n_req" "$n_cpu" "$n_time" "$n_eff"
	ratios+=("$(awk -v n="$n_eff" -v c="$c_eff" 'BEGIN { printf "%.3f", (c > 0 ? n / c : 0) }')")
done
median=$(printf '%s\n' "${ratios[@]}" | sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }')
echo "ratio (netecho bench req/cpu_s ÷ C loadgen req/cpu_s) per run: ${ratios[*]}"
echo "median ratio: ${median}x (target >= 1.0x)"
