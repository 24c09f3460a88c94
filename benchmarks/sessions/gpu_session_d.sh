#!/usr/bin/env bash
# GPU session D, call 1 of 3 (4xH200, after the four DALI part transfers): install, then side by side
#   GPUs 0-2 (cores 16-63): the CIFAR-10 miniature reproduction, phase 1 (b1, s6, t2 on one GPU each; issue 8)
#   GPU 3 (cores 0-15): the DALI loader ablation (issue 4), then the compile / CUDA-graph speed table (issue 7)
# The reproduction stops itself (checkpoint, exit 75) before the call's 600 s; gpu_session_e.sh continues it.
set -uo pipefail
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 WANDB_MODE=disabled TORCH_SYMM_MEM_DISABLE_MULTICAST=1
T0=$(date +%s)
cat /tmp/dparts/p0 /tmp/dparts/p1 /tmp/dparts/p2 /tmp/dparts/p3 .dali-p4/part > /tmp/d.tar && tar -xf /tmp/d.tar -C /tmp
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site /tmp/whl/*.whl .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD/src:$PWD
mkdir -p /tmp/cifar10 && tar -xzf .cifar/cifar10.tar.gz -C /tmp/cifar10
nvidia-smi -L; python3 -c "import torch, timm, nvidia.dali as d; print('torch', torch.__version__, 'timm', timm.__version__, 'dali', d.__version__)"
echo "setup done after $(( $(date +%s) - T0 )) s"

# the GPU data tests first: the reproduction uses DALI's zero-copy outputs only if they pass
ZC=true
CUDA_VISIBLE_DEVICES=3 timeout 120 python3 -m pytest -q -p no:cacheprovider tests/data/test_data_gpu.py > $OUT/gpu_data_tests.log 2>&1
tail -4 $OUT/gpu_data_tests.log
grep -qE "[0-9]+ passed" $OUT/gpu_data_tests.log && ! grep -qE "[0-9]+ (failed|error)" $OUT/gpu_data_tests.log || ZC=false
echo $ZC > /tmp/zc
echo "GPU data tests done after $(( $(date +%s) - T0 )) s; dali_zero_copy=$ZC"

export REPRO_ENV="CIFAR10_ROOT=/tmp/cifar10 WORK=/tmp/repro EPOCH_SCALE=${EPOCH_SCALE:-0.667} KD_GPUS=0,1 EVAL_SPECS=eval_fused_bf16"
env $REPRO_ENV GPUS=3 BUDGET_S=$(( 540 - ($(date +%s) - T0) )) EXTRA="trainer.channels_last=true data.dali_threads=12 data.dali_zero_copy=$ZC" \
  taskset -c 16-63 bash benchmarks/cifar10_repro.sh train > $OUT/repro_d.log 2>&1 &
REPRO=$!

export CUDA_VISIBLE_DEVICES=3
timeout 230 taskset -c 0-15 bash benchmarks/gpu_dali_bench.sh 2>&1 | tail -25
echo "dali bench done after $(( $(date +%s) - T0 )) s"
timeout $(( 560 - ($(date +%s) - T0) )) taskset -c 0-15 bash benchmarks/gpu_speed.sh 2>&1 | tail -30
echo "speed done after $(( $(date +%s) - T0 )) s"
wait $REPRO
tail -30 $OUT/repro_d.log
cp /tmp/repro/timings.tsv $OUT/ 2>/dev/null
echo "call done after $(( $(date +%s) - T0 )) s"
