#!/usr/bin/env bash
# Runs each cargo-fuzz target for a bounded time (default 60 s each), from
# the committed seed corpus in fuzz/corpus/TARGET (new inputs found go to
# fuzz/target/corpus/TARGET; crashes to fuzz/artifacts/TARGET: add a
# reproducer to fuzz/corpus/TARGET with its fix, and cargo test replays it).
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
#
# Needs a nightly toolchain; installs cargo-fuzz from crates.io if missing.
# Exits 2 (and says SKIPPED) without nightly or cargo-fuzz, 1 if a target
# crashed or failed to build.
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_EACH=${1:-60}
shift || true
TARGETS=("$@")
if [ ${#TARGETS[@]} -eq 0 ]; then
    TARGETS=(packet udp_policy conn_events pcap_round_trip tls_records saved_syn)
fi

if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "fuzz: SKIPPED (no nightly toolchain: rustup toolchain install nightly)"
    exit 2
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz"
    if ! cargo +nightly install cargo-fuzz --locked; then
        echo "fuzz: SKIPPED (cargo-fuzz could not be installed)"
        exit 2
    fi
fi

failed=()
for t in "${TARGETS[@]}"; do
    echo "fuzz: $t for ${SECONDS_EACH}s"
    # New inputs go to a scratch corpus under fuzz/target (ignored by git);
    # the committed seeds are read only. -max_total_time bounds the run; a
    # crash stops it early with exit 1.
    mkdir -p "fuzz/target/corpus/$t"
    if ! cargo +nightly fuzz run "$t" "fuzz/target/corpus/$t" "fuzz/corpus/$t" -- \
        -max_total_time="$SECONDS_EACH" -print_final_stats=1 2>&1 | tail -n 25; then
        failed+=("$t")
    fi
done
if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz: FAILED: ${failed[*]} (reproducers in fuzz/artifacts/)"
    exit 1
fi
echo "fuzz: ${#TARGETS[@]} targets ran ${SECONDS_EACH}s each without a crash"
