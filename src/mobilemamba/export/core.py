"""Export the fused eval model: ONNX (checked by onnx.checker and compared with onnxruntime) and torch.export.

The model is fused (BN folded, Haar transform as convs) and every SS2D switched to the 'chunked' scan, which is
written in cumsum/exp/matmul/masking, so the graph holds standard ONNX operators only.
"""
from __future__ import annotations

import json
import logging
import os
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from ..models import VARIANTS, create_model
from ..models.checkpoint import checkpoint_layout
from ..models.layers import randomize_batchnorm
from ..models.ss2d import SS2D

EXPORT_SCAN_BACKEND = "chunked"
TOLERANCE = 1e-4  # max relative difference allowed between the exported model and PyTorch (fp32)
DYNAMO_MIN_OPSET = 18  # the dynamo exporter writes opset ≥ 18; lower opsets go through the TorchScript exporter
STANDARD_DOMAINS = ("", "ai.onnx")
_log = logging.getLogger(__name__)


class ExportError(RuntimeError):
    """The export cannot be done or did not verify; the message is one line."""


# ------------------------------------------------------------------------------------------------ the model


def set_scan_backend(model: nn.Module, backend: str) -> int:
    """Point every SS2D of `model` at `backend`; returns how many were switched."""
    count = 0
    for m in model.modules():
        if isinstance(m, SS2D):
            m.scan_backend = backend
            count += 1
    return count


def build_export_model(name: str, checkpoint: str | os.PathLike | None = None, *, ema: bool = False,
                       seed: int = 0, **overrides: Any) -> nn.Module:
    """The fused eval model with the export scan, weights from `checkpoint` (random, with a warning, without one).

    A checkpoint's number of classes and whether it is already fused are read from the file itself.
    """
    if name not in VARIANTS:
        raise ExportError(f"unknown model {name!r}; expected one of {', '.join(VARIANTS)}")
    if checkpoint is None:
        warnings.warn(f"no checkpoint given: exporting {name} with random weights", stacklevel=2)
        torch.manual_seed(seed)
        model = randomize_batchnorm(create_model(name, scan_backend=EXPORT_SCAN_BACKEND, **overrides), seed)
        model.fuse()
    else:
        layout = checkpoint_layout(checkpoint, ema)
        model = create_model(name, num_classes=layout.num_classes, scan_backend=EXPORT_SCAN_BACKEND,
                             checkpoint=checkpoint, ema=ema, fused=layout.fused, **overrides)
        if not getattr(model, "fused", False):
            model.fuse()
    set_scan_backend(model, EXPORT_SCAN_BACKEND)
    return model.eval()


def example_input(img_size: int, batch: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 3, img_size, img_size, generator=torch.Generator().manual_seed(seed))


def max_rel_diff(out: torch.Tensor, ref: torch.Tensor) -> float:
    """max |out − ref| / max |ref|: the largest error relative to the scale of the reference output."""
    out, ref = out.double(), ref.double()
    scale = ref.abs().max().item()
    return (out - ref).abs().max().item() / (scale if scale > 0 else 1.0)


# --------------------------------------------------------------------------------------------------- ONNX


def _require_onnx() -> tuple[Any, Any]:
    try:
        import onnx
        import onnxruntime
    except ImportError as err:
        raise ExportError(f"format=onnx needs onnx and onnxruntime ({err.name} is missing): "
                          f"pip install -e '.[export]'") from None
    return onnx, onnxruntime


