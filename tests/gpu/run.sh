#!/bin/bash
# The one prepared device check. Builds nothing: the CUDA binaries and the CPU's results come in
# .gpu/, made by tests/gpu/bundle.sh. Run from the repository root with `.gpu` carried; everything
# it measures lands in $OUT. Checks come first, benchmarks after. The whole run keeps to a budget
# ($RUN_BUDGET seconds, default 540): each command gets its own timeout, cut to what is left.
#
# A cold CUDA process compiles every kernel with NVRTC (about 0.1-2.7 s each on an H200, 92
# compiles for the first one-example score: 66 s; docs/measurements.md), and autotune multiplies
# the matmuls. The kernel cache (PTX and autotune results, $LONGALIGN_KERNEL_CACHE) persists across
# the commands, so each pays only for the kernels the earlier ones did not compile.
R=$(pwd); G=$R/.gpu; OUT=${OUT:-/tmp/gpu-out}; mkdir -p $OUT /tmp/w
T0=$(date +%s); BUDGET=${RUN_BUDGET:-540}
for b in core-cli attention; do [ -f $G/$b.gz ] && gunzip -c $G/$b.gz > /tmp/$b && chmod +x /tmp/$b; done
C=/tmp/core-cli
# NVRTC from the toolkit, never the driver stub directory (CUDA_ERROR_STUB_LIBRARY).
D=$(for f in $(find /usr /opt -name 'libnvrtc.so*' -not -path '*stubs*' 2>/dev/null); do dirname $f; done | sort -u | tr '\n' ':')
export LD_LIBRARY_PATH=$D$LD_LIBRARY_PATH LONGALIGN_KERNEL_CACHE=/tmp/w/kernels LONGALIGN_JIT_TRACE=1
nvidia-smi --query-gpu=timestamp,memory.used,utilization.gpu --format=csv -lms 1000 > $OUT/gpumon.csv 2>&1 &
s() { echo "=== $(date +%T) +$(( $(date +%s) - T0 ))s $*"; }
# `t N cmd...`: the command under a timeout of N seconds or what is left of the budget.
t() { local left=$(( BUDGET - ($(date +%s) - T0) )); local n=$(( $1 < left ? $1 : left )); shift
  if [ $n -lt 5 ]; then echo "skipped (budget spent): $1 $2"; return 124; fi; timeout $n "$@"; }
# max |a - b| / max(|a|, 1e-12) over two columns of numbers, against a tolerance.
cmpcol() { paste -d' ' "$1" "$2" | awk -v t="$3" -v what="$4" '{d=$1-$2; if (d<0) d=-d; a=$1<0?-$1:$1; r=d/(a>1e-12?a:1e-12); if (r>m) m=r} END {print what": max relative |cpu - cuda| =", m, (NR > 0 && m <= t ? "OK" : "FAIL"), "over", NR}'; }
# Compilations and autotunes in a trace, and the gaps between compilations (~ each one's time).
jit() { echo "$1: $(grep -c 'compile #' $2) compiles, $(grep -c 'autotune #' $2) autotunes"
  awk -F'[][ ]+' '/compile #/ {t=$3; if (p != "") {d=t-p; if (d>m) m=d; s+=d; n++} p=t} END {if (n) printf "  compile gaps: mean %.2f s, max %.2f s, sum %.0f s over %d\n", s/n, m, s, n}' $2; }
loss() { grep -o '"loss":[^,}]*' "$1" | cut -d: -f2; }

