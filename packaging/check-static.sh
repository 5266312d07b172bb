#!/usr/bin/env bash
# Verifies that a binary is fully static: no program interpreter (INTERP) and no
# shared-library dependency (NEEDED), which is what makes it run on any x86-64 Linux.
# `file` and `ldd` are asked too and must agree; their wording differs by build
# ("static-pie linked" for a glibc +crt-static or musl PIE build, "statically linked"
# for a non-PIE one), so the ELF headers are the gate, not the text.
#
#   packaging/check-static.sh [BINARY]     (default: the output of build-static.sh)
set -euo pipefail
bin=${1:-$(dirname "$0")/../target/x86_64-unknown-linux-gnu/release/clusterdns}
fail() { echo "check-static: FAIL: $bin: $*" >&2; exit 1; }
[ -x "$bin" ] || fail "missing or not executable"

f=$(file -b "$bin")
echo "file:    $f"
case $f in
    *ELF\ 64-bit*x86-64*) ;;
    *) fail "not an x86-64 ELF executable" ;;
esac
case $f in
    *"static-pie linked"* | *"statically linked"*) ;;
    *) fail "file(1) does not call it static" ;;
esac

# ldd exits 1 with "not a dynamic executable" (or prints "statically linked") for a
# static binary; a dynamic one lists its libraries.
l=$(ldd "$bin" 2>&1 || true)
echo "ldd:     $(echo "$l" | head -3 | tr '\n' ' ')"
case $l in
    *"statically linked"* | *"not a dynamic executable"*) ;;
    *) fail "ldd lists shared libraries" ;;
esac

if readelf -lW "$bin" | grep -q 'INTERP'; then
    fail "has a program interpreter (PT_INTERP)"
fi
needed=$(readelf -dW "$bin" | grep '(NEEDED)' || true)
[ -z "$needed" ] || fail "has NEEDED entries: $needed"
echo "readelf: no INTERP, no NEEDED"

# It must also run: -version exercises start-up without binding anything.
"$bin" -version >/dev/null || fail "does not run (-version)"
# Test-only plugins are compiled out of release builds: even with the variable that
# enables them in a debug build, a Corefile naming one is refused.
out=$(printf '.:1053 {\n    testpanic\n}\n' | CLUSTERDNS_TEST_PLUGINS=1 "$bin" -conf stdin -check 2>&1 || true)
case $out in
    *"Unknown directive 'testpanic'"*) echo "plugins: no test plugin compiled in" ;;
    *) fail "a test plugin is compiled in (-check said: $out)" ;;
esac
echo "check-static: OK: $bin is static ($(stat -c %s "$bin") bytes)"
