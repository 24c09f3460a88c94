#!/usr/bin/env bash
# GPU session H (2xH200, or 1 with cifar10_b1 alone; after the four DALI part transfers): the fp16 check of the CIFAR-10 recipe runs after the
# float32 scan output fix (spec §3) and the non-finite locator. Side by side, for about 9 minutes:
#   GPU 0 (cores 16-31): cifar10_b1 (diverged at update ~900 under fp16 before the fix)
#   GPU 1 (cores 0-15):  cifar10_s6 (its raw top-1 fell from 44% to 14% at epoch 10 before the fix)
# Brings back each run's log and metrics.jsonl (data_time / step_time per logged update: the data-wait share).
set -uo pipefail
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 WANDB_MODE=disabled TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
T0=$(date +%s)
END=${END:-560}
cat /tmp/dparts/p0 /tmp/dparts/p1 /tmp/dparts/p2 /tmp/dparts/p3 .dali-p4/part > /tmp/d.tar && tar -xf /tmp/d.tar -C /tmp
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site /tmp/whl/*.whl .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD/src:$PWD
mkdir -p /tmp/cifar10 && tar -xzf .cifar/cifar10.tar.gz -C /tmp/cifar10
echo "setup done after $(( $(date +%s) - T0 )) s"
left() { echo $(( END - ($(date +%s) - T0) )); }
export CIFAR10_ROOT=/tmp/cifar10 WORK=/tmp/repro EPOCH_SCALE=${EPOCH_SCALE:-0.5} EVAL_SPECS=eval_fused_bf16 \
  EXTRA="trainer.channels_last=true data.dali_threads=12 trainer.log_every=10"
if [ "$(nvidia-smi -L | wc -l)" -ge 2 ]; then
  GPU_LIST=0 ONLY=cifar10_b1 BUDGET_S=$(left) taskset -c 16-31 bash benchmarks/cifar10_repro.sh train > $OUT/lane_a.log 2>&1 &
  GPU_LIST=1 ONLY=cifar10_s6 BUDGET_S=$(left) taskset -c 0-15 bash benchmarks/cifar10_repro.sh train > $OUT/lane_b.log 2>&1
  wait
else  # one GPU: the run that diverged, alone
  GPU_LIST=0 ONLY=cifar10_b1 BUDGET_S=$(left) bash benchmarks/cifar10_repro.sh train > $OUT/lane_a.log 2>&1
fi
for r in b1 s6; do
  cp /tmp/repro/runs/cifar10_$r/metrics.jsonl $OUT/${r}_metrics.jsonl 2>/dev/null
  grep -vE "Warning|warn\(" /tmp/repro/logs/cifar10_$r.log > $OUT/${r}.log 2>/dev/null
  echo "== $r"; grep -E "epoch [0-9]+/|non-finite loss at|Error|error" /tmp/repro/logs/cifar10_$r.log | head -30
done
echo "call done after $(( $(date +%s) - T0 )) s"
