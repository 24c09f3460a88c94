"""`python -m mobilemamba.info` reproduces the paper's parameter and FLOP figures (spec §5)."""
import json
import subprocess
import sys

PUBLISHED_MFLOPS = {"mobilemamba_t2": (254.75, 252.22), "mobilemamba_t4": (412.55, 409.35),
                    "mobilemamba_s6": (652.33, 647.57), "mobilemamba_b1": (1079.75, 1071.59),
                    "mobilemamba_b2": (2427.07, 2408.71), "mobilemamba_b4": (4313.31, 4280.67)}


def test_info_json_matches_published_params_and_flops():
    out = subprocess.run([sys.executable, "-m", "mobilemamba.info", "--json"], capture_output=True, text=True,
                         check=True, timeout=600)
    rows = {r["name"]: r for r in json.loads(out.stdout)}
    assert set(rows) == set(PUBLISHED_MFLOPS)
    for name, (flops, flops_fused) in PUBLISHED_MFLOPS.items():
        row = rows[name]
        assert set(row) >= {"name", "img_size", "params", "params_fused", "flops"}
        assert round(row["flops"] / 1e6, 2) == flops, name
        assert round(row["flops_fused"] / 1e6, 2) == flops_fused, name
    assert rows["mobilemamba_t2"]["params"] == 8_836_890 and rows["mobilemamba_t2"]["params_fused"] == 8_809_444
    assert rows["mobilemamba_t2"]["params_trainable"] == 8_806_682  # without the fixed Haar filters (buffers)
    assert rows["mobilemamba_b4"]["img_size"] == 512
