#!/usr/bin/env bash
# GPU session K, call 1 of 5+ (one H200; carries .dali-p0 and .whl): copies the first DALI part, installs the
# wheels, and checks the CUDA-graph train step inside the engine on the CIFAR-10 recipe's own setting before the
# reproduction relies on it: cifar10_b1 @128 px, fp16 + GradScaler, channels_last, synthetic batches (same seed,
# same data), 40 updates logged one by one, eager vs trainer.compile=true trainer.compile_mode=reduce-overhead ->
# benchmarks/overlay.py (loss curves overlaid, largest relative difference, engine img/s of each).
# Leaves /tmp/compile_mode (reduce-overhead when the graphed run finished, else none) for gpu_session_k.sh.
set -uo pipefail
export PYTHONUNBUFFERED=1 WANDB_MODE=disabled
T0=$(date +%s)
mkdir -p /tmp/dparts && cp .dali-p0/part /tmp/dparts/p0
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD/src:$PWD
RUN="experiment=cifar10_b1 data.loader=synthetic +data.train_size=10240 +data.val_size=250 trainer.epochs=1
     trainer.channels_last=true trainer.final_eval=false trainer.progress=false trainer.log_every=1 logger=csv"
timeout 150 python3 train.py $RUN hydra.run.dir=/tmp/b1_eager > $OUT/b1_eager.log 2>&1
echo "eager done after $(( $(date +%s) - T0 )) s"
timeout 300 python3 train.py $RUN trainer.compile=true trainer.compile_mode=reduce-overhead hydra.run.dir=/tmp/b1_graphs \
  > $OUT/b1_graphs.log 2>&1
echo "graphs done after $(( $(date +%s) - T0 )) s"
grep -hE "Error|error|epoch 1/1" $OUT/b1_eager.log $OUT/b1_graphs.log | tail -6
python3 benchmarks/overlay.py /tmp/b1_eager /tmp/b1_graphs --labels eager,cuda-graphs --out $OUT/overlay_b1.png
if grep -q '"status": "finished"' /tmp/b1_graphs/run.json 2>/dev/null; then echo reduce-overhead > /tmp/compile_mode
else echo none > /tmp/compile_mode; fi
echo "compile mode for the reproduction: $(cat /tmp/compile_mode)"
for r in b1_eager b1_graphs; do cp /tmp/$r/metrics.jsonl $OUT/${r}_metrics.jsonl 2>/dev/null; done
echo "call done after $(( $(date +%s) - T0 )) s"
