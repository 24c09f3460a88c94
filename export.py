"""Export a MobileMamba to ONNX or torch.export: `python export.py model=t2 checkpoint=PATH format=onnx`.

See `python export.py --help` and mobilemamba.export.
"""
import sys
import warnings

if __name__ == "__main__":
    warnings.filterwarnings("ignore", message=".*pkg_resources.*")  # pytorch_wavelets' import
    from mobilemamba.export.cli import main

    sys.exit(main())
