#!/usr/bin/env bash
# GPU session F, call 2 (same warm 2xH200 machine as gpu_session_f.sh; /tmp/site, /tmp/cifar10, /tmp/repro kept):
#   GPU 0: lane A continues (b1 -> t2_kd), then its evals;  GPU 1: lane B continues (s6 -> t2), its evals, then the
#   speed rows (S6 train step compiled with CUDA graphs; B1/B4 compiled inference) while time is left;
#   then the report, and DDP scaling (S6 train, 1 vs 2 GPUs) if time is left.
set -uo pipefail
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 WANDB_MODE=disabled TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export PYTHONPATH=/tmp/site:$PWD/src:$PWD
T0=$(date +%s)
END=${END:-570}
left() { echo $(( END - ($(date +%s) - T0) )); }
ZC=$(cat /tmp/zc 2>/dev/null || echo true)
export CIFAR10_ROOT=/tmp/cifar10 WORK=/tmp/repro EPOCH_SCALE=${EPOCH_SCALE:-0.5} EVAL_SPECS=eval_fused_bf16 \
  EXTRA="trainer.channels_last=true data.dali_threads=12 data.dali_zero_copy=$ZC"
GPU_LIST=0 ONLY="cifar10_b1 cifar10_t2_kd" BUDGET_S=$(( $(left) - 40 )) taskset -c 16-31 bash benchmarks/cifar10_repro.sh train eval > $OUT/lane_a2.log 2>&1 &
LANE_A=$!
GPU_LIST=1 ONLY="cifar10_s6 cifar10_t2" BUDGET_S=$(( $(left) - 40 )) taskset -c 0-15 bash benchmarks/cifar10_repro.sh train eval > $OUT/lane_b2.log 2>&1
echo "lane B done after $(( $(date +%s) - T0 )) s"
COMMON="batch=256 amp=bf16 channels_last=true scan_backend=triton warmup=10 repeats=3"
export CUDA_VISIBLE_DEVICES=1
for job in "model=s6 mode=train compile=false,true compile_mode=reduce-overhead iters=10 out=$OUT/train_cg" \
           "model=b1,b4 mode=infer fused=true compile=true cuda_graph=true iters=20 out=$OUT/infer_cg" \
           "model=b1,b4 mode=infer fused=true compile=false iters=20 out=$OUT/infer_eager"; do
  t=$(( $(left) - 100 )); [ $t -lt 60 ] && { echo "skipped: $job"; continue; }
  timeout -k 5 $t taskset -c 0-15 python3 bench.py $COMMON $job 2>&1 | grep -E "^\||Error" | tail -6
done
unset CUDA_VISIBLE_DEVICES
wait $LANE_A
echo "lane A done after $(( $(date +%s) - T0 )) s"
tail -15 $OUT/lane_a2.log; tail -8 $OUT/lane_b2.log
BUDGET_S=0 OUT=$OUT bash benchmarks/cifar10_repro.sh report 2>&1 | tail -12
t=$(( $(left) - 5 ))
if [ $t -gt 100 ]; then
  DDP="model=s6 mode=train amp=bf16 channels_last=true batch=256 warmup=10 iters=20 repeats=3"
  CUDA_VISIBLE_DEVICES=0 timeout $((t / 2)) python3 bench.py $DDP out=$OUT/ddp1 2>&1 | grep -E "^\||Error" | tail -3
  timeout $(( $(left) - 5 )) torchrun --nproc_per_node=2 --master_port=29533 bench.py $DDP out=$OUT/ddp2 2>&1 | grep -E "^\||Error" | tail -3
fi
echo "call done after $(( $(date +%s) - T0 )) s"
