#!/usr/bin/env bash
# Coverage-guided fuzzing (cargo-fuzz, libFuzzer) of the wire decoders in
# switchboard-schemas: installs cargo-fuzz into the cache if missing, builds
# fuzz/ with the nightly toolchain, then runs each target for a bounded time.
#
#   scripts/fuzz.sh                            every target, $SB_FUZZ_SECONDS (60) each
#   scripts/fuzz.sh --seconds 1800 headers     only the named targets, 30 minutes each
#
# Exits non-zero when a target crashed (the failing input's path is printed);
# prints a `skipped` line and exits 0 when there is no nightly toolchain.
# The grown corpus lives in $SB_CACHE_DIR/fuzz-corpus/<target> (fuzz/seeds/<target>
# is read too, never written); crash artifacts in $SB_CACHE_DIR/fuzz-artifacts/<target>.
# One brace group, read whole before it runs: editing this file during a
# 30-minute run must not change what the running copy does next. (shellcheck
# takes the functions inside it for unreachable.)
# shellcheck disable=SC2317
{
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"

CARGO_FUZZ_VERSION=0.13.2
CACHE="${SB_CACHE_DIR:-$HOME/.cache/switchboard}"
TOOL_ROOT="$CACHE/cargo-fuzz"
TARGET_DIR="$CACHE/fuzz-target"
CORPUS_ROOT="$CACHE/fuzz-corpus"
ARTIFACT_ROOT="$CACHE/fuzz-artifacts"
LOG_ROOT="$CACHE/fuzz-logs"
ALL_TARGETS=(client_frame inbound_envelope event_envelope route_record node_record headers)

source "$ROOT/scripts/phase.sh"

usage() {
    echo "usage: scripts/fuzz.sh [--seconds N] [TARGET...]   targets: ${ALL_TARGETS[*]}" >&2
    exit 2
}

seconds="${SB_FUZZ_SECONDS:-60}"
targets=()
while [ $# -gt 0 ]; do
    case "$1" in
        --seconds) [ $# -ge 2 ] || usage; seconds=$2; shift 2 ;;
        --seconds=*) seconds=${1#--seconds=}; shift ;;
        -h | --help) usage ;;
        -*) usage ;;
        *) targets+=("$1"); shift ;;
    esac
done
[[ "$seconds" =~ ^[1-9][0-9]*$ ]] || { echo "--seconds must be a positive integer, not '$seconds'" >&2; exit 2; }
[ ${#targets[@]} -gt 0 ] || targets=("${ALL_TARGETS[@]}")
for t in "${targets[@]}"; do
    [[ " ${ALL_TARGETS[*]} " == *" $t "* ]] || { echo "unknown fuzz target '$t'" >&2; usage; }
done

if ! command -v rustup >/dev/null 2>&1 || ! rustup run nightly rustc --version >/dev/null 2>&1; then
    echo "fuzz: skipped (no nightly toolchain; 'rustup toolchain install nightly' enables it)"
    exit 0
fi

install_cargo_fuzz() {
    if "$TOOL_ROOT/bin/cargo-fuzz" --version 2>/dev/null | grep -qx "cargo-fuzz $CARGO_FUZZ_VERSION"; then
        echo "cargo-fuzz $CARGO_FUZZ_VERSION already in $TOOL_ROOT"
        return
    fi
    cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked --root "$TOOL_ROOT"
}
phase "install cargo-fuzz" install_cargo_fuzz
export PATH="$TOOL_ROOT/bin:$PATH"
# Never the shared stable target dir: nightly + sanitizer flags would thrash it.
export CARGO_TARGET_DIR="$TARGET_DIR"

# All targets at once: one build, and `fuzz run` below then only checks it is fresh.
phase "build fuzz targets" cargo +nightly fuzz build --fuzz-dir fuzz

# Options for libFuzzer: bounded time, input size and memory; a slow input
# (over 10 s) counts as a failure too.
LIBFUZZER_ARGS=(
    -max_total_time="$seconds"
    -max_len=65536
    -rss_limit_mb=512
    -malloc_limit_mb=512
    -timeout=10
    -print_final_stats=1
)

# ASan's default 256 MB quarantine of freed memory alone would take half of
# -rss_limit_mb on a long run; a smaller one still catches use-after-free.
export ASAN_OPTIONS="${ASAN_OPTIONS:-quarantine_size_mb=64}"

failed=()
run_target() {
    local target=$1
    local corpus="$CORPUS_ROOT/$target" artifacts="$ARTIFACT_ROOT/$target/" log="$LOG_ROOT/$target.log"
    mkdir -p "$corpus" "$artifacts" "$LOG_ROOT"
    local status=0
    # The cache corpus comes first: libFuzzer writes new inputs to the first dir only.
    timeout --kill-after=30s $((seconds + 300)) \
        cargo +nightly fuzz run --fuzz-dir fuzz "$target" "$corpus" "fuzz/seeds/$target" -- \
        "${LIBFUZZER_ARGS[@]}" -artifact_prefix="$artifacts" >"$log" 2>&1 || status=$?
    local done_line execs
    done_line="$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -n 1 || true)"
    execs="$(sed -n 's/^stat::number_of_executed_units:[[:space:]]*//p' "$log" | tail -n 1)"
    local cov corp
    cov="$(sed -nE 's/.* cov: ([0-9]+).*/\1/p' <<<"$done_line")"
    corp="$(sed -nE 's/.* corp: ([0-9]+\/[^ ]+).*/\1/p' <<<"$done_line")"
    if [ "$status" -eq 0 ]; then
        echo "fuzz $target: ok, ${execs:-?} execs, cov ${cov:-?}, corpus ${corp:-?} ($corpus), log $log"
    else
        failed+=("$target")
        echo "fuzz $target: FAILED (exit $status), full output in $log; the cause:"
        # The panic message (the line after "panicked at"), libFuzzer's verdict
        # (crash, timeout, out-of-memory, leak) and the saved input.
        grep -E -A1 'panicked at' "$log" | head -n 4 | sed 's/^/    /' || true
        grep -E '^(==[0-9]+== )?ERROR: |^SUMMARY: |^MS: ' "$log" | head -n 6 | sed 's/^/    /' || true
        grep -E -A1 'Test unit written to' "$log" | sed "s/^/fuzz $target: /" || true
        echo "fuzz $target: minimize with: PATH=$TOOL_ROOT/bin:\$PATH CARGO_TARGET_DIR=$TARGET_DIR" \
            "cargo +nightly fuzz tmin --fuzz-dir fuzz $target <artifact>"
    fi
}

for target in "${targets[@]}"; do
    phase "fuzz $target (${seconds}s)" run_target "$target"
done

if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz: ${#failed[@]} target(s) failed: ${failed[*]}"
    exit 1
fi
echo "fuzz: ${#targets[@]} target(s) ran ${seconds}s each without a crash"
exit 0
}
