#!/bin/bash
# The one prepared device check (≤ 8 minutes; builds nothing: the CUDA binary and the CPU's
# results come in .gpu/, made by tests/gpu/bundle.sh). Run from the repository root with `.gpu`
# carried; everything it measures lands in $OUT. Every command has its own timeout so one slow
# step cannot eat the lease.
R=$(pwd); G=$R/.gpu; OUT=${OUT:-/tmp/gpu-out}; mkdir -p $OUT /tmp/w
gunzip -c $G/core-cli.gz > /tmp/core-cli && chmod +x /tmp/core-cli
C=/tmp/core-cli
# NVRTC from the toolkit, never the driver stub directory (CUDA_ERROR_STUB_LIBRARY).
D=$(for f in $(find /usr /opt -name 'libnvrtc.so*' -not -path '*stubs*' 2>/dev/null); do dirname $f; done | sort -u | tr '\n' ':')
export LD_LIBRARY_PATH=$D$LD_LIBRARY_PATH LONGALIGN_KERNEL_CACHE=/tmp/w/kernels
nvidia-smi --query-gpu=timestamp,memory.used,utilization.gpu --format=csv -lms 1000 > $OUT/gpumon.csv 2>&1 &
s() { echo "=== $(date +%T) $*"; }
s doctor;   timeout 60 $C doctor --smoke cpu,cuda --json > $OUT/doctor.json 2> $OUT/doctor.err; tail -c 600 $OUT/doctor.json; echo
s score;    timeout 90 $C score --backend cuda --model $G/model --data $G/eval.jsonl --out $OUT/score_cuda.jsonl 2>&1 | tail -3
paste -d' ' <(grep -o '"loss":[^,]*' $G/score_cpu.jsonl | cut -d: -f2) <(grep -o '"loss":[^,]*' $OUT/score_cuda.jsonl | cut -d: -f2) \
  | awk '{d=$1-$2; if (d<0) d=-d; if (d>m) m=d} END {print "score: max |cpu - cuda| =", m, (m <= 1e-4 ? "OK" : "FAIL"), "over", NR, "examples"}'
s generate; timeout 60 $C generate --backend cuda --model $G/model --prompt "Repeat twice: apple" --max-new-tokens 64 > $OUT/generate_cuda.txt 2>/dev/null
cmp -s $G/generate_cpu.txt $OUT/generate_cuda.txt && echo "generate: 64 greedy tokens equal the CPU's: OK" || { echo "generate: FAIL"; diff $G/generate_cpu.txt $OUT/generate_cuda.txt | head; }
s bench-train-small; timeout 150 $C bench train --backend cuda --model small --max-tokens 8192 --examples 400 --steps 30 --out /tmp/w/bs --json > $OUT/bench_train_small.json 2> $OUT/bench_train_small.err; tail -c 400 $OUT/bench_train_small.json; echo
s bench-memory; timeout 120 $C bench memory --backend cuda --model small --lengths 4096,16384,65536 --activation-checkpointing 2>&1 | tail -6
s bench-loss; timeout 40 $C bench loss --backend cuda --targets 8192 --vocab 32000 2>&1 | tail -4
s bf16-vs-f32; for p in f32 bf16; do timeout 45 $C train --backend cuda --model small --steps 20 --precision $p --out /tmp/w/p-$p --quiet --summary-json $OUT/train_$p.json 2>&1 | tail -2; cat $OUT/train_$p.json; echo; done
s done; kill %1 2>/dev/null
for r in /tmp/w/p-f32 /tmp/w/p-bf16; do cp $r/events.jsonl $OUT/$(basename $r).events.jsonl 2>/dev/null; done
ls -la $OUT
