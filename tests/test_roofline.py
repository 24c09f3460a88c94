"""benchmarks/roofline.py: the per-stage floors count the whole model (its FLOPs match the published counter)."""

import torch

from tests.benchmark_scripts import load_benchmark


def test_stage_floors_cover_the_whole_model_and_match_the_flop_count():
    from mobilemamba.info import variant_info

    rows = load_benchmark("roofline").stage_table("mobilemamba_t2", batch=2, dtype=torch.bfloat16, fused=True)
    assert [r["region"] for r in rows] == ["stem", "stage1", "stage2", "stage3", "head", "pool"]
    macs_per_image = sum(r["gflop"] for r in rows) * 1e9 / 2 / 2
    published = variant_info("mobilemamba_t2")["flops_fused"]
    assert abs(macs_per_image - published) / published < 0.02  # BN/LN/pool elementwise work is not tensor FLOPs
    for r in rows[:4]:  # every stage moves more bytes op by op than its input + weights + output
        assert r["eager_mb"] > r["fused_mb"] > 0 and r["ops"] > 0
