#!/usr/bin/env bash
# Builds the fully static x86-64 Linux binary and checks that it is static:
#
#   packaging/build-static.sh
#   -> target/x86_64-unknown-linux-gnu/release/clusterdns   (glibc static-pie)
#
# Why glibc static-pie and not musl: musl's memcpy made the DNS hot path about 2x
# slower in the micro-benchmarks, and the static build has to stay within 10% of the
# dynamic one in server CPU per query (packaging/bench-static.sh measures it). The
# glibc build is linked with +crt-static, so it needs no libc on the target host and
# keeps ASLR (static-pie).
#
# The one limit of a static glibc binary: it cannot use NSS modules, so host-name
# lookups are unreliable on a host whose glibc differs from the build machine's.
# clusterdns looks up nothing by name except the host in a kubernetes `endpoint`
# URL: write that as an IP address (http://127.0.0.1:8001, not http://localhost:8001).
#
# The explicit --target keeps RUSTFLAGS away from build scripts and proc macros (they
# run on the build host and stay dynamic), and keeps this build out of target/release.
# Extra cargo arguments are passed through (e.g. --features ...).
set -euo pipefail
cd "$(dirname "$0")/.."
export RUSTFLAGS="${RUSTFLAGS:+$RUSTFLAGS }-C target-feature=+crt-static"
cargo build --locked --release --target x86_64-unknown-linux-gnu "$@"
packaging/check-static.sh target/x86_64-unknown-linux-gnu/release/clusterdns
