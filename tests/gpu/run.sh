#!/bin/bash
# The one prepared device check. Builds nothing: the CUDA binaries and the CPU's results come in
# .gpu/, made by tests/gpu/bundle.sh. Run from the repository root with `.gpu` carried. The whole
# run keeps to a budget ($RUN_BUDGET seconds, default 540): each command gets its own timeout, cut
# to what is left. Everything it measures lands in $RES, packed at the end into one archive,
# $OUT/gpu-results.tgz (the device tool brings back at most 8 files).
#
# A cold CUDA process compiles every kernel with NVRTC (about 0.1-3.5 s each on an H200, one at a
# time on one core while the GPU idles: 92 compiles and 66 s for the first one-example score, 192
# compiles in 200 s without finishing the tiny model's warm-up; docs/measurements.md). So phase 1
# runs five lanes at once, each compiling its own kernels into a cache of its own: scoring and
# generation, training parity, the attention and loss benchmarks, `bench memory`, and a cold
# `bench train`. Their timings are taken beside other work (marked so). Phase 2 runs alone on the
# kernels phase 1 compiled: `bench train` again (throughput), f32 against f32 with TF32 and bf16.
R=$(pwd); G=$R/.gpu; OUT=${OUT:-/tmp/gpu-out}; RES=${RES:-/tmp/gpu-res}; mkdir -p $OUT $RES /tmp/w
T0=$(date +%s); BUDGET=${RUN_BUDGET:-540}
pack() { tar czf $OUT/gpu-results.tgz -C $RES . 2>/dev/null; }
trap pack EXIT
for b in core-cli attention; do [ -f $G/$b.gz ] && gunzip -c $G/$b.gz > /tmp/$b && chmod +x /tmp/$b; done
C=/tmp/core-cli
# NVRTC from the toolkit, never the driver stub directory (CUDA_ERROR_STUB_LIBRARY).
D=$(for f in $(find /usr /opt -name 'libnvrtc.so*' -not -path '*stubs*' 2>/dev/null); do dirname $f; done | sort -u | tr '\n' ':')
export LD_LIBRARY_PATH=$D$LD_LIBRARY_PATH LONGALIGN_JIT_TRACE=1
nvidia-smi --query-gpu=timestamp,memory.used,utilization.gpu --format=csv -lms 1000 > $RES/gpumon.csv 2>&1 &
MON=$!
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

s doctor; t 30 $C doctor --smoke none --json > $RES/doctor.json 2> $RES/doctor.err; tail -c 700 $RES/doctor.json; echo

