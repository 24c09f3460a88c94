#!/usr/bin/env bash
# GPU session B (after the four DALI part transfers): DALI on the GPU (tests + loader bench), KD step bench,
# a short S6 training run with AMP on 1 GPU and with DDP on 2 GPUs (CIFAR-10 JPEGs at 224 through DALI).
set -uo pipefail
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 WANDB_MODE=disabled
cat /tmp/dparts/p0 /tmp/dparts/p1 /tmp/dparts/p2 /tmp/dparts/p3 .dali-p4/part > /tmp/d.tar && tar -xf /tmp/d.tar -C /tmp
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site /tmp/whl/*.whl .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD/src:$PWD
mkdir -p /tmp/cifar10 && tar -xzf .cifar/cifar10.tar.gz -C /tmp/cifar10
python3 benchmarks/make_imagenet_like.py /tmp/inl --classes 100 --per-class 50 --val-per-class 2
python3 -m pytest -q -p no:cacheprovider tests/data/test_data_gpu.py 2>&1 | tail -3
taskset -c 0-15 python3 -m mobilemamba.data.bench /tmp/inl --loaders torch,dali --batch 256 --img-size 224 --iters 40 --workers 16 --threads 16 2>&1 | tail -6
python3 -m distill.bench --student mobilemamba_s6 --batch 256 --json $OUT/kd_bench.json 2>&1 | tail -9
RUN="experiment=mobilemamba_s6 data=cifar10 data.root=/tmp/cifar10 data.loader=dali data.num_classes=10 trainer.epochs=2 trainer.amp=bf16 trainer.eval_every=1 trainer.eval_every_from=1 sched.warmup_epochs=1 trainer.progress=false logger=csv"
python3 train.py $RUN hydra.run.dir=/tmp/s6_1gpu 2>&1 | grep -E "INFO|Error|error" | tail -8
torchrun --nproc_per_node=2 --master_port=29511 train.py $RUN hydra.run.dir=/tmp/s6_2gpu 2>&1 | grep -E "INFO|Error|error" | tail -8
for r in s6_1gpu s6_2gpu; do mkdir -p $OUT/$r; cp /tmp/$r/metrics.jsonl /tmp/$r/run.json $OUT/$r/ 2>/dev/null; done
