#!/usr/bin/env bash
# The README's test command: installs what the tests need (scripts/setup.sh), then runs every
# test of the workspace and prints one closing line with the totals over all test binaries.
# Extra arguments go to `cargo test` (e.g. `scripts/test.sh -- --ignored` for the opt-in tests).
set -euo pipefail
shopt -s inherit_errexit 2>/dev/null || true
cd "$(dirname "$0")/.."

# One target dir outside the clone, shared with .ci/run, so builds reuse each other's work.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/longalign/target}"
bash scripts/setup.sh

log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace --locked "$@" 2>&1 | tee "$log" || status=$?
# cargo prints one `test result:` line per binary (the last, the doc-tests, may run none).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i; if ($(i+1) ~ /^ignored/) s += $i } }
     END { printf "tests: %d passed, %d failed, %d skipped\n", p, f, s }' "$log"
exit "$status"
