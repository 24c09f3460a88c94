#!/usr/bin/env bash
# GPU session D, call 2 (same warm 4xH200 machine as gpu_session_d.sh; /tmp/site, /tmp/cifar10, /tmp/repro kept):
#   GPUs 0-2: the CIFAR-10 reproduction continues (phase 1 if unfinished, then t2_kd on GPUs 0,1), eval, report
#   GPU 3: the engine's step against bench.py's bare step (synthetic and DALI-fed), then the kernel profile
set -uo pipefail
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 WANDB_MODE=disabled TORCH_SYMM_MEM_DISABLE_MULTICAST=1
export PYTHONPATH=/tmp/site:$PWD/src:$PWD
T0=$(date +%s)
ZC=$(cat /tmp/zc 2>/dev/null || echo true)
(export CUDA_VISIBLE_DEVICES=3; taskset -c 0-15 bash benchmarks/gpu_engine_probe.sh > $OUT/engine_probe.log 2>&1
 timeout 150 taskset -c 0-15 python3 benchmarks/gpu_profile.py --variants t2,s6 --mode infer,train --top 15 > $OUT/profile.md 2>&1) &
PROBE=$!
env CIFAR10_ROOT=/tmp/cifar10 WORK=/tmp/repro EPOCH_SCALE=${EPOCH_SCALE:-0.667} KD_GPUS=0,1 EVAL_SPECS=eval_fused_bf16 \
  GPUS=3 BUDGET_S=$(( ${BUDGET:-545} - ($(date +%s) - T0) )) OUT=$OUT \
  EXTRA="trainer.channels_last=true data.dali_threads=12 data.dali_zero_copy=$ZC" \
  taskset -c 16-63 bash benchmarks/cifar10_repro.sh train eval report > $OUT/repro_e.log 2>&1
tail -40 $OUT/repro_e.log
wait $PROBE
tail -8 $OUT/engine_probe.log
cat $OUT/profile.md | head -120
echo "call done after $(( $(date +%s) - T0 )) s"
