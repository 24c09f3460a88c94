#!/usr/bin/env bash
# train.py's update against bench.py's bare compiled step, on one GPU, side by side: bench.py's compiled training step
# (fp16 + scaler, CUDA graphs), then train.py's default path (trainer.compile=auto, trainer.capture=auto: the update
# captured whole) with the published recipe (EMA, Mixup/CutMix, clipping, fp16) on synthetic device batches, then on
# ImageNet-like JPEGs through DALI (Triton RandAugment, erasing, the prefetch thread). Batch 256, channels_last, each
# model at its own resolution.
#
#   OUT=DIR bash benchmarks/engine_step.sh      # from the repository root; S6 alone: about 8 minutes on an H200
#
# MODELS: any of s6 t2 b1 s6_kd (default s6; s6_kd: the S6† step, TResNet-L-V2 teacher with random weights).
# STAGES: any of bench synthetic jpegs (default all three; jpegs needs DALI: benchmarks/install_deps.sh).
# EXTRA: train.py overrides for every run (e.g. trainer.capture=update). bench.py processes compile at once and take
# turns on the GPU. train.py: 60 updates on synthetic batches, one epoch of 15,000 JPEGs (58 updates), read back every
# 20, trainer.profile over updates 13-32. Writes OUT/table.md (benchmarks/engine_step_table.py: img/s, × bench, ms per
# update with kernel and profiled wall time, data wait, compile + capture s) and each run's files under OUT/.
set -uo pipefail
. benchmarks/install_deps.sh
OUT=${OUT:?set OUT to the output directory}
MODELS=${MODELS:-s6}
STAGES=${STAGES:-bench synthetic jpegs}
ROOT=${ROOT:-/tmp/imagenet_like}
read -r -a EXTRA_ARGS <<<"${EXTRA:-}"
mkdir -p "$OUT"
T0=$SECONDS
said() { echo "[$((SECONDS - T0)) s] $*"; }
RUN=(data.batch_size=256 trainer.epochs=1 sched.warmup_epochs=0 trainer.channels_last=true trainer.log_every=20
     trainer.profile=20 trainer.final_eval=false trainer.eval_max_batches=1 trainer.progress=false logger=csv)

experiment() {  # MODEL CLASSES: its experiment and, for s6_kd, the random-weight teacher with CLASSES outputs
  case $1 in
    s6_kd) echo "experiment=mobilemamba_s6_kd distill.teacher_checkpoint=null distill.num_classes=$2" ;;
    *) echo "experiment=mobilemamba_$1" ;;
  esac
}

train() {  # NAME MODEL CLASSES OVERRIDES...: one fresh train.py run; its files and log in OUT/train_NAME
  local name=$1 model=$2 classes=$3; shift 3
  rm -rf "/tmp/engine_step/$name"; mkdir -p "$OUT/train_$name"
  # shellcheck disable=SC2046  # experiment's overrides are words on purpose
  timeout -k 10 360 python3 train.py $(experiment "$model" "$classes") "data.num_classes=$classes" "${RUN[@]}" "$@" \
    "${EXTRA_ARGS[@]}" \
    "hydra.run.dir=/tmp/engine_step/$name" >"$OUT/train_$name/train.log" 2>&1 || said "train_$name: exit $?"
  cp /tmp/engine_step/"$name"/{metrics.jsonl,run.json,profile_summary.txt} "$OUT/train_$name/" 2>/dev/null
  said "train_$name: $(grep -h '"startup"' "/tmp/engine_step/$name/metrics.jsonl" 2>/dev/null | head -1)"
}

nvidia-smi -L | tee "$OUT/device.txt"
if [[ " $STAGES " == *" bench "* ]]; then
  for m in $MODELS; do
    kd=false; [ "$m" = s6_kd ] && kd=true
    timeout -k 10 420 python3 bench.py "model=${m%_kd}" mode=train amp=fp16 channels_last=true compile=true \
      compile_mode=reduce-overhead "kd=$kd" "gpu_lock=$OUT/gpu.lock" "out=$OUT/bench_$m" >"$OUT/bench_$m.log" 2>&1 &
  done
  wait
  said "bench.py done"
fi
if [[ " $STAGES " == *" synthetic "* ]]; then
  for m in $MODELS; do train "$m" "$m" 1000 data=synthetic data.train_size=15360 trainer.max_iters_per_epoch=60; done
fi
if [[ " $STAGES " == *" jpegs "* ]] && need_dali; then
  [ -d "$ROOT/train" ] || python3 benchmarks/make_imagenet_like.py "$ROOT" --classes 100 --per-class 150 --val-per-class 3
  cat "$ROOT"/train/*/*.JPEG >/dev/null  # page-cached: the loader, not the disk, is measured
  for m in $MODELS; do train "${m}_jpegs" "$m" 100 "data.root=$ROOT" data.loader=dali; done
fi
python3 benchmarks/engine_step_table.py "$OUT" | tee "$OUT/table.md"
