# Sourced by GPU session scripts (q, r), from the repository root with $OUT and $T0 set:
# profile_run NAME OVERRIDES...: train.py on synthetic device batches (S6 recipe unless overridden), batch 256, fp16,
# CUDA graphs, 24 updates with trainer.profile=5; profile_*.txt and metrics.jsonl come back in $OUT/NAME.
profile_run() {  # NAME, then train.py overrides: five profiled updates; profile_* and metrics.jsonl back in $OUT/NAME
  local name=$1; shift
  mkdir -p $OUT/$name
  timeout ${TRAIN_S:-200} python3 train.py data=synthetic data.batch_size=256 data.train_size=15000 trainer.epochs=1 \
    trainer.max_iters_per_epoch=24 trainer.profile=5 trainer.compile=true trainer.compile_mode=reduce-overhead \
    trainer.channels_last=true trainer.final_eval=false trainer.eval_max_batches=1 trainer.progress=false \
    trainer.log_every=2 logger=csv hydra.run.dir=/tmp/$name "$@" > $OUT/$name/train.log 2>&1
  cp /tmp/$name/profile_summary.txt /tmp/$name/profile_ops.txt /tmp/$name/metrics.jsonl $OUT/$name/ 2>/dev/null
  grep -E "Error" $OUT/$name/train.log | tail -3
  cat /tmp/$name/profile_summary.txt; python3 benchmarks/data_wait.py /tmp/$name/metrics.jsonl
  echo "$name done after $(( $(date +%s) - T0 )) s"
}
