#!/usr/bin/env bash
# Miniature reproduction of MobileMamba's claims on CIFAR-10, on a GPU machine:
#   1. the size ranking holds: T2 < S6 < B1 in top-1 at equal epochs   (experiment=cifar10_{t2,s6,b1})
#   2. the † mechanism holds: T2 with KD from the framework's own B1 + 2x epochs beats plain T2 (cifar10_t2_kd)
#   3. fused eval == unfused eval, same top-1 on every image             (engine final eval + eval.py fuse=true/false)
#   4. where MobileMamba stands against a timm baseline of its class under the same recipe and epochs (BASELINE)
# then `python -m mobilemamba.report` over all runs: report.md / report.csv / accuracy_vs_speed.png / training_curves.png.
#
#   [OUT=DIR] bash benchmarks/repro_cifar10.sh [STEP ...]  STEP in: train eval report (default: all three; the
#                                                    setup -- data extraction, loader choice -- always runs)
#
# Idempotent and resumable: a finished run is skipped, an unfinished one resumes from its last.ckpt, so rerun the
# same command until it prints "REPRO COMPLETE" (e.g. once per 10-minute device call with BUDGET_S=540).
# Variables:
#   EPOCH_SCALE  multiplies the epochs (1 = 30 epochs for t2/s6/b1/the baseline and 60 for t2_kd; 0.1 = 3 and 6;
#                3.333 = 100 and 200, the decisive miniature). Default 1.
#   BASELINE     the baseline's experiment (default cifar10_repvit_m0_9: conf/experiment/, a `model=timm` student);
#                empty: none.
#   BUDGET_S     stop launching/kill (SIGTERM -> checkpoint -> exit 75) after this many seconds; 0 = no limit.
#   LOADER       train data loader: auto (dali if importable, else torch) | dali | torch.   EVAL_LOADER: torch.
#   CIFAR10_ARCHIVE  the .tar.zst (or .tar.gz/.tar); default: first of .data/, shared/data/, ../shared/data/.
#   CIFAR10_ROOT     where it is extracted (default $WORK/cifar10_jpg); WORK default outputs/cifar10_repro.
#   GPUS         how many GPUs to use (default: all visible), ids 0..GPUS-1.
#                >= 3: b1, s6 and t2 side by side on one GPU each, then t2_kd (needs b1's checkpoint) on all, or
#                on KD_GPUS (e.g. 0,1: keep it the same across reruns, a resumed run needs the same GPU count).
#                2: two lanes, A: b1 then t2_kd on GPU 0, B: s6 then t2 on GPU 1.  1: b1, s6, t2, then t2_kd.
#   GPU_LIST     explicit GPU ids instead of 0..GPUS-1, e.g. GPU_LIST=1 (one GPU: the sequential order below).
#   ONLY         train and evaluate only these runs (names, space-separated), e.g. two invocations side by side on one machine:
#                GPU_LIST=0 ONLY="cifar10_s6 cifar10_t2" ... & GPU_LIST=1 ONLY=cifar10_t2_kd ... (same WORK).
#   EVAL_SPECS   which eval.py passes per run (default: "eval_unfused eval_fused eval_fused_bf16"); the engine's
#                final eval already checks fused == unfused, so eval_fused_bf16 alone adds the throughput column.
#   OUT          if set, the report, logs, timings and a tarball of the run dirs (no checkpoints) are copied there.
#   COMPILE      auto (default: train.py's default fast path, on CUDA the model compiled and the update captured as
#                one CUDA graph) | none: trainer.compile=false, eager (an H200 spends 163 ms per update of
#                cifar10_b1 at 128 px eagerly, launch-bound; with CUDA graphs the same run trains 2.6-3x faster with
#                the same loss curve: docs/results.md, Reproduction) | reduce-overhead: CUDA graphs of the model only.
#   IMG_SIZE     default 128.  EXTRA / EVAL_EXTRA: more Hydra overrides for every train.py / eval.py command, e.g. a
#                CPU dry run of the whole pipeline in minutes: GPUS=0 LOADER=torch IMG_SIZE=32 EPOCH_SCALE=0.04
#                EXTRA="trainer.max_iters_per_epoch=2 trainer.eval_max_batches=1" EVAL_EXTRA="max_batches=1 throughput.iters=2"
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
. benchmarks/install_deps.sh  # the wheels in .whl/ where the machine lacks them
PY=${PYTHON:-python3}
EPOCH_SCALE=${EPOCH_SCALE:-1}
BUDGET_S=${BUDGET_S:-0}
LOADER=${LOADER:-auto}
EVAL_LOADER=${EVAL_LOADER:-torch}
WORK=${WORK:-outputs/cifar10_repro}
RUNS=$WORK/runs
LOGS=$WORK/logs
DATA=${CIFAR10_ROOT:-$WORK/cifar10_jpg}
STEPS=${*:-train eval report}
IMG_SIZE=${IMG_SIZE:-128}
read -r -a EXTRA_ARGS <<<"${EXTRA:-}"
case ${COMPILE:-auto} in
  auto) ;;
  none) EXTRA_ARGS+=(trainer.compile=false) ;;
  reduce-overhead) EXTRA_ARGS+=(trainer.compile=true trainer.compile_mode=reduce-overhead trainer.capture=model) ;;
  *) echo "COMPILE must be auto, none or reduce-overhead, got '$COMPILE'" >&2; exit 2 ;;
