"""MobileMamba models; importing this registers the variants with timm."""
from .checkpoint import CheckpointError, load_checkpoint, load_state_dict_file
from .factory import create_model, fuse_model_copy
from .mobilemamba import VARIANTS, MobileMamba, count_params

__all__ = ["VARIANTS", "MobileMamba", "CheckpointError", "count_params", "create_model", "fuse_model_copy",
           "load_checkpoint", "load_state_dict_file"]
