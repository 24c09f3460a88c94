"""Setup for every test. Without a CUDA GPU, Triton kernels run in Triton's interpreter (numpy, on CPU tensors), so
the CPU suite tests the RandAugment kernels (``data/randaug_kernels.py``) too. The flag must be set before anything
imports triton (timm does), hence here."""
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
