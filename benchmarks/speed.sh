#!/usr/bin/env bash
# Model throughput on one GPU (bench.py), MobileMamba and any timm model in the same harness: fused (reparameterized)
# inference and the training step (AdamW, clipping), batch 256, bf16, channels_last, each model at its own
# resolution; eager and compiled with CUDA graphs, side by side in one call.
#
#   OUT=DIR bash benchmarks/speed.sh            # from the repository root; about 5 minutes on an H200
#
# MODELS (inference: eager, and compiled + CUDA graph), TRAIN_MODELS (training step, eager) and FAST_TRAIN_MODELS
# (training step compiled with CUDA graphs, default TRAIN_MODELS) are comma lists of bench.py model names (t2, s6,
# levit_256, ...); EXTRA adds bench.py options to every row (e.g. EXTRA="freeze=true"). One bench.py process per
# model and row kind, all at once: they compile concurrently and take turns on the GPU (bench.py's gpu_lock), each
# stopped after LIMIT seconds (270) with the rows it finished. Writes $OUT/speed.md (the table), $OUT/speed.csv, and
# each process's bench.csv and log under $OUT/<kind>_<model>/.
set -uo pipefail
. benchmarks/install_deps.sh
OUT=${OUT:?set OUT to the output directory}
MODELS=${MODELS-t2,s6,b1,b4}  # empty: none
TRAIN_MODELS=${TRAIN_MODELS-t2,s6,b1}
FAST_TRAIN_MODELS=${FAST_TRAIN_MODELS-$TRAIN_MODELS}
LIMIT=${LIMIT:-270}
read -r -a EXTRA_ARGS <<<"${EXTRA:-}"
mkdir -p "$OUT"
COMMON=(batch=256 amp=bf16 channels_last=true warmup=10 iters=20 repeats=5 "gpu_lock=$OUT/gpu.lock")
INFER=(mode=infer fused=true)
TRAIN=(mode=train iters=10)
FAST_INFER=(compile=true cuda_graph=true)
FAST_TRAIN=(compile=true compile_mode=reduce-overhead)

bench() {  # NAME BENCH_ARGS...: one bench.py process, its log and bench.csv in $OUT/NAME
  local name=$1; shift
  # compile workers: inductor would start one per core in every process
  TORCHINDUCTOR_COMPILE_THREADS=2 timeout -k 5 "$LIMIT" python3 bench.py "${COMMON[@]}" "$@" "${EXTRA_ARGS[@]}" \
    "out=$OUT/$name" >"$OUT/$name.log" 2>&1
  local rc=$?
  echo "$name: exit $rc$( ((rc == 124 || rc == 137)) && echo ", stopped at LIMIT (the rows it finished are kept)")" \
    >>"$OUT/status.txt"
}

nvidia-smi -L | tee "$OUT/device.txt"
: >"$OUT/status.txt"
for m in ${MODELS//,/ }; do
  bench "infer_eager_$m" "model=$m" "${INFER[@]}" &
  bench "infer_fast_$m" "model=$m" "${INFER[@]}" "${FAST_INFER[@]}" &
done
for m in ${TRAIN_MODELS//,/ }; do bench "train_eager_$m" "model=$m" "${TRAIN[@]}" & done
for m in ${FAST_TRAIN_MODELS//,/ }; do bench "train_fast_$m" "model=$m" "${TRAIN[@]}" "${FAST_TRAIN[@]}" & done
wait
python3 - "$OUT" <<'EOF'
import sys
from pathlib import Path

import torch

from mobilemamba.benchmark import format_table, read_csv, write_csv

out = Path(sys.argv[1])
rows = [row for csv in sorted(out.glob("*/bench.csv")) for row in read_csv(csv)]
head = f"torch {torch.__version__}; {rows[0].device_name if rows else 'no rows'}"
text = "\n".join([head, format_table(rows), "", (out / "status.txt").read_text().rstrip()])
(out / "speed.md").write_text(text + "\n")
write_csv(rows, out / "speed.csv")
print(text)
EOF
