#!/usr/bin/env bash
# What a server does per request, counted instead of timed: on a shared
# 2-core machine wall-clock figures (even server CPU per request) move by
# tens of percent between sittings, while these counts move by a few.
#
#   user instr/req   user-space instructions of the server per request
#                    (valgrind --tool=callgrind: counters zeroed after a
#                    warm-up with callgrind_control -z, dumped after the
#                    measured requests with -d); exact, needs no hardware
#                    counters; the server runs ~50x slower under it, so its
#                    batching differs a little from a native run
#   sys/req          system calls the server's threads enter per request
#                    (tracepoint raw_syscalls:sys_enter under perf record),
#                    with the most frequent ones by name
#   sqe/req cqe/req  io_uring submissions and completions per request
#                    (tracepoints io_uring:io_uring_submit_req and
#                    io_uring:io_uring_complete), with the submissions by
#                    opcode: SEND and RECV copy, SPLICE does not
#   cs/req           context switches of the server per request (each sleep
#                    and wake-up is one): timing decides how many, so they
#                    move between runs more than the counts above
#   cpu_us           the server's CPU per request (task-clock) of the same run:
#                    a timed figure, shown for direction only
#
# Each server runs `serve --model M --workers 1` pinned to CPU 0; the load is
# one `netecho bench --threads 1` on CPU 1 (the LOAD binary, the same for
# every build so that only the server differs) with a fixed request count
# (-n) and no warm-up inside the window; the window starts after a warm-up
# run on fresh connections and counts the connections' setup too
# (amortized over the requests). sys/req and sqe/req are medians of REPEAT
# runs; user instr/req is one run per cell. A "request" on the connect
# workload is one connection (connect, 64 B, close).
#
# usage: scripts/count-per-request.sh [LABEL=]BINARY...
#   scripts/count-per-request.sh base=/tmp/old/netecho main=target/release/netecho
# env:   MODELS (default "epoll auto"), WORKLOADS (default
#        "small large many connect"; also "bulk", 1 MiB x 8), REPEAT (default 3), LOAD (the load
#        generator's netecho, default the last BINARY), SCALE (multiplies
#        every request count, default 1), VALGRIND=0 to skip the instruction
#        counts, KEEP=DIR to keep each callgrind profile as
#        DIR/LABEL-MODEL-WORKLOAD.callgrind (for callgrind_annotate).
#        Needs perf with tracepoints (root), valgrind, taskset.
# Takes about a minute per build, model and workload at REPEAT=3.
set -euo pipefail
cd "$(dirname "$0")/.."

[[ $# -ge 1 ]] || { sed -n '/^# usage:/,/^# Takes/p' "$0" >&2; exit 2; }
models=${MODELS:-epoll auto}
workloads=${WORKLOADS:-small large many connect}
repeat=${REPEAT:-3}
scale=${SCALE:-1}
valgrind=${VALGRIND:-1}
last=${!#}
load=${LOAD:-${last#*=}}
for tool in perf taskset; do
	command -v "$tool" >/dev/null || { echo "count-per-request: $tool is not installed" >&2; exit 2; }
done
if [[ $valgrind == 1 ]] && ! command -v callgrind_control >/dev/null; then
	echo "count-per-request: valgrind is not installed (VALGRIND=0 skips the instruction counts)" >&2
	exit 2
fi
unistd=/usr/include/x86_64-linux-gnu/asm/unistd_64.h
[[ -r $unistd ]] || unistd=/usr/include/asm/unistd_64.h

tmp=$(mktemp -d)
server_pid=
server_sig=TERM
stop_server() {
	if [[ -n $server_pid ]]; then
		kill "-$server_sig" "$server_pid" 2>/dev/null || true
		wait "$server_pid" 2>/dev/null || true
	fi
	server_pid=
}
trap 'stop_server; rm -rf "$tmp"' EXIT

# load ARGS of a workload: connections, size, requests native, requests under valgrind
load_args() {
	case $1 in
	small) echo "-c 50 -s 64" 30000 4000 ;;
	large) echo "-c 8 -s 64KiB" 6000 800 ;;
	many) echo "-c 300 -s 64" 30000 6000 ;;
	connect) echo "-c 4 -s 64 --new-conn" 4000 600 ;;
	bulk) echo "-c 8 -s 1MiB" 800 40 ;;
	*) echo "count-per-request: unknown workload $1 (small, large, many, connect, bulk)" >&2; exit 2 ;;
	esac
}

