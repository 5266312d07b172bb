#!/usr/bin/env bash
# Static vs dynamic: server CPU per query of the glibc static-pie build against the
# normal dynamic build, with the repo's load bench (benches/load.rs: server pinned to
# CPU 1 with one worker on a 1000-name hosts Corefile, closed-loop UDP load from CPU 0,
# CPU time from the kernel's per-thread accounting).
#
#   packaging/bench-static.sh            # 3 alternating runs of 5 s each, medians
#   ROUNDS=5 SECONDS_PER_RUN=10 packaging/bench-static.sh
#
# The bench runs the binary cargo built beside it, so each flavour is the same bench
# built twice: once as usual, once with +crt-static for x86_64-unknown-linux-gnu (the
# flags of build-static.sh). Runs alternate (dynamic, static, dynamic, ...) so that
# drift on a noisy machine hits both alike. Exits 1 if the static build's median CPU
# per query is more than MAX_RATIO (1.10) times the dynamic one's.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${ROUNDS:-3}
seconds=${SECONDS_PER_RUN:-5}
max_ratio=${MAX_RATIO:-1.10}
static_flags="${RUSTFLAGS:+$RUSTFLAGS }-C target-feature=+crt-static"

run() { # flavour -> prints "qps us_per_query rss_mib" of one bench run
    local out
    if [ "$1" = static ]; then
        out=$(RUSTFLAGS="$static_flags" cargo bench --locked -q --bench load --target x86_64-unknown-linux-gnu \
            -- --rounds 1 --seconds "$seconds" --servers clusterdns 2>/dev/null)
    else
        out=$(cargo bench --locked -q --bench load -- --rounds 1 --seconds "$seconds" --servers clusterdns 2>/dev/null)
    fi
    echo "$out" | awk '$1 == "clusterdns" && NF == 4 { print $2, $3, $4 }'
}

echo "building the load bench twice (dynamic, static)..." >&2
cargo bench --locked -q --bench load --no-run >&2
RUSTFLAGS="$static_flags" cargo bench --locked -q --bench load --no-run --target x86_64-unknown-linux-gnu >&2

declare -A cpu qps
for ((i = 1; i <= rounds; i++)); do
    for flavour in dynamic static; do
        read -r q c r < <(run "$flavour")
        [ -n "${c:-}" ] || { echo "bench run failed ($flavour)" >&2; exit 2; }
        printf 'run %d %-8s %9.0f q/s  %6.2f us CPU/query  RSS %s MiB\n' "$i" "$flavour" "$q" "$c" "$r"
        cpu[$flavour]+="$c "
        qps[$flavour]+="$q "
    done
done

median() { tr ' ' '\n' | grep . | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
dyn=$(echo "${cpu[dynamic]}" | median)
sta=$(echo "${cpu[static]}" | median)
dq=$(echo "${qps[dynamic]}" | median)
sq=$(echo "${qps[static]}" | median)
ratio=$(awk -v s="$sta" -v d="$dyn" 'BEGIN { printf "%.3f", s / d }')
size() { stat -c %s "$1" 2>/dev/null || echo "?"; }
echo
echo "medians of $rounds runs of ${seconds} s (server on CPU 1, one worker):"
printf '  dynamic   %9.0f q/s  %6.2f us CPU/query  %s bytes\n' "$dq" "$dyn" "$(size target/release/clusterdns)"
printf '  static    %9.0f q/s  %6.2f us CPU/query  %s bytes\n' "$sq" "$sta" "$(size target/x86_64-unknown-linux-gnu/release/clusterdns)"
echo "  static/dynamic CPU per query = $ratio (limit $max_ratio)"
if awk -v r="$ratio" -v m="$max_ratio" 'BEGIN { exit !(r > m) }'; then
    echo "FAIL: the static build costs more than ${max_ratio}x the dynamic one's CPU per query"
    exit 1
fi
echo "OK: the static build is within the limit"
