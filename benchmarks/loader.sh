#!/usr/bin/env bash
# Train-loader throughput on one GPU (python -m mobilemamba.data.bench): 15,000 ImageNet-like JPEGs (~500x375,
# benchmarks/make_imagenet_like.py, page-cached), batch 256, 224 px, 16 cores (taskset), 5 warm-up + 40 timed
# batches per row, no epoch restart inside the timing. Rows, side by side in one run: the torch loader (16 workers);
# DALI with the full recipe (the default: Triton RandAugment, prefetch thread); the same without the thread and
# with the torch-ops RandAugment; DALI without RandAugment and decoding only (the ceilings).
#
#   OUT=DIR bash benchmarks/loader.sh           # from the repository root; about 3 minutes on an H200
#
# KNOBS=1 measures the DALI knobs instead (whole-image decoding, hardware-decoder share 0.75 / 1.0, prefetch 6), with
# the ceilings and the full row twice for the noise. ROOT (/tmp/imagenet_like) keeps the JPEGs between calls.
# Writes $OUT/loader.md.
set -uo pipefail
. benchmarks/install_deps.sh
need_dali || exit 0
OUT=${OUT:?set OUT to the output directory}
ROOT=${ROOT:-/tmp/imagenet_like}
mkdir -p "$OUT"
VARIANTS=full,full+dali_thread=false,full+randaug_kernels=torch,no-randaug+dali_thread=false,\
decode-only+dali_thread=false
[ "${KNOBS:-0}" = 1 ] && VARIANTS=full,full+dali_roi_decode=false,full+dali_hw_decoder_load=0.75,\
full+dali_hw_decoder_load=1.0,full+dali_prefetch=6,no-randaug+dali_thread=false,decode-only+dali_thread=false,full

nvidia-smi -L | tee "$OUT/device.txt"
python3 -c "import torch, nvidia.dali as d; print('torch', torch.__version__, 'dali', d.__version__)" \
  | tee -a "$OUT/device.txt"
[ -d "$ROOT/train" ] || python3 benchmarks/make_imagenet_like.py "$ROOT" --classes 100 --per-class 150 --val-per-class 3
cat "$ROOT"/train/*/*.JPEG >/dev/null  # page cache: every row reads from memory
timeout 300 taskset -c 0-15 python3 -m mobilemamba.data.bench "$ROOT" --batch 256 --img-size 224 --threads 16 \
  --workers 16 --device cuda --loaders torch,dali --warmup 5 --iters 40 --variants "$VARIANTS" --out "$OUT/loader.md"
cat "$OUT/loader.md"
