#!/usr/bin/env bash
# Where a training update's time goes, on one GPU: train.py with trainer.profile=5 (torch.profiler over five updates:
# host time of each labelled part of the step, kernel time, top ops, a trace) on synthetic device batches of 256,
# the recipe's fp16 + EMA + Mixup + clipping, compiled with CUDA graphs; for S6 and the S6† KD step (TResNet-L-V2
# teacher, random weights). Then the top CUDA kernels of the eager model (benchmarks/gpu_profile.py).
#
#   OUT=DIR bash benchmarks/profile.sh          # from the repository root; about 6 minutes on an H200
#
# EXPERIMENTS (mobilemamba_s6 mobilemamba_s6_kd) chooses the runs. Writes $OUT/<experiment>/profile_summary.txt,
# profile_ops.txt, profile_trace.json.gz and metrics.jsonl, and $OUT/kernels.md.
set -uo pipefail
. benchmarks/install_deps.sh
OUT=${OUT:?set OUT to the output directory}
mkdir -p "$OUT"

profile() {  # EXPERIMENT: 24 updates, five of them profiled; the profiler's files and metrics.jsonl in $OUT/EXPERIMENT
  local run=/tmp/profile/$1 teacher=()
  if [[ $1 == *_kd ]]; then  # the teacher's architecture with random weights: the same work per step
    python3 -c "import timm, torch; torch.save(timm.create_model('tresnet_v2_l').state_dict(), '/tmp/tresnet.pth')"
    teacher=(distill.teacher_checkpoint=/tmp/tresnet.pth)
  fi
  rm -rf "$run" && mkdir -p "$OUT/$1"  # a fresh run, never a resumed one
  timeout -k 10 240 python3 train.py "experiment=$1" data=synthetic data.batch_size=256 data.train_size=15000 \
    trainer.epochs=1 trainer.max_iters_per_epoch=24 trainer.profile=5 trainer.compile=true \
    trainer.compile_mode=reduce-overhead trainer.channels_last=true trainer.final_eval=false \
    trainer.eval_max_batches=1 trainer.progress=false trainer.log_every=2 logger=csv "${teacher[@]}" \
    "hydra.run.dir=$run" >"$OUT/$1/train.log" 2>&1
  cp "$run"/profile_* "$run"/metrics.jsonl "$OUT/$1/" 2>/dev/null
  cat "$OUT/$1/profile_summary.txt"
}

nvidia-smi -L | tee "$OUT/device.txt"
for experiment in ${EXPERIMENTS:-mobilemamba_s6 mobilemamba_s6_kd}; do profile "$experiment"; done
timeout 120 python3 benchmarks/gpu_profile.py --variants s6 --mode infer,train --top 12 >"$OUT/kernels.md" 2>&1
