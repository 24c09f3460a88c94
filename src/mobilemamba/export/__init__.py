"""Deployment: ONNX / torch.export of the fused model (`python export.py ...` or `python -m mobilemamba.export`)
and the CPU inference benchmark (`python -m mobilemamba.export.bench_cpu`)."""
from .core import (EXPORT_SCAN_BACKEND, TOLERANCE, ExportError, build_export_model, check_onnx, compare_onnx,
                   compare_torch_export, export_model, export_onnx, export_torch, max_rel_diff, nonstandard_ops,
                   set_scan_backend)

__all__ = ["EXPORT_SCAN_BACKEND", "TOLERANCE", "ExportError", "build_export_model", "check_onnx", "compare_onnx",
           "compare_torch_export", "export_model", "export_onnx", "export_torch", "max_rel_diff", "nonstandard_ops",
           "set_scan_backend"]
