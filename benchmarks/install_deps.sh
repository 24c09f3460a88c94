# Sourced (`. benchmarks/install_deps.sh`) from the repository root on a GPU machine whose Python has torch, triton
# and timm but not the project's other dependencies. Installs, once per machine, into /tmp/site:
#   .whl/*.whl            the pure-Python wheels (hydra-core, omegaconf, antlr4-python3-runtime, pytorch-wavelets,
#                         PyWavelets, submitit, hydra-submitit-launcher: `pip download` them for the GPU's Python)
#   .dali-p0 … .dali-p4   DALI's wheels as one tar split in five parts (`split -b 55M -d -a 1 dali.tar part`), for
#                         machines that receive files in pieces: a call may carry any of them; each part is kept
#                         in /tmp/dali_parts until all five are there
# and puts /tmp/site, src/ and the repository root on PYTHONPATH. Scripts that need DALI call `need_dali || exit 0`.
mkdir -p /tmp/site /tmp/dali_parts
for part in .dali-p[0-4]/part; do [ -s "$part" ] && cp "$part" "/tmp/dali_parts/$(dirname "$part" | tr -d .)"; done
if ! python3 -c "import hydra" 2>/dev/null && ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
fi
export PYTHONPATH=/tmp/site:$PWD/src:$PWD PYTHONUNBUFFERED=1 WANDB_MODE=disabled

need_dali() {  # DALI importable, installing it from the five parts when they are all there
  python3 -c "import nvidia.dali" 2>/dev/null && return 0
  local have; have=$(ls /tmp/dali_parts | tr '\n' ' ')
  if [ "$(ls /tmp/dali_parts | wc -l)" -lt 5 ]; then
    echo "DALI: parts [$have] of dali-p0..dali-p4 kept; send the others"
    return 1
  fi
  cat /tmp/dali_parts/dali-p0 /tmp/dali_parts/dali-p1 /tmp/dali_parts/dali-p2 /tmp/dali_parts/dali-p3 \
    /tmp/dali_parts/dali-p4 | tar -x -C /tmp && python3 -m pip install -q --no-index --no-deps --no-compile \
    --target /tmp/site /tmp/whl/*.whl
}
