#!/usr/bin/env bash
# C1M on one machine: a million idle TCP connections to one netecho server,
# per server model, and what they cost.
#
# For each model (auto, epoll, uring, tokio by default) it starts
# `netecho serve` in a network namespace of its own making, opens CONNS
# connections with `netecho bench --hold` (each echoes once, then stays
# idle) spread over loopback source addresses with --source-addrs, holds
# them HOLD seconds, probes a sample with a second, open-loop bench while
# all are held, and reports:
#   open/s     connections opened per second (bench's sequential connects)
#   pss B/conn server user-space memory per connection: the growth of the
#              server's PSS (/proc/PID/smaps_rollup) over its idle baseline
#   slab B/sock kernel memory per socket (each connection is two sockets,
#              both on this machine): growth of Slab in /proc/meminfo
#   tcp pages  TCP buffer memory in pages (/proc/net/sockstat "mem")
#   probe p99  p99 of a probe echo (10 connections, 1,000 req/s, 5 s)
#              while all connections are held
#
# Root only; loopback only. What is per namespace (the ephemeral port range,
# the listen backlog) is set in the namespace and goes with it; what is
# global (fs.nr_open, fs.file-max) is raised and restored on exit, by a trap.
# Every step is bounded in time. If CONNS connections (two sockets each, on
# both ends) would not fit in the memory available, CONNS is scaled down
# and the report says so.
#
# Sharded mode: where the hard descriptor limit cannot be raised (a
# container without CAP_SYS_RESOURCE: 20,000 here), one process cannot hold
# CONNS sockets, so the million is split: SHARDS `netecho serve` processes
# share one port, each on its own SO_REUSEPORT listener (bound by a small
# launcher and passed with LISTEN_FDS, as systemd would; the kernel spreads
# connections over them by hash), each well under the limit, and as many
# `bench --hold` processes open the connections. The figures are then over
# all the servers: PSS summed, descriptors summed, the open rate over the
# whole opening (every bench at once). SHARDS=0 scales down instead.
#
# usage: sudo scripts/c1m.sh [CONNS] [HOLD_SECS]
# env:   MODELS (default "auto epoll uring tokio"), NETECHO (binary, default
#        target/release/netecho, built if missing), SHARDS (sharded mode:
#        servers, default enough for CONNS under the limit; 0 = scale down)
set -euo pipefail
cd "$(dirname "$0")/.."

conns=${1:-1000000}
hold=${2:-20}
models=${MODELS:-auto epoll uring tokio}
netecho=$(realpath -m "${NETECHO:-target/release/netecho}")
ns=netecho-c1m-$$
# Kernel memory a connection costs, both sockets, with margin (measured
# ~7 KiB): used only to decide whether CONNS fits.
per_conn_kib=10
# Connections per source address: well under the 64,512 ports of the range
# below, so connect() finds a free port at once.
per_source=25000

die() { echo "c1m: $*" >&2; exit 1; }
[[ $(id -u) == 0 ]] || die "needs root (namespaces, sysctls, descriptor limits)"
command -v ip >/dev/null || die "needs ip (iproute2)"
[[ -x $netecho ]] || cargo build --release --quiet

avail_kib=$(awk '/^MemAvailable:/ {print $2}' /proc/meminfo)
fit=$(( avail_kib * 6 / 10 / per_conn_kib ))
scaled=""
if (( conns > fit )); then
    scaled="scaled from $conns to $fit: $((avail_kib / 1024)) MiB available"
    conns=$fit
    echo "c1m: $scaled" >&2
fi

nr_open_was=$(cat /proc/sys/fs/nr_open)
file_max_was=$(cat /proc/sys/fs/file-max)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    ip netns del "$ns" 2>/dev/null || true
    echo "$nr_open_was" > /proc/sys/fs/nr_open
    echo "$file_max_was" > /proc/sys/fs/file-max
}
trap cleanup EXIT
trap 'exit 130' INT TERM

