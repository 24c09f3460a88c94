#!/usr/bin/env bash
# GPU session A: scan backends (incl. a fresh sm_90 mamba-ssm build), model checks, throughput table, DDP scaling.
set -uo pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH=/tmp/site:$PWD/src:$PWD NCCL_NVLS_ENABLE=0
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
nvidia-smi -L; python3 -c "import torch, triton, timm; print(torch.__version__, triton.__version__, timm.__version__)"
(MAX_JOBS=${MAX_JOBS:-32} bash benchmarks/gpu_build_mamba.sh > $OUT/mamba_build.log 2>&1; echo "BUILD_RC=$?" >> $OUT/mamba_build.log) &
python3 benchmarks/gpu_model_check.py --batch 32 2>&1 | tee $OUT/model_check.log
wait
tail -3 $OUT/mamba_build.log
PYTHONPATH=/tmp/msite:$PYTHONPATH python3 benchmarks/scan.py --backends torch,triton,mamba_ssm 2>&1 | tee $OUT/scan.log
B="warmup=10 iters=20 repeats=5"
python3 bench.py model=t2,t4,s6,b1,b2,b4 mode=infer amp=bf16 fused=true channels_last=true $B out=$OUT/infer 2>&1 | tail -8
python3 bench.py model=s6 mode=infer amp=none,bf16 fused=true,false channels_last=true,false $B out=$OUT/infer_s6 2>&1 | tail -9
python3 bench.py model=t2,s6,b1 mode=train amp=bf16,fp16 channels_last=true $B out=$OUT/train 2>&1 | tail -8
torchrun --nproc_per_node=2 bench.py model=s6 mode=train amp=bf16 $B out=$OUT/ddp2 2>&1 | tail -3
torchrun --nproc_per_node=4 bench.py model=s6 mode=train amp=bf16 $B out=$OUT/ddp4 2>&1 | tail -3
