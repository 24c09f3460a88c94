#!/usr/bin/env bash
# GPU session J (one H200 is enough; needs only .whl; 6 files come back): the CUDA-graph training step inside the engine (issue 7).
#   1. train.py, S6 @224, synthetic data (same seed, same batches), bf16, channels_last, batch 256, 60 updates logged
#      one by one: eager vs trainer.compile=true trainer.compile_mode=reduce-overhead -> benchmarks/overlay.py
#      (loss curves overlaid, largest relative difference, engine img/s of each).
#   2. bench.py training step eager vs compiled + CUDA graphs for T2 @192 and B1 @256 (S6 was measured in session I).
set -uo pipefail
export PYTHONUNBUFFERED=1 WANDB_MODE=disabled
T0=$(date +%s)
[ -d /tmp/site/hydra ] || python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD/src:$PWD
RUN="experiment=mobilemamba_s6 data=synthetic data.batch_size=256 data.train_size=15360 data.val_size=256 trainer.epochs=1
     trainer.amp=bf16 trainer.channels_last=true trainer.final_eval=false trainer.progress=false trainer.log_every=1 logger=csv"
timeout 150 python3 train.py $RUN hydra.run.dir=/tmp/s6_eager > $OUT/s6_eager.log 2>&1
timeout 240 python3 train.py $RUN trainer.compile=true trainer.compile_mode=reduce-overhead hydra.run.dir=/tmp/s6_graphs \
  > $OUT/s6_graphs.log 2>&1
grep -hE "Error|error" $OUT/s6_eager.log $OUT/s6_graphs.log | tail -4
python3 benchmarks/overlay.py /tmp/s6_eager /tmp/s6_graphs --labels eager,cuda-graphs --out $OUT/overlay_s6.png
echo "overlay done after $(( $(date +%s) - T0 )) s"
timeout $(( 560 - ($(date +%s) - T0) )) python3 bench.py batch=256 amp=bf16 channels_last=true scan_backend=triton warmup=10 \
  repeats=3 iters=10 model=t2,b1 mode=train compile=false,true compile_mode=reduce-overhead out=$OUT/train_cg 2>&1 \
  | grep -E "^\||Error" | tail -6
for r in s6_eager s6_graphs; do cp /tmp/$r/metrics.jsonl $OUT/${r}_metrics.jsonl 2>/dev/null; done
echo "call done after $(( $(date +%s) - T0 )) s"
