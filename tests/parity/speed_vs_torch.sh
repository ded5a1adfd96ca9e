#!/usr/bin/env bash
# Training speed side by side with PyTorch + transformers on this machine's cores, at two widths:
# d = 64 (2 layers) and d = 512 (4 layers, 12M parameters), transformers-made Llama directories,
# the same data, the same plan (FFD rows of 4,096 tokens, one row per step), AdamW, sequence loss.
# PyTorch runs each row twice: with an explicit block-causal mask (as a TRL user packing on CPU
# gets it) and sequence by sequence (its best case). Steps 2.. are timed on both sides.
#
#   bash tests/parity/speed_vs_torch.sh [WORK_DIR]     (opt-in; needs pip install torch transformers)
#
# Uses target/release/core-cli (CLI=… to choose another); STEPS=12 by default.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cli=${CLI:-${CARGO_TARGET_DIR:-$here/../../target}/release/core-cli}
work=${1:-$(mktemp -d)}
steps=${STEPS:-12}
mkdir -p "$work"
cd "$work"
# The built-in byte-level tokenizer's files, as any exported run has them.
[ -d tok ] || { "$cli" train --quiet --steps 1 --out tokrun && "$cli" export tokrun --out tok >/dev/null; }
[ -f data.jsonl ] || "$cli" data synth-custom --examples 120 --min-len 512 --max-len 4000 --out data.jsonl
for spec in "64 2" "512 4"; do
    set -- $spec
    m=d$1
    [ -d "$m" ] || python3 "$here/make_width_model.py" "$m" tok "$1" "$2"
    "$cli" plan --data data.jsonl --tokenizer "$m" --max-tokens 4096 --out "plan-$m.jsonl" >/dev/null
    rm -rf "run-$m"
    "$cli" train --quiet --model "$m" --data data.jsonl --max-tokens 4096 --steps "$steps" --out "run-$m"
    echo "== $m"
    python3 "$here/time_torch_step.py" "$m" data.jsonl "plan-$m.jsonl" "$steps" "run-$m/events.jsonl"
    python3 "$here/time_torch_step.py" "$m" data.jsonl "plan-$m.jsonl" "$steps" "run-$m/events.jsonl" --mask
done
