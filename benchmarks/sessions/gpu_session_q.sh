#!/usr/bin/env bash
# GPU session Q (one H200; five calls back to back, call K carrying .dali-p(K-1), call 1 also .whl), after session P
# found the S6 step in train.py at 41.1 ms on synthetic batches against the bare bench step's 25.6 ms:
#   PART=1-4  DALI parts 0-3 (and the wheels)
#   PART=5    DALI assembled; 15,000 ImageNet-like JPEGs; the loader with and without the prefetch thread, with and
#             without RandAugment, in one run (P: the thread helped the full tail, the no-RandAugment row fell);
#             then trainer.profile=5 on S6 (plain recipe) and S6 KD, on synthetic device batches, fp16, CUDA graphs
set -uo pipefail
export PYTHONUNBUFFERED=1 WANDB_MODE=disabled
T0=$(date +%s)
PART=${PART:-1}
. benchmarks/sessions/dali_parts.sh
. benchmarks/sessions/profile_run.sh
if [ "$PART" = 5 ]; then
  assemble_dali
  python3 benchmarks/make_imagenet_like.py /tmp/inl --classes 100 --per-class 150 --val-per-class 3 2>&1 | tail -1
  cat /tmp/inl/train/*/*.JPEG > /dev/null
  timeout 150 taskset -c 0-15 python3 -m mobilemamba.data.bench /tmp/inl --batch 256 --img-size 224 --threads 16 \
    --device cuda --loaders dali --warmup 5 --iters 40 --torch-img-s 4723 --out $OUT/loader_thread.md \
    --variants no-randaug,no-randaug+dali_thread=false,full,full+dali_thread=false 2>&1 | grep -E "Error" | tail -2
  grep '^| dali' $OUT/loader_thread.md
  echo "loader done after $(( $(date +%s) - T0 )) s"
  profile_run prof_s6 experiment=mobilemamba_s6
  python3 -c "import timm, torch; torch.save(timm.create_model('tresnet_v2_l').state_dict(), '/tmp/tresnet.pth')"
  profile_run prof_s6_kd experiment=mobilemamba_s6_kd distill.teacher_checkpoint=/tmp/tresnet.pth
fi
echo "call done after $(( $(date +%s) - T0 )) s"
