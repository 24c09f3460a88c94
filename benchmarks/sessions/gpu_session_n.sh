#!/usr/bin/env bash
# GPU session N (one H200; five calls back to back, call K carrying .dali-p(K-1), call 1 also .whl), the last
# minutes of the session's device time, after session M found the batched RandAugment host-bound on the main thread:
#   PART=1    DALI part 0; wheels; 15,000 ImageNet-like JPEGs in /tmp/inl
#   PART=2-4  DALI parts 1-3
#   PART=5    DALI assembled + installed; GPU data tests (the prefetch thread on CUDA); loader bench with the new
#             defaults (RandAugment batched in torch, prefetch thread, dali_prefetch 4) vs no thread, and without
#             RandAugment; then S6 @224 in train.py on those JPEGs, fp16 recipe, CUDA graphs: data wait per step.
#             metrics.jsonl is copied to $OUT every 5 s, so a call cut short by its limit still returns what it logged.
set -uo pipefail
export PYTHONUNBUFFERED=1 WANDB_MODE=disabled
T0=$(date +%s)
PART=${PART:-1}
. benchmarks/sessions/dali_parts.sh
if [ "$PART" = 1 ]; then
  python3 benchmarks/make_imagenet_like.py /tmp/inl --classes 100 --per-class 150 --val-per-class 3 2>&1 | tail -1
fi
if [ "$PART" = 5 ]; then
  assemble_dali
  echo "setup done after $(( $(date +%s) - T0 )) s"
  timeout 60 python3 -m pytest -q -p no:cacheprovider tests/data/test_data_gpu.py tests/data/test_data_prefetch.py 2>&1 | tail -1
  cat /tmp/inl/train/*/*.JPEG > /dev/null
  timeout 90 taskset -c 0-15 python3 -m mobilemamba.data.bench /tmp/inl --batch 256 --img-size 224 --threads 16 \
    --device cuda --loaders dali --warmup 5 --iters 30 --torch-img-s 4140 --out $OUT/loader_dali.md \
    --variants full,full+dali_thread=false,no-randaug 2>&1 | grep -E "Error" | tail -2
  grep '^| dali' $OUT/loader_dali.md
  echo "bench done after $(( $(date +%s) - T0 )) s"
  mkdir -p $OUT/s6_dali
  (while sleep 5; do cp /tmp/s6_dali/metrics.jsonl $OUT/s6_dali/ 2>/dev/null; done) &
  RUN="experiment=mobilemamba_s6 data.root=/tmp/inl data.loader=dali data.num_classes=100 data.batch_size=256
       trainer.epochs=1 trainer.compile=true trainer.compile_mode=reduce-overhead trainer.channels_last=true
       trainer.final_eval=false trainer.eval_max_batches=1 trainer.progress=false trainer.log_every=2 logger=csv"
  timeout 400 python3 train.py $RUN hydra.run.dir=/tmp/s6_dali > $OUT/s6_dali/train.log 2>&1
  cp /tmp/s6_dali/metrics.jsonl /tmp/s6_dali/run.json $OUT/s6_dali/ 2>/dev/null
  grep -E "Error|error" $OUT/s6_dali/train.log | tail -3
  python3 benchmarks/data_wait.py /tmp/s6_dali/metrics.jsonl
fi
echo "call done after $(( $(date +%s) - T0 )) s"
