# syntax=docker/dockerfile:1
#
# netecho's container image: a statically linked server, alone in the image.
#
#   docker build -t netecho .          (or: podman build / buildah build)
#   docker run --rm -p 6666:6666 -p 6666:6666/udp -p 9100:9100 netecho
#
# Stage `build` compiles a static binary (glibc with crt-static, so no musl
# toolchain is needed) and lays out the final file system in /out. The final
# stage is FROM scratch: that binary, an /etc/passwd naming the unprivileged
# user, nothing else: no shell, no libc, no package manager.
#
# Built without the first stage (where no base image can be pulled), as
# scripts/check-image.sh does: build the static binary on the host, lay out
# DIR/out with scripts/image-root.sh, and stand DIR in for the stage:
#   buildah build --build-context build=DIR --target runtime .

ARG RUST_IMAGE=docker.io/library/rust:1.88-slim-bookworm

FROM ${RUST_IMAGE} AS build
WORKDIR /src
COPY . .
# --target is what keeps build scripts and proc macros dynamic while the
# binary itself is static; the host triple keeps the file arch-neutral.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    host="$(rustc -vV | sed -n 's/^host: //p')" \
 && RUSTFLAGS='-C target-feature=+crt-static' CARGO_PROFILE_RELEASE_STRIP=symbols \
    cargo build --release --locked --target "$host" \
 && scripts/image-root.sh /out "target/$host/release/netecho"

FROM scratch AS runtime
COPY --from=build /out/ /
# A uid with no privilege and no home; ports above 1024 need none.
USER 65532:65532
# TCP and UDP echo; TLS echo on 6667 (a self-signed certificate made at
# start, its fingerprint logged; mount your own and add --tls-cert and
# --tls-key); Prometheus metrics at /metrics.
EXPOSE 6666/tcp 6666/udp 6667/tcp 9100/tcp
STOPSIGNAL SIGTERM
ENTRYPOINT ["/netecho", "serve"]
CMD ["--udp", "--tls-listen", "0.0.0.0:6667", "--metrics", "0.0.0.0:9100"]
