#!/bin/sh
# Lays out the container image's whole file system in DIR: the static
# netecho binary BIN as /netecho, and /etc/passwd and /etc/group naming the
# unprivileged user the image runs as (uid and gid 65532, as distroless's
# "nonroot"). Used by the Dockerfile's build stage and by check-image.sh, so
# both build the same image.
# Usage: scripts/image-root.sh DIR BIN
set -eu
if [ $# -ne 2 ]; then
    echo "usage: image-root.sh DIR BIN" >&2
    exit 2
fi
dir=$1 bin=$2
# ldd says "statically linked" (static-pie, exit 0) or "not a dynamic
# executable" (exit 1); anything else lists the libraries it needs.
if ! ldd "$bin" 2>&1 | grep -Eq 'statically linked|not a dynamic executable'; then
    echo "image-root.sh: $bin is dynamically linked; the image has no libc" >&2
    exit 1
fi
rm -rf "$dir"
mkdir -p "$dir/etc"
cp "$bin" "$dir/netecho"
echo 'netecho:x:65532:65532:netecho:/:/netecho' >"$dir/etc/passwd"
echo 'netecho:x:65532:' >"$dir/etc/group"
