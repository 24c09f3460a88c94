# Sourced by the GPU session scripts (m, n, p, q with DALI; r without), run from the repository root:
# the DALI part of call PART (1-4) copied aside, the project's wheels installed once, PYTHONPATH set; on call 5,
# `assemble_dali` joins the parts (the fifth from the carried .dali-p4) and installs DALI, unless it imports already.
# With PART unset only the wheels and PYTHONPATH.
mkdir -p /tmp/dparts
case ${PART:-} in [1-4]) cp ".dali-p$((PART - 1))/part" "/tmp/dparts/p$((PART - 1))" ;; esac
[ -d /tmp/site/hydra ] || python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD/src:$PWD

assemble_dali() {
  python3 -c "import nvidia.dali" 2>/dev/null && return 0
  cat /tmp/dparts/p0 /tmp/dparts/p1 /tmp/dparts/p2 /tmp/dparts/p3 .dali-p4/part > /tmp/d.tar && tar -xf /tmp/d.tar -C /tmp
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site /tmp/whl/*.whl
}
