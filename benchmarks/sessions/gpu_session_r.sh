#!/usr/bin/env bash
# GPU session R (one H200, one call, wheels carried): session Q's profile of train.py's S6 step (50 ms wall per
# update under the profiler, 22 ms of kernels: host-bound; 12.7 ms of it in ModelEmaV3.update, 4.3 ms in the buffer
# snapshot) repeated after the EMA update and the snapshot became one multi-tensor op per dtype.
set -uo pipefail
export PYTHONUNBUFFERED=1 WANDB_MODE=disabled
T0=$(date +%s)
. benchmarks/sessions/dali_parts.sh  # PART unset: only the wheels and PYTHONPATH
. benchmarks/sessions/profile_run.sh
profile_run prof_s6 experiment=mobilemamba_s6
python3 -c "import timm, torch; torch.save(timm.create_model('tresnet_v2_l').state_dict(), '/tmp/tresnet.pth')"
TRAIN_S=150 profile_run prof_s6_kd experiment=mobilemamba_s6_kd distill.teacher_checkpoint=/tmp/tresnet.pth
echo "call done after $(( $(date +%s) - T0 )) s"
