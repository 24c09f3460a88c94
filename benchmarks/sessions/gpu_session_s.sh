#!/usr/bin/env bash
# GPU session S (one H200; five calls back to back, call K carrying .dali-p(K-1), call 1 also .whl): the batched
# RandAugment as two Triton kernels per layer (data/randaug_kernels.py) instead of ~480 torch launches.
#   PART=1-4  DALI parts 0-3 (and the wheels)
#   PART=5    DALI assembled; the RandAugment tests on the GPU (Triton against timm/PIL and against the torch ops);
#             randaug_probe.py (torch vs Triton, host and GPU ms per call); the loader bench in one run: torch loader,
#             DALI full recipe with Triton (thread on / off), with the torch ops (thread on, the old default), and
#             without RandAugment (thread off, the ceiling); then the GPU data tests
#   STAGE=b (a second five-call chain, PART=5 with STAGE=b): how far the DALI side goes (ROI vs whole decoding,
#             hardware-decoder share, prefetch; the full recipe twice for the noise; no-RandAugment and decode-only
#             ceilings), then S6 in train.py on the JPEGs through DALI with the Triton RandAugment: data wait per step
#   STAGE=d   (PART=0, one call, no DALI) the final kernels: RandAugment tests, the compile test, randaug_probe.py
#   STAGE=c   S6 in train.py on DALI twice in one call: Python's GIL switch interval at its default 5 ms, then 0.5 ms
#             (b: the step is 40.4 ms with DALI against 29.9 ms on synthetic batches; is it the GIL hand-off?)
set -uo pipefail
export PYTHONUNBUFFERED=1 WANDB_MODE=disabled
T0=$(date +%s)
PART=${PART:-1}
. benchmarks/sessions/dali_parts.sh
# S6 in train.py on the JPEGs through DALI (stages b and c), as in session N
S6_DALI="experiment=mobilemamba_s6 data.root=/tmp/inl data.loader=dali data.num_classes=100 data.batch_size=256
  trainer.epochs=1 trainer.compile=true trainer.compile_mode=reduce-overhead trainer.channels_last=true
  trainer.final_eval=false trainer.eval_max_batches=1 trainer.progress=false trainer.log_every=2 logger=csv"
if [ "${STAGE:-a}" = d ]; then  # one call, no DALI: the final kernels (after review) on the GPU
  python3 -c "import triton, torch; print('triton', triton.__version__, 'torch', torch.__version__)"
  timeout 200 python3 -m pytest -q -p no:cacheprovider tests/data/test_data_batch_randaug.py \
    tests/data/test_data_randaug_kernels.py 2>&1 | tail -1
  timeout 120 python3 benchmarks/randaug_probe.py > $OUT/randaug_probe_final.md 2>&1; tail -9 $OUT/randaug_probe_final.md
elif [ "$PART" = 5 ] && [ "${STAGE:-a}" = b ]; then
  assemble_dali
  [ -d /tmp/inl/train ] || python3 benchmarks/make_imagenet_like.py /tmp/inl --classes 100 --per-class 150 --val-per-class 3 2>&1 | tail -1
  cat /tmp/inl/train/*/*.JPEG > /dev/null
  echo "data ready after $(( $(date +%s) - T0 )) s"
  timeout 240 taskset -c 0-15 python3 -m mobilemamba.data.bench /tmp/inl --batch 256 --img-size 224 --threads 16 \
    --device cuda --loaders torch,dali --warmup 5 --iters 40 --out $OUT/loader_ceiling.md \
    --variants full,full+dali_roi_decode=false,full+dali_hw_decoder_load=0.75,full+dali_hw_decoder_load=1.0,\
full+dali_prefetch=6,no-randaug+dali_thread=false,decode-only+dali_thread=false,full 2>&1 | grep -E "Error|error" | tail -3
  grep -E '^\| (dali|torch)' $OUT/loader_ceiling.md
  echo "loader done after $(( $(date +%s) - T0 )) s"
  mkdir -p $OUT/s6_dali
  (while sleep 5; do cp /tmp/s6_dali/metrics.jsonl $OUT/s6_dali/ 2>/dev/null; done) &
  timeout 330 python3 train.py $S6_DALI hydra.run.dir=/tmp/s6_dali > $OUT/s6_dali/train.log 2>&1
  cp /tmp/s6_dali/metrics.jsonl $OUT/s6_dali/ 2>/dev/null
  grep -E "Error|error" $OUT/s6_dali/train.log | tail -3
  python3 benchmarks/data_wait.py /tmp/s6_dali/metrics.jsonl
elif [ "$PART" = 5 ] && [ "${STAGE:-a}" = c ]; then
  assemble_dali
  [ -d /tmp/inl/train ] || python3 benchmarks/make_imagenet_like.py /tmp/inl --classes 100 --per-class 150 --val-per-class 3 2>&1 | tail -1
  cat /tmp/inl/train/*/*.JPEG > /dev/null
  for SWITCH_MS in 5 0.5; do  # Python's default GIL switch interval, then a tenth of it
    R=/tmp/s6_switch_$SWITCH_MS; mkdir -p $OUT/s6_switch_$SWITCH_MS
    timeout 270 python3 -c "import runpy, sys; sys.setswitchinterval($SWITCH_MS / 1000); sys.argv = ['train.py'] + sys.argv[1:]
runpy.run_path('train.py', run_name='__main__')" $S6_DALI hydra.run.dir=$R > $OUT/s6_switch_$SWITCH_MS/train.log 2>&1
    cp $R/metrics.jsonl $OUT/s6_switch_$SWITCH_MS/ 2>/dev/null
    grep -E "Error|error" $OUT/s6_switch_$SWITCH_MS/train.log | tail -3
    echo "switch interval $SWITCH_MS ms:"; python3 benchmarks/data_wait.py $R/metrics.jsonl | tail -1
    echo "run done after $(( $(date +%s) - T0 )) s"
  done
elif [ "$PART" = 5 ]; then
  assemble_dali
  python3 -c "import triton, torch; print('triton', triton.__version__, 'torch', torch.__version__)"
  timeout 200 python3 -m pytest -q -p no:cacheprovider tests/data/test_data_batch_randaug.py 2>&1 | tail -4
  echo "randaug tests done after $(( $(date +%s) - T0 )) s"
  timeout 120 python3 benchmarks/randaug_probe.py > $OUT/randaug_probe.md 2>&1; cat $OUT/randaug_probe.md | tail -12
  [ -d /tmp/inl/train ] || python3 benchmarks/make_imagenet_like.py /tmp/inl --classes 100 --per-class 150 --val-per-class 3 2>&1 | tail -1
  cat /tmp/inl/train/*/*.JPEG > /dev/null
  echo "data ready after $(( $(date +%s) - T0 )) s"
  timeout 240 taskset -c 0-15 python3 -m mobilemamba.data.bench /tmp/inl --batch 256 --img-size 224 --threads 16 \
    --device cuda --loaders torch,dali --warmup 5 --iters 40 --out $OUT/loader_triton.md \
    --variants full,full+dali_thread=false,full+randaug_kernels=torch,no-randaug+dali_thread=false 2>&1 \
    | grep -E "Error|error" | tail -3
  grep -E '^\| (dali|torch)' $OUT/loader_triton.md
  echo "loader done after $(( $(date +%s) - T0 )) s"
  timeout 150 python3 -m pytest -q -p no:cacheprovider tests/data -x 2>&1 | tail -3
fi
echo "call done after $(( $(date +%s) - T0 )) s"
