#!/bin/bash
# One prepared device check: CUDA backend parity (score, greedy generation) against CPU results
# made beforehand, a short tiny-preset training run, and naive/sorted/pack throughput.
R=$(pwd)
mkdir -p /tmp/w && cd /tmp/w
gunzip -c $R/.gpu/core-cli.gz > /tmp/core-cli && chmod +x /tmp/core-cli
C=/tmp/core-cli
nvidia-smi -L
D=$(for f in $(find /usr /opt -name 'libnvrtc.so*' -not -path '*stubs*' 2>/dev/null); do dirname $f; done | sort -u | tr '\n' ':')
echo "nvrtc dirs: $D"
export LD_LIBRARY_PATH=$D$LD_LIBRARY_PATH
nvidia-smi --query-gpu=timestamp,memory.used,utilization.gpu --format=csv -lms 1000 > $OUT/gpumon.csv 2>&1 &
s() { echo "=== $(date +%T) $*"; }
s score; timeout 100 $C score --backend cuda --model $R/.gpu/model --data $R/.gpu/eval.jsonl --out $OUT/score_cuda.jsonl 2>&1 | tail -5
s generate
for p in "Repeat twice: apple" "Write in upper case: green river"; do timeout 60 $C generate --backend cuda --model $R/.gpu/model --prompt "$p" --max-new-tokens 40 2>&1 | tail -3; done
s train-tiny; timeout 100 $C train --backend cuda --steps 100 --out /tmp/w/tiny --quiet --summary-json /tmp/w/tiny.summary.json 2>&1 | tail -3; cat /tmp/w/tiny.summary.json; echo
s bench-small; timeout 210 $C bench train --backend cuda --model small --max-tokens 8192 --examples 400 --steps 40 --out /tmp/w/bs 2>&1 | tail -14
s bench-medium; timeout 150 $C bench train --backend cuda --model medium --max-tokens 4096 --examples 300 --steps 20 --out /tmp/w/bm 2>&1 | tail -14
s done
kill %1 2>/dev/null
tar czf $OUT/runs.tgz -C /tmp/w --exclude='*.safetensors' --exclude=checkpoints --exclude='*.bin' --exclude=target tiny bs bm tiny.summary.json 2>/dev/null
ls -la $OUT
