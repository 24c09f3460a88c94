"""MobileMamba models; importing this registers the variants with timm."""
from .checkpoint import CheckpointError, CheckpointLayout, checkpoint_layout, load_checkpoint, load_state_dict_file
from .factory import create_classifier, create_model, default_img_size, fuse_model_copy
from .mobilemamba import VARIANTS, MobileMamba, count_params

__all__ = ["VARIANTS", "MobileMamba", "CheckpointError", "CheckpointLayout", "checkpoint_layout", "count_params",
           "create_classifier", "create_model", "default_img_size", "fuse_model_copy", "load_checkpoint",
           "load_state_dict_file"]