s doctor; t 30 $C doctor --smoke none --json > $OUT/doctor.json 2> $OUT/doctor.err; tail -c 700 $OUT/doctor.json; echo
s score-one-cold; head -1 $G/eval.jsonl > /tmp/w/one.jsonl
t 150 $C score --backend cuda --model $G/model --data /tmp/w/one.jsonl --out $OUT/score_one.jsonl > /dev/null 2> $OUT/jit_score_one.txt; echo "rc $?"
jit "one-example score, cold" $OUT/jit_score_one.txt
s score; t 90 $C score --backend cuda --model $G/model --data $G/eval.jsonl --out $OUT/score_cuda.jsonl > /dev/null 2> $OUT/jit_score.txt; echo "rc $?"
jit "score, all examples, after the one" $OUT/jit_score.txt
cmpcol <(loss $G/score_cpu.jsonl) <(loss $OUT/score_cuda.jsonl) 1e-4 score
s generate  # greedy, 64 tokens, one token per decode step
t 90 $C generate --backend cuda --model $G/model --prompt "Repeat twice: apple" --max-new-tokens 64 > $OUT/generate_cuda.txt 2> $OUT/jit_generate.txt; echo "rc $?"
jit generate $OUT/jit_generate.txt
cmp -s $G/generate_cpu.txt $OUT/generate_cuda.txt && echo "generate: 64 greedy tokens equal the CPU's: OK" || { echo "generate: FAIL"; diff $G/generate_cpu.txt $OUT/generate_cuda.txt | head -4; }
s train-parity  # the embedded default, 10 steps, f32, warm-up on: CUDA's losses against the CPU's
t 200 $C train --backend cuda --steps 10 --out /tmp/w/tp --quiet --summary-json $OUT/train_parity.json 2> $OUT/jit_train.txt | tail -2; echo "rc ${PIPESTATUS[0]}"
jit "train 10 steps (warm-up included)" $OUT/jit_train.txt; grep -o '"warm_up":{[^}]*}' $OUT/train_parity.json
cp /tmp/w/tp/events.jsonl $OUT/train_parity_cuda.events.jsonl 2>/dev/null
cmpcol <(loss $G/train_cpu.events.jsonl) <(loss /tmp/w/tp/events.jsonl) 1e-4 "train, 10 steps"
s bench-train-small; t 150 $C bench train --backend cuda --model small --max-tokens 8192 --examples 400 --steps 30 --out /tmp/w/bs --json > $OUT/bench_train_small.json 2> $OUT/jit_bench_train.txt; echo "rc $?"
jit "bench train small" $OUT/jit_bench_train.txt; tail -c 700 $OUT/bench_train_small.json; echo
s attention  # the varlen kernel: validated against the dense mask (output, dq, dk, dv), then timed
t 60 /tmp/attention --backend cuda --rows 4096,16384,65536 --seq-len 4096 --heads 32 --kv-heads 8 --head-dim 128 --reps 3 --validate-max 4096 --dense-max-bytes 8000000000 > $OUT/attention.txt 2>&1; echo "rc $?"; grep -v '^\[jit' $OUT/attention.txt | tail -12
s bf16-vs-f32; for p in f32 bf16; do t 60 $C train --backend cuda --model small --steps 20 --precision $p --out /tmp/w/p-$p --quiet --summary-json $OUT/train_$p.json 2> $OUT/jit_train_$p.txt | tail -2; echo "$p rc ${PIPESTATUS[0]}"; jit $p $OUT/jit_train_$p.txt; head -c 600 $OUT/train_$p.json; echo; done
s bench-memory; t 60 $C bench memory --backend cuda --model small --lengths 4096,16384,65536 --activation-checkpointing 2>&1 | grep -v '^\[jit' | tail -6
s bench-loss; t 30 $C bench loss --backend cuda --targets 8192 --vocab 32000 2>&1 | grep -v '^\[jit' | tail -4
s doctor-smoke; t 30 $C doctor --smoke cuda --json > $OUT/doctor_smoke.json 2> /dev/null; tail -c 400 $OUT/doctor_smoke.json; echo
s done; kill %1 2>/dev/null
for r in /tmp/w/p-f32 /tmp/w/p-bf16 /tmp/w/bs; do cp $r/events.jsonl $OUT/$(basename $r).events.jsonl 2>/dev/null; done
du -sh /tmp/w/kernels; ls -la $OUT | tail -n +2 | wc -l
