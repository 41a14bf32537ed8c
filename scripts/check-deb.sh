#!/usr/bin/env bash
# Builds the Debian package (scripts/build-deb.sh) and checks it: the exact
# list of files it installs (`dpkg-deb -c`), their modes, and that what it
# ships works: the binary runs and is this version, the man page is gzipped
# roff for netecho and each subcommand, the completions are valid shell naming the subcommands,
# the units start /usr/bin/netecho. Run by .ci/run; about 3 minutes on 2
# cores, most of it the release build.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v dpkg-deb >/dev/null 2>&1; then
    echo "SKIPPED check-deb.sh: no dpkg-deb here (not a Debian system)"
    exit 0
fi

deb=$(scripts/build-deb.sh)
echo "check-deb.sh: checking $deb"
fail() { echo "check-deb.sh: FAILED: $*" >&2; exit 1; }

# Regular files only (dpkg-deb -c lists directories too), as absolute paths.
got=$(dpkg-deb -c "$deb" | awk '$1 ~ /^-/ {print $1, $6}' | sed 's| \./| /|' | sort)
# cargo-deb puts units in /usr/lib/systemd/system (merged /usr) and writes
# the copyright file from Cargo.toml's licence fields.
want=$(sort <<'LIST'
-rwxr-xr-x /usr/bin/netecho
-rw-r--r-- /usr/lib/systemd/system/netecho.service
-rw-r--r-- /usr/lib/systemd/system/netecho.socket
-rw-r--r-- /usr/share/bash-completion/completions/netecho
-rw-r--r-- /usr/share/doc/netecho/README.md
-rw-r--r-- /usr/share/doc/netecho/copyright
-rw-r--r-- /usr/share/fish/vendor_completions.d/netecho.fish
-rw-r--r-- /usr/share/man/man1/netecho.1.gz
-rw-r--r-- /usr/share/man/man1/netecho-bench.1.gz
-rw-r--r-- /usr/share/man/man1/netecho-bench-merge.1.gz
-rw-r--r-- /usr/share/man/man1/netecho-client.1.gz
-rw-r--r-- /usr/share/man/man1/netecho-completions.1.gz
-rw-r--r-- /usr/share/man/man1/netecho-lab.1.gz
-rw-r--r-- /usr/share/man/man1/netecho-man.1.gz
-rw-r--r-- /usr/share/man/man1/netecho-ping.1.gz
-rw-r--r-- /usr/share/man/man1/netecho-serve.1.gz
-rw-r--r-- /usr/share/man/man1/netecho-trace.1.gz
-rw-r--r-- /usr/share/man/man1/netecho-watch.1.gz
-rw-r--r-- /usr/share/zsh/vendor-completions/_netecho
LIST
)
if [ "$got" != "$want" ]; then
    diff <(echo "$want") <(echo "$got") >&2 || true
    fail "the package's files differ from the list above (< wanted, > got)"
fi
dpkg-deb -c "$deb" | awk '$2 != "root/root" && $2 != "0/0" {bad=1; print} END {exit bad}' >&2 \
    || fail "files not owned by root"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
dpkg-deb -x "$deb" "$tmp/root"
dpkg-deb -e "$deb" "$tmp/control"
r=$tmp/root

if command -v file >/dev/null 2>&1; then
    file "$r/usr/bin/netecho" | grep -q ', stripped' || fail "the packaged binary is not stripped"
fi
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
[ "$("$r/usr/bin/netecho" --version)" = "netecho $version" ] \
    || fail "the packaged binary does not say netecho $version"
grep -q "^Version: $version-1$" "$tmp/control/control" || fail "control: no Version $version-1"
grep -q '^Depends:.*libc6' "$tmp/control/control" || fail "control: no libc6 dependency"
# Opt-in: no maintainer script enables or starts the echo service.
! grep -qs 'deb-systemd-invoke start\|systemctl.*start\|enable' "$tmp/control/postinst" \
    || fail "postinst starts or enables the service"
