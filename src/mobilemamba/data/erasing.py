"""Random erasing on a whole normalized batch, on its device, with timm's ``RandomErasing`` distribution.

timm erases one image at a time in a Python loop; the DALI loader's batches are already on the GPU, so this
samples all rectangles on the host at once (same rules: probability ``p``; 1..``max_count`` boxes whose area
is U(min_area, max_area)·HW/count and whose log aspect ratio is U(log 0.3, log 1/0.3); up to 10 attempts for a
box that fits, else no box) and fills them with one ``torch.where``: ``pixel`` = per-pixel N(0, 1),
``rand`` = per-channel N(0, 1), ``const`` = 0.
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np
import torch

from .base import host_to_device

ATTEMPTS = 10


class BatchRandomErasing:
    def __init__(
        self,
        probability: float = 0.25,
        mode: str = "pixel",
        max_count: int = 1,
        min_area: float = 0.02,
        max_area: float = 1 / 3,
        min_aspect: float = 0.3,
        seed: Optional[int] = None,
    ):
        if mode not in ("pixel", "rand", "const"):
            raise ValueError(f"random erasing mode must be pixel, rand or const, got {mode!r}")
        self.probability, self.mode, self.max_count = float(probability), mode, max(1, int(max_count))
        self.min_area, self.max_area = min_area, max_area
        self.log_aspect = (math.log(min_aspect), math.log(1 / min_aspect))
        self.rng = np.random.default_rng(seed)
        self._noise: dict[torch.device, torch.Generator] = {}  # private: see __call__

    def sample_boxes(self, batch: int, height: int, width: int) -> np.ndarray:
        """``(batch, max_count, 4)`` int boxes ``(top, left, h, w)``; ``h = 0`` means no box."""
        rng, out = self.rng, np.zeros((batch, self.max_count, 4), dtype=np.int64)
        erase = rng.random(batch) < self.probability
        counts = rng.integers(1, self.max_count + 1, size=batch)
        for slot in range(self.max_count):
            area = rng.uniform(self.min_area, self.max_area, (batch, ATTEMPTS)) * height * width / counts[:, None]
            aspect = np.exp(rng.uniform(*self.log_aspect, (batch, ATTEMPTS)))
            h = np.rint(np.sqrt(area * aspect)).astype(np.int64)
            w = np.rint(np.sqrt(area / aspect)).astype(np.int64)
            fits = (h < height) & (w < width)
            first = fits.argmax(axis=1)
            rows = np.arange(batch)
            ok = fits[rows, first] & erase & (slot < counts)
            hh, ww = h[rows, first] * ok, w[rows, first] * ok
            top = (rng.random(batch) * (height - hh + 1)).astype(np.int64)
            left = (rng.random(batch) * (width - ww + 1)).astype(np.int64)
            out[:, slot] = np.stack([top, left, hh, ww], axis=1)
        return out

    def _generator(self, device: torch.device) -> torch.Generator:
        """The noise generator for ``device``, seeded from ``rng``. Not torch's default one: the DALI loader calls
        this from its prefetch thread while the training thread may be capturing a CUDA graph that owns it."""
        if device not in self._noise:
            self._noise[device] = torch.Generator(device).manual_seed(int(self.rng.integers(2**62)))
        return self._noise[device]

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """Erase in a new tensor (``images`` is left untouched); works for NCHW and channels_last."""
        if self.probability <= 0:
            return images
        b, c, h, w = images.shape
        boxes = host_to_device(self.sample_boxes(b, h, w), images.device)
        ys = torch.arange(h, device=images.device).view(1, 1, h, 1)
        xs = torch.arange(w, device=images.device).view(1, 1, 1, w)
        mask = torch.zeros(b, 1, h, w, dtype=torch.bool, device=images.device)
        for slot in range(self.max_count):
            top, left, bh, bw = (boxes[:, slot, i].view(b, 1, 1, 1) for i in range(4))
            mask |= (ys >= top) & (ys < top + bh) & (xs >= left) & (xs < left + bw)
        if self.mode == "pixel":
            fill = torch.empty_like(images).normal_(generator=self._generator(images.device))
        elif self.mode == "rand":
            fill = torch.randn(b, c, 1, 1, device=images.device, dtype=images.dtype,
                               generator=self._generator(images.device))
        else:
            fill = torch.zeros((), device=images.device, dtype=images.dtype)
        return torch.where(mask, fill, images)