# start_server WRAPPER... -- BINARY MODEL: sets server_pid and port.
# Under valgrind 3.19 a thread blocked in io_uring_enter keeps valgrind's
# one lock (the call is not marked as one that may block), so a uring
# worker that waits before the main thread has printed its listening line
# stalls the start: it is killed and started again, up to 5 times. For the
# same reason a server under valgrind is stopped with SIGKILL.
start_server() {
	local wrap=()
	while [[ $1 != -- ]]; do wrap+=("$1"); shift; done
	shift
	server_sig=TERM
	[[ ${#wrap[@]} -gt 0 ]] && server_sig=KILL
	for _ in 1 2 3 4 5; do
		: >"$tmp/serve.out"
		taskset -c 0 "${wrap[@]}" "$1" serve --listen 127.0.0.1:0 --model "$2" --workers 1 \
			>"$tmp/serve.out" 2>/dev/null &
		server_pid=$!
		for _ in $(seq 300); do
			grep -q '^listening tcp' "$tmp/serve.out" && break
			sleep 0.05
		done
		port=$(sed -n 's/^listening tcp 127\.0\.0\.1:\([0-9]*\)$/\1/p' "$tmp/serve.out")
		[[ -n $port ]] && return
		stop_server
	done
	echo "count-per-request: $1 --model $2 did not start" >&2
	exit 1
}

# bench ARGS N: the load on CPU 1; prints the requests it measured
bench() {
	# shellcheck disable=SC2086 # ARGS is a list of flags
	taskset -c 1 "$load" bench "127.0.0.1:$port" --threads 1 $1 -n "$2" --warmup 0 --json \
		>"$tmp/bench.json"
	local got
	got=$(sed -n 's/.*"requests":\([0-9]*\).*/\1/p' "$tmp/bench.json")
	grep -q '"errors":0,"mismatches":0,"lost":0' "$tmp/bench.json" ||
		{ echo "count-per-request: the load failed: $(cat "$tmp/bench.json")" >&2; exit 1; }
	echo "$got"
}

# counts BINARY MODEL ARGS N: one perf-recorded run; prints
# "sys/req sqe/req cqe/req task-ms/req top-syscalls ops"
counts() {
	start_server -- "$1" "$2"
	bench "$3" "$(($4 / 10 + 1))" >/dev/null
	# totals from perf stat (exact); the breakdown by name from perf record
	# (which may drop events when its buffer fills: only its shares count)
	perf stat -x, -e raw_syscalls:sys_enter,io_uring:io_uring_submit_req \
		-e io_uring:io_uring_complete,task-clock,context-switches -p "$server_pid" -o "$tmp/stat" &
	local stat=$!
	perf record -q -m 8M -e raw_syscalls:sys_enter -e io_uring:io_uring_submit_req \
		-p "$server_pid" -o "$tmp/perf.data" 2>/dev/null &
	local rec=$!
	sleep 0.5
	local n
	n=$(bench "$3" "$4")
	sleep 0.2
	kill -INT "$rec" "$stat"
	wait "$rec" "$stat" || true
	stop_server
	{
		awk -F, '$3 ~ /:|task-clock|context-switches/ { print "STAT", $3, $1 }' "$tmp/stat"
		perf script -i "$tmp/perf.data" -F event,trace 2>/dev/null
	} | awk -v n="$n" -v unistd="$unistd" '
		BEGIN {
			while ((getline line < unistd) > 0)
				if (split(line, f, " ") == 3 && f[1] == "#define" && f[2] ~ /^__NR_/)
					name[f[3]] = substr(f[2], 6)
		}
		$1 == "STAT" { total[$2] = $3; next }
		/raw_syscalls:sys_enter/ {
			sys++
			match($0, /NR [0-9]+/)
			nr = substr($0, RSTART + 3, RLENGTH - 3)
			by[(nr in name) ? name[nr] : nr]++
		}
		/io_uring:io_uring_submit_req/ {
			sqe++
			match($0, /opcode [A-Z_0-9]+/)
			op[substr($0, RSTART + 7, RLENGTH - 7)]++
		}
		# the shares seen by perf record, scaled to the exact total
		function top(arr, seen, all,   k, s, best, bk, i, out) {
			out = ""
			for (i = 0; i < 5; i++) {
				best = 0
				for (k in arr) if (arr[k] > best) { best = arr[k]; bk = k }
				if (best == 0 || best / seen * all / n < 0.01) break
				out = out (out == "" ? "" : ",") bk "=" sprintf("%.2f", best / seen * all / n)
				delete arr[bk]
			}
			return out == "" ? "-" : out
		}
		END {
			all_sys = total["raw_syscalls:sys_enter"]
			all_sqe = total["io_uring:io_uring_submit_req"]
			printf "%.3f %.3f %.3f %.3f %.2f %s %s\n", all_sys / n, all_sqe / n,
				total["io_uring:io_uring_complete"] / n, total["context-switches"] / n,
				total["task-clock"] * 1000 / n, top(by, sys, all_sys), top(op, sqe, all_sqe)
		}'
}

# instructions BINARY MODEL ARGS N NAME: user-space instructions per request
instructions() {
	start_server valgrind --tool=callgrind "--callgrind-out-file=$tmp/cg.%p" -- "$1" "$2"
	bench "$3" "$(($4 / 10 + 1))" >/dev/null
	rm -f "$tmp"/cg.*.[0-9]*
	callgrind_control -z "$server_pid" >/dev/null 2>&1
	local n
	n=$(bench "$3" "$4")
	callgrind_control -d "$server_pid" >/dev/null 2>&1
	local ir
	ir=$(awk '/^summary:/ { print $2 }' "$tmp"/cg.*.[0-9]*)
	[[ -n ${KEEP:-} ]] && mkdir -p "$KEEP" && cp "$tmp"/cg.*.[0-9]* "$KEEP/$5.callgrind"
	stop_server
	rm -f "$tmp"/cg.*
	awk -v ir="$ir" -v n="$n" 'BEGIN { printf "%.0f\n", ir / n }'
}

median() { sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }

echo "load: $load bench --threads 1 on CPU 1; servers --workers 1 on CPU 0; REPEAT=$repeat; $(uptime | sed 's/.*load/load/')"
printf '%-8s %-6s %-8s %10s %8s %8s %8s %8s %8s  %-44s %s\n' build model workload "instr/req" "sys/req" "sqe/req" "cqe/req" "cs/req" "cpu_us" "syscalls per request (top)" "io_uring ops per request"
for w in $workloads; do
	read -r -a la < <(load_args "$w")
	args="${la[*]:0:${#la[@]}-2}"
	n=$((la[${#la[@]} - 2] * scale))
	nv=$((la[${#la[@]} - 1] * scale))
	for m in $models; do
		for b in "$@"; do
			label=${b%%=*}
			bin=${b#*=}
			[[ $label == "$b" ]] && label=$(basename "$(dirname "$(dirname "$bin")")")
			: >"$tmp/rows"
			for _ in $(seq "$repeat"); do counts "$bin" "$m" "$args" "$n" >>"$tmp/rows"; done
			# the run whose sys/req is the median gives the breakdown
			mid=$(sort -g "$tmp/rows" | sed -n "$(((repeat + 1) / 2))p")
			sqe=$(awk '{ print $2 }' "$tmp/rows" | median)
			cqe=$(awk '{ print $3 }' "$tmp/rows" | median)
			cs=$(awk '{ print $4 }' "$tmp/rows" | median)
			cpu=$(awk '{ print $5 }' "$tmp/rows" | median)
			ir=-
			[[ $valgrind == 1 ]] && ir=$(instructions "$bin" "$m" "$args" "$nv" "$label-$m-$w")
			read -r sys _ _ _ _ top ops <<<"$mid"
			printf '%-8s %-6s %-8s %10s %8s %8s %8s %8s %8s  %-44s %s\n' "$label" "$m" "$w" "$ir" "$sys" "$sqe" "$cqe" "$cs" "$cpu" "$top" "$ops"
		done
	done
done
