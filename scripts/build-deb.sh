#!/usr/bin/env bash
# Builds the Debian package: target/debian/netecho_<version>-1_<arch>.deb.
#
# The man pages, the shell completions and the packaged systemd units are
# generated here, into target/assets/, from the release binary itself (its
# `man` and `completions` subcommands render the clap definitions), so they
# always match the binary they ship with. Then `cargo deb --no-build` packs
# them as [package.metadata.deb] in Cargo.toml lists.
#
# Installs cargo-deb (pinned, from crates.io) when it is missing.
# Usage: scripts/build-deb.sh        prints the path of the .deb last
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_DEB_VERSION=3.8.0

if ! cargo deb --version >/dev/null 2>&1; then
    echo "build-deb.sh: installing cargo-deb $CARGO_DEB_VERSION" >&2
    cargo install cargo-deb --locked --version "$CARGO_DEB_VERSION" >&2
fi

cargo build --release --locked >&2
bin=target/release/netecho

assets=target/assets
rm -rf "$assets"
mkdir -p "$assets/completions" "$assets/systemd" "$assets/man"
# netecho.1 and one page per subcommand (netecho-serve.1, ...).
"$bin" man --dir "$assets/man"
# -n: no name or timestamp in the gzip header, so the package is reproducible.
gzip -9n "$assets"/man/*.1
"$bin" completions bash >"$assets/completions/netecho.bash"
"$bin" completions zsh >"$assets/completions/_netecho"
"$bin" completions fish >"$assets/completions/netecho.fish"
# contrib/ names the binary where a hand install puts it; the package puts it
# in /usr/bin.
for unit in netecho.service netecho.socket; do
    sed 's|/usr/local/bin/netecho|/usr/bin/netecho|g' "contrib/$unit" >"$assets/systemd/$unit"
done

# --strip: the release profile keeps line tables (debug = 1) for profiling;
# the package ships without them.
cargo deb --no-build --locked --strip --output target/debian/ >&2
ls -t target/debian/netecho_*.deb | head -n 1
