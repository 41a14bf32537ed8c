#!/bin/sh
# Installs mdbook, pinned, from crates.io into target/tools (a project-local
# root, so nothing outside the repository changes); does nothing when that
# version is there already. Prints the path of the binary last.
# `mdbook build docs` then builds the book into target/book.
# Usage: scripts/install-mdbook.sh
set -eu
cd "$(dirname "$0")/.."

MDBOOK_VERSION=0.5.4
root=target/tools
bin=$root/bin/mdbook

if [ -x "$bin" ] && "$bin" --version 2>/dev/null | grep -q "v$MDBOOK_VERSION\$"; then
    echo "$bin"
    exit 0
fi
echo "install-mdbook.sh: installing mdbook $MDBOOK_VERSION into $root" >&2
# Only the HTML book with search: the `serve` and `watch` features pull in
# a web server and a file watcher the build does not use.
cargo install mdbook --locked --version "$MDBOOK_VERSION" \
    --no-default-features --features search --root "$root" >&2
echo "$bin"