def export_onnx(model: nn.Module, path: str | os.PathLike, img_size: int, *, opset: int = DYNAMO_MIN_OPSET,
                dynamic_batch: bool = True, exporter: str = "auto") -> str:
    """Write `model` as ONNX to `path` with input 'input' (B, 3, S, S) and output 'logits'; returns the exporter.

    exporter: 'dynamo' (torch.export based; opset ≥ 18), 'torchscript' (tracing; any opset ≥ 17), or 'auto'
    (dynamo when the opset allows it).
    """
    if exporter == "auto":
        exporter = "dynamo" if opset >= DYNAMO_MIN_OPSET else "torchscript"
    if exporter not in ("dynamo", "torchscript"):
        raise ExportError(f"exporter must be auto, dynamo or torchscript, got {exporter!r}")
    if exporter == "dynamo" and opset < DYNAMO_MIN_OPSET:
        raise ExportError(f"the dynamo exporter writes opset ≥ {DYNAMO_MIN_OPSET}, got opset={opset} "
                          f"(use exporter=torchscript)")
    if opset < 17:
        raise ExportError(f"opset must be ≥ 17 (LayerNormalization), got {opset}")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    x = example_input(img_size)
    names = dict(input_names=["input"], output_names=["logits"])
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if exporter == "dynamo":
            shapes = ({0: torch.export.Dim("batch", min=1, max=4096)},) if dynamic_batch else None
            torch.onnx.export(model, (x,), str(path), dynamo=True, opset_version=opset, dynamic_shapes=shapes,
                              external_data=False, optimize=True, verbose=False, **names)
        else:
            axes = {"input": {0: "batch"}, "logits": {0: "batch"}} if dynamic_batch else None
            torch.onnx.export(model, (x,), str(path), dynamo=False, opset_version=opset, dynamic_axes=axes,
                              do_constant_folding=True, **names)
    return exporter


def nonstandard_ops(onnx_model: Any) -> list[str]:
    """'domain::op' of every node (graph, subgraphs and local functions) outside the standard ONNX domain."""
    found: set[str] = set()

    def visit(nodes: Any) -> None:
        for node in nodes:
            if node.domain not in STANDARD_DOMAINS:
                found.add(f"{node.domain}::{node.op_type}")
            for attr in node.attribute:
                if attr.g is not None and len(attr.g.node):
                    visit(attr.g.node)
                for sub in attr.graphs:
                    visit(sub.node)

    visit(onnx_model.graph.node)
    for fn in onnx_model.functions:
        found.add(f"{fn.domain}::{fn.name} (local function)")
        visit(fn.node)
    return sorted(found)


def check_onnx(path: str | os.PathLike) -> dict[str, Any]:
    """onnx.checker (full check, with shape inference) and the graph's operator inventory."""
    onnx, _ = _require_onnx()
    proto = onnx.load(str(path))
    try:
        onnx.checker.check_model(proto, full_check=True)
    except onnx.checker.ValidationError as err:
        raise ExportError(f"onnx.checker rejected {path}: {str(err).splitlines()[0]}") from None
    bad = nonstandard_ops(proto)
    if bad:
        raise ExportError(f"{path} uses non-standard operators: {', '.join(bad)}")
    opset = next((o.version for o in proto.opset_import if o.domain in STANDARD_DOMAINS), None)

    def describe(values: Any) -> list[dict[str, Any]]:
        dims = lambda v: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]  # noqa: E731
        return [dict(name=v.name, shape=dims(v), dtype=onnx.helper.tensor_dtype_to_np_dtype(
            v.type.tensor_type.elem_type).name) for v in values]

    return dict(opset=opset, inputs=describe(proto.graph.input), outputs=describe(proto.graph.output),
                ops=sorted({n.op_type for n in proto.graph.node}), nodes=len(proto.graph.node))


def compare_onnx(path: str | os.PathLike, model: nn.Module, img_size: int, batches: tuple[int, ...] = (1, 3),
                 seed: int = 1) -> float:
    """Max relative difference between onnxruntime (CPU) and PyTorch on random inputs of each batch size."""
    _, ort = _require_onnx()
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    worst = 0.0
    for i, batch in enumerate(batches):
        x = example_input(img_size, batch, seed + i)
        with torch.no_grad():
            ref = model(x)
        out = torch.from_numpy(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0])
        if out.shape != ref.shape:
            raise ExportError(f"onnxruntime output shape {tuple(out.shape)} != PyTorch {tuple(ref.shape)}")
        worst = max(worst, max_rel_diff(out, ref))
    return worst


# ------------------------------------------------------------------------------------------------ torch.export


