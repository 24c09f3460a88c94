#!/usr/bin/env bash
# Build mamba-ssm's selective-scan kernels for sm_90 only (H100/H200), into /tmp/msite. Needs the sdist in .msrc/.
set -euo pipefail
repo=$(pwd)
rm -rf /tmp/mbuild && mkdir -p /tmp/mbuild && cd /tmp/mbuild
tar xzf "$repo"/.msrc/mamba_ssm-*.tar.gz && cd mamba_ssm-*
python3 - <<'PY'
import re
s = open("setup.py").read()
s = re.sub(r'cc_flag\.append\("-gencode"\)\s*\n\s*cc_flag\.append\("arch=compute_(?!90,)\d+,code=sm_\d+"\)', "pass", s)
open("setup.py", "w").write(s)
PY
grep -c "compute_90" setup.py
MAMBA_FORCE_BUILD=TRUE MAX_JOBS=${MAX_JOBS:-16} python3 -m pip install -q --no-build-isolation --no-deps --target /tmp/msite .
