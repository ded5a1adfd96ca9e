#!/usr/bin/env bash
# The kernels on an NVIDIA GPU (Burn's CUDA backend, NVRTC at run time): the same validate tests
# as CI runs on lavapipe (plus bf16), then the attention benchmark at 2k…64k-token rows and the
# fused-loss benchmark at a 128k vocabulary, then 30 training steps in f32 and in bf16.
# Run from the repository root on a machine with the NVIDIA driver; about 10 minutes cold.
set -euo pipefail
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/longalign/target}"
cargo test --release -p longalign-kernels --features cuda --test varlen --test ce
cargo bench -p longalign-kernels --features cuda --bench attention -- \
  --backend cuda --rows 2048,4096,8192,16384,32768,65536 --seq-len 1024 \
  --heads 32 --kv-heads 8 --head-dim 128 --reps 5 --dense-max-bytes 17179869184
cargo run --release -p longalign-core --features cuda --bin core-cli -- bench loss \
  --backend cuda --targets 16384 --hidden 4096 --vocab 128256 --chunk 2048 --reps 3
# Mixed precision end to end: the embedded default for 30 steps in f32 and in bf16 (losses should
# agree to ~0.1%; compare useful tok/s and peak memory in the two summaries).
for p in f32 bf16; do
  rm -rf "/tmp/gpu-train-$p"
  "$CARGO_TARGET_DIR/release/core-cli" train --backend cuda --precision "$p" --steps 30 \
    --out "/tmp/gpu-train-$p" --quiet --summary-json "${OUT:-/tmp}/train-$p.json"
done