esac
BASELINE=${BASELINE-cifar10_repvit_m0_9}
if [ -n "$BASELINE" ] && [ ! -f "conf/experiment/$BASELINE.yaml" ]; then
  echo "BASELINE=$BASELINE has no conf/experiment/$BASELINE.yaml (set BASELINE= for none)" >&2; exit 2
fi
RUN_NAMES="cifar10_t2 cifar10_s6 cifar10_b1 cifar10_t2_kd $BASELINE"
read -r -a EVAL_EXTRA_ARGS <<<"${EVAL_EXTRA:-}"
T0=$(date +%s)
mkdir -p "$RUNS" "$LOGS"

log() { echo "[repro $(date -u +%H:%M:%S)] $*"; }
epochs() { awk -v e="$1" -v s="$EPOCH_SCALE" 'BEGIN { n = int(e * s + 0.5); print (n < 1 ? 1 : n) }'; }
warmup() { awk -v n="$1" 'BEGIN { w = n / 10; print (w > 3 ? 3 : w) }'; }  # 3 of 30 epochs, 10% when shorter
left() { [ "$BUDGET_S" -gt 0 ] && echo $((BUDGET_S - ($(date +%s) - T0))) || echo 999999; }
finished() { grep -q '"status": "finished"' "$1/run.json" 2>/dev/null; }
selected() { [ -z "${ONLY:-}" ] || [[ " $ONLY " == *" $1 "* ]]; }  # run $1 is in ONLY (or ONLY is unset)

# ------------------------------------------------------------------------------------------------ setup
find_archive() {
  for a in "${CIFAR10_ARCHIVE:-}" .data/cifar10_jpg.tar.zst shared/data/cifar10_jpg.tar.zst ../shared/data/cifar10_jpg.tar.zst \
           .data/cifar10_jpg.tar.gz .data/cifar10_jpg.tar; do
    [ -n "$a" ] && [ -f "$a" ] && { echo "$a"; return 0; }
  done
  return 1
}

extract() {  # $1 archive -> $DATA/{train,test}
  local a=$1 tmp="$DATA.partial"
  rm -rf "$tmp" && mkdir -p "$tmp"
  case "$a" in
    *.zst) if command -v zstd >/dev/null; then zstd -dc "$a" | tar -x -C "$tmp"
           else "$PY" -c "import sys, tarfile, zstandard; tarfile.open(fileobj=zstandard.ZstdDecompressor().stream_reader(open(sys.argv[1], 'rb')), mode='r|').extractall(sys.argv[2])" "$a" "$tmp"; fi ;;
    *) tar -xf "$a" -C "$tmp" ;;
  esac || { log "ERROR: could not extract $a (no zstd? convert it here: zstd -dc X.tar.zst | gzip -1 > .data/cifar10_jpg.tar.gz)"; return 1; }
  rm -rf "$DATA" && mv "$tmp" "$DATA"
}

setup() {
  if [ ! -d "$DATA/train" ] || [ ! -d "$DATA/test" ]; then
    local a; a=$(find_archive) || { log "ERROR: no CIFAR-10 archive (set CIFAR10_ARCHIVE or copy it to .data/)"; return 1; }
    log "extracting $a -> $DATA"; extract "$a" || return 1
  fi
  log "data: $(find "$DATA/train" -type f | wc -l) train / $(find "$DATA/test" -type f | wc -l) test images in $DATA"
  if [ "$LOADER" = auto ]; then
    "$PY" -c "import nvidia.dali" 2>/dev/null && LOADER=dali || { LOADER=torch; log "DALI not importable: data.loader=torch"; }
  fi
  NGPU=${GPUS:-$("$PY" -c "import torch; print(torch.cuda.device_count())")}
  [ -n "${GPU_LIST:-}" ] && NGPU=$(awk -F, '{print NF}' <<<"$GPU_LIST")
  log "loader $LOADER, $NGPU GPU(s), epoch scale $EPOCH_SCALE, budget ${BUDGET_S}s"
  "$PY" -c "import sys; sys.modules['wandb'] = None; import torch, timm, hydra; print('torch', torch.__version__, 'timm', timm.__version__, 'hydra', hydra.__version__)"
}

