#!/usr/bin/env bash
# GPU session P: what session N could not finish. Calls back to back on one H200 (call K <= 5 carries
# .dali-p(K-1); call 1 also .whl), or PART=ddp alone on a 2- or 4-GPU machine (carries .whl only).
#   PART=1    DALI part 0; wheels; ImageNet-like JPEGs; the compiled fast path's numerics: fused bf16 compiled with the
#             Haar step as shuffle and as convs vs the unfused eager fp32 model (benchmarks/gpu_shuffle_check.py)
#   PART=2-4  DALI parts 1-3
#   PART=5    GPU data tests (three failed in N on an unindexed device, fixed since); the loader bench with the
#             prefetch thread (full) vs the tail on the main thread, without RandAugment, RandAugment in DALI
#   PART=6    S6 KD (the † recipe: TResNet-L-V2 teacher, random weights) in train.py on the JPEGs through DALI, fp16,
#             CUDA graphs: data wait per step (goal < 5 %)
#   PART=7    S6 plain recipe in train.py on synthetic device batches (no data work at all): the engine's own step,
#             to split session N's 49.6 ms DALI step into data-side GPU work and the engine's extras
#   PART=ddp  S6 training step with CUDA graphs, 1 GPU then torchrun over all GPUs (goal 1.9x on 2, 3.7x on 4)
set -uo pipefail
export PYTHONUNBUFFERED=1 WANDB_MODE=disabled NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
T0=$(date +%s)
PART=${PART:-1}
. benchmarks/sessions/dali_parts.sh
case $PART in
  1) python3 benchmarks/make_imagenet_like.py /tmp/inl --classes 100 --per-class 150 --val-per-class 3 2>&1 | tail -1
     timeout 400 python3 benchmarks/gpu_shuffle_check.py --models mobilemamba_t2,mobilemamba_s6,mobilemamba_b4 2>&1 \
       | grep -E "vs eager|Error" ;;
  5) assemble_dali
     timeout 90 python3 -m pytest -q -p no:cacheprovider tests/data/test_data_gpu.py tests/data/test_data_prefetch.py \
       tests/data/test_data_batch_randaug.py 2>&1 | tail -1
     cat /tmp/inl/train/*/*.JPEG > /dev/null
     B="python3 -m mobilemamba.data.bench /tmp/inl --batch 256 --img-size 224 --threads 16 --workers 16 --device cuda"
     timeout 60 taskset -c 0-15 $B --loaders torch --warmup 20 --iters 30 --out $OUT/loader_torch.md 2>&1 | grep Error
     TORCH=$(awk -F'|' '/^\| torch \|/ {gsub(/[ ,]/, "", $3); print $3; exit}' $OUT/loader_torch.md 2>/dev/null)
     timeout 200 taskset -c 0-15 $B --loaders dali --warmup 5 --iters 40 ${TORCH:+--torch-img-s $TORCH} --out $OUT/loader_dali.md \
       --variants full,full+dali_thread=false,no-randaug,full+dali_randaug=dali,decode-only 2>&1 | grep Error
     cat $OUT/loader_torch.md; grep '^| dali' $OUT/loader_dali.md ;;
  6|7) R=/tmp/s6_$PART; mkdir -p $OUT/s6_$PART
     (while sleep 5; do cp $R/metrics.jsonl $OUT/s6_$PART/ 2>/dev/null; done) &
     RUN="data.batch_size=256 trainer.epochs=1 trainer.compile=true trainer.compile_mode=reduce-overhead
          trainer.channels_last=true trainer.final_eval=false trainer.eval_max_batches=1 trainer.progress=false
          trainer.log_every=2 logger=csv hydra.run.dir=$R"
     if [ "$PART" = 6 ]; then
       python3 -c "import timm, torch; torch.save(timm.create_model('tresnet_v2_l', num_classes=100).state_dict(), '/tmp/tresnet.pth')"
       RUN="$RUN experiment=mobilemamba_s6_kd distill.teacher_checkpoint=/tmp/tresnet.pth
            data.root=/tmp/inl data.loader=dali data.num_classes=100 distill.num_classes=100"
     else
       RUN="$RUN experiment=mobilemamba_s6 data=synthetic data.train_size=15000 trainer.max_iters_per_epoch=40"
     fi
     timeout ${TRAIN_S:-400} python3 train.py $RUN > $OUT/s6_$PART/train.log 2>&1
     cp $R/metrics.jsonl $OUT/s6_$PART/ 2>/dev/null
     grep -E "Error|error" $OUT/s6_$PART/train.log | tail -3
     python3 benchmarks/data_wait.py $R/metrics.jsonl ;;
  ddp) N=$(nvidia-smi -L | wc -l)
     S6="model=s6 mode=train amp=bf16 channels_last=true batch=256 warmup=10 iters=10 repeats=3 compile=true compile_mode=reduce-overhead"
     CUDA_VISIBLE_DEVICES=0 timeout 250 python3 bench.py $S6 out=$OUT/ddp1 2>&1 | grep -E "^mobilemamba|Error" | tail -1
     timeout 300 torchrun --nproc_per_node=$N --master_port=29533 bench.py $S6 out=$OUT/ddp$N 2>&1 \
       | grep -E "^mobilemamba|Error" | tail -1 ;;
esac
echo "call done after $(( $(date +%s) - T0 )) s"
