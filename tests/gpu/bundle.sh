#!/bin/bash
# Makes .gpu/ (git-ignored) for tests/gpu/run.sh on the build machine: the CUDA builds of core-cli
# and of the attention benchmark, a trained tiny model, and the CPU's answers to compare against.
# Run from the repository root.
set -euo pipefail
T=${CARGO_TARGET_DIR:-target}
cargo build --release --locked -p longalign-core --features cuda --bin core-cli
# The attention benchmark (`kernels/benches/attention.rs`) for CUDA: a build of its own (the
# kernels crate's dev-dependencies give Burn another feature set).
cargo bench --locked -p longalign-kernels --features cuda --bench attention --no-run
C=$T/release/core-cli
A=$(ls -t $T/release/deps/attention-* | grep -v '\.d$' | head -1)
rm -rf .gpu && mkdir -p .gpu
strip -o .gpu/core-cli $C && gzip -f .gpu/core-cli
strip -o .gpu/attention "$A" && gzip -f .gpu/attention
cp tests/gpu/run.sh datasets/sample/eval.jsonl .gpu/
W=$(mktemp -d)
$C train --steps 150 --out $W/run --quiet
cp -r $W/run/export .gpu/model
# The CPU's results: per-example scores, a 64-token greedy answer, 10 training steps' losses.
$C score --model .gpu/model --data .gpu/eval.jsonl --out .gpu/score_cpu.jsonl
$C generate --model .gpu/model --prompt "Repeat twice: apple" --max-new-tokens 64 > .gpu/generate_cpu.txt 2>/dev/null
$C train --steps 10 --out $W/tp --quiet
cp $W/tp/events.jsonl .gpu/train_cpu.events.jsonl
# Ten steps on one input shape (400-465-token pass-key and key-value documents, one per 512-token
# row): the fewest kernels a training check compiles (lavapipe: 38 autotunes, against 49 for the
# embedded default's three shapes), so the first CUDA training parity to fit a lease.
$C data synth-custom --examples 200 --min-len 400 --max-len 400 --out $W/eq.jsonl > /dev/null
grep -v '"source":"chat"' $W/eq.jsonl > .gpu/one_shape.jsonl
$C train --data .gpu/one_shape.jsonl --max-tokens 512 --steps 10 --out $W/os --quiet
cp $W/os/events.jsonl .gpu/train_one_shape_cpu.events.jsonl
rm -rf $W
du -sh .gpu
