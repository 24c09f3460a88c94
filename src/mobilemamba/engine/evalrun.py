"""eval.py's work: load a checkpoint (ours or published), evaluate top-1/top-5 with the variant's eval transform,
check fused vs unfused on the first batch, measure throughput, write results.json."""
from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from . import distributed as D
from ..models.checkpoint import checkpoint_layout
from .config import ConfigError, build_model, check_data_paths, check_model
from .evaluate import evaluate, fuse_tolerance, fused_copy, ieee_fp32, max_abs_diff, rng_neutral_iter, throughput

log = logging.getLogger("mobilemamba.engine")


def _validate(cfg: DictConfig) -> None:
    check_model(cfg.model)
    ckpt = cfg.get("checkpoint")
    if ckpt in (None, "", "???"):
        raise ConfigError("checkpoint is not set (pass checkpoint=/path/to/file)")
    if not Path(str(ckpt)).is_file():
        raise ConfigError(f"checkpoint: file not found: {ckpt}")
    if not isinstance(cfg.get("tf32", False), bool):
        raise ConfigError(f"tf32 must be true or false, got {cfg.get('tf32')!r}")
    check_data_paths(cfg.data)


def _build_model(cfg: DictConfig, device: torch.device) -> torch.nn.Module:
    from mobilemamba.models.checkpoint import load_checkpoint

    model = build_model(cfg.model, int(cfg.data.num_classes))
    load_checkpoint(model, str(cfg.checkpoint), ema=bool(cfg.ema))
    return model.to(device).eval()


def _left_out(res: dict[str, Any]) -> str:
    return f" ({res['skipped']} unreadable left out)" if res["skipped"] else ""


def take_checkpoint_layout(cfg: DictConfig, explicit: Iterable[str] = ()) -> None:
    """model.img_size and data.num_classes as the checkpoint has them (the resolution its recorded config names,
    the class count its head has), unless given on the command line (`explicit`): that is said in one line."""
    layout = checkpoint_layout(str(cfg.checkpoint), ema=bool(cfg.ema))
    for key, found in (("model.img_size", layout.img_size), ("data.num_classes", layout.num_classes or None)):
        if found is None:
            continue  # a published checkpoint records no resolution: the variant's stays
        given = OmegaConf.select(cfg, key)
        if key not in explicit:
            OmegaConf.update(cfg, key, found)
        elif given != found:
            log.info("%s=%s from the command line overrides the checkpoint's %s", key, given, found)


def evaluate_checkpoint(cfg: DictConfig, out_dir: Path, explicit: Iterable[str] = ()) -> dict[str, Any]:
    _validate(cfg)
    take_checkpoint_layout(cfg, explicit)
    env = D.init_distributed(str(cfg.get("device", "auto")))
    try:
        with ieee_fp32(enabled=not cfg.get("tf32", False)):
            return _evaluate(cfg, out_dir, env)
    finally:
        D.destroy_distributed()


def _evaluate(cfg: DictConfig, out_dir: Path, env: D.DistEnv) -> dict[str, Any]:
    from mobilemamba.data import build_loaders

    D.seed_everything(int(cfg.get("seed", 0)))
    device = env.device
    model = _build_model(cfg, device)
    pc = dict(getattr(model, "pretrained_cfg", {}) or {})
    data_cfg = cfg.data.copy()
    with open_dict(data_cfg):
        data_cfg.train_split = data_cfg.val_split  # eval needs no train split on disk
    _, val_loader = build_loaders(
        data_cfg, {"auto_augment": None, "reprob": 0.0}, img_size=int(cfg.model.img_size),
        mean=tuple(pc.get("mean")), std=tuple(pc.get("std")), crop_pct=float(pc.get("crop_pct", 0.875)),
        interpolation=str(pc.get("interpolation", "bicubic")), batch_size=int(cfg.data.eval_batch_size),
        eval_batch_size=int(cfg.data.eval_batch_size), rank=env.rank, world_size=env.world_size, device=device,
        seed=int(cfg.get("seed", 0)), channels_last=bool(cfg.get("channels_last", False)),
    )
    amp = str(cfg.get("amp", "none"))
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)
    if amp not in ("none", "bf16", "fp16"):
        raise ConfigError(f"amp must be none|bf16|fp16, got {amp!r}")

    def autocast():
        return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()

    try:  # the loader's worker processes end here, not at the interpreter's exit (TorchLoader.close)
        images, _ = next(rng_neutral_iter(val_loader))
        evaluated = model
        diff = None
        agree = None
        if cfg.fuse:
            fused = fused_copy(model)
            diff = max_abs_diff(model, fused, images)
            with torch.no_grad():
                scale = model(images).float().abs().max().item()
            agree = diff <= fuse_tolerance(scale)
            if env.is_main:
                print(f"fused vs unfused on the first batch: max |diff| = {diff:.3e} ({'OK' if agree else 'MISMATCH'})", flush=True)
            evaluated = fused
        if cfg.get("channels_last"):
            evaluated = evaluated.to(memory_format=torch.channels_last)
        res = evaluate(evaluated, val_loader, device=device, autocast=autocast, max_batches=cfg.get("max_batches"),
                       channels_last=bool(cfg.get("channels_last", False)))
    finally:
        val_loader.close()
    tp_cfg = cfg.get("throughput") or {}
    if tp_cfg.get("cuda_graph") and device.type != "cuda":
        raise ConfigError(f"throughput.cuda_graph=true needs a CUDA device, got device={device}")
    ips = throughput(evaluated, batch_size=int(tp_cfg.get("batch_size", 64)), img_size=int(cfg.model.img_size),
                     device=device, warmup=int(tp_cfg.get("warmup", 3)), iters=int(tp_cfg.get("iters", 10)),
                     channels_last=bool(cfg.get("channels_last", False)), autocast=autocast,
                     compile=bool(tp_cfg.get("compile", False)), cuda_graph=bool(tp_cfg.get("cuda_graph", False)),
                     compile_backend=str(tp_cfg.get("compile_backend", "inductor")))
    results = {
        "model": str(cfg.model.name),
        "img_size": int(cfg.model.img_size),
        "checkpoint": str(cfg.checkpoint),
        "ema": bool(cfg.ema),
        "top1": res["top1"],
        "top5": res["top5"],
        "loss": res["loss"],
        "images": res["images"],
        "skipped": res["skipped"],
        "fused": bool(cfg.fuse),
        "fused_max_abs_diff": diff,
        "fused_agree": agree,
        "throughput": ips,
        "throughput_batch": int(tp_cfg.get("batch_size", 64)),
        "throughput_compiled": bool(tp_cfg.get("compile", False)),
        "throughput_cuda_graph": bool(tp_cfg.get("cuda_graph", False)),
        "device": str(device),
        "amp": amp,
        "tf32": bool(cfg.get("tf32", False)),
        "world_size": env.world_size,
    }
    if env.is_main:
        out = Path(str(cfg.get("output") or out_dir / "results.json"))
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
        tmp.write_text(json.dumps(results, indent=2) + "\n")
        os.replace(tmp, out)
        print(
            f"{cfg.model.name} @{cfg.model.img_size} ({'EMA' if cfg.ema else 'raw'}, {'fused' if cfg.fuse else 'unfused'}): "
            f"top-1 {res['top1']:.2f}%  top-5 {res['top5']:.2f}%  on {res['images']} images{_left_out(res)} | "
            f"{ips:.1f} img/s (batch {results['throughput_batch']}, {device}) → {out}",
            flush=True,
        )
    if agree is False:
        raise RuntimeError(f"fused model disagrees with the unfused one: max |diff| {diff:.3e}")
    return results
