"""Export a MobileMamba to ONNX or torch.export: `python export.py model=t2 checkpoint=PATH format=onnx`.

See `python export.py --help` and mobilemamba.export.
"""
import sys
import warnings

if __name__ == "__main__":
    warnings.filterwarnings("ignore", message=".*pkg_resources.*")  # pytorch_wavelets' import
    sys.modules.setdefault("wandb", None)  # timm imports wandb if present: ~20 s of startup for nothing
    from mobilemamba.export.cli import main

    sys.exit(main())
