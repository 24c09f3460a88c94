#!/usr/bin/env bash
# Where the DALI train loader's time goes on one GPU (about 3 minutes; steps are cut off at DEADLINE=225 s):
# ImageNet-like JPEGs, batch 256, 224 px, 16 CPU cores (taskset -c 0-15), 5 warmup + 30 timed batches per row (58 batches per epoch: no epoch restart
# inside the timing). Rows: the torch loader (16 workers, 20 warmup batches for its worker burst); DALI's recipe
# and its ablations (no erasing / no RandAugment / decode only); a hardware-decoder load sweep; whole-image
# decoding; prefetch 3; no preallocation hints; copied (host-synced) outputs; CPU decoding.
#
#   OUT=/some/dir bash benchmarks/gpu_dali_bench.sh    # run from the repository root; DALI + deps importable
#
# Writes $OUT/dali_bench.md (the table), $OUT/dali_bench.log (everything printed) and $OUT/dmon.log (nvidia-smi
# dmon -s u, one line a second: the 'jpg' column is the hardware JPEG decoder's utilization; the log's
# [HH:MM:SS] lines say which row ran when).
set -uo pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD/src:$PWD${PYTHONPATH:+:$PYTHONPATH}"
OUT=${OUT:-/tmp/dali_bench_out}
PY=${PY:-python3}
ROOT=${ROOT:-/tmp/inl}
DEADLINE=${DEADLINE:-225}  # seconds: each step's timeout is cut to what is left of this
# the defaults are the GPU run's; smaller values make a quick CPU dry run of the plumbing (DEVICE=cpu)
DEVICE=${DEVICE:-cuda} BATCH=${BATCH:-256} SIZE=${SIZE:-224} ITERS=${ITERS:-30} CORES=${CORES:-0-15} THREADS=${THREADS:-16}
CLASSES=${CLASSES:-100} PER_CLASS=${PER_CLASS:-150}
mkdir -p "$OUT"
LOG=$OUT/dali_bench.log
: > "$LOG"
T0=$SECONDS
say() { echo "[$(date +%T) +$((SECONDS - T0))s] $*" | tee -a "$LOG"; }
budget() { local left=$((DEADLINE - (SECONDS - T0))); echo $((left < $1 ? left : $1)); }  # min(ask, left)

say "start: $(nproc) cores, affinity $(taskset -pc $$ 2>/dev/null | awk -F': ' '{print $2}')"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | tee -a "$LOG"
$PY -c "import torch, nvidia.dali as d; print('torch', torch.__version__, 'dali', d.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU')" 2>&1 | tee -a "$LOG" \
  || { say "DALI or torch not importable: stop"; exit 1; }
$PY -c "import nvidia.nvimgcodec as n; print('nvimgcodec', n.__version__)" 2>&1 | tail -1 | tee -a "$LOG"
nvidia-smi dmon -s u -o T > "$OUT/dmon.log" 2>&1 &
DMON=$!

# 100 classes x 150 = 15,000 train JPEGs (~500x375, ~90 KB): 58 batches of 256 per epoch. Written in the
# background while the GPU tests check the zero-copy output path.
if [ ! -d "$ROOT/train" ]; then
  $PY benchmarks/make_imagenet_like.py "$ROOT" --classes "$CLASSES" --per-class "$PER_CLASS" --val-per-class 1 > /tmp/gen.log 2>&1 &
  GEN=$!
else
  GEN=
fi
ZC=()
if [ "$DEVICE" = cuda ] && ! timeout -k 5 "$(budget 90)" $PY -m pytest -q -p no:cacheprovider -x tests/data/test_data_gpu.py 2>&1 | tail -5 | tee -a "$LOG"; then
  say "GPU data tests failed: DALI rows run with --set dali_zero_copy=false"
  ZC=(--set dali_zero_copy=false)
fi
[ -n "$GEN" ] && { wait "$GEN"; cat /tmp/gen.log | tee -a "$LOG"; }
say "data ready: $(find "$ROOT/train" -name '*.JPEG' | wc -l) train JPEGs, $(du -sh "$ROOT/train" | cut -f1)"
cat "$ROOT"/train/*/*.JPEG > /dev/null  # page cache: every row reads from memory

COMMON=(--batch "$BATCH" --img-size "$SIZE" --threads "$THREADS" --workers "$THREADS" --device "$DEVICE")
bench() {  # bench NAME TIMEOUT ARGS...: one process per group (a crash loses only the rest of its group)
  local name=$1 limit
  limit=$(budget "$2")
  shift 2
  if [ "$limit" -lt 15 ]; then say "bench $name: skipped (${limit}s left of ${DEADLINE}s)"; return; fi
  say "bench $name (timeout ${limit}s): $*"
  timeout -k 5 "$limit" taskset -c "$CORES" $PY -m mobilemamba.data.bench "$ROOT" "${COMMON[@]}" --out "/tmp/bench_$name.md" "$@" 2>&1 \
    | grep -v '^|' | tee -a "$LOG"
}
rm -f /tmp/bench_*.md
bench torch 45 --loaders torch --warmup 20 --iters "$ITERS"
TORCH=$(awk -F'|' '/^\| torch \|/ {gsub(/[ ,]/, "", $3); print $3; exit}' /tmp/bench_torch.md 2>/dev/null)
BASE=(${TORCH:+--torch-img-s $TORCH})
DALI=(--loaders dali --warmup 5 --iters "$ITERS" "${BASE[@]}" "${ZC[@]}")
bench ablation 60 "${DALI[@]}" --variants full,no-erasing,no-randaug,decode-only
bench hwsweep 75 "${DALI[@]}" --variants full,decode-only --hw-load 0,0.65,1
bench options 75 "${DALI[@]}" --variants "decode-only+dali_roi_decode=false,full+dali_roi_decode=false,full+dali_prefetch=3,full+dali_preallocate_width_hint=0+dali_preallocate_height_hint=0,full+dali_zero_copy=false,decode-only+dali_device=cpu"
kill "$DMON" 2>/dev/null

{
  echo "# DALI train loader on $(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1), $(date -u +%F)"
  echo
  for f in /tmp/bench_torch.md /tmp/bench_ablation.md; do [ -f "$f" ] && { head -1 "$f"; echo; }; done
  echo "Rows: torch = the torch loader; dali = GPU decoding (nvJPEG, mixed) unless the variant sets dali_device=cpu."
  echo "hw load = data.dali_hw_decoder_load (share of JPEGs for the hardware decoder). CPU cores = CPU time of the"
  echo "bench process (DALI's threads) / wall time while timed. ${ZC[*]:+All DALI rows ran with ${ZC[*]}.}"
  echo
  f=$(ls /tmp/bench_*.md 2>/dev/null | head -1)
  [ -n "$f" ] && sed -n 3,4p "$f"
  for g in torch ablation hwsweep options; do
    [ -f "/tmp/bench_$g.md" ] && grep '^| ' "/tmp/bench_$g.md" | grep -v '^| loader |'
  done
} > "$OUT/dali_bench.md"
tee -a "$LOG" < "$OUT/dali_bench.md"
say "done in $((SECONDS - T0)) s"
