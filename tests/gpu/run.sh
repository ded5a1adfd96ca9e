#!/bin/bash
# The one prepared device check (about 9 minutes at most; builds nothing: the CUDA binaries and
# the CPU's results come in .gpu/, made by tests/gpu/bundle.sh). Run from the repository root with
# `.gpu` carried; everything it measures lands in $OUT. Checks come first, benchmarks after, each
# command under its own timeout so one slow step cannot eat the lease.
R=$(pwd); G=$R/.gpu; OUT=${OUT:-/tmp/gpu-out}; mkdir -p $OUT /tmp/w
for b in core-cli attention; do gunzip -c $G/$b.gz > /tmp/$b && chmod +x /tmp/$b; done
C=/tmp/core-cli
# NVRTC from the toolkit, never the driver stub directory (CUDA_ERROR_STUB_LIBRARY).
D=$(for f in $(find /usr /opt -name 'libnvrtc.so*' -not -path '*stubs*' 2>/dev/null); do dirname $f; done | sort -u | tr '\n' ':')
export LD_LIBRARY_PATH=$D$LD_LIBRARY_PATH LONGALIGN_KERNEL_CACHE=/tmp/w/kernels
nvidia-smi --query-gpu=timestamp,memory.used,utilization.gpu --format=csv -lms 1000 > $OUT/gpumon.csv 2>&1 &
s() { echo "=== $(date +%T) $*"; }
# max |a - b| / max(|a|, 1e-12) over two columns of numbers, against a tolerance.
cmpcol() { paste -d' ' "$1" "$2" | awk -v t="$3" -v what="$4" '{d=$1-$2; if (d<0) d=-d; a=$1<0?-$1:$1; r=d/(a>1e-12?a:1e-12); if (r>m) m=r} END {print what": max relative |cpu - cuda| =", m, (NR > 0 && m <= t ? "OK" : "FAIL"), "over", NR}'; }

s doctor;   timeout 30 $C doctor --smoke none --json > $OUT/doctor.json 2> $OUT/doctor.err; tail -c 900 $OUT/doctor.json; echo
# The lease of 2026-12-04 found every CUDA command stalled in autotune, compiling matmul candidates
# with NVRTC: first time each compile (stamped on stderr), on one example; the PTX it compiles
# stays in the kernel cache for the commands after it.
s jit-trace; head -1 $G/eval.jsonl > /tmp/w/one.jsonl
LONGALIGN_JIT_TRACE=1 timeout 150 $C score --backend cuda --model $G/model --data /tmp/w/one.jsonl --out $OUT/score_one.jsonl > /dev/null 2> $OUT/jit_trace.txt
echo "rc $?: $(grep -c 'compile #' $OUT/jit_trace.txt) compiles, $(grep -c 'autotune #' $OUT/jit_trace.txt) autotunes; last: $(grep '^\[jit' $OUT/jit_trace.txt | tail -1)"
awk -F'[][ ]+' '/compile #/ {t=$3; if (p != "") {d=t-p; if (d>m) m=d; s+=d; n++} p=t} END {if (n) printf "compile gaps: mean %.2f s, max %.2f s over %d\n", s/n, m, n}' $OUT/jit_trace.txt
s score;    timeout 45 $C score --backend cuda --model $G/model --data $G/eval.jsonl --out $OUT/score_cuda.jsonl 2>&1 | tail -2
cmpcol <(grep -o '"loss":[^,}]*' $G/score_cpu.jsonl | cut -d: -f2) <(grep -o '"loss":[^,}]*' $OUT/score_cuda.jsonl | cut -d: -f2) 1e-4 score
s generate  # greedy, 64 tokens, one token per decode step
timeout 30 $C generate --backend cuda --model $G/model --prompt "Repeat twice: apple" --max-new-tokens 64 > $OUT/generate_cuda.txt 2>/dev/null
cmp -s $G/generate_cpu.txt $OUT/generate_cuda.txt && echo "generate: 64 greedy tokens equal the CPU's: OK" || { echo "generate: FAIL"; diff $G/generate_cpu.txt $OUT/generate_cuda.txt | head -4; }
s train-parity  # the embedded default, 10 steps, f32: CUDA's losses against the CPU's
timeout 45 $C train --backend cuda --steps 10 --out /tmp/w/tp --quiet 2>&1 | tail -2
cp /tmp/w/tp/events.jsonl $OUT/train_parity_cuda.events.jsonl 2>/dev/null
cmpcol <(grep -o '"loss":[^,}]*' $G/train_cpu.events.jsonl | cut -d: -f2) <(grep -o '"loss":[^,}]*' /tmp/w/tp/events.jsonl | cut -d: -f2) 1e-4 "train, 10 steps"
s attention  # the varlen kernel: validated against the dense mask (output, dq, dk, dv), then timed
timeout 60 /tmp/attention --backend cuda --rows 4096,16384,65536 --seq-len 4096 --heads 32 --kv-heads 8 --head-dim 128 --reps 3 --validate-max 4096 --dense-max-bytes 8000000000 2>&1 | tee $OUT/attention.txt | tail -12
s bench-train-small; timeout 90 $C bench train --backend cuda --model small --max-tokens 8192 --examples 400 --steps 30 --out /tmp/w/bs --json > $OUT/bench_train_small.json 2> $OUT/bench_train_small.err; tail -c 600 $OUT/bench_train_small.json; echo
s doctor-smoke; timeout 30 $C doctor --smoke cuda --json > $OUT/doctor_smoke.json 2>&1; tail -c 400 $OUT/doctor_smoke.json; echo
s bf16-vs-f32; for p in f32 bf16; do timeout 30 $C train --backend cuda --model small --steps 20 --precision $p --out /tmp/w/p-$p --quiet --summary-json $OUT/train_$p.json 2>&1 | tail -2; cat $OUT/train_$p.json; echo; done
s bench-memory; timeout 45 $C bench memory --backend cuda --model small --lengths 4096,16384,65536 --activation-checkpointing 2>&1 | tail -6
s bench-loss; timeout 20 $C bench loss --backend cuda --targets 8192 --vocab 32000 2>&1 | tail -4
s done; kill %1 2>/dev/null
for r in /tmp/w/p-f32 /tmp/w/p-bf16; do cp $r/events.jsonl $OUT/$(basename $r).events.jsonl 2>/dev/null; done
ls -la $OUT
