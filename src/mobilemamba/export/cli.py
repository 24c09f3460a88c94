"""Command line of the exporter: `python export.py model=t2 checkpoint=PATH format=onnx [key=value ...]`.

Keys: model (t2|t4|s6|b1|b2|b4 or mobilemamba_*; required), checkpoint (optional: random weights otherwise),
format (onnx|torch_export), opset (18), dynamic_batch (true), out (exports/<model>.onnx|.pt2), img_size
(the resolution the checkpoint was trained at when it records one, else the variant's), ema (false),
exporter (auto|dynamo|torchscript), tolerance (1e-4). The class count is read from the checkpoint's head.
"""
from __future__ import annotations

import sys
import warnings
from typing import Any, Callable

from ..models import VARIANTS
from .core import DYNAMO_MIN_OPSET, TOLERANCE, ExportError, export_model


def _bool(text: str) -> bool:
    low = text.lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected true or false, got {text!r}")


def _model(text: str) -> str:
    name = text if text.startswith("mobilemamba_") else f"mobilemamba_{text}"
    if name not in VARIANTS:
        raise ValueError(f"unknown model {text!r}; expected one of {', '.join(n.split('_')[-1] for n in VARIANTS)}")
    return name


def _optional_path(text: str) -> str | None:
    return None if text.lower() in ("", "null", "none") else text


KEYS: dict[str, tuple[Callable[[str], Any], Any]] = {
    "model": (_model, None),
    "checkpoint": (_optional_path, None),
    "format": (str, "onnx"),
    "opset": (int, DYNAMO_MIN_OPSET),
    "dynamic_batch": (_bool, True),
    "out": (_optional_path, None),
    "img_size": (int, None),
    "ema": (_bool, False),
    "exporter": (str, "auto"),
    "tolerance": (float, TOLERANCE),
}


def parse_args(argv: list[str]) -> dict[str, Any]:
    """key=value arguments (a leading '--' or '+' is accepted) → dict with defaults; ValueError on bad input."""
    args = {key: default for key, (_, default) in KEYS.items()}
    for item in argv:
        key, sep, value = item.lstrip("-+").partition("=")
        if not sep:
            raise ValueError(f"arguments are key=value, got {item!r}")
        if key not in KEYS:
            raise ValueError(f"unknown key {key!r}; known: {', '.join(KEYS)}")
        try:
            args[key] = KEYS[key][0](value)
        except ValueError as err:
            raise ValueError(f"{key}: {err}") from None
    if args["model"] is None:
        raise ValueError("model=<variant> is required (t2, t4, s6, b1, b2, b4)")
    return args


def _one_line_warning(message: Warning | str, category: type, *args: Any, **kwargs: Any) -> None:
    print(f"export: warning: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help", "help") for a in argv):
        print(__doc__)
        return 0
    try:
        args = parse_args(argv)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*pkg_resources.*")
            warnings.showwarning = _one_line_warning
            record = export_model(args["model"], args["checkpoint"], fmt=args["format"], out=args["out"],
                                  opset=args["opset"], dynamic_batch=args["dynamic_batch"],
                                  img_size=args["img_size"], ema=args["ema"], exporter=args["exporter"],
                                  tolerance=args["tolerance"])
    except (ValueError, ExportError) as err:
        print(f"export: error: {err}", file=sys.stderr)
        return 2
    except Exception as err:  # noqa: BLE001 - e.g. CheckpointError: one line, no traceback
        if type(err).__name__ != "CheckpointError":
            raise
        print(f"export: error: {err}", file=sys.stderr)
        return 2
    opset = f" opset {record['opset']} ({record['exporter']})" if record["format"] == "onnx" else ""
    print(f"exported {record['variant']} at {record['img_size']}px to {record['file']}{opset}; "
          f"max relative difference to PyTorch {record['max_rel_diff']:.3g} (≤ {record['tolerance']:g}): ok; "
          f"report {record['file']}.json")
    return 0
