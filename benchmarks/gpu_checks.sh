#!/usr/bin/env bash
# The checks that need a GPU: the CUDA tests (Triton kernels compiled rather than interpreted, the captured update and
# its host syncs, the DALI loader when installed), then train.py's default path against the eager one on the same
# batches, the default path stopped half-way (exit 75) and resumed eagerly from its checkpoint.
#
#   OUT=DIR bash benchmarks/gpu_checks.sh       # from the repository root; about 6 minutes on an H200
#
# TESTS: the test files (default below; pytest skips the DALI ones without DALI). OVERLAY=0 skips the overlay.
# EXPERIMENT (mobilemamba_t2) is the overlaid recipe, on synthetic batches, 40 updates logged one by one. Writes
# OUT/tests.log, OUT/overlay.md and overlay.png (benchmarks/overlay.py: per-update loss differences), the runs' logs.
set -uo pipefail
. benchmarks/install_deps.sh
OUT=${OUT:?set OUT to the output directory}
TESTS=${TESTS:-tests/models/test_bidir_scan.py tests/models/test_scan.py tests/engine/test_step_cuda.py tests/data/test_data_gpu.py}
EXPERIMENT=${EXPERIMENT:-mobilemamba_t2}
mkdir -p "$OUT"
T0=$SECONDS
said() { echo "[$((SECONDS - T0)) s] $*"; }

nvidia-smi -L | tee "$OUT/device.txt"
# shellcheck disable=SC2086  # TESTS is a list of paths
timeout -k 10 400 python3 -m pytest -q -p no:cacheprovider $TESTS >"$OUT/tests.log" 2>&1
said "tests: $(tail -n 1 "$OUT/tests.log")"; grep -E "^(FAILED|ERROR)" "$OUT/tests.log" | head -20
[ "${OVERLAY:-1}" = 1 ] || exit 0
RUN=(experiment="$EXPERIMENT" data=synthetic data.batch_size=256 data.train_size=10240 trainer.epochs=1
     sched.warmup_epochs=0 trainer.max_iters_per_epoch=40 trainer.log_every=1 trainer.channels_last=true
     trainer.final_eval=false trainer.eval_max_batches=1 trainer.progress=false logger=csv)
rm -rf /tmp/gpu_checks
timeout -k 10 200 python3 train.py "${RUN[@]}" trainer.compile=false hydra.run.dir=/tmp/gpu_checks/eager \
  >"$OUT/eager.log" 2>&1; said "eager: exit $?"
timeout -k 10 300 python3 train.py "${RUN[@]}" trainer.debug.stop_at=20 hydra.run.dir=/tmp/gpu_checks/cross \
  >"$OUT/default.log" 2>&1; said "default path stopped at update 20: exit $? (75 expected)"
timeout -k 10 200 python3 train.py "${RUN[@]}" trainer.compile=false hydra.run.dir=/tmp/gpu_checks/cross \
  >"$OUT/resumed.log" 2>&1; said "resumed eagerly: exit $?"
grep -h '"resume"' /tmp/gpu_checks/cross/metrics.jsonl
python3 benchmarks/overlay.py /tmp/gpu_checks/eager /tmp/gpu_checks/cross --labels eager,default-then-eager --skip 2 \
  --out "$OUT/overlay.png" | tee "$OUT/overlay.md"