limit=$(( conns + 100000 ))
(( limit > nr_open_was )) && echo "$limit" > /proc/sys/fs/nr_open
(( 2 * limit > file_max_was )) && echo $(( 2 * limit )) > /proc/sys/fs/file-max
shards=0
if ! (ulimit -n "$limit") 2>/dev/null; then
    # Raising the hard limit needs CAP_SYS_RESOURCE, which a container may
    # withhold even from root: one server process then holds at most that.
    hard=$(ulimit -Hn)
    limit=$hard
    why="no CAP_SYS_RESOURCE to raise the hard descriptor limit of $hard"
    if [[ ${SHARDS:-} == 0 ]]; then
        conns=$(( hard - 1000 ))
        scaled="${scaled:+$scaled; }scaled to $conns: $why"
        echo "c1m: $why: scaled to $conns connections" >&2
    else
        # Shards at 85 % of the limit on average: the hash that spreads
        # connections over the listeners is even, not exact.
        per_shard=$(( hard * 85 / 100 ))
        shards=${SHARDS:-$(( (conns + per_shard - 1) / per_shard ))}
        (( conns / shards < hard - 500 )) || die "SHARDS=$shards: over $((hard - 500)) connections per server"
        scaled="${scaled:+$scaled; }$shards servers on one port: $why"
        echo "c1m: $why: $shards servers share the port (SO_REUSEPORT)" >&2
        (( 2 * conns + 200000 > file_max_was )) && echo $(( 2 * conns + 200000 )) > /proc/sys/fs/file-max
    fi
fi

ip netns add "$ns"
in_ns() { ip netns exec "$ns" "$@"; }
in_ns ip link set lo up
in_ns sysctl -qw net.ipv4.ip_local_port_range="1024 65535"
in_ns sysctl -qw net.core.somaxconn=65535 net.ipv4.tcp_max_syn_backlog=65535

# At least 4 source addresses, so even a scaled run goes through them.
sources=$(( (conns + per_source - 1) / per_source ))
(( sources >= 4 )) || sources=4
(( sources <= 250 )) || die "CONNS too large for 127.0.0.2-127.0.0.251"
src="127.0.0.2-127.0.0.$((1 + sources))"

kib() { awk -v k="$2" '$1 == k":" {print $2}' "$1"; }
slab_kib() { awk '/^Slab:/ {print $2}' /proc/meminfo; }
tcp_mem() { in_ns awk '/^TCP:/ {for (i = 1; i < NF; i++) if ($i == "mem") print $(i+1)}' /proc/net/sockstat; }
json() { python3 -c 'import json,sys; print(json.loads(sys.stdin.readlines()[-1])[sys.argv[1]])' "$1"; }

echo "# $(date -u '+%F %H:%M UTC'), $(uname -r), $(nproc) cores, $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
echo "# $conns connections over $src, held $hold s${scaled:+ ($scaled)}"
printf '%-6s %9s %9s %9s %11s %11s %12s %10s %11s\n' \
    model conns open_s open/s "pss B/conn" "pss MiB" "slab B/sock" "tcp pages" "probe p99"
port=7000
work=$(mktemp -d)

# Binds SHARDS SO_REUSEPORT listeners on one port, then starts a server on
# each: the listener as descriptor 3 with LISTEN_PID/LISTEN_FDS (systemd's
# protocol, which `netecho serve` takes), the descriptor limit at its hard
# value. Writes the servers' pids to a file and exits; they run on.
launcher='
import os, resource, socket, sys
port, n, pidfile = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
argv = sys.argv[4:]
placeholder = os.open("/dev/null", os.O_RDONLY)  # holds descriptor 3
socks = []
for _ in range(n):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    s.bind(("127.0.0.1", port))
    s.listen(65535)
    socks.append(s)
hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
pids = []
for s in socks:
    pid = os.fork()
    if pid == 0:
        os.dup2(s.fileno(), 3)  # inheritable, over the placeholder
        for t in socks:
            t.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS="1", LISTEN_FDNAMES="tcp")
        os.execv(argv[0], argv)
    pids.append(pid)
with open(pidfile, "w") as f:
    f.write(" ".join(map(str, pids)) + "\n")
'

# The sharded run of one model (see the top): prints its row.
sharded() {
    local model=$1 port=$2
    local each=$(( (conns + shards - 1) / shards )) benches spids bpids t0 t1
    ip netns exec "$ns" python3 -c "$launcher" "$port" "$shards" "$work/pids" "$netecho" serve -m "$model" \
        --max-conns $(( limit - 200 )) --idle-timeout 0 --stall-timeout 0 \
        > "$work/serve.out" 2> "$work/serve.err" < /dev/null
    read -r -a spids < "$work/pids"
    pids=("${spids[@]}")
    (( ${#spids[@]} == shards )) || die "$model: the launcher started ${#spids[@]} of $shards servers"
    for _ in $(seq 300); do
        (( $(grep -c "listening tcp" "$work/serve.out") >= shards )) && break; sleep 0.1
    done
    (( $(grep -c "listening tcp" "$work/serve.out") >= shards )) || die "$model: servers did not start: $(tail -3 "$work/serve.err")"
    sum_pss() { local t=0 p; for p in "${spids[@]}"; do t=$(( t + $(kib "/proc/$p/smaps_rollup" Pss) )); done; echo $t; }
    sum_fds() { local t=0 p; for p in "${spids[@]}"; do t=$(( t + $(ls "/proc/$p/fd" | wc -l) )); done; echo $t; }
    sleep 0.5
    local fds0 pss0 slab0 pss1 slab1 mem p99 held=0 errors=0 unfinished=0 i
    fds0=$(sum_fds); pss0=$(sum_pss); slab0=$(slab_kib)
    # As many bench processes as servers, each under the limit too; -d is
    # long, the run ends them with SIGTERM once everything is measured. The
    # first echo may wait long for its server to accept while the other
    # benches are still opening theirs (a million connects on the same
    # cores): late is not lost here, so --timeout is as long as -d.
    benches=$(( (conns + each - 1) / each ))
    # In two halves: the servers' PSS between the half and the whole is the
    # marginal memory of a connection, without what each process pays once
    # whatever its load (its share of buffer rings and arenas, which 59
    # servers pay 59 times where one server would pay it once).
    local half=$(( benches / 2 )) from to tsum=0 ta pss_h=0 fds_h=0 t_last
    bpids=()
    for phase in 1 2; do
        if (( phase == 1 )); then from=1; to=$half; else from=$(( half + 1 )); to=$benches; fi
        (( from <= to )) || continue
        ta=$(date +%s.%N)
        for i in $(seq "$from" "$to"); do
            ip netns exec "$ns" bash -c "exec timeout $((hold + 900)) $netecho bench 127.0.0.1:$port \
                --hold -c $each -d $((hold + 600)) --source-addrs $src --connect-timeout 10 \
                --timeout $((hold + 600)) --json" \
                > "$work/hold.$i.out" 2> "$work/hold.$i.err" &
            bpids+=($!)
            pids+=($!)
        done
        for _ in $(seq 9000); do
            (( $(cat "$work"/hold.*.err | grep -c "open in") >= to )) && break
            for i in $(seq "$to"); do
                kill -0 "${bpids[$((i - 1))]}" 2>/dev/null || die "$model: bench $i ended: $(tail -2 "$work/hold.$i.err")"
            done
            sleep 0.1
        done
        (( $(cat "$work"/hold.*.err | grep -c "open in") >= to )) || die "$model: connections did not open"
        tsum=$(echo "$tsum + $(date +%s.%N) - $ta" | bc)
        for _ in $(seq 600); do
            (( $(sum_fds) - fds0 >= to * each )) && break; sleep 0.5
        done
        sleep 2
        if (( phase == 1 )); then pss_h=$(sum_pss); fds_h=$(( $(sum_fds) - fds0 )); fi
    done
    t0=0; t1=$tsum; t_last=$(date +%s.%N)
    pss1=$(sum_pss); slab1=$(slab_kib); mem=$(tcp_mem)
    local fds=$(( $(sum_fds) - fds0 ))
    in_ns timeout 60 "$netecho" bench "127.0.0.1:$port" -c 10 --rate 1000 -d 5 --warmup 0.5 --json \
        > "$work/probe.out" 2> "$work/probe.err" || die "$model: probe failed: $(cat "$work/probe.err")"
    p99=$(json p99_us < "$work/probe.out")
    local spread
    spread=$(for p in "${spids[@]}"; do ls "/proc/$p/fd" | wc -l; done | sort -n | sed -n '1p;$p' | paste -sd-)
    # Held HOLD_SECS from when the last one opened, the probe included.
    local left
    left=$(echo "$hold - ($(date +%s.%N) - $t_last)" | bc)
    [[ $left == -* ]] || sleep "$left"
    kill -TERM "${bpids[@]}"
    for i in $(seq "$benches"); do
        # The SIGTERM above is the holders' expected end: bench then exits
        # 1 with "interrupted": true in its summary, which is no failure here.
        local ok=0
        wait "${bpids[$((i - 1))]}" && ok=1
        if (( ! ok )) && [[ -s $work/hold.$i.out ]] && [[ $(json interrupted < "$work/hold.$i.out") == True ]]; then
            ok=1
        fi
        if (( ok )); then
            held=$(( held + $(json requests < "$work/hold.$i.out") ))
            errors=$(( errors + $(json errors < "$work/hold.$i.out") ))
            unfinished=$(( unfinished + $(json unfinished < "$work/hold.$i.out") ))
        else
            echo "c1m: $model: bench $i failed: $(tail -1 "$work/hold.$i.err")" >&2
            errors=$(( errors + 1 ))
        fi
    done
    (( errors == 0 )) || echo "c1m: $model: $errors errors" >&2
    (( unfinished == 0 )) || echo "c1m: $model: $unfinished first echoes not back" >&2
    echo "# $model: $shards servers ($spread descriptors each), $benches benches of $each, $fds server descriptors open at the peak"
    kill "${spids[@]}" 2>/dev/null || true
    pids=()
    if (( fds > fds_h && fds_h > 0 )); then
        echo "# $model: marginal server memory: $(( (pss1 - pss_h) * 1024 / (fds - fds_h) )) B per connection between $fds_h and $fds held (PSS $(( pss_h / 1024 )) -> $(( pss1 / 1024 )) MiB)"
    fi
    awk -v m="$model" -v n="$held" -v t="$(echo "$t1 - $t0" | bc)" -v p0="$pss0" -v p1="$pss1" \
        -v s0="$slab0" -v s1="$slab1" -v mem="$mem" -v p99="$p99" 'BEGIN {
        printf "%-6s %9d %9.3f %9.0f %11.0f %11.1f %12.0f %10s %8s µs\n", m, n, t, n / t,
            (p1 - p0) * 1024 / n, p1 / 1024, (s1 - s0) * 1024 / (2 * n), mem, p99 }'
}

for model in $models; do
    port=$((port + 1))  # a fresh port: no clash with the last run's TIME_WAIT
    if (( shards > 0 )); then
        sharded "$model" "$port"
        for _ in $(seq 300); do
            (( $(in_ns awk '/^TCP:/ {print $3}' /proc/net/sockstat) < 1000 )) && break; sleep 0.2
        done
        continue
    fi
    # Not through in_ns: a function run in the background is a subshell,
    # and $! would be its pid; ip and bash exec, so $! is the server.
    ip netns exec "$ns" bash -c "ulimit -n $limit; exec $netecho serve -m $model -l 127.0.0.1:$port \
        --max-conns $((conns + 1000)) --idle-timeout 0 --stall-timeout 0" \
        > "$work/serve.out" 2> "$work/serve.err" &
    pids=($!)
    for _ in $(seq 100); do grep -q "listening tcp" "$work/serve.out" && break; sleep 0.1; done
    grep -q "listening tcp" "$work/serve.out" || die "$model: serve did not start: $(cat "$work/serve.err")"
    spid=${pids[0]}
    [[ $(readlink "/proc/$spid/exe") == "$netecho" ]] || die "$model: $spid is not the server"
    sleep 0.5
    pss0=$(kib "/proc/$spid/smaps_rollup" Pss)
    slab0=$(slab_kib)

    ip netns exec "$ns" bash -c "ulimit -n $limit; exec timeout $((hold + 900)) $netecho bench 127.0.0.1:$port \
        --hold -c $conns -d $hold --source-addrs $src --connect-timeout 10 --json" \
        > "$work/hold.out" 2> "$work/hold.err" &
    pids+=($!)
    for _ in $(seq 9000); do
        grep -q "open in" "$work/hold.err" && break
        kill -0 "${pids[1]}" 2>/dev/null || break
        sleep 0.1
    done
    grep -q "open in" "$work/hold.err" || die "$model: connections did not open: $(tail -3 "$work/hold.err")"
    open_s=$(sed -n 's/.* open in \([0-9.]*\) s.*/\1/p' "$work/hold.err")
    # Every connection accepted (a descriptor each), then a moment for the
    # first echoes to come back and the server to settle.
    for _ in $(seq 600); do
        (( $(ls "/proc/$spid/fd" | wc -l) >= conns )) && break; sleep 0.5
    done
    sleep 2
    pss1=$(kib "/proc/$spid/smaps_rollup" Pss)
    slab1=$(slab_kib)
    mem=$(tcp_mem)
    in_ns timeout 60 "$netecho" bench "127.0.0.1:$port" -c 10 --rate 1000 -d 5 --warmup 0.5 --json \
        > "$work/probe.out" 2> "$work/probe.err" || die "$model: probe failed: $(cat "$work/probe.err")"
    p99=$(json p99_us < "$work/probe.out")
    if ! wait "${pids[1]}"; then
        # One model failing is a result; the others still run.
        echo "$model: hold run failed: $(tail -1 "$work/hold.err")"
        kill "$spid"; wait "$spid" 2>/dev/null || true
        pids=()
        continue
    fi
    held=$(json requests < "$work/hold.out")
    errors=$(json errors < "$work/hold.out")
    (( errors == 0 )) || echo "c1m: $model: $errors errors: $(grep -m1 connection "$work/hold.err")" >&2
    unfinished=$(json unfinished < "$work/hold.out")
    (( unfinished == 0 )) || echo "c1m: $model: $unfinished first echoes not back by the end" >&2
    [[ $model == auto ]] && echo "# auto: $(grep -m1 -o 'model="[a-z]*"' "$work/serve.err")"
    kill "$spid"; wait "$spid" 2>/dev/null || true
    pids=()
    awk -v m="$model" -v n="$held" -v t="$open_s" -v p0="$pss0" -v p1="$pss1" \
        -v s0="$slab0" -v s1="$slab1" -v mem="$mem" -v p99="$p99" 'BEGIN {
        printf "%-6s %9d %9.3f %9.0f %11.0f %11.1f %12.0f %10s %8s µs\n", m, n, t, n / t,
            (p1 - p0) * 1024 / n, p1 / 1024, (s1 - s0) * 1024 / (2 * n), mem, p99 }'
    # Let the kernel reap the closed sockets before the next model.
    for _ in $(seq 300); do
        (( $(in_ns awk '/^TCP:/ {print $3}' /proc/net/sockstat) < 1000 )) && break; sleep 0.2
    done
done
rm -rf "$work"
