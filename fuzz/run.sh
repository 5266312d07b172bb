#!/usr/bin/env bash
# Builds the cargo-fuzz targets and runs each for SECONDS on one core, growing
# fuzz/corpus/TARGET from the seeds in fuzz/seeds/TARGET; any input that makes a target
# fail (crash, timeout, out of memory) is copied to tests/fuzz_regressions/TARGET/,
# which `cargo test --test fuzz_regressions` replays from then on.
#
#   fuzz/run.sh TARGET|all SECONDS      targets: packet corefile kubernetes_json forward_reply
#                                       http_request
#   fuzz/run.sh tmin TARGET FILE        minimize a failing input (written next to FILE)
#
# Needs cargo-fuzz (`cargo install cargo-fuzz`) and a C++ compiler (libfuzzer-sys builds
# libFuzzer). The machine has only a stable toolchain: cargo-fuzz's default sanitizer
# (address) needs the unstable `-Zsanitizer`, which stable rustc accepts with
# RUSTC_BOOTSTRAP=1 (the ASan runtime ships with stable's rust-std). ASan halves the
# speed but catches memory errors in the unsafe code of clusterdns and its
# dependencies, so it is the default; SANITIZER=none builds without it (`-s none`, no
# unstable flag needed). Either way cargo-fuzz builds with debug assertions (integer
# overflow panics) and with `--cfg fuzzing`.
#
# One core: the fuzzer runs in-process, one job (libFuzzer's -jobs=1 -workers=1 would
# only add a supervising process and send the output to fuzz-0.log). The build uses
# CARGO_BUILD_JOBS (default 1). The target runs with a small, fixed environment: the
# corefile target substitutes {$ENV} from it, and none of it names a file.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
targets=(packet corefile kubernetes_json forward_reply http_request)
sanitizer="${SANITIZER:-address}"
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-1}"
if [ "$sanitizer" != none ]; then
    export RUSTC_BOOTSTRAP=1
fi
bin_dir="$here/target/x86_64-unknown-linux-gnu/release"

usage() {
    echo "usage: $0 TARGET|all SECONDS | $0 tmin TARGET FILE  (targets: ${targets[*]})" >&2
    exit 2
}

build() {
    (cd "$here" && cargo fuzz build -s "$sanitizer" "$@")
}

# The fuzzer itself, in the fixed environment.
fuzzer() {
    local target="$1"
    shift
    env -i PATH=/usr/bin:/bin HOME=/nonexistent LANG=C FUZZ_PORT=1053 FUZZ_HOST=web \
        ASAN_OPTIONS="${ASAN_OPTIONS:-}" RUST_BACKTRACE=1 "$bin_dir/$target" "$@"
}

run() {
    local target="$1" seconds="$2"
    local corpus="$here/corpus/$target" artifacts="$here/artifacts/$target"
    local regressions="$root/tests/fuzz_regressions/$target"
    mkdir -p "$corpus" "$artifacts"
    local dict=()
    if [ -f "$here/dict/$target.dict" ]; then
        dict=(-dict="$here/dict/$target.dict")
    fi
    echo "== $target: $seconds s (sanitizer: $sanitizer)"
    local status=0
    # New inputs go to the corpus (the first directory); the seeds are only read.
    fuzzer "$target" "$corpus" "$here/seeds/$target" "${dict[@]}" \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
        -artifact_prefix="$artifacts/" -print_final_stats=1 || status=$?
    local found=0
    for f in "$artifacts"/crash-* "$artifacts"/timeout-* "$artifacts"/oom-* "$artifacts"/leak-*; do
        [ -e "$f" ] || continue
        mkdir -p "$regressions"
        if [ ! -e "$regressions/$(basename "$f")" ]; then
            cp "$f" "$regressions/"
            echo "== $target: new failing input: tests/fuzz_regressions/$target/$(basename "$f")"
            found=1
        fi
    done
    if [ "$status" -ne 0 ] && [ "$found" -eq 0 ]; then
        echo "== $target: the fuzzer exited with $status (see above)"
    fi
    return "$status"
}

case "${1:-}" in
    tmin)
        [ $# -eq 3 ] || usage
        build "$2"
        fuzzer "$2" -minimize_crash=1 -max_total_time=60 -runs=100000 \
            -exact_artifact_path="$3.min" "$(realpath "$3")"
        echo "minimized: $3.min"
        ;;
    all)
        [ $# -eq 2 ] || usage
        build
        failed=()
        for t in "${targets[@]}"; do
            run "$t" "$2" || failed+=("$t")
        done
        if [ ${#failed[@]} -gt 0 ]; then
            echo "== failed: ${failed[*]}"
            exit 1
        fi
        ;;
    packet | corefile | kubernetes_json | forward_reply | http_request)
        [ $# -eq 2 ] || usage
        build "$1"
        run "$1" "$2"
        ;;
    *) usage ;;
esac
