"""MobileMamba: lightweight three-stage vision backbones and the framework that trains them.

Importing this package registers `mobilemamba_{t2,t4,s6,b1,b2,b4}` with timm.
"""
from ._lazy import defer_import

defer_import("wandb")  # before timm, which imports it eagerly  # noqa: E402

from .backbone import create_backbone  # noqa: E402
from .models import VARIANTS, CheckpointError, MobileMamba, create_model, fuse_model_copy, load_checkpoint  # noqa: E402

__version__ = "0.1.0"


def fuse_model(model):
    """Fuse a MobileMamba in place for inference (alias of `model.fuse()`)."""
    return model.fuse()


__all__ = ["VARIANTS", "CheckpointError", "MobileMamba", "create_backbone", "create_model", "fuse_model",
           "fuse_model_copy", "load_checkpoint", "__version__"]
