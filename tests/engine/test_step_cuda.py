"""On a CUDA GPU (skipped elsewhere): the captured update replays the eager update's losses and skips, nothing in an
update synchronizes with the host, and train.py's default path compiles with CUDA graphs and trains."""
from __future__ import annotations

import json
import math

import pytest
import torch

from mobilemamba.engine.ema import ModelEma
from mobilemamba.engine.step import CapturedUpdate, DeviceUpdate

from .helpers import run

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
DEVICE = torch.device("cuda")
NAN_AT = 3  # 1-based update whose loss is made NaN


def _update(seed: int = 0) -> tuple[DeviceUpdate, torch.Tensor]:
    """A tiny MobileMamba with the recipe's step: fp16 autocast + GradScaler, fused AdamW, clip 5, EMA."""
    import mobilemamba
    from timm.loss import SoftTargetCrossEntropy

    torch.manual_seed(seed)
    model = mobilemamba.create_model("mobilemamba_t2", num_classes=10, embed_dim=(16, 32, 48), depth=(1, 1, 1))
    model = model.to(DEVICE).to(memory_format=torch.channels_last).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05, fused=True)
    poison = torch.ones((), device=DEVICE)
    criterion = SoftTargetCrossEntropy()

    def forward_loss(images, soft):
        with torch.autocast("cuda", dtype=torch.float16, cache_enabled=False):
            out = model(images)
        return criterion(out.float(), soft) * poison, None

    update = DeviceUpdate(model=model, optimizer=optimizer, scaler=torch.amp.GradScaler("cuda"),
                          ema=ModelEma(model, decay=0.9), ddp=None, forward_loss=forward_loss, accum=1,
                          max_nonfinite=20, device=DEVICE)
    update.set_phase(5.0)
    return update, poison


def _batches(n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    out = []
    for _ in range(n):
        images = torch.randn(16, 3, 64, 64, generator=g).to(DEVICE).contiguous(memory_format=torch.channels_last)
        out.append((images, torch.softmax(torch.randn(16, 10, generator=g), -1).to(DEVICE)))
    return out


def _run(run_update, poison: torch.Tensor, batches) -> list[list[float]]:
    records = []
    for i, batch in enumerate(batches, 1):
        poison.fill_(float("nan") if i == NAN_AT else 1.0)
        records.append(run_update(iter([batch])))
    return torch.stack(records).tolist()


def test_the_captured_update_replays_the_eager_losses_and_skips():
    batches = _batches(8)
    eager_update, eager_poison = _update()
    eager = _run(eager_update, eager_poison, batches)
    update, poison = _update()
    captured = CapturedUpdate(update, DEVICE)
    replayed = _run(captured, poison, batches)
    assert captured.graph is not None and captured.capture_s > 0
    assert [r[3] for r in replayed] == [r[3] for r in eager] == [float(i == NAN_AT) for i in range(1, 9)]
    for i, (a, b) in enumerate(zip(replayed, eager), 1):
        if i != NAN_AT:
            assert a[0] == pytest.approx(b[0], rel=2e-3), f"update {i}"
    assert math.isnan(replayed[NAN_AT - 1][0])
    for name, p in update.model.named_parameters():
        assert torch.allclose(p, dict(eager_update.model.named_parameters())[name], rtol=1e-2, atol=1e-4), name


@pytest.mark.parametrize("captured", [False, True])
def test_queued_updates_never_wait_for_the_host(captured):
    update, poison = _update()
    run_update = CapturedUpdate(update, DEVICE) if captured else update
    batches = _batches(4)
    run_update(iter([batches[0]]))  # the first call: lazy state, cuDNN's search (and the capture)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for batch in batches[1:]:
            poison.fill_(1.0)
            update.stop.fill_(0.0)
            run_update(iter([batch]))
    finally:
        torch.cuda.set_sync_debug_mode("default")


@pytest.mark.slow
@pytest.mark.parametrize("capture, expected", [("auto", "update"), ("model", "model")])
def test_train_py_default_path_compiles_with_cuda_graphs_and_trains(cache_dir, tmp_path, capture, expected):
    assert run(cache_dir, tmp_path, "trainer.epochs=1", "trainer.amp=fp16", f"trainer.capture={capture}",
               "trainer.deterministic=false") == 0
    recs = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    (startup,) = [r for r in recs if r.get("event") == "startup"]
    mode = "reduce-overhead" if expected == "model" else "default"
    assert (startup["compile"], startup["compile_mode"], startup["capture"]) == ("whole", mode, expected)
    assert all(math.isfinite(r["loss"]) for r in recs if r["kind"] == "train")
