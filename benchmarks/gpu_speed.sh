#!/usr/bin/env bash
# torch.compile and CUDA-graph speed-ups on one GPU: MobileMamba-S6 and -T2, batch 256, bf16, channels_last,
# triton scan, one table.
#   inference (fused model): eager | cuda_graph=true | compile=true (whole model, default mode) | compile=regional,
#     and each compiled variant with cuda_graph=true too (nearly free: it reuses the compiled code);
#   training step: eager | compile=regional.
# Run from the repo root with PYTHONPATH set:  OUT=DIR bash benchmarks/gpu_speed.sh
# Writes $OUT/gpu_speed.txt (the table, 'x eager' = img/s over the eager row of the same model and mode),
# $OUT/gpu_speed.csv, and a folder (bench.csv) and log for each of the four bench processes.
#
# Ends within 5 minutes on a fresh machine (4.5 min measured on an H200; first-use cuDNN work is ~20-50 s for each
# model's training step, inductor ~25-35 s per inference and ~85 s per training configuration): the four bench
# processes (inference S6, T2; training S6, T2) run at once and take turns on the GPU. bench's gpu_lock: a process
# holds it for all its GPU work (first calls, warm-up, timed runs), with two CPU cores to itself, and lets it go
# only while Dynamo/AOTAutograd compile, so compilation overlaps and timed runs do not (inductor's own small
# compile-time GPU benchmarks may still fall in another's timed run). Host-bound rows (eager, compiled without a
# CUDA graph) still vary more than in a run alone. Each process stops after LIMIT seconds (default 270) and keeps
# the rows it finished. PARALLEL=0 runs them one after another (nothing overlaps; estimated 8 minutes).
set -uo pipefail
OUT=${OUT:-outputs/gpu_speed}
LIMIT=${LIMIT:-270}
PARALLEL=${PARALLEL:-1}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
rm -f "$OUT/status.txt"
export PYTHONUNBUFFERED=1
COMMON=(batch=256 amp=bf16 channels_last=true scan_backend=triton warmup=10 iters=20 repeats=5 "gpu_lock=$OUT/gpu.lock")

run() {  # NAME COMPILE_THREADS BENCH_ARGS...: one bench process, stopped after LIMIT seconds
  local name=$1 threads=$2 t0=$SECONDS rc
  shift 2
  TORCHINDUCTOR_COMPILE_THREADS=$threads timeout -k 5 "$LIMIT" "$PY" bench.py "${COMMON[@]}" "$@" \
    "out=$OUT/$name" > "$OUT/$name.log" 2>&1
  rc=$?
  local note=""
  if ((rc == 124 || rc == 137)); then note=" (stopped at LIMIT; rows finished before are kept)"; fi
  echo "$name: exit $rc after $((SECONDS - t0)) s$note" | tee -a "$OUT/status.txt"
}

# compile worker threads: 2 x 5 + 2 x 3 = 16 cores (inductor would take every core in each process)
JOBS=(
  "train_s6 5 model=s6 mode=train compile=false,regional iters=10"
  "train_t2 5 model=t2 mode=train compile=false,regional iters=10"
  "infer_s6 3 model=s6 mode=infer fused=true compile=false,true,regional cuda_graph=false,true"
  "infer_t2 3 model=t2 mode=infer fused=true compile=false,true,regional cuda_graph=false,true"
)
nvidia-smi -L 2>/dev/null | tee "$OUT/device.txt"
for job in "${JOBS[@]}"; do
  # shellcheck disable=SC2086  # a job is words on purpose
  if [ "$PARALLEL" = 1 ]; then run $job & else run $job; fi
done
wait

"$PY" - "$OUT" <<'EOF' 2>&1 | grep -v '^W[0-9]'
import sys
from pathlib import Path

import torch

from mobilemamba.benchmark import format_table, read_csv, write_csv

out = Path(sys.argv[1])
rows = []
for name in ("infer_s6", "infer_t2", "train_s6", "train_t2"):
    if (out / name / "bench.csv").exists():
        rows += read_csv(out / name / "bench.csv")
head = (f"torch {torch.__version__}; {rows[0].device_name if rows else 'no rows'}; batch 256, bf16, channels_last, "
        "scan triton; 'x eager' = img/s over the eager row; setup s = compile + capture + warm-up")
status = (out / "status.txt").read_text() if (out / "status.txt").exists() else ""
text = "\n".join([head, format_table(rows), "", status.rstrip()])
(out / "gpu_speed.txt").write_text(text + "\n")
write_csv(rows, out / "gpu_speed.csv")
print(text)
EOF
