#!/usr/bin/env bash
# The training fast path on one H200: bench.py's compiled step against train.py's default path (trainer.compile=auto:
# the whole model compiled with CUDA graphs) on synthetic batches, and the checks of the update on CUDA.
#   bash benchmarks/fast_path.sh OUT            # both parts (~10 min: two device calls of PART=1 then PART=2)
#   PART=1 bash benchmarks/fast_path.sh OUT     # the table: bench.py vs train.py, S6 @224, T2 @192, B1 @256, S6 KD
#   PART=2 bash benchmarks/fast_path.sh OUT     # CUDA tests; default path vs eager overlay with a resume across
#                                               # paths; trainer.capture=update against the default path
# Run from the repository root; carried wheels (.whl/) are installed when present. Everything lands under OUT.
set -uo pipefail
OUT=${1:?usage: bash benchmarks/fast_path.sh OUT}
PART=${PART:-all}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 WANDB_MODE=disabled
[ -d .whl ] && . benchmarks/sessions/dali_parts.sh
export PYTHONPATH=${PYTHONPATH:-$PWD/src:$PWD}
T0=$(date +%s)
said() { echo "[$(( $(date +%s) - T0 )) s] $*"; }
SYNTH="data=synthetic data.batch_size=256 data.train_size=15360 trainer.epochs=1 trainer.channels_last=true
  trainer.final_eval=false trainer.eval_max_batches=1 trainer.progress=false logger=csv"

train() {  # NAME, then train.py overrides: the default path, 60 updates, trainer.profile over 20 of them
  local name=$1; shift
  timeout 300 python3 train.py $SYNTH trainer.max_iters_per_epoch=60 trainer.log_every=20 trainer.profile=20 \
    hydra.run.dir=/tmp/fp_$name "$@" > "$OUT/train_$name.log" 2>&1 || said "train_$name failed: $(grep -E 'Error|error' "$OUT/train_$name.log" | tail -2)"
  mkdir -p "$OUT/train_$name" && cp /tmp/fp_$name/{metrics.jsonl,profile_summary.txt,profile_ops.txt} "$OUT/train_$name/" 2>/dev/null
  said "train_$name: $(grep -h '"startup"' /tmp/fp_$name/metrics.jsonl | head -1)"
}

if [ "$PART" = all ] || [ "$PART" = 1 ]; then
  # bench.py's compiled steps, four processes compiling at once, taking turns on the GPU (gpu_lock)
  BENCH="mode=train amp=fp16 channels_last=true compile=true compile_mode=reduce-overhead gpu_lock=/tmp/fp_gpu.lock"
  for row in "s6 model=s6" "t2 model=t2 img_size=192" "b1 model=b1 img_size=256" "s6_kd model=s6 kd=true"; do
    set -- $row
    name=$1; shift
    timeout 480 python3 bench.py $BENCH "$@" out="$OUT/bench_$name" > "$OUT/bench_$name.log" 2>&1 &
  done
  wait
  said "bench done"; tail -n 2 "$OUT"/bench_*.log
  train s6 experiment=mobilemamba_s6
  train t2 experiment=mobilemamba_t2
  train b1 experiment=mobilemamba_b1
  train s6_kd experiment=mobilemamba_s6_kd distill.teacher_checkpoint=null  # TResNet-L-V2, random weights
  python3 benchmarks/fast_path_table.py "$OUT" | tee "$OUT/table.md"
fi

if [ "$PART" = all ] || [ "$PART" = 2 ]; then
  timeout 400 python3 -m pytest -q -p no:cacheprovider tests/engine/test_step_cuda.py > "$OUT/cuda_tests.log" 2>&1
  said "CUDA tests: $(tail -n 1 "$OUT/cuda_tests.log")"
  # the default path stopped after update 20 (exit 75), resumed EAGER from its checkpoint to update 40; against eager
  LOSSES="$SYNTH experiment=mobilemamba_s6 trainer.max_iters_per_epoch=40 trainer.log_every=1"
  timeout 200 python3 train.py $LOSSES trainer.compile=false hydra.run.dir=/tmp/fp_eager > "$OUT/eager.log" 2>&1
  timeout 300 python3 train.py $LOSSES trainer.debug.stop_at=19 hydra.run.dir=/tmp/fp_cross > "$OUT/cross1.log" 2>&1
  said "default path stopped with exit $? (75 expected)"
  timeout 200 python3 train.py $LOSSES trainer.debug.stop_at=19 trainer.compile=false hydra.run.dir=/tmp/fp_cross \
    > "$OUT/cross2.log" 2>&1; said "eager resume exit $?"
  python3 benchmarks/overlay.py /tmp/fp_eager /tmp/fp_cross --labels eager,default-then-eager --skip 2 \
    --out "$OUT/overlay.png" | tee "$OUT/overlay.md"
  grep -h '"resume"' /tmp/fp_cross/metrics.jsonl
  # the whole update as one CUDA graph, against the default path (train_s6 of PART=1)
  train s6_update experiment=mobilemamba_s6 trainer.capture=update
  python3 benchmarks/fast_path_table.py "$OUT" --names s6,s6_update | tee "$OUT/capture.md"
fi
said "done"