synopsis=$(sed -n 's/^Description: //p' "$tmp/control/control")
[ "${#synopsis}" -le 80 ] || fail "synopsis longer than 80 characters: $synopsis"

gzip -t "$r/usr/share/man/man1/netecho.1.gz" || fail "man page is not gzip"
zcat "$r/usr/share/man/man1/netecho.1.gz" | grep -q '^\.TH netecho 1' \
    || fail "man page is not a section-1 page for netecho"
# One page per subcommand, each with the sections clap does not write.
for page in "$r"/usr/share/man/man1/netecho-*.1.gz; do
    name=$(basename "$page" .1.gz)
    gzip -t "$page" || fail "$name: not gzip"
    zcat "$page" | grep -q "^\.TH $name 1" || fail "$name: not a section-1 page for $name"
    for section in EXAMPLES 'EXIT STATUS' ENVIRONMENT; do
        zcat "$page" | grep -q "^\.SH \"\?$section" || fail "$name: no $section section"
    done
done

bash -n "$r/usr/share/bash-completion/completions/netecho" || fail "bash completion: syntax"
bash -c 'source "$1" && complete -p netecho' _ "$r/usr/share/bash-completion/completions/netecho" \
    >/dev/null || fail "bash completion does not register for netecho"
for f in usr/share/bash-completion/completions/netecho usr/share/zsh/vendor-completions/_netecho \
         usr/share/fish/vendor_completions.d/netecho.fish; do
    for sub in serve client bench ping watch trace lab; do
        grep -qw "$sub" "$r/$f" || fail "$f does not complete '$sub'"
    done
done
head -n 1 "$r/usr/share/zsh/vendor-completions/_netecho" | grep -q '^#compdef netecho' \
    || fail "zsh completion lacks #compdef"
grep -q '^complete -c netecho' "$r/usr/share/fish/vendor_completions.d/netecho.fish" \
    || fail "fish completion has no complete -c netecho"
if command -v zsh >/dev/null 2>&1; then
    zsh -n "$r/usr/share/zsh/vendor-completions/_netecho" || fail "zsh completion: syntax"
else
    echo "check-deb.sh: SKIPPED zsh -n (no zsh)"
fi
if command -v fish >/dev/null 2>&1; then
    fish -n "$r/usr/share/fish/vendor_completions.d/netecho.fish" || fail "fish completion: syntax"
else
    echo "check-deb.sh: SKIPPED fish -n (no fish)"
fi

grep -qx 'ExecStart=/usr/bin/netecho serve --model auto' "$r/usr/lib/systemd/system/netecho.service" \
    || fail "netecho.service does not start /usr/bin/netecho"
grep -q '/usr/local' "$r/usr/lib/systemd/system/"netecho.* && fail "a unit still names /usr/local"

# Install it for real and remove it again: dependencies, the man-db
# trigger, `man -w`. Only as root, and never over an installed netecho.
if [ "$(id -u)" = 0 ] && ! dpkg-query -W netecho >/dev/null 2>&1; then
    trap 'dpkg -r netecho >/dev/null 2>&1 || true; rm -rf "$tmp"' EXIT
    dpkg -i "$deb" >/dev/null || fail "dpkg -i"
    [ "$(/usr/bin/netecho --version)" = "netecho $version" ] || fail "installed /usr/bin/netecho"
    if command -v man >/dev/null 2>&1; then
        [ "$(man -w netecho)" = /usr/share/man/man1/netecho.1.gz ] || fail "man -w netecho"
    fi
    dpkg -r netecho >/dev/null || fail "dpkg -r"
    [ ! -e /usr/bin/netecho ] || fail "dpkg -r left /usr/bin/netecho"
    echo "check-deb.sh: installed with dpkg -i and removed with dpkg -r"
else
    echo "check-deb.sh: SKIPPED dpkg -i (not root, or netecho already installed)"
fi

echo "check-deb.sh: ok: $(echo "$want" | wc -l) files, $(du -k "$deb" | cut -f1) KiB"
