#!/usr/bin/env bash
# GPU session L (one H200; carries only .whl; two calls: PART=infer, then PART=train): the #7 rows still missing.
#   infer: fused inference, bf16, channels_last, compiled + CUDA graph, the Haar step as grouped convs (conv) against
#          pixel (un)shuffle + elementwise mix (shuffle, models/wavelet.py): does the fusable form pay? B4 is the one
#          variant short of 2x the reference (1.80x); S6 was last measured before the float32 scan output.
#   train: the training step (AdamW, clip, bf16) of T2 @192 and B1 @256, eager vs compiled + CUDA graphs.
set -uo pipefail
export PYTHONUNBUFFERED=1 WANDB_MODE=disabled
T0=$(date +%s)
[ -d /tmp/site/hydra ] || python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD/src:$PWD
COMMON="batch=256 amp=bf16 channels_last=true scan_backend=triton warmup=10 repeats=3"
case ${PART:-infer} in
  infer) timeout 560 python3 bench.py $COMMON model=b4,s6 mode=infer fused=true compile=true cuda_graph=true iters=20 \
           wavelet=conv,shuffle out=$OUT/infer_haar 2>&1 | grep -E "^\||Error|^model|^mobilemamba" | tail -8 ;;
  train) timeout 560 python3 bench.py $COMMON model=t2,b1 mode=train compile=false,true compile_mode=reduce-overhead \
           iters=10 out=$OUT/train_cg 2>&1 | grep -E "^\||Error|^model|^mobilemamba" | tail -8 ;;
esac
echo "call done after $(( $(date +%s) - T0 )) s"
