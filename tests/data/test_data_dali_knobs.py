"""The DALI knobs (``data.dali_*``): defaults, one-line errors, where they reach the pipelines; the loader bench's
ablation rows (variants x hardware-decoder loads) with the CPU-decoding DALI loader."""
from __future__ import annotations

import pytest
import torch
from data_helpers import NO_AUG, NUM_CLASSES, PER_CLASS_TRAIN, loader_kwargs
from omegaconf import OmegaConf

from mobilemamba.data import DatasetError, build_loaders
from mobilemamba.data.config import DALI_HW_DECODER_LOAD, AugParams, DataParams

pytest.importorskip("nvidia.dali", reason="NVIDIA DALI is not installed")

from mobilemamba.data.bench import _plan, parse_variant  # noqa: E402
from mobilemamba.data.bench import main as bench_main  # noqa: E402
from mobilemamba.data.dali_loader import _decoder_kwargs, auto_thread, train_pipeline, val_pipeline  # noqa: E402

BASE = {"loader": "dali", "root": "/x"}


def test_knob_defaults_types_and_the_older_prefetch_key():
    p = DataParams.from_cfg(BASE)
    assert (p.dali_hw_decoder_load, p.dali_prefetch, p.dali_preallocate_width_hint, p.dali_preallocate_height_hint,
            p.dali_roi_decode, p.dali_zero_copy, p.dali_randaug, p.dali_thread) == (
        DALI_HW_DECODER_LOAD, 4, 5980, 6430, True, True, "torch", None)  # fmt: skip
    assert DataParams.from_cfg({**BASE, "prefetch": 3}).dali_prefetch == 3  # the older key
    assert DataParams.from_cfg({**BASE, "prefetch": 3, "dali_prefetch": 5}).prefetch == 5
    assert DataParams.from_cfg({**BASE, "dali_thread": "auto"}).dali_thread is None
    assert DataParams.from_cfg({**BASE, "dali_thread": "false"}).dali_options()["thread"] is False
    assert DataParams.from_cfg(BASE).dali_options()["randaug_kernels"] == "auto"
    assert DataParams.from_cfg({**BASE, "randaug_kernels": "torch"}).dali_options()["randaug_kernels"] == "torch"
    p = DataParams.from_cfg(OmegaConf.create({**BASE, "dali_hw_decoder_load": "0.5", "dali_roi_decode": "false",
                                              "dali_prefetch": 3.0, "dali_preallocate_width_hint": 0}))  # fmt: skip
    opts = p.dali_options()
    assert opts["hw_decoder_load"] == 0.5 and opts["roi_decode"] is False and opts["prefetch"] == 3
    assert opts["preallocate_hint"] == (0, 6430) and opts["zero_copy"] is True


def test_auto_prefetch_thread_only_where_it_pays_on_cuda_with_the_torch_randaugment():
    cuda, cpu = torch.device("cuda", 0), torch.device("cpu")
    assert auto_thread(cuda, torch_randaug=True)
    assert not auto_thread(cuda, torch_randaug=False)  # a light tail (normalize + erasing): faster on the consumer
    assert not auto_thread(cpu, torch_randaug=True)


@pytest.mark.parametrize(
    "key, value, match",
    [
        ("dali_hw_decoder_load", 1.5, r"must be in \[0, 1\], got 1.5"),
        ("dali_hw_decoder_load", -0.1, r"must be in \[0, 1\]"),
        ("dali_hw_decoder_load", float("nan"), r"must be in \[0, 1\]"),
        ("dali_hw_decoder_load", "lots", "must be a number, got 'lots'"),
        ("dali_hw_decoder_load", True, "must be a number"),
        ("dali_prefetch", 0, "must be >= 1, got 0"),
        ("dali_prefetch", 2.5, "must be an integer"),
        ("dali_prefetch", float("inf"), "must be an integer"),
        ("dali_preallocate_width_hint", -1, "must be >= 0"),
        ("dali_preallocate_height_hint", "big", "must be an integer"),
        ("dali_roi_decode", "maybe", "must be true or false"),
        ("dali_zero_copy", 2, "must be true or false"),
        ("dali_threads", -2, "must be >= 0"),
        ("randaug_kernels", "cuda", "must be one of auto, triton, torch, got 'cuda'"),
    ],
)
def test_bad_knob_values_give_a_one_line_error_naming_the_key(key, value, match):
    with pytest.raises(DatasetError, match=match) as err:
        DataParams.from_cfg({**BASE, key: value})
    assert str(err.value).startswith(f"data.{key} ") and "\n" not in str(err.value)