# ------------------------------------------------------------------------------------------------ train
# train NAME GPU_LIST [overrides...]: one run in $RUNS/NAME on the listed GPUs (torchrun when more than one)
train() {
  local name=$1 gpus=$2; shift 2
  local dir=$RUNS/$name n base ep wu rc t
  if finished "$dir"; then log "$name: finished earlier, skipped"; return 0; fi
  if ! selected "$name"; then log "$name: not in ONLY, skipped"; return 0; fi
  if [ "$(left)" -lt 120 ]; then log "$name: not started, budget spent (rerun to continue)"; return 75; fi
  n=$(awk -F, '{print NF}' <<<"$gpus")
  base=30; [ "$name" = cifar10_t2_kd ] && base=60
  ep=$(epochs $base); wu=$(warmup "$ep")
  local cmd=("$PY" train.py)
  [ "$n" -gt 1 ] && cmd=("$PY" -m torch.distributed.run --nproc_per_node="$n" --master_port=$((29500 + ${gpus%%,*})) train.py)
  log "$name: GPUs ${gpus:-none (CPU)}, $ep epochs (warm-up $wu) -> $dir"
  t=$(date +%s)
  CUDA_VISIBLE_DEVICES=$gpus timeout -s TERM -k 120 "$(left)" "${cmd[@]}" "experiment=$name" "hydra.run.dir=$dir" \
    "data.root=$DATA" "data.loader=$LOADER" "model.img_size=$IMG_SIZE" "trainer.epochs=$ep" "sched.warmup_epochs=$wu" \
    trainer.progress=false "${EXTRA_ARGS[@]}" "$@" \
    >>"$LOGS/$name.log" 2>&1
  rc=$?
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$(( $(date +%s) - t ))" "$n" "$rc" "$ep" "$t" "$gpus" >>"$WORK/timings.tsv"
  log "$name: exit $rc after $(( $(date +%s) - t )) s (75/124 = stopped for time: rerun to resume); tail of $LOGS/$name.log:"
  tail -n 4 "$LOGS/$name.log" | sed 's/^/    /'
  return $rc
}

train_kd() { train cifar10_t2_kd "$1" "distill.teacher=$RUNS/cifar10_b1/best.ckpt"; }
lane_a() { train cifar10_b1 "$1" && train_kd "$1"; }
lane_b() { train cifar10_s6 "$1" && train cifar10_t2 "$1" && train_baseline "$1"; }
train_baseline() { [ -z "$BASELINE" ] || train "$BASELINE" "$1"; }

train_all() {
  local all a b half
  all=${GPU_LIST:-$(seq -s, 0 $((NGPU - 1)))}
  if [ "$NGPU" -ge 3 ]; then
    log "three sizes side by side on GPUs 0, 1, 2, then t2_kd on GPUs $all"
    train cifar10_b1 0 & local p1=$!
    train cifar10_s6 1 & local p2=$!
    { train cifar10_t2 2 && train_baseline 2; } & local p3=$!
    local r1 r2 r3
    wait $p1; r1=$?; wait $p2; r2=$?; wait $p3; r3=$?
    [ "$r1" -eq 0 ] && { train_kd "${KD_GPUS:-$all}" || r1=$?; }
    return $((r1 ? r1 : (r2 ? r2 : r3)))
  fi
  if [ "$NGPU" -ge 2 ]; then
    half=$((NGPU / 2))
    a=$(seq -s, 0 $((half - 1))); b=$(seq -s, "$half" $((2 * half - 1)))
    log "two lanes: A (b1 -> t2_kd) on GPUs $a, B (s6 -> t2 -> baseline) on GPUs $b"
    lane_a "$a" & local pa=$!
    lane_b "$b" & local pb=$!
    local ra rb
    wait $pa; ra=$?; wait $pb; rb=$?
    return $((ra ? ra : rb))
  fi
  # one GPU (or CPU): the three sizes first (the ranking claim), the long KD run last
  local rc=0
  train cifar10_b1 "$all" || rc=$?
  train cifar10_s6 "$all" || rc=$?
  train cifar10_t2 "$all" || rc=$?
  train_baseline "$all" || rc=$?
  if finished "$RUNS/cifar10_b1"; then train_kd "$all" || rc=$?
  elif [ -n "${ONLY:-}" ] && selected cifar10_t2_kd; then log "cifar10_t2_kd: waits for cifar10_b1"; rc=75; fi
  return $rc
}

