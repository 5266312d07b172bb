#!/usr/bin/env bash
# Builds the Debian package from the static binary:
#
#   packaging/build-deb.sh [cargo-deb options]
#   -> target/debian/clusterdns_VERSION_amd64.deb   (its path is the last line printed)
#
# Needs cargo-deb 3.x (`cargo install cargo-deb --locked`, about a minute). What goes
# in is [package.metadata.deb] in Cargo.toml: the binary, the conffiles
# /etc/clusterdns/Corefile and /etc/default/clusterdns, the two units of
# packaging/systemd/ (clusterdns.service enabled and started, clusterdns-apiproxy
# disabled), the man page, copyright and changelog. cargo-deb strips the binary and
# writes the debhelper-style maintainer scripts (deb-systemd-helper, deb-systemd-invoke).
#
# Options go to cargo-deb, e.g. `--deb-version 0.1.0-2` or `--output DIR`.
# LINTIAN=1 runs lintian on the result (apt-get install lintian).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo-deb >/dev/null || { echo "cargo-deb missing: cargo install cargo-deb --locked" >&2; exit 1; }
packaging/build-static.sh >&2
deb=$(cargo deb --no-build --strip --target x86_64-unknown-linux-gnu "$@" | tail -1)
[ -f "$deb" ] || { echo "cargo deb wrote no package" >&2; exit 1; }
if [ "${LINTIAN:-0}" = 1 ]; then
    # Errors fail the build; warnings are shown.
    lintian --fail-on error --info "$deb" >&2
fi
echo "$deb"
