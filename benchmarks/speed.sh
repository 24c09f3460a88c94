#!/usr/bin/env bash
# Model throughput on one GPU (bench.py): fused inference and the training step (AdamW, clipping), batch 256, bf16,
# channels_last, triton scan; each model eager and compiled with CUDA graphs, side by side in one call.
#
#   OUT=DIR bash benchmarks/speed.sh            # from the repository root; about 5 minutes on an H200
#
# MODELS (t2,s6,b1,b4) and TRAIN_MODELS (t2,s6,b1) choose the models; EXTRA adds bench.py options to every row
# (e.g. EXTRA="wavelet=conv,shuffle"). One bench.py process per model and mode, all at once: they compile
# concurrently and take turns on the GPU (bench.py's gpu_lock), each stopped after LIMIT seconds (270) with the rows
# it finished. Writes $OUT/speed.md (the table; 'x eager' = img/s over the eager row of the same model and mode),
# $OUT/speed.csv, and each process's bench.csv and log under $OUT/<mode>_<model>/.
set -uo pipefail
. benchmarks/install_deps.sh
OUT=${OUT:?set OUT to the output directory}
MODELS=${MODELS-t2,s6,b1,b4}  # empty: none
TRAIN_MODELS=${TRAIN_MODELS-t2,s6,b1}
LIMIT=${LIMIT:-270}
read -r -a EXTRA_ARGS <<<"${EXTRA:-}"
mkdir -p "$OUT"
COMMON=(batch=256 amp=bf16 channels_last=true scan_backend=triton warmup=10 iters=20 repeats=5 "gpu_lock=$OUT/gpu.lock")
INFER=(mode=infer fused=true compile=false,true cuda_graph=false,true)
TRAIN=(mode=train compile=false,true compile_mode=reduce-overhead iters=10)

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
for m in ${MODELS//,/ }; do bench "infer_$m" "model=$m" "${INFER[@]}" & done
for m in ${TRAIN_MODELS//,/ }; do bench "train_$m" "model=$m" "${TRAIN[@]}" & done
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
