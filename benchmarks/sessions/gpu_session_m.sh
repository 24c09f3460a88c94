#!/usr/bin/env bash
# GPU session M (one H200; five calls back to back, call K carrying .dali-p(K-1), call 1 also .whl):
#   PART=1  DALI part 0; wheels; B1 @256 training step with CUDA graphs, Haar as grouped convs vs pixel shuffle
#           (the compiled default became shuffle on inference numbers: does training agree?)
#   PART=2  DALI part 1; 15,000 ImageNet-like JPEGs in /tmp/inl (benchmarks/make_imagenet_like.py)
#   PART=3  DALI part 2
#   PART=4  DALI part 3
#   PART=5  DALI assembled + installed; GPU data tests (the batched RandAugment on CUDA included); loader bench
#           (torch; DALI with RandAugment batched in torch vs in DALI, without it, decode only); then S6 @224 in
#           train.py on those JPEGs with DALI, fp16 recipe, CUDA graphs: data wait as a share of the step (#7).
set -uo pipefail
export PYTHONUNBUFFERED=1 WANDB_MODE=disabled
T0=$(date +%s)
PART=${PART:-1}
. benchmarks/sessions/dali_parts.sh
COMMON="batch=256 amp=bf16 channels_last=true scan_backend=triton warmup=10 repeats=3"
case $PART in
  1) timeout 500 python3 bench.py $COMMON model=b1 mode=train compile=true compile_mode=reduce-overhead iters=10 \
       wavelet=conv,shuffle out=$OUT/train_haar 2>&1 | grep -E "^model|^mobilemamba|Error" | tail -3 ;;
  2) python3 benchmarks/make_imagenet_like.py /tmp/inl --classes 100 --per-class 150 --val-per-class 3 2>&1 | tail -2
     du -sh /tmp/inl ;;
  5)
    assemble_dali
    echo "setup done after $(( $(date +%s) - T0 )) s; DALI $(python3 -c 'import nvidia.dali as d; print(d.__version__)')"
    timeout 120 python3 -m pytest -q -p no:cacheprovider tests/data/test_data_gpu.py tests/data/test_data_batch_randaug.py 2>&1 | tail -3
    cat /tmp/inl/train/*/*.JPEG > /dev/null
    B="python3 -m mobilemamba.data.bench /tmp/inl --batch 256 --img-size 224 --threads 16 --workers 16 --device cuda"
    timeout 60 taskset -c 0-15 $B --loaders torch --warmup 20 --iters 30 --out $OUT/loader_torch.md 2>&1 | grep -E "Error" | tail -2
    TORCH=$(awk -F'|' '/^\| torch \|/ {gsub(/[ ,]/, "", $3); print $3; exit}' $OUT/loader_torch.md 2>/dev/null)
    timeout 150 taskset -c 0-15 $B --loaders dali --warmup 5 --iters 30 ${TORCH:+--torch-img-s $TORCH} --out $OUT/loader_dali.md \
      --variants full,full+dali_randaug=dali,no-randaug,decode-only 2>&1 | grep -E "Error" | tail -2
    cat $OUT/loader_torch.md; grep '^| dali' $OUT/loader_dali.md
    echo "bench done after $(( $(date +%s) - T0 )) s"
    RUN="experiment=mobilemamba_s6 data.root=/tmp/inl data.loader=dali data.num_classes=100 data.batch_size=256
         trainer.epochs=2 trainer.compile=true trainer.compile_mode=reduce-overhead trainer.channels_last=true
         trainer.final_eval=false trainer.eval_max_batches=1 trainer.progress=false trainer.log_every=5 logger=csv"
    timeout 300 python3 train.py $RUN hydra.run.dir=/tmp/s6_dali > $OUT/s6_dali.log 2>&1
    grep -E "Error|error" $OUT/s6_dali.log | tail -3
    python3 - <<'PY'
import json, statistics
recs = [json.loads(l) for l in open("/tmp/s6_dali/metrics.jsonl")]
tr = [r for r in recs if "data_time" in r and "step_time" in r]
print(f"{len(tr)} train records; per record: step ms / data ms:",
      " ".join(f"{1e3 * r['step_time']:.1f}/{1e3 * r['data_time']:.2f}" for r in tr))
late = tr[2:]  # after the compile + CUDA-graph capture
dt, st = sum(r["data_time"] for r in late), sum(r["step_time"] for r in late)
print(f"S6 @224 with DALI, CUDA graphs: data wait {1e3 * statistics.median(r['data_time'] for r in late):.2f} ms of a "
      f"{1e3 * statistics.median(r['step_time'] for r in late):.1f} ms step (median); {100 * dt / st:.1f}% of step time in all")
PY
    mkdir -p $OUT/s6_dali; cp /tmp/s6_dali/run.json /tmp/s6_dali/metrics.jsonl $OUT/s6_dali/ 2>/dev/null ;;
esac
echo "call done after $(( $(date +%s) - T0 )) s"
