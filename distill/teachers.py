"""Teachers for knowledge distillation: build, load, adapt the student batch, run fast.

A teacher is a timm model name (default ``tresnet_v2_l``, the published teacher's architecture)
with weights from ``distill.teacher_checkpoint`` (a local file, loaded with ``weights_only=True``)
or timm's pretrained weights (``distill.pretrained``, needs the network); or the path of a
checkpoint of this project (self-distillation), rebuilt with ``mobilemamba.create_model`` from
the config stored in the checkpoint.

The teacher is held by the engine next to the student, never inside it, so its weights never
reach the student's checkpoints; only ``teacher.identity`` (name + sha256 of the weights) does.
"""
from __future__ import annotations

import hashlib
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import timm
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import COMPILE_CHOICES, DTYPES, KINDS, DistillConfigError, choice, to_dict
from .fuse import fuse_bn

_TORCH_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
_STATE_DICT_KEYS = ("model", "state_dict", "net", "ema")


class TeacherError(ValueError):
    """The teacher cannot be built or loaded (one line naming the file / key / problem)."""


# ----------------------------------------------------------------------------- weights
def weights_sha256(model: nn.Module) -> str:
    """sha256 over the state_dict (sorted names, each name, dtype, shape and raw bytes)."""
    digest = hashlib.sha256()
    state = model.state_dict()
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def read_checkpoint(path: str | Path) -> Any:
    """``torch.load(weights_only=True)`` on CPU, with one-line errors."""
    path = Path(path)
    if not path.is_file():
        raise TeacherError(f"teacher checkpoint not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling errors are long; keep the first line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TeacherError(f"cannot read teacher checkpoint {path}: {first}") from exc


def unwrap_state_dict(obj: Any, source: str, prefer: Sequence[str] = _STATE_DICT_KEYS) -> dict[str, Tensor]:
    """A raw state_dict, or the first of ``prefer`` keys holding one; strips a DDP ``module.``."""
    if not isinstance(obj, Mapping):
        raise TeacherError(f"teacher checkpoint {source} is a {type(obj).__name__}, not a state_dict")
    if obj and all(isinstance(v, Tensor) for v in obj.values()):
        state = dict(obj)
    else:
        found = [k for k in prefer if isinstance(obj.get(k), Mapping) and obj[k]]
        if not found:
            raise TeacherError(f"teacher checkpoint {source} holds no state_dict under "
                               f"{'/'.join(prefer)} (keys: {sorted(map(str, obj))[:8]})")
        state = dict(obj[found[0]])
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def _mismatch(model: nn.Module, state: Mapping[str, Tensor]) -> str:
    """'' when ``state`` fits ``model`` exactly, else a short description of the difference."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)}≠{tuple(own[k].shape)}" for k in own
              if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    parts = [f"{len(v)} {what} (e.g. {', '.join(v[:3])})" for what, v in
             (("missing", missing), ("unexpected", unexpected), ("of another shape", shapes)) if v]
    return "; ".join(parts)


def load_strict(model: nn.Module, state: Mapping[str, Tensor], source: str, name: str) -> None:
    """Strict load; for a timm model whose keys differ, try timm's converter for old releases
    (the model module's ``checkpoint_filter_fn``, e.g. MIIL's original TResNet files)."""
    problem = _mismatch(model, state)
    if problem:
        module = __import__(type(model).__module__, fromlist=["checkpoint_filter_fn"])
        convert = getattr(module, "checkpoint_filter_fn", None)
        if convert is not None:
            try:
                converted = convert(dict(state), model)
            except Exception:  # a converter failing on foreign keys: report the original mismatch
                converted = None
            if converted is not None and not _mismatch(model, converted):
                state = converted
                problem = ""
    if problem:
        raise TeacherError(f"teacher checkpoint {source} does not fit {name}: {problem}")
    model.load_state_dict(state, strict=True)


# ----------------------------------------------------------------------------- the module
class Teacher(nn.Module):
    """A frozen, always-eval teacher fed with the student's (mixed) batch.

    ``forward(x)``: ``x`` in the student's normalization → raw pixels → teacher normalization →
    bicubic resize to the teacher's size when it differs (no antialias, as the reference) →
    autocast(dtype) + channels_last → fp32 logits, computed under ``torch.inference_mode`` and
    returned as an ordinary tensor (a constant for the loss's autograd graph).
    """

    def __init__(self, model: nn.Module, *, student_mean: Sequence[float], student_std: Sequence[float],
                 mean: Sequence[float], std: Sequence[float], img_size: tuple[int, int],
                 dtype: torch.dtype = torch.float32, channels_last: bool = False,
                 identity: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.model = model
        s_mean, s_std = _channel_vector(student_mean, "student_mean"), _channel_vector(student_std, "student_std")
        t_mean, t_std = _channel_vector(mean, "teacher mean"), _channel_vector(std, "teacher std")
        # x_teacher = (x·s_std + s_mean − t_mean) / t_std = x·scale + shift
        self.register_buffer("scale", (s_std / t_std).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("shift", ((s_mean - t_mean) / t_std).view(1, -1, 1, 1), persistent=False)
        self.img_size = tuple(img_size)
        self.dtype = dtype
        self.channels_last = channels_last
        self.identity = dict(identity or {})
        self.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> "Teacher":
        """A teacher stays in eval mode whatever the engine asks (BN stats, dropout)."""
        return super().train(False)

    def adapt(self, x: Tensor) -> Tensor:
        """The student batch converted to what the teacher expects (fp32, before autocast)."""
        if x.ndim != 4 or x.shape[1] != self.scale.shape[1]:
            raise ValueError(f"teacher expects a (B,{self.scale.shape[1]},H,W) batch, got {tuple(x.shape)}")
        x = x.float() * self.scale + self.shift
        if tuple(x.shape[-2:]) != self.img_size:
            x = F.interpolate(x, size=self.img_size, mode="bicubic", align_corners=False)
        return x

    def forward(self, x: Tensor) -> Tensor:
        with torch.inference_mode():
            x = self.adapt(x)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            fast = self.dtype != torch.float32
            with torch.autocast(device_type=x.device.type, dtype=self.dtype, enabled=fast):
                out = self.model(x)
            if isinstance(out, (tuple, list)):  # a two-head model in eval: average, as at evaluation
                out = torch.stack(list(out)).mean(0)
            out = out.float()
        return out.clone()  # leaves inference mode: a normal tensor the loss may use

    def extra_repr(self) -> str:
        return f"identity={self.identity}"


def _channel_vector(values: Sequence[float], what: str) -> Tensor:
    vec = torch.as_tensor(list(values), dtype=torch.float32).flatten()
    if vec.numel() not in (1, 3):
        raise DistillConfigError(f"{what} must have 1 or 3 values, got {list(values)}")
    if what.endswith("std") and not bool((vec > 0).all()):
        raise DistillConfigError(f"{what} must be > 0, got {list(values)}")
    return vec.expand(3).clone()


def _pair(size: Any, what: str) -> tuple[int, int]:
    if isinstance(size, int):
        return (size, size)
    seq = list(size)
    if len(seq) == 3:  # timm input_size (C, H, W)
        seq = seq[1:]
    if len(seq) != 2 or not all(isinstance(v, int) and v > 0 for v in seq):
        raise DistillConfigError(f"{what} must be an int or (H, W), got {size!r}")
    return (seq[0], seq[1])


# ----------------------------------------------------------------------------- building
def _timm_model(name: str, cfg: Mapping[str, Any]) -> nn.Module:
    """A timm teacher with weights from the local checkpoint or (online) timm's hub."""
    if not timm.is_model(name):
        raise TeacherError(f"distill.teacher {name!r} is neither a timm model name nor an existing checkpoint file")
    kwargs = dict(cfg["teacher_kwargs"] or {})
    if cfg["num_classes"] is not None:
        kwargs["num_classes"] = int(cfg["num_classes"])
    pretrained = bool(cfg["pretrained"]) and not cfg["teacher_checkpoint"]
    try:
        model = timm.create_model(name, pretrained=pretrained, **kwargs)
    except Exception as exc:
        if not pretrained:
            raise
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise TeacherError(f"cannot get timm pretrained weights for {name} (offline?): {first}; "
                           f"set distill.teacher_checkpoint to a local file") from exc
    if cfg["teacher_checkpoint"]:
        path = str(cfg["teacher_checkpoint"])
        load_strict(model, unwrap_state_dict(read_checkpoint(path), path), path, name)
    return model


def _looks_like_path(teacher: str) -> bool:
    if teacher.startswith(("hf-hub:", "hf_hub:", "timm/")):
        return False
    return Path(teacher).suffix in {".ckpt", ".pth", ".pt", ".bin"} or "/" in teacher or Path(teacher).exists()


def _project_model(path: str, cfg: Mapping[str, Any]) -> tuple[nn.Module, str, tuple[int, int] | None]:
    """Rebuild a MobileMamba teacher from a checkpoint of this project: (model, name, img_size)."""
    import mobilemamba  # the lead's package; imported late so timm teachers do not need it

    ckpt = read_checkpoint(path)
    config = ckpt.get("config") if isinstance(ckpt, Mapping) else None
    model_cfg = config.get("model") if isinstance(config, Mapping) else None
    if not isinstance(model_cfg, Mapping) or not model_cfg.get("name"):
        raise TeacherError(f"checkpoint {path} has no config.model.name: not a checkpoint of this project")
    name = str(model_cfg["name"])
    kwargs = {k: model_cfg[k] for k in ("embed_dim", "depth", "distillation", "scan_backend")
              if model_cfg.get(k) is not None}
    kwargs.update(model_cfg.get("kwargs") or {})  # conf/model/*.yaml: extra create_model overrides
    kwargs.update(cfg["teacher_kwargs"] or {})
    num_classes = _project_num_classes(config, cfg)
    if num_classes:
        kwargs["num_classes"] = int(num_classes)
    model = mobilemamba.create_model(name, **kwargs)
    use_ema = cfg["teacher_ema"] if cfg["teacher_ema"] is not None else bool(ckpt.get("ema"))
    prefer = ("ema",) if use_ema else ("model",)
    load_strict(model, unwrap_state_dict(ckpt, path, prefer=prefer), path, name)
    size = model_cfg.get("img_size") or (config.get("data") or {}).get("img_size")
    return model, name, (_pair(size, "config img_size") if size else None)


def _project_num_classes(config: Mapping[str, Any], cfg: Mapping[str, Any]) -> int | None:
    """Classes of a project checkpoint's model: distill.num_classes, else what its recorded config says."""
    model, data = config.get("model") or {}, config.get("data") or {}
    return cfg["num_classes"] or model.get("num_classes") or data.get("num_classes")


def teacher_num_classes(distill_cfg: Any) -> int | None:
    """How many classes the teacher predicts, told without building it (None when it cannot be told: the build
    reports what is wrong)."""
    cfg = to_dict(distill_cfg)
    if cfg["num_classes"] is not None:
        return int(cfg["num_classes"])
    teacher = str(cfg["teacher"])
    if _looks_like_path(teacher):
        ckpt = read_checkpoint(teacher) if Path(teacher).is_file() else None
        config = ckpt.get("config") if isinstance(ckpt, Mapping) else None
        return _project_num_classes(config, cfg) if isinstance(config, Mapping) else None
    if not timm.is_model(teacher):
        return None
    with torch.device("meta"):  # the architecture alone: no memory, no weights
        model = timm.create_model(teacher, pretrained=False, **(cfg["teacher_kwargs"] or {}))
    return getattr(model, "num_classes", None)


def build_teacher(distill_cfg: Any, *, student_mean: Sequence[float], student_std: Sequence[float],
                  student_img_size: int | Sequence[int], device: str | torch.device,
                  cuda_graphs: bool = True) -> Teacher | None:
    """The teacher for the `distill` config group, ready on ``device``; ``None`` for kind 'none'.

    Defaults: img_size / mean / std from the teacher's timm ``pretrained_cfg`` (``test_input_size``
    when it has one: a teacher only runs inference), dtype bf16 and channels_last on CUDA (fp32,
    contiguous on CPU), BN folded, compiled with CUDA graphs on CUDA (``compile: auto``; eager on CPU).
    ``cuda_graphs=False``: no graphs of its own (the caller captures the step around the teacher).
    """
    cfg = to_dict(distill_cfg)
    if choice(cfg, "kind", KINDS) == "none":
        return None
    device = torch.device(device)
    model, identity, ckpt_size = _load_model(cfg)
    pcfg = getattr(model, "pretrained_cfg", None) or {}
    size = cfg["img_size"] or ckpt_size or pcfg.get("test_input_size") or pcfg.get("input_size") or student_img_size
    img_size = _pair(size, "distill.img_size")
    dtype_name = cfg["dtype"] or ("bf16" if device.type == "cuda" else "fp32")
    dtype = _TORCH_DTYPES[choice({**cfg, "dtype": dtype_name}, "dtype", DTYPES)]
    channels_last = bool(cfg["channels_last"] if cfg["channels_last"] is not None else device.type == "cuda")

    model = model.to(device)
    if cfg["fuse_bn"]:
        model = _fuse_checked(model, img_size, identity["name"], device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    mode = compile_mode(cfg["compile"], device, cuda_graphs)
    if mode is not None:
        model = torch.compile(model, mode=mode)
    identity.update(img_size=list(img_size), dtype=dtype_name)
    return Teacher(model, student_mean=student_mean, student_std=student_std,
                   mean=cfg["mean"] or pcfg.get("mean") or (0.0, 0.0, 0.0),
                   std=cfg["std"] or pcfg.get("std") or (1.0, 1.0, 1.0),
                   img_size=img_size, dtype=dtype, channels_last=channels_last, identity=identity).to(device)


def compile_mode(value: Any, device: torch.device, cuda_graphs: bool = True) -> str | None:
    """torch.compile's mode for ``distill.compile`` (None: eager). auto: on CUDA only, where the teacher's forward is
    launch-bound, with CUDA graphs (``reduce-overhead``) unless ``cuda_graphs`` is off (the caller captures the step
    around the teacher); eager on CPU. true: compiled without graphs, on any device."""
    value = choice({"compile": str(value).lower()}, "compile", COMPILE_CHOICES)
    if value == "false" or (value == "auto" and device.type != "cuda"):
        return None
    return "reduce-overhead" if value == "auto" and cuda_graphs else "default"


def _load_model(cfg: Mapping[str, Any]) -> tuple[nn.Module, dict[str, Any], tuple[int, int] | None]:
    """(frozen eval model on CPU, identity {name, source, weights_sha256}, img_size from a project ckpt)."""
    teacher = str(cfg["teacher"])
    ckpt_size = None
    if _looks_like_path(teacher):
        if not Path(teacher).is_file():
            raise TeacherError(f"distill.teacher checkpoint not found: {teacher}")
        model, name, ckpt_size = _project_model(teacher, cfg)
        source = teacher
    else:
        model, name = _timm_model(teacher, cfg), teacher
        source = cfg["teacher_checkpoint"] or ("timm-pretrained" if cfg["pretrained"] else "random-init")
    model.eval().requires_grad_(False)
    return model, {"name": name, "source": str(source), "weights_sha256": weights_sha256(model)}, ckpt_size


def _fuse_checked(model: nn.Module, img_size: tuple[int, int], name: str, device: torch.device) -> nn.Module:
    """BN folded, checked on two random images; the unfused model (and a warning) if it moved."""
    probe = torch.randn(2, 3, *img_size, generator=torch.Generator().manual_seed(0)).to(device)
    fused, folded = fuse_bn(model, probe)
    if folded < 0:
        warnings.warn(f"BN folding changed {name}'s logits; running it unfused", stacklevel=3)
    return fused
