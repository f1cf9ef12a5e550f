#!/usr/bin/env bash
# The TypeScript SDK's checks and tests, as CI runs them:
#
#   clients/typescript/run.sh
#
# installs the pinned npm packages (package-lock.json), checks that
# src/protocol.ts matches schemas/json, type-checks and builds, runs the
# unit tests, then the integration tests against the real embedded default
# (the release binary, built here unless SB_BIN names one), then the browser
# tests: the demo chat in Debian's Chromium (installed by scripts/chromium.sh)
# driven by playwright-core. The demo's built files (edge/src/demo/) must
# match its sources.
# Prints `N passed, N failed` per suite and the SDK's minified + gzipped size.
set -euo pipefail
cd "$(dirname "$0")"
ROOT="$(cd ../.. && pwd)"
source "$ROOT/scripts/phase.sh"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/switchboard/target}"
export NO_COLOR=1 FORCE_COLOR=0

command -v node >/dev/null || { echo "node (20 or later) is needed: install Node.js 20+" >&2; exit 1; }
node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 20 ? 0 : 1)' \
    || { echo "node $(node --version) is too old: the SDK needs Node 20 or later" >&2; exit 1; }

phase "sdk: npm ci" npm ci --no-audit --no-fund --loglevel=error
phase "sdk: types match schemas/json" npm run --silent types:check
phase "sdk: typecheck" npx tsc -p tsconfig.test.json
phase "sdk: build" npm run --silent build
phase "sdk: demo matches its sources" npm run --silent demo:check

rm -rf test-results && mkdir -p test-results
status=0
run_vitest() {
    local name="$1"; shift
    npx vitest run "$@" --reporter=default --reporter=json --outputFile="test-results/$name.json" || status=1
    node scripts/summary.mjs "test-results/$name.json" "sdk $name tests" || status=1
}
phase "sdk: unit tests" run_vitest unit test/unit

# A no-op when CI's conformance phase has just built it.
if [ -z "${SB_BIN:-}" ]; then
    phase "sdk: build the embedded default" cargo build --release -p switchboard --manifest-path "$ROOT/Cargo.toml"
fi
phase "sdk: integration tests (embedded default)" run_vitest integration test/integration
phase "sdk: chromium" "$ROOT/scripts/chromium.sh" install
phase "sdk: browser tests (embedded default, Chromium)" run_vitest browser test/browser
[ -f test-results/chat.png ] && echo "screenshot of the demo chat: $PWD/test-results/chat.png"
npm run --silent size
exit "$status"
