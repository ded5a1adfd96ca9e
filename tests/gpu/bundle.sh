#!/bin/bash
# Makes .gpu/ (git-ignored) for tests/gpu/run.sh on the build machine: the CUDA build of core-cli,
# a trained tiny model, and the CPU's answers to compare against. Run from the repository root.
set -euo pipefail
T=${CARGO_TARGET_DIR:-target}
cargo build --release --locked -p longalign-core --features cuda --bin core-cli
C=$T/release/core-cli
rm -rf .gpu && mkdir -p .gpu
strip -o .gpu/core-cli $C && gzip -f .gpu/core-cli
cp tests/gpu/run.sh datasets/sample/eval.jsonl .gpu/
W=$(mktemp -d)
$C train --steps 150 --out $W/run --quiet
cp -r $W/run/export .gpu/model
# The CPU's results: per-example scores and a 64-token greedy answer.
$C score --model .gpu/model --data .gpu/eval.jsonl --out .gpu/score_cpu.jsonl
$C generate --model .gpu/model --prompt "Repeat twice: apple" --max-new-tokens 64 > .gpu/generate_cpu.txt 2>/dev/null
rm -rf $W
du -sh .gpu