# ------------------------------------------------------------------------------------------------ eval
# fused vs unfused on the full test set (fp32: the accuracy check), plus a bf16 channels_last fused pass for speed
eval_one() {
  local name=$1 v=${1#cifar10_}; v=${v%_kd}
  local dir=$RUNS/$name ck=$RUNS/$1/best.ckpt
  selected "$name" || return 0
  [ -f "$ck" ] && finished "$dir" || { log "$name: no finished run, eval skipped"; return 0; }
  local model=("model=$v")  # a MobileMamba variant's config group, else a timm model (the baseline)
  [ -f "conf/model/$v.yaml" ] || model=(model=timm "model.name=$v")
  local common=(eval.py "${model[@]}" "model.img_size=$IMG_SIZE" data=cifar10 "data.root=$DATA" data.val_split=test
                "data.loader=$EVAL_LOADER" "checkpoint=$ck" ema=true throughput.batch_size=256 throughput.warmup=10
                throughput.iters=30 "${EVAL_EXTRA_ARGS[@]}")
  local spec sub args gpu=${2:-0}
  for spec in "eval_unfused:fuse=false" "eval_fused:fuse=true" "eval_fused_bf16:fuse=true amp=bf16 channels_last=true"; do
    sub=${spec%%:*}; args=${spec#*:}
    [[ " ${EVAL_SPECS:-eval_unfused eval_fused eval_fused_bf16} " == *" $sub "* ]] || continue
    [ -f "$dir/$sub/results.json" ] && continue
    if [ "$(left)" -lt 60 ]; then log "$name: eval not started, budget spent"; return 75; fi
    # shellcheck disable=SC2086
    CUDA_VISIBLE_DEVICES=$gpu timeout -s TERM -k 30 "$(left)" "$PY" "${common[@]}" $args "hydra.run.dir=$dir/$sub" \
      >>"$LOGS/$name.eval.log" 2>&1 || log "$name $sub: exit $? (see $LOGS/$name.eval.log)"
    tail -n 1 "$LOGS/$name.eval.log" | sed 's/^/    /'
  done
}

eval_all() {  # side by side, one run per GPU (throughput needs the GPU to itself), in waves of NGPU runs
  local n i=0 pids=() lanes=$((NGPU > 0 ? NGPU : 1)) ids
  IFS=, read -r -a ids <<<"${GPU_LIST:-$(seq -s, 0 $((lanes - 1)))}"
  for n in $RUN_NAMES; do
    eval_one $n "${ids[$i]}" & pids+=($!)
    i=$((i + 1))
    if [ "$i" -ge "$lanes" ]; then wait "${pids[@]}"; pids=(); i=0; fi
  done
  [ "${#pids[@]}" -gt 0 ] && wait "${pids[@]}"
  return 0
}

# ------------------------------------------------------------------------------------------------ report
report() {
  "$PY" -m mobilemamba.report "$RUNS"
  [ -f "$WORK/timings.tsv" ] && "$PY" benchmarks/gpu_minutes.py "$WORK/timings.tsv"
  if [ -n "${OUT:-}" ]; then
    cp "$RUNS"/report.md "$RUNS"/report.csv "$RUNS"/*.png "$OUT"/ 2>/dev/null
    cp "$WORK/timings.tsv" "$OUT"/ 2>/dev/null
    tar -czf "$OUT/cifar10_runs.tar.gz" -C "$WORK" --exclude='*.ckpt' --exclude='cifar10_jpg*' runs logs timings.tsv 2>/dev/null
  fi
}

done_all() {
  local n sub
  for n in $RUN_NAMES; do
    finished "$RUNS/$n" || return 1
    for sub in ${EVAL_SPECS:-eval_unfused eval_fused eval_fused_bf16}; do [ -f "$RUNS/$n/$sub/results.json" ] || return 1; done
  done
}

# ------------------------------------------------------------------------------------------------ main
status=0
setup || exit 1
for step in $STEPS; do
  case $step in
    train) train_all || status=$? ;;
    eval) eval_all || status=$? ;;
    report) report || status=$? ;;
    *) log "unknown step $step (train eval report)"; exit 2 ;;
  esac
done
if done_all; then log "REPRO COMPLETE: $RUNS/report.md"; else log "not complete yet: rerun the same command to continue"; fi
exit $status
