#!/bin/sh
# Installs the peer echo servers that `cargo bench --bench models` compares
# against (BENCHMARKING.md, "Baselines"): socat, ncat and xinetd; and
# liburing-dev, which the C io_uring baseline (benches/c/uring_echo.c, row
# c-uring) is built against.
# Idempotent: packages already installed are skipped, and nothing is fetched
# when all are there. Needs root (apt-get).
set -eu

PKGS="socat ncat xinetd liburing-dev"

if [ "$(id -u)" -ne 0 ]; then
    echo "install-peers.sh: run as root (apt-get install)" >&2
    exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-peers.sh: apt-get not found; install $PKGS by hand" >&2
    exit 1
fi

missing=""
for p in $PKGS; do
    if dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        echo "install-peers.sh: $p already installed"
    else
        missing="$missing $p"
    fi
done

if [ -z "$missing" ]; then
    echo "install-peers.sh: nothing to do"
    exit 0
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update
# shellcheck disable=SC2086 # word splitting of the package list is intended
apt-get install -y --no-install-recommends $missing
echo "install-peers.sh: installed$missing"