def export_torch(model: nn.Module, path: str | os.PathLike, img_size: int, *, dynamic_batch: bool = True) -> None:
    """torch.export.export of `model`, saved as a .pt2 archive (load with torch.export.load(path).module())."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    shapes = ({0: torch.export.Dim("batch", min=1, max=4096)},) if dynamic_batch else None
    with torch.no_grad():
        program = torch.export.export(model, (example_input(img_size),), dynamic_shapes=shapes)
    torch.export.save(program, str(path))


def compare_torch_export(path: str | os.PathLike, model: nn.Module, img_size: int,
                         batches: tuple[int, ...] = (1, 3), seed: int = 1) -> float:
    """Max relative difference between the reloaded exported program and the eager model."""
    exported = torch.export.load(str(path)).module()
    worst = 0.0
    for i, batch in enumerate(batches):
        x = example_input(img_size, batch, seed + i)
        with torch.no_grad():
            worst = max(worst, max_rel_diff(exported(x), model(x)))
    return worst


# ---------------------------------------------------------------------------------------------------- driver


def default_out(name: str, fmt: str) -> Path:
    return Path("exports") / (f"{name}.onnx" if fmt == "onnx" else f"{name}.pt2")


def export_img_size(name: str, checkpoint: str | os.PathLike | None, ema: bool,
                     img_size: int | None) -> tuple[int, str, int | None]:
    """(resolution, where it comes from, the checkpoint's training resolution): the argument, else the resolution
    the checkpoint was trained at (this project's record it), else the variant's."""
    trained_at = checkpoint_layout(checkpoint, ema).img_size if checkpoint is not None else None
    if img_size:
        if trained_at and int(img_size) != trained_at:
            warnings.warn(f"img_size={img_size} overrides the resolution the checkpoint was trained at ({trained_at})",
                          stacklevel=3)
        return int(img_size), "argument", trained_at
    if trained_at:
        return trained_at, "checkpoint", trained_at
    return VARIANTS[name].img_size, "variant", None


def export_model(name: str, checkpoint: str | os.PathLike | None = None, *, fmt: str = "onnx",
                 out: str | os.PathLike | None = None, opset: int = DYNAMO_MIN_OPSET, dynamic_batch: bool = True,
                 img_size: int | None = None, ema: bool = False, exporter: str = "auto",
                 tolerance: float = TOLERANCE, **overrides: Any) -> dict[str, Any]:
    """Build, fuse, export and verify; writes `<out>.json` beside the file and returns the same record.

    Raises ExportError when the exported model differs from PyTorch by more than `tolerance` (after writing the
    record, with ok=false).
    """
    if fmt not in ("onnx", "torch_export"):
        raise ExportError(f"format must be onnx or torch_export, got {fmt!r}")
    if fmt == "onnx":
        _require_onnx()
    model = build_export_model(name, checkpoint, ema=ema, **overrides)
    img_size, img_size_from, trained_at = export_img_size(name, checkpoint, ema, img_size)
    path = Path(out) if out is not None else default_out(name, fmt)
    record: dict[str, Any] = dict(variant=name, format=fmt, img_size=img_size, img_size_from=img_size_from,
                                  checkpoint_img_size=trained_at, checkpoint=str(checkpoint) if checkpoint else None,
                                  ema=ema, fused=True, scan_backend=EXPORT_SCAN_BACKEND, dynamic_batch=dynamic_batch,
                                  torch=torch.__version__)
    if fmt == "onnx":
        onnx, ort = _require_onnx()
        record["exporter"] = export_onnx(model, path, img_size, opset=opset, dynamic_batch=dynamic_batch,
                                         exporter=exporter)
        record.update(check_onnx(path))
        record.update(onnx=onnx.__version__, onnxruntime=ort.__version__)
        batches = (1, 3) if dynamic_batch else (2,)
        record["max_rel_diff"] = compare_onnx(path, model, img_size, batches)
    else:
        export_torch(model, path, img_size, dynamic_batch=dynamic_batch)
        record["inputs"] = [dict(name="x", shape=["batch" if dynamic_batch else 2, 3, img_size, img_size],
                                 dtype="float32")]
        batches = (1, 3) if dynamic_batch else (2,)
        record["max_rel_diff"] = compare_torch_export(path, model, img_size, batches)
    record.update(compared_batches=list(batches), tolerance=tolerance, ok=record["max_rel_diff"] <= tolerance,
                  file=str(path), bytes=path.stat().st_size)
    Path(f"{path}.json").write_text(json.dumps(record, indent=2) + "\n")
    if not record["ok"]:
        raise ExportError(f"{path}: max relative difference {record['max_rel_diff']:.3g} to PyTorch exceeds "
                          f"{tolerance:g}")
    return record
