#!/usr/bin/env bash
# The training step of train.py against bench.py's bare model step, on one GPU, in one call: EXPERIMENT
# (mobilemamba_s6) at its resolution, batch 256, the recipe's fp16 + scaler, EMA, Mixup/CutMix and clipping,
# compiled with CUDA graphs (FAST); first on synthetic device batches, then on ImageNet-like JPEGs through DALI
# (Triton RandAugment, erasing, prefetch thread), where the data wait is the loader's share of the step.
#
#   OUT=DIR bash benchmarks/engine_step.sh      # from the repository root; about 8 minutes on an H200
#
# EXPERIMENT=mobilemamba_s6_kd measures the KD step (TResNet-L-V2 teacher, random weights). JPEGS=0 skips the DALI
# run. Writes $OUT/engine_step.md (img/s and data wait per run) and each run's metrics.jsonl, run.json and log
# under $OUT/<run>/.
set -uo pipefail
. benchmarks/install_deps.sh
OUT=${OUT:?set OUT to the output directory}
EXPERIMENT=${EXPERIMENT:-mobilemamba_s6}
ROOT=${ROOT:-/tmp/imagenet_like}
read -r -a FAST <<<"${FAST:-trainer.compile=true trainer.compile_mode=reduce-overhead}"
mkdir -p "$OUT"
COMMON=(experiment="$EXPERIMENT" data.batch_size=256 trainer.epochs=1 trainer.channels_last=true
        trainer.final_eval=false trainer.eval_max_batches=1 trainer.progress=false trainer.log_every=2 logger=csv
        "${FAST[@]}")
MODEL=${EXPERIMENT#mobilemamba_} KD=false
MODEL=${MODEL%_kd}
[[ $EXPERIMENT == *_kd ]] && KD=true

teacher() {  # CLASSES: a KD run's teacher overrides (TResNet-L-V2 with random weights: the same work per step)
  [ "$KD" = true ] || return 0
  python3 -c "import sys, timm, torch; n = int(sys.argv[1]); torch.save(timm.create_model('tresnet_v2_l', \
num_classes=n).state_dict(), f'/tmp/tresnet_{n}.pth')" "$1"
  echo "distill.teacher_checkpoint=/tmp/tresnet_$1.pth distill.num_classes=$1"
}

train() {  # NAME OVERRIDES...: one train.py run; metrics.jsonl, run.json and the log in $OUT/NAME
  local name=$1; shift
  rm -rf "/tmp/engine_step/$name" && mkdir -p "$OUT/$name"  # a fresh run, never a resumed one
  timeout -k 10 330 python3 train.py "${COMMON[@]}" "$@" "hydra.run.dir=/tmp/engine_step/$name" \
    >"$OUT/$name/train.log" 2>&1
  cp /tmp/engine_step/"$name"/{metrics.jsonl,run.json} "$OUT/$name/" 2>/dev/null
  { echo "### $name"; python3 benchmarks/data_wait.py "$OUT/$name/metrics.jsonl" | tail -1
    python3 -c "import json, sys; print('img/s (median update):', json.load(open(sys.argv[1]))['train_img_per_s'])" \
      "$OUT/$name/run.json"; echo; } >>"$OUT/engine_step.md"
}

nvidia-smi -L | tee "$OUT/device.txt"
echo "# $EXPERIMENT, batch 256, ${FAST[*]}" >"$OUT/engine_step.md"
timeout 300 python3 bench.py "model=$MODEL" mode=train amp=fp16 channels_last=true compile=true \
  compile_mode=reduce-overhead "kd=$KD" "out=$OUT/bench" \
  2>&1 | tail -3 >>"$OUT/engine_step.md"
# shellcheck disable=SC2046  # teacher's overrides are words on purpose
train synthetic data=synthetic data.train_size=20480 trainer.max_iters_per_epoch=40 $(teacher 1000)
if [ "${JPEGS:-1}" = 1 ] && need_dali; then
  [ -d "$ROOT/train" ] ||
    python3 benchmarks/make_imagenet_like.py "$ROOT" --classes 100 --per-class 150 --val-per-class 3
  cat "$ROOT"/train/*/*.JPEG >/dev/null
  # shellcheck disable=SC2046
  train jpegs "data.root=$ROOT" data.loader=dali data.num_classes=100 $(teacher 100)
fi
cat "$OUT/engine_step.md"
