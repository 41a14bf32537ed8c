#!/usr/bin/env bash
# Builds the container image from the Dockerfile with buildah and checks it;
# runs it with podman and echoes through it where podman can run here.
#
# No base image can be pulled on the project's machines, so the Dockerfile's
# first stage (a Rust image) is stood in for: the same static build runs on
# the host, scripts/image-root.sh lays out its /out, and buildah's
# --build-context gives that directory the stage's name. The final stage,
# FROM scratch, is built from the Dockerfile as it is.
#
# Installs buildah and podman (and runc) with apt-get when missing (as
# root); prints SKIPPED and exits 0 where it cannot.
set -euo pipefail
cd "$(dirname "$0")/.."

have() { command -v "$1" >/dev/null 2>&1; }
if ! have buildah || ! have podman; then
    if [ "$(id -u)" = 0 ] && have apt-get; then
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
            apt-get install -y -qq --no-install-recommends buildah podman runc; } >/dev/null 2>&1 || true
    fi
fi
if ! have buildah; then
    echo "SKIPPED check-image.sh: no buildah (and apt-get could not install it)"
    exit 0
fi
fail() { echo "check-image.sh: FAILED: $*" >&2; exit 1; }

host=$(rustc -vV | sed -n 's/^host: //p')
RUSTFLAGS='-C target-feature=+crt-static' CARGO_PROFILE_RELEASE_STRIP=symbols \
    cargo build --release --locked --target "$host" >&2
ctx=target/image-build
scripts/image-root.sh "$ctx/out" "target/$host/release/netecho"

tag=localhost/netecho:check
buildah build --quiet --build-context build="$ctx" --target runtime -t "$tag" . >/dev/null

buildah inspect --type image "$tag" >"$ctx/inspect.json"
python3 - "$ctx/inspect.json" <<'PY' || fail "image config"
import json, sys
c = json.load(open(sys.argv[1]))["OCIv1"]["config"]
print("check-image.sh: config", json.dumps(c))
assert c["User"] == "65532:65532", c["User"]
assert set(c["ExposedPorts"]) == {"6666/tcp", "6666/udp", "6667/tcp", "9100/tcp"}, c["ExposedPorts"]
assert c["Entrypoint"] == ["/netecho", "serve"], c["Entrypoint"]
PY
# The whole image: three files.
ctr=$(buildah from "$tag")
mnt=$(buildah mount "$ctr")
files=$(cd "$mnt" && find . -type f | sort | tr '\n' ' ')
buildah umount "$ctr" >/dev/null
buildah rm "$ctr" >/dev/null
[ "$files" = "./etc/group ./etc/passwd ./netecho " ] || fail "image files: $files"
echo "check-image.sh: built $tag: $files($(du -sk "$ctx/out" | cut -f1) KiB)"

if ! have podman; then
    echo "check-image.sh: SKIPPED running the image: no podman"
    exit 0
fi
# Podman's default limits (nofile 1048576) need CAP_SYS_RESOURCE, which a
# CI container may lack; the check needs few descriptors. crun refuses
# hybrid cgroup v1/v2 hosts; runc with cgroupfs runs there.
limits=(--ulimit nofile=4096:4096 --ulimit nproc=1024:1024)
podman=(podman)
if ! "${podman[@]}" run --rm "${limits[@]}" --network host "$tag" --version >/dev/null 2>"$ctx/podman.err"; then
    podman=(podman --runtime runc --cgroup-manager cgroupfs)
    if ! have runc || ! "${podman[@]}" run --rm "${limits[@]}" --network host "$tag" --version \
            >/dev/null 2>"$ctx/podman.err"; then
        echo "check-image.sh: SKIPPED running the image: podman cannot run containers here: $(head -n 3 "$ctx/podman.err" | tr '\n' ' ')"
        exit 0
    fi
fi
echo "check-image.sh: running it with: ${podman[*]}"
# Host network: the container's server listens on this machine's loopback.
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
name=netecho-check-$$
"${podman[@]}" run -d --rm "${limits[@]}" --name "$name" --network host "$tag" \
    --listen "127.0.0.1:$port" --udp >/dev/null
trap '"${podman[@]}" rm -f "$name" >/dev/null 2>&1 || true' EXIT
bin=target/$host/release/netecho
for _ in $(seq 50); do
    "${podman[@]}" logs "$name" 2>/dev/null | grep -q "listening tcp 127.0.0.1:$port" && break
    sleep 0.1
done
"${podman[@]}" logs "$name" 2>&1 | grep -q "listening udp 127.0.0.1:$port" || fail "the container did not start: $("${podman[@]}" logs "$name" 2>&1)"
[ "$(printf 'through the container\n' | "$bin" client "127.0.0.1:$port")" = "through the container" ] \
    || fail "no echo through the container"
"$bin" ping --udp --count 3 "127.0.0.1:$port" >/dev/null || fail "no UDP echo through the container"
uid=$("${podman[@]}" top "$name" huser 2>/dev/null | tail -n 1 | tr -d ' ')
[ "$uid" = 65532 ] || fail "the server runs as uid '$uid', not 65532"
# A name, not an address: the static glibc resolves from /etc/hosts alone.
"${podman[@]}" run --rm "${limits[@]}" --network host --entrypoint /netecho "$tag" \
    ping --count 1 "localhost:$port" >/dev/null || fail "the image cannot resolve localhost"
"${podman[@]}" stop -t 10 "$name" >/dev/null
echo "check-image.sh: ok: ran $tag, TCP and UDP echo through it as uid $uid, resolved localhost in it"
