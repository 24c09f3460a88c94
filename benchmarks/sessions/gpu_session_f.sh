#!/usr/bin/env bash
# GPU session F, call 1 of 2 (2xH200, after the four DALI part transfers): install, GPU data tests, then side by side
#   GPU 0 (cores 16-31): CIFAR-10 miniature reproduction, lane A: b1 -> t2_kd (issue 8)
#   GPU 1 (cores 0-15):  the DALI loader ablation (issue 4), then lane B: s6 -> t2
# Runs stop themselves (checkpoint, exit 75) before the call's 600 s; gpu_session_g.sh continues them.
set -uo pipefail
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 WANDB_MODE=disabled TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
T0=$(date +%s)
END=${END:-565}  # seconds after T0 by which every run has checkpointed and stopped
cat /tmp/dparts/p0 /tmp/dparts/p1 /tmp/dparts/p2 /tmp/dparts/p3 .dali-p4/part > /tmp/d.tar && tar -xf /tmp/d.tar -C /tmp
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site /tmp/whl/*.whl .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD/src:$PWD
mkdir -p /tmp/cifar10 && tar -xzf .cifar/cifar10.tar.gz -C /tmp/cifar10
nvidia-smi -L; nproc; python3 -c "import torch, timm, nvidia.dali as d; print('torch', torch.__version__, 'timm', timm.__version__, 'dali', d.__version__)"
echo "setup done after $(( $(date +%s) - T0 )) s"

# the GPU data tests first: the reproduction uses DALI's zero-copy outputs only if they pass
ZC=true
CUDA_VISIBLE_DEVICES=1 timeout 120 taskset -c 0-15 python3 -m pytest -q -p no:cacheprovider tests/data/test_data_gpu.py > $OUT/gpu_data_tests.log 2>&1
tail -3 $OUT/gpu_data_tests.log
grep -qE "[0-9]+ passed" $OUT/gpu_data_tests.log && ! grep -qE "[0-9]+ (failed|error)" $OUT/gpu_data_tests.log || ZC=false
echo $ZC > /tmp/zc
echo "GPU data tests done after $(( $(date +%s) - T0 )) s; dali_zero_copy=$ZC"

left() { echo $(( END - ($(date +%s) - T0) )); }
export CIFAR10_ROOT=/tmp/cifar10 WORK=/tmp/repro EPOCH_SCALE=${EPOCH_SCALE:-0.5} EVAL_SPECS=eval_fused_bf16 \
  EXTRA="trainer.channels_last=true data.dali_threads=12 data.dali_zero_copy=$ZC"
GPU_LIST=0 ONLY="cifar10_b1 cifar10_t2_kd" BUDGET_S=$(left) taskset -c 16-31 bash benchmarks/cifar10_repro.sh train > $OUT/lane_a1.log 2>&1 &
LANE_A=$!

(export CUDA_VISIBLE_DEVICES=1; OUT=$OUT DEADLINE=215 timeout 240 taskset -c 0-15 bash benchmarks/gpu_dali_bench.sh > /dev/null 2>&1)
cat $OUT/dali_bench.md
echo "dali bench done after $(( $(date +%s) - T0 )) s"
GPU_LIST=1 ONLY="cifar10_s6 cifar10_t2" BUDGET_S=$(left) taskset -c 0-15 bash benchmarks/cifar10_repro.sh train > $OUT/lane_b1.log 2>&1
wait $LANE_A
tail -12 $OUT/lane_a1.log; tail -12 $OUT/lane_b1.log
cp /tmp/repro/timings.tsv $OUT/ 2>/dev/null
grep -h "epoch " /tmp/repro/logs/*.log | tail -8
echo "call done after $(( $(date +%s) - T0 )) s"