# f32 is exact f32 on CUDA unless `--tf32` (vendor/burn-cubecl/PATCH.md: autotune keeps f32
# products off the TF32 tensor-core kernels), so CUDA is held to 1e-4 relative against the CPU, as
# wgpu is in CI. (Until 2026-12-05 CubeK ran them as TF32 and this was 1e-3.)
TOL=1e-4
# Phase 1: five lanes at once, each compiling kernels of its own (a cache each: no two writers).
# Lane A: scoring and generation against the CPU, in the order that fills its cache for the next.
laneA() { export LONGALIGN_KERNEL_CACHE=/tmp/w/kA
  s score-one-cold; head -1 $G/eval.jsonl > /tmp/w/one.jsonl
  t 150 $C score --backend cuda --model $G/model --data /tmp/w/one.jsonl --out $RES/score_one.jsonl > /dev/null 2> $RES/jit_score_one.txt; echo "rc $?"
  jit "one-example score, cold" $RES/jit_score_one.txt
  s score; t 200 $C score --backend cuda --model $G/model --data $G/eval.jsonl --out $RES/score_cuda.jsonl > /dev/null 2> $RES/jit_score.txt; echo "rc $?"
  jit "score, all examples (lengths bucketed), after the one" $RES/jit_score.txt
  cmpcol <(loss $G/score_cpu.jsonl) <(loss $RES/score_cuda.jsonl) $TOL score
  s generate  # greedy, 64 tokens, one token per decode step
  t 120 $C generate --backend cuda --model $G/model --prompt "Repeat twice: apple" --max-new-tokens 64 > $RES/generate_cuda.txt 2> $RES/jit_generate.txt; echo "rc $?"
  jit generate $RES/jit_generate.txt
  cmp -s $G/generate_cpu.txt $RES/generate_cuda.txt && echo "generate: 64 greedy tokens equal the CPU's: OK" || { echo "generate: FAIL"; diff $G/generate_cpu.txt $RES/generate_cuda.txt | head -4; }
}
# `parity NAME SECS CPU_EVENTS TRAIN_ARGS...`: ten CUDA training steps (f32, warm-up on) against the
# CPU's losses; results as $RES/train_NAME.json, jit_train_NAME.txt, train_NAME_cuda.events.jsonl.
parity() { local n=$1 secs=$2 cpu=$3; shift 3
  s "train-$n"
  t $secs $C train --backend cuda --steps 10 --out /tmp/w/$n --quiet --summary-json $RES/train_$n.json "$@" 2> $RES/jit_train_$n.txt | tail -2; echo "rc ${PIPESTATUS[0]}"
  jit "train $n, 10 steps (warm-up included)" $RES/jit_train_$n.txt; grep -o '"warm_up":{[^}]*}' $RES/train_$n.json
  cp /tmp/w/$n/events.jsonl $RES/train_${n}_cuda.events.jsonl 2>/dev/null
  cmpcol <(loss $cpu) <(loss /tmp/w/$n/events.jsonl) $TOL "train $n, 10 steps"
}
# Lane B: training parity, first on one input shape (the fewest kernels), then the embedded default
# (three shapes) on the kernels the first compiled.
laneB() { export LONGALIGN_KERNEL_CACHE=/tmp/w/kB
  parity one_shape 330 $G/train_one_shape_cpu.events.jsonl --data $G/one_shape.jsonl --max-tokens 512
  parity default 400 $G/train_cpu.events.jsonl
}
# Lane C: the varlen attention kernel, validated against the dense mask (output, dq, dk, dv), then
# timed; then the fused loss against the plain one.
laneC() { export LONGALIGN_KERNEL_CACHE=/tmp/w/kC
  s "attention (timed beside the other lanes)"
  t 200 /tmp/attention --backend cuda --rows 4096,16384,65536 --seq-len 4096 --heads 32 --kv-heads 8 --head-dim 128 --reps 3 --validate-max 4096 --dense-max-bytes 8000000000 > $RES/attention.txt 2>&1; echo "rc $?"; grep -v '^\[jit' $RES/attention.txt | tail -12
  s "bench loss (beside the other lanes)"; t 90 $C bench loss --backend cuda --targets 8192 --vocab 32000 > $RES/bench_loss.txt 2>&1; echo "rc $?"; grep -v '^\[jit' $RES/bench_loss.txt | tail -4
}
# Lane D: activation memory at 4k/16k/64k tokens with checkpointing (a process per length).
laneD() { export LONGALIGN_KERNEL_CACHE=/tmp/w/kD
  s "bench memory (beside the other lanes)"; t 400 $C bench memory --backend cuda --model small --lengths 4096,16384,65536 --activation-checkpointing > $RES/bench_memory.txt 2>&1; echo "rc $?"; grep -v '^\[jit' $RES/bench_memory.txt | tail -6
}
# Lane E: `bench train` on the small preset, cold (its compiles per step); phase 2 times it warm.
BT="bench train --backend cuda --model small --max-tokens 8192 --examples 400 --steps 30 --json"
laneE() { export LONGALIGN_KERNEL_CACHE=/tmp/w/kE
  s "bench train small, cold (beside the other lanes)"; t 400 $C $BT --out /tmp/w/bs > $RES/bench_train_cold.json 2> $RES/jit_bench_train.txt; echo "rc $?"
  jit "bench train small, cold" $RES/jit_bench_train.txt; tail -c 500 $RES/bench_train_cold.json; echo
}
for l in A B C D E; do lane$l > $RES/lane$l.log 2>&1 & eval P$l=$!; done
for l in A B C D E; do eval wait \$P$l; cat $RES/lane$l.log; done

# Phase 2, alone on the GPU, on the kernels phase 1 compiled: throughput, bf16 against f32.
s bench-train-small-warm; LONGALIGN_KERNEL_CACHE=/tmp/w/kE t 120 $C $BT --out /tmp/w/bs2 > $RES/bench_train_small.json 2> $RES/jit_bench_train2.txt; echo "rc $?"
jit "bench train small, warm cache" $RES/jit_bench_train2.txt; tail -c 700 $RES/bench_train_small.json; echo
# f32 (exact), f32 with TF32 tensor cores (`--tf32`: compiles its own candidates), bf16.
s f32-tf32-bf16; for p in f32 tf32 bf16; do x="--precision $p"; [ $p = tf32 ] && x="--precision f32 --tf32"
  LONGALIGN_KERNEL_CACHE=/tmp/w/kE t 120 $C train --backend cuda --model small --steps 20 $x --out /tmp/w/p-$p --quiet --summary-json $RES/train_$p.json 2> $RES/jit_train_$p.txt | tail -2; echo "$p rc ${PIPESTATUS[0]}"; jit $p $RES/jit_train_$p.txt; head -c 600 $RES/train_$p.json; echo; done
s doctor-smoke; LONGALIGN_KERNEL_CACHE=/tmp/w/kA t 30 $C doctor --smoke cuda --json > $RES/doctor_smoke.json 2> /dev/null; tail -c 400 $RES/doctor_smoke.json; echo
s done; kill $MON 2>/dev/null
for r in /tmp/w/p-f32 /tmp/w/p-tf32 /tmp/w/p-bf16 /tmp/w/bs /tmp/w/bs2; do cp $r/events.jsonl $RES/$(basename $r).events.jsonl 2>/dev/null; done
du -sh /tmp/w/k*; ls $RES | wc -l