def test_the_gpu_knobs_go_to_mixed_decoders_only():
    assert _decoder_kwargs(None, hw_decoder_load=0.3, preallocate_hint=(640, 480)) == {"device": "cpu"}
    kw = _decoder_kwargs(0, hw_decoder_load=0.3, preallocate_hint=(640, 480))
    assert kw["device"] == "mixed" and kw["hw_decoder_load"] == 0.3
    assert (kw["preallocate_width_hint"], kw["preallocate_height_hint"]) == (640, 480)
    assert kw["device_memory_padding"] > 0 and kw["host_memory_padding"] > 0
    assert _decoder_kwargs(0)["hw_decoder_load"] == DALI_HW_DECODER_LOAD


def _decoder_spec(pipe) -> str:
    """The argument listing of the pipeline's decoder (graph defined in Python; no device needed)."""
    if not hasattr(pipe, "_build_graph") or not hasattr(pipe, "_ops"):
        pytest.skip("this DALI version has no Pipeline._build_graph / _ops")
    if not pipe._ops:
        pipe._build_graph()
    specs = [str(op.spec) for op in pipe._ops if str(op.spec).splitlines()[0].startswith("OpSpec for decoders__")]
    assert len(specs) == 1
    return specs[0]


def _no_source():
    raise StopIteration


@pytest.mark.parametrize("roi", [True, False], ids=["roi-decode", "whole-decode"])
def test_the_knobs_reach_the_gpu_pipelines(roi):
    common = dict(img_size=32, device_id=0, num_threads=1, seed=0, prefetch=3, hw_decoder_load=0.25,
                  preallocate_hint=(100, 200), build=False)  # fmt: skip
    train = train_pipeline(_no_source, batch_size=4, aug=AugParams(auto_augment=None, reprob=0.0), roi_decode=roi,
                           **common)
    spec = _decoder_spec(train)
    assert "device: mixed" in spec and "hw_decoder_load: 0.25" in spec
    assert "preallocate_width_hint: 100" in spec and "preallocate_height_hint: 200" in spec
    assert spec.startswith("OpSpec for decoders__ImageRandomCrop") == roi
    assert train.prefetch_queue_depth == 3
    val = val_pipeline(_no_source, batch_size=4, crop_pct=0.875, interpolation="bicubic", mean=(0.0,) * 3,
                       std=(1.0,) * 3, **common)  # fmt: skip
    assert "hw_decoder_load: 0.25" in _decoder_spec(val) and val.prefetch_queue_depth == 3


@pytest.mark.parametrize("kernels", ["auto", "torch"])
def test_randaug_kernels_reach_the_batched_randaugment(jpeg_folder, kernels):
    cfg = dict(loader="dali", root=str(jpeg_folder), num_classes=NUM_CLASSES, dali_device="cpu", dali_threads=1,
               randaug_kernels=kernels)  # fmt: skip
    train, _ = build_loaders(cfg, {"auto_augment": "rand-m9-mstd0.5-inc1"}, **loader_kwargs())
    assert train.transform.randaug.kernels == kernels


