#!/usr/bin/env bash
# The engine's training step against bench.py's bare step (S6, 224 px, batch 256, bf16, channels_last, one GPU),
# with synthetic data and with DALI-fed CIFAR-10 JPEGs (data wait as a share of the step): issue 7.
# Needs: PYTHONPATH with the project deps, CIFAR-10 extracted in $CIFAR10_ROOT (default /tmp/cifar10), $OUT.
set -uo pipefail
ROOT=${CIFAR10_ROOT:-/tmp/cifar10}
COMMON="trainer.amp=bf16 trainer.channels_last=true trainer.final_eval=false trainer.progress=false trainer.log_every=10 logger=csv"
python3 bench.py model=s6 mode=train amp=bf16 channels_last=true batch=256 warmup=10 iters=20 repeats=3 out=$OUT/probe_bench 2>&1 | tail -3
python3 train.py experiment=mobilemamba_s6 data=synthetic data.batch_size=256 data.train_size=20480 data.val_size=256 \
  trainer.epochs=1 $COMMON hydra.run.dir=/tmp/eng_syn 2>&1 | grep -E "Error|error" | tail -3
python3 train.py experiment=cifar10_s6 model.img_size=224 data.root=$ROOT data.loader=dali trainer.epochs=1 \
  trainer.max_iters_per_epoch=80 trainer.eval_max_batches=2 $COMMON hydra.run.dir=/tmp/eng_dali 2>&1 | grep -E "Error|error" | tail -3
python3 - <<'PY'
import json, statistics
for name in ("eng_syn", "eng_dali"):
    try:
        run = json.load(open(f"/tmp/{name}/run.json"))
        recs = [json.loads(l) for l in open(f"/tmp/{name}/metrics.jsonl")]
    except OSError as e:
        print(name, "missing:", e); continue
    tr = [r for r in recs if r.get("kind", r.get("type")) == "train" or "data_time" in r][2:]
    dt = statistics.median(r["data_time"] for r in tr) if tr else float("nan")
    st = statistics.median(r["step_time"] for r in tr) if tr else float("nan")
    print(f"{name}: engine train img/s (median step) {run.get('train_img_per_s') or 0:,.0f}; "
          f"data wait {dt * 1e3:.1f} ms of a {st * 1e3:.1f} ms step ({100 * dt / st:.1f}%)")
PY
for r in eng_syn eng_dali; do mkdir -p $OUT/$r; cp /tmp/$r/run.json /tmp/$r/metrics.jsonl $OUT/$r/ 2>/dev/null; done
