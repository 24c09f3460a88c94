#!/usr/bin/env bash
# GPU session K, calls 5, 6, ... (one H200, warm after gpu_session_k1.sh and the three part copies; the first of
# these calls carries .dali-p4 and .cifar): the CIFAR-10 reproduction (issue 8) on ONE GPU, its three lanes side
# by side on it (eager, a 128-px step of these models is launch-bound: the GPU idles between small kernels):
#   A: cifar10_b1 -> cifar10_t2_kd (needs b1's checkpoint)     B: cifar10_s6     C: cifar10_t2
# with the train step compiled + CUDA graphs when gpu_session_k1.sh found that to work (/tmp/compile_mode).
# Idempotent: the same command again resumes every unfinished run (rerun until it prints REPRO COMPLETE); once all
# four runs are trained, each run's eval.py passes (fp32 unfused and fused: the same top-1? plus img/s) run alone on
# the GPU (session K: two training calls, then a third for the evals). Brings
# back logs, metrics and a tarball of the run directories without checkpoints (the report is drawn from it).
set -uo pipefail
export PYTHONUNBUFFERED=1 WANDB_MODE=disabled
T0=$(date +%s)
END=${END:-570}
left() { echo $(( END - ($(date +%s) - T0) )); }
export PYTHONPATH=/tmp/site:$PWD/src:$PWD
if ! python3 -c "import nvidia.dali" 2>/dev/null; then
  cat /tmp/dparts/p0 /tmp/dparts/p1 /tmp/dparts/p2 /tmp/dparts/p3 .dali-p4/part > /tmp/d.tar && tar -xf /tmp/d.tar -C /tmp
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site /tmp/whl/*.whl
  [ -d /tmp/site/hydra ] || python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
fi
[ -d /tmp/cifar10/train ] || { mkdir -p /tmp/cifar10 && tar -xzf .cifar/cifar10.tar.gz -C /tmp/cifar10; }
echo "setup done after $(( $(date +%s) - T0 )) s; DALI $(python3 -c 'import nvidia.dali as d; print(d.__version__)')"
export CIFAR10_ROOT=/tmp/cifar10 WORK=/tmp/repro EPOCH_SCALE=${EPOCH_SCALE:-0.5} EVAL_SPECS="eval_unfused eval_fused" \
  COMPILE=$(cat /tmp/compile_mode 2>/dev/null || echo none) \
  EXTRA="trainer.channels_last=true data.dali_threads=4 trainer.log_every=10"
echo "train step: COMPILE=$COMPILE"
B=$(( $(left) - 15 ))
GPU_LIST=0 ONLY="cifar10_b1 cifar10_t2_kd" BUDGET_S=$B bash benchmarks/cifar10_repro.sh train > $OUT/lane_a.log 2>&1 &
GPU_LIST=0 ONLY=cifar10_s6 BUDGET_S=$B bash benchmarks/cifar10_repro.sh train > $OUT/lane_b.log 2>&1 &
GPU_LIST=0 ONLY=cifar10_t2 BUDGET_S=$B bash benchmarks/cifar10_repro.sh train > $OUT/lane_c.log 2>&1 &
wait
echo "training lanes done after $(( $(date +%s) - T0 )) s"
for n in b1 s6 t2 t2_kd; do
  echo "== $n"; grep -hE "epoch [0-9]+/|fused|non-finite|Error|error|Traceback" /tmp/repro/logs/cifar10_$n.log 2>/dev/null | tail -5
done
if [ "$(left)" -gt 150 ]; then GPU_LIST=0 BUDGET_S=$(( $(left) - 20 )) bash benchmarks/cifar10_repro.sh eval 2>&1 | tail -8; fi
for n in b1 s6 t2 t2_kd; do cp /tmp/repro/runs/cifar10_$n/metrics.jsonl $OUT/${n}_metrics.jsonl 2>/dev/null; done
cp /tmp/repro/timings.tsv $OUT/ 2>/dev/null
tar -czf $OUT/cifar10_runs.tar.gz -C /tmp/repro --exclude='*.ckpt' runs logs timings.tsv 2>/dev/null
BUDGET_S=0 bash benchmarks/cifar10_repro.sh report 2>&1 | tail -3 | grep -v "^$"
echo "call done after $(( $(date +%s) - T0 )) s"