def test_a_cpu_pipeline_gets_prefetch_and_whole_image_decoding_but_no_gpu_knobs(jpeg_folder):
    cfg = dict(loader="dali", root=str(jpeg_folder), num_classes=NUM_CLASSES, dali_device="cpu", dali_threads=2,
               dali_prefetch=3, dali_roi_decode=False, dali_hw_decoder_load=0.1,
               dali_preallocate_width_hint=0)  # fmt: skip
    train, _ = build_loaders(cfg, NO_AUG, **loader_kwargs())
    batches = list(train)
    assert len(batches) == len(train) == NUM_CLASSES * PER_CLASS_TRAIN // 4
    assert all(x.shape == (4, 3, 32, 32) and y.dtype == torch.int64 for x, y in batches)
    assert train._pipe.prefetch_queue_depth == 3
    spec = _decoder_spec(train._pipe)
    assert spec.startswith("OpSpec for decoders__Image:") and "device: cpu" in spec
    assert "hw_decoder_load" not in spec and "preallocate" not in spec


def test_bench_variants_and_overrides_are_parsed_and_planned():
    assert parse_variant("full") == ({}, {})
    assert parse_variant("decode-only+dali_prefetch=3+dali_roi_decode=false") == (
        {"auto_augment": None, "reprob": 0.0, "hflip": 0.0}, {"dali_prefetch": 3, "dali_roi_decode": False})
    with pytest.raises(DatasetError, match="unknown variant 'fast'"):
        parse_variant("fast")
    with pytest.raises(DatasetError, match="not a data config key"):
        parse_variant("full+hw=1")
    plan = _plan(["torch", "dali", "dali-cpu"], ["full", "no-randaug+dali_device=cpu"], [0.0, 1.0],
                 torch.device("cuda"), {})  # fmt: skip
    assert plan == [("torch", "full", None), ("dali", "full", 0.0), ("dali", "full", 1.0),
                    ("dali", "no-randaug+dali_device=cpu", None), ("dali-cpu", "full", None),
                    ("dali-cpu", "no-randaug+dali_device=cpu", None)]  # fmt: skip
    assert _plan(["dali"], ["full"], [0.5], torch.device("cpu"), {}) == [("dali", "full", None)]  # CPU decoding


def test_bench_runs_every_variant_with_the_dali_cpu_loader(jpeg_folder, tmp_path, capsys):
    out = tmp_path / "bench.md"
    variants = "full,no-erasing,no-randaug,decode-only,decode-only+dali_roi_decode=false+dali_prefetch=3"
    rc = bench_main([str(jpeg_folder), "--loaders", "dali-cpu", "--variants", variants, "--hw-load", "0.0,1.0",
                     "--batch", "4", "--img-size", "32", "--iters", "9", "--warmup", "1", "--threads", "2",
                     "--device", "cpu", "--torch-img-s", "100", "--out", str(out)])  # fmt: skip
    printed = capsys.readouterr().out
    assert rc == 0
    assert f"{NUM_CLASSES * PER_CLASS_TRAIN} train images in {NUM_CLASSES} classes, 7 batches of 4 per epoch" in printed
    table = out.read_text()
    assert "| loader | img/s | vs torch | variant | hw load |" in table
    rows = [[c.strip() for c in ln.split("|")[1:-1]] for ln in table.splitlines() if ln.startswith("| dali-cpu |")]
    assert [r[3] for r in rows] == variants.split(",")  # CPU decoding: no hardware-decoder sweep
    for r in rows:
        assert float(r[1].replace(",", "")) > 0 and r[2].endswith("x") and r[4] == "-"
        # CPU cores busy: a number (on 4-image batches of 32 px, prefetched ahead, it can round to 0.0 under load)
        assert float(r[8]) >= 0 and r[9] == "2 epochs, refills excluded"  # 1 + 9 batches > 7 per epoch
    assert printed.count("| dali-cpu |") == len(rows)  # the final table on stdout


def test_bench_names_a_bad_override_in_one_line(jpeg_folder, capsys):
    assert bench_main([str(jpeg_folder), "--loaders", "dali-cpu", "--set", "dali_prefetch", "--device", "cpu"]) == 2
    assert capsys.readouterr().out.strip() == "error: --set: expected KEY=VALUE, got 'dali_prefetch'"
