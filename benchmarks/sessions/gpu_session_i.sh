#!/usr/bin/env bash
# GPU session I (2xH200, warm or fresh; needs only .whl): issue 7's remaining rows, in about 6 minutes.
#   1. DDP scaling: S6 training step, bf16, channels_last, batch 256 per GPU: 1 GPU, then torchrun 2 GPUs.
#   2. side by side: GPU 1: S6 training step eager vs compile=true compile_mode=reduce-overhead (CUDA graphs);
#                    GPU 0: B1 and B4 fused inference, eager, then compiled + CUDA graph.
set -uo pipefail
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 WANDB_MODE=disabled TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
T0=$(date +%s)
END=${END:-370}
left() { echo $(( END - ($(date +%s) - T0) )); }
[ -d /tmp/site/hydra ] || python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD/src:$PWD
nvidia-smi -L
NGPU=$(nvidia-smi -L | wc -l)
if [ "$NGPU" -ge 2 ]; then
DDP="model=s6 mode=train amp=bf16 channels_last=true batch=256 warmup=10 iters=20 repeats=3"
CUDA_VISIBLE_DEVICES=0 timeout 80 python3 bench.py $DDP out=$OUT/ddp1 2>&1 | grep -E "^\||Error" | tail -2
timeout 90 torchrun --nproc_per_node=2 --master_port=29533 bench.py $DDP out=$OUT/ddp2 2>&1 | grep -E "^\||Error" | tail -2
echo "DDP done after $(( $(date +%s) - T0 )) s"
fi
COMMON="batch=256 amp=bf16 channels_last=true scan_backend=triton warmup=10 repeats=3"
if [ "$NGPU" -lt 2 ]; then  # one GPU: the rows one after another
  timeout $(( $(left) / 2 )) python3 bench.py $COMMON model=s6 mode=train compile=false,true compile_mode=reduce-overhead iters=10 out=$OUT/train_cg > $OUT/train_cg.log 2>&1
  timeout 50 python3 bench.py $COMMON model=b1,b4 mode=infer fused=true iters=20 out=$OUT/infer_eager > $OUT/infer_eager.log 2>&1
  timeout $(left) python3 bench.py $COMMON model=b1,b4 mode=infer fused=true compile=true cuda_graph=true iters=20 out=$OUT/infer_cg > $OUT/infer_cg.log 2>&1
else
(CUDA_VISIBLE_DEVICES=1 TORCHINDUCTOR_COMPILE_THREADS=14 timeout $(left) taskset -c 0-15 python3 bench.py $COMMON \
   model=s6 mode=train compile=false,true compile_mode=reduce-overhead iters=10 out=$OUT/train_cg > $OUT/train_cg.log 2>&1) &
(export CUDA_VISIBLE_DEVICES=0 TORCHINDUCTOR_COMPILE_THREADS=14
 timeout 60 taskset -c 16-31 python3 bench.py $COMMON model=b1,b4 mode=infer fused=true iters=20 out=$OUT/infer_eager > $OUT/infer_eager.log 2>&1
 timeout $(left) taskset -c 16-31 python3 bench.py $COMMON model=b1,b4 mode=infer fused=true compile=true cuda_graph=true iters=20 \
   out=$OUT/infer_cg > $OUT/infer_cg.log 2>&1) &
wait
fi
for f in train_cg infer_eager infer_cg; do grep -E "^\||Error" $OUT/$f.log | tail -4; done
echo "call done after $(( $(date +%s) - T0 )) s"
