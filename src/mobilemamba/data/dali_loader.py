"""``data.loader=dali``: NVIDIA DALI pipelines (GPU decode with ``device_id``, CPU decode with ``device_id=None``).

Exact epochs: each pipeline is built once per loader (defining the RandAugment graph takes seconds) and is
fed by an ``external_source`` that hands it this rank's batches of file paths, computed in Python with the
same shuffle and sharding as the torch loader (``sampling.py``); ``fn.io.file.read`` reads the files in DALI's
threads. The source ends the epoch (``StopIteration``) after the last batch, so there is no reader padding or
wrap-around: ``len(loader)`` batches per epoch, resume inside an epoch just starts the list at
``start_batch`` (skipped batches are never read), and val sharding is exact (the last batch is short).

Train: decode with random-area crop (``aug.scale``, ``aug.ratio``) → resize (bilinear or bicubic at random for
``train_interpolation=random``) → flip → uint8 CHW out of DALI; then, in torch on the device batch
(:class:`DeviceTrainTail`): timm's RandAugment (``batch_randaug.py``, batched; on CUDA two Triton kernels per
layer) → normalize → random erasing (``erasing.py``, timm's distribution). ``data.dali_randaug=dali`` runs RandAugment
inside the pipeline instead (``dali_randaug.py``: DALI's per-sample conditional ops, ~23 ms per 256-image batch on an
H200 against ~2 ms of host time for the batched one: docs/results.md#dali-randaug). On CUDA with the batched
RandAugment a background thread (``prefetch.py``, ``data.dali_thread``, :func:`auto_thread`) runs the hand-off and
the torch tail ahead of the consumer. Val: resize the shorter side to ``int(size / crop_pct)`` (bicubic), centre
crop, normalize, all in DALI.

GPU decoding (``mixed``) splits the JPEGs between the GPU's hardware decoder (A100/H100/H200:
``hw_decoder_load``, the share it gets) and nvJPEG's CUDA path, whose Huffman stage runs in the pipeline's CPU
threads. ``roi_decode`` decodes only the random crop (``decoders.image_random_crop``); without it the whole image
is decoded and ``random_resized_crop`` crops and resizes on the GPU. With ``zero_copy`` (and DALI's default
dynamic executor) the GPU outputs are bound to torch's current stream and wrapped by DLPack: no host wait per
batch and no device copy.

Undecodable files: in training one ends the iteration with a :class:`DatasetError` naming it (never a hang): run
``python -m mobilemamba.data.check ROOT --write-exclude`` first to exclude such files. In evaluation (the val
loader) files that neither DALI nor PIL can decode are left out and counted in ``loader.skipped``, as the torch
loader does: the failed pipeline is rebuilt and the batches it held are handed to it again without them. A file
only DALI cannot decode still ends the iteration with the error (it cannot be told from the rest of its batch).
"""
from __future__ import annotations

import logging
import os
import warnings
import weakref
import zlib
from collections import deque
from typing import Callable, Iterator, Optional, Sequence

import numpy as np
import torch

from .base import BatchLoader, usable_cpus
from .config import DALI_HW_DECODER_LOAD, DALI_RANDAUGS, AugParams
from .batch_randaug import BatchRandAugment
from .erasing import BatchRandomErasing
from .folder import DatasetError, FolderSplit
from .prefetch import prefetch_in_thread
from .randaug_spec import parse_rand_augment
from .sampling import too_small_message, train_batches, train_batches_per_epoch, val_batches
from .torch_loader import eval_resize_size, load_rgb

log = logging.getLogger(__name__)


def dali_available() -> bool:
    try:
        import nvidia.dali  # noqa: F401
    except ImportError:
        return False
    return True


def require_dali() -> None:
    if not dali_available():
        raise DatasetError(
            "data.loader=dali needs NVIDIA DALI: pip install nvidia-dali-cuda130 (or use data.loader=torch)"
        )


def _interp(name: str):
    from nvidia.dali import types

    table = {
        "bilinear": types.INTERP_LINEAR,
        "bicubic": types.INTERP_CUBIC,
        "nearest": types.INTERP_NN,
        "lanczos": types.INTERP_LANCZOS3,
    }
    if name not in table:
        raise DatasetError(f"interpolation {name!r} is not one of {', '.join(table)} (or 'random' for train)")
    return table[name]


def _pipeline_seed(*parts: int) -> int:
    return zlib.crc32(np.asarray(parts, dtype=np.int64).tobytes()) & 0x7FFFFFFF


def _read_files(source: Callable):
    """Encoded images and labels from ``source()`` = (paths as uint8 arrays, int32 labels (B,)) per batch."""
    from nvidia.dali import fn, types

    paths, target = fn.external_source(
        source=source, num_outputs=2, batch=True, dtype=[types.UINT8, types.INT32], ndim=[1, 0]
    )
    return fn.io.file.read(paths), target


# NVIDIA's ImageNet example: nvJPEG buffers for the largest ImageNet JPEG, preallocated, avoid reallocations
DEVICE_MEMORY_PADDING, HOST_MEMORY_PADDING = 211025920, 140544512
PREALLOCATE_HINT = (5980, 6430)  # (width, height) for the hardware decoder


def _decoder_kwargs(
    device_id: Optional[int],
    *,
    hw_decoder_load: float = DALI_HW_DECODER_LOAD,
    preallocate_hint: tuple[int, int] = PREALLOCATE_HINT,
) -> dict:
    """Decoder arguments: ``device="cpu"`` alone for CPU decoding; the nvJPEG (``mixed``) knobs for GPU decoding."""
    if device_id is None:
        return dict(device="cpu")
    width, height = preallocate_hint
    return dict(
        device="mixed",
        device_memory_padding=DEVICE_MEMORY_PADDING,
        host_memory_padding=HOST_MEMORY_PADDING,
        hw_decoder_load=float(hw_decoder_load),
        preallocate_width_hint=int(width),
        preallocate_height_hint=int(height),
    )


def train_pipeline(
    source: Callable,
    *,
    batch_size: int,
    img_size: int,
    aug: AugParams,
    device_id: Optional[int],
    num_threads: int,
    seed: int,
    prefetch: int = 2,
    hw_decoder_load: float = DALI_HW_DECODER_LOAD,
    preallocate_hint: tuple[int, int] = PREALLOCATE_HINT,
    roi_decode: bool = True,
    randaug_in_pipeline: bool = False,
    build: bool = True,
):
    """A train pipeline reading the batches ``source`` gives (outputs: uint8 CHW images, flipped, not normalized;
    int32 labels); RandAugment runs in it only with ``randaug_in_pipeline``. Built unless ``build=False`` (the
    graph is defined either way)."""
    from nvidia.dali import fn, pipeline_def, types

    from .dali_randaug import timm_rand_augment

    ra = parse_rand_augment(aug.auto_augment) if aug.auto_augment and randaug_in_pipeline else None
    if ra is not None and ra.magnitude_std == float("inf"):
        raise DatasetError(f"aug.auto_augment={aug.auto_augment!r}: uniform magnitude (mstd=inf) is not supported "
                           "by DALI's RandAugment (data.dali_randaug=torch supports it)")

    @pipeline_def(
        batch_size=batch_size,
        num_threads=num_threads,
        device_id=device_id,
        seed=seed,
        prefetch_queue_depth=prefetch,
        enable_conditionals=ra is not None,
    )
    def pipe():
        jpegs, target = _read_files(source)
        decoder = _decoder_kwargs(device_id, hw_decoder_load=hw_decoder_load, preallocate_hint=preallocate_hint)
        crop = dict(random_area=list(aug.scale), random_aspect_ratio=list(aug.ratio), num_attempts=10)
        if aug.train_interpolation == "random":
            interp = fn.random.choice([types.INTERP_LINEAR, types.INTERP_CUBIC])
        else:
            interp = _interp(aug.train_interpolation)
        if roi_decode:
            images = fn.decoders.image_random_crop(jpegs, output_type=types.RGB, **crop, **decoder)
            images = fn.resize(images, resize_x=img_size, resize_y=img_size, interp_type=interp)
        else:
            images = fn.decoders.image(jpegs, output_type=types.RGB, **decoder)
            images = fn.random_resized_crop(images, size=[img_size, img_size], interp_type=interp, **crop)
        if ra is not None:
            images = timm_rand_augment(images, ra, shape=[img_size, img_size])
        mirror = fn.random.coin_flip(probability=aug.hflip)
        images = fn.crop_mirror_normalize(images, dtype=types.UINT8, output_layout="CHW", mirror=mirror)
        return images, target

    with warnings.catch_warnings():  # DALI's own auto_aug still calls its deprecated fn.experimental aliases
        warnings.filterwarnings("ignore", message=".*fn.experimental.*", category=DeprecationWarning)
        p = pipe()
        if build:
            p.build()
    return p


def val_pipeline(
    source: Callable,
    *,
    batch_size: int,
    img_size: int,
    crop_pct: float,
    interpolation: str,
    mean: Sequence[float],
    std: Sequence[float],
    device_id: Optional[int],
    num_threads: int,
    seed: int,
    prefetch: int = 2,
    hw_decoder_load: float = DALI_HW_DECODER_LOAD,
    preallocate_hint: tuple[int, int] = PREALLOCATE_HINT,
    build: bool = True,
):
    """Resize shorter side to ``int(size / crop_pct)``, centre crop ``size``, normalize."""
    from nvidia.dali import fn, pipeline_def, types

    @pipeline_def(
        batch_size=batch_size, num_threads=num_threads, device_id=device_id, seed=seed, prefetch_queue_depth=prefetch
    )
    def pipe():
        jpegs, target = _read_files(source)
        decoder = _decoder_kwargs(device_id, hw_decoder_load=hw_decoder_load, preallocate_hint=preallocate_hint)
        images = fn.decoders.image(jpegs, output_type=types.RGB, **decoder)
        images = fn.resize(
            images, resize_shorter=eval_resize_size(img_size, crop_pct), interp_type=_interp(interpolation)
        )
        images = fn.crop_mirror_normalize(
            images,
            dtype=types.FLOAT,
            output_layout="CHW",
            crop=(img_size, img_size),
            crop_pos_x=0.5,
            crop_pos_y=0.5,
            mean=[m * 255 for m in mean],
            std=[s * 255 for s in std],
        )
        return images, target

    p = pipe()
    if build:
        p.build()
    return p


def _to_torch(dali_out, device: torch.device, zero_copy: bool = False) -> torch.Tensor:
    """One DALI output batch (CPU or GPU TensorList) as a torch tensor on ``device``.

    GPU: with ``zero_copy`` a DLPack view of DALI's buffer (valid for outputs of a dynamic-executor pipeline
    bound to torch's current stream, see :meth:`DaliLoader._stream`), else a copy on torch's current stream.
    CPU: copied into pinned memory, then sent without blocking, when ``device`` is CUDA.
    """
    from nvidia.dali.backend import TensorListGPU
    from nvidia.dali.plugin.pytorch import feed_ndarray, to_torch_type

    t = dali_out.as_tensor()
    dtype = to_torch_type[dali_out.dtype]
    if isinstance(dali_out, TensorListGPU):
        if zero_copy:
            with torch.cuda.device(device):
                return torch.from_dlpack(t)
        arr = torch.empty(t.shape(), dtype=dtype, device=device)
        feed_ndarray(t, arr, cuda_stream=torch.cuda.current_stream(device))
        return arr
    host = torch.empty(t.shape(), dtype=dtype, pin_memory=device.type == "cuda")
    feed_ndarray(t, host)
    return host.to(device, non_blocking=True)


class DeviceTrainTail:
    """The end of the train transform, in torch on the delivered uint8 batch: [RandAugment] → normalize to float32
    → [random erasing] → [channels_last]. Never writes into its input (a zero-copy view of DALI's buffer)."""

    def __init__(
        self,
        mean: Sequence[float],
        std: Sequence[float],
        *,
        randaug: Optional[BatchRandAugment] = None,
        erasing: Optional[BatchRandomErasing] = None,
        channels_last: bool = False,
    ):
        self.randaug, self.erasing, self.channels_last = randaug, erasing, channels_last
        self.shift = torch.tensor([255.0 * m for m in mean]).view(1, 3, 1, 1)
        self.scale = torch.tensor([1.0 / (255.0 * s) for s in std]).view(1, 3, 1, 1)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if self.randaug is not None:
            images = self.randaug(images)
        if self.channels_last:  # on uint8, a quarter of the bytes of the float batch
            images = images.contiguous(memory_format=torch.channels_last)
        if self.shift.device != images.device:
            self.shift, self.scale = self.shift.to(images.device), self.scale.to(images.device)
        x = (images.float() - self.shift) * self.scale
        if self.erasing is not None:
            x = self.erasing(x)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x


class DaliLoader(BatchLoader):
    """Feeds one DALI pipeline (built on first use) an exact list of batches per iteration.

    Augmentation randomness comes from the pipeline seed ``(seed, rank)`` and continues across epochs; the
    *order* of samples is what is exactly reproducible per ``(seed, epoch)``.
    """

    def __init__(
        self,
        split: FolderSplit,
        *,
        plan: Callable[[int, int], list[list[int]]],
        num_batches: int,
        build: Callable[[Callable, int], object],
        batch_size: int,
        device: torch.device,
        channels_last: bool,
        seed: int,
        rank: int,
        world_size: int = 1,
        transform: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
        zero_copy: bool = True,
        thread: bool = False,
        leave_out_unreadable: bool = False,
    ):
        self.split, self._plan, self._build = split, plan, build
        self.leave_out_unreadable = leave_out_unreadable
        self._unreadable: set[int] = set()  # sample indices left out (evaluation), known from an earlier failure
        self.zero_copy, self.thread = zero_copy, thread
        self.num_classes, self.batch_size, self.skipped = split.num_classes, batch_size, 0
        self.device, self.channels_last, self.transform = device, channels_last, transform
        self.seed, self.rank, self._world_size = seed, rank, world_size
        self._num_batches, self.epoch, self.start_batch = num_batches, 0, 0
        self.num_samples = sum(len(b) for b in plan(0, 0))
        self._pipe = None
        self._pending: deque[list[int]] = deque()  # batches not yet handed to DALI
        # (batch, the part of it handed to DALI) whose output has not been returned yet
        self._inflight: deque[tuple[list[int], list[int]]] = deque()
        # the running iteration, weakly: an iteration its consumer drops is closed at once (with a prefetch thread,
        # a strong reference here would keep it, and its thread, alive: the thread's frames reference this loader)
        self._gen: Optional[weakref.ref] = None
        self._labels: Optional[np.ndarray] = None  # all labels as int32, built on first use

    def __len__(self) -> int:
        return self._num_batches

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        if not 0 <= start_batch <= self._num_batches:
            raise DatasetError(f"start_batch {start_batch} is not in [0, {self._num_batches}] (batches per epoch)")
        self.epoch, self.start_batch = int(epoch), int(start_batch)

    def batches(self) -> list[list[int]]:
        """Sample indices of the batches the next iteration yields."""
        return self._plan(self.epoch, self.start_batch)

    def _source(self):
        """DALI's external source: the next batch of (path bytes, label), or the end of the epoch. Files known to be
        unreadable are left out here and counted in ``skipped``."""
        while True:
            if not self._pending:
                raise StopIteration
            batch = self._pending.popleft()
            kept = [i for i in batch if i not in self._unreadable]
            self.skipped += len(batch) - len(kept)
            if kept:
                break
        self._inflight.append((batch, kept))
        batch = kept
        if self._labels is None:
            self._labels = np.fromiter((label for _, label in self.split.samples), np.int32, len(self.split))
        samples = self.split.samples
        paths = [np.frombuffer(samples[i][0].encode("utf-8"), dtype=np.uint8) for i in batch]
        return paths, self._labels[np.asarray(batch, dtype=np.int64)]

    def _stream(self, pipe) -> Optional["torch.cuda.Stream"]:
        """The stream DALI binds its outputs to (zero-copy GPU outputs), or None for host-synchronous outputs."""
        if self.zero_copy and self.device.type == "cuda" and getattr(pipe, "exec_dynamic", False):
            return torch.cuda.current_stream(self.device)
        return None

    def _ready_pipe(self) -> tuple[object, Optional["torch.cuda.Stream"]]:
        """The pipeline (built if there is none: the first epoch, or after a failure killed it) and its stream."""
        if self._pipe is None:
            self._pipe = self._build(self._source, _pipeline_seed(self.seed, self.rank))
        return self._pipe, self._stream(self._pipe)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        previous = self._gen() if self._gen is not None else None
        if previous is not None:  # an abandoned iteration still held somewhere: finish it (drain + reset) first
            previous.close()
        batches = self.batches()
        if self.thread:  # DALI's hand-off and the torch tail run ahead in a thread (prefetch.py says why)
            gen = prefetch_in_thread(lambda: self._epoch(batches), self.device)
        else:
            gen = self._epoch(batches)
        self._gen = weakref.ref(gen)
        self.start_batch = 0
        return gen

    def _epoch(self, batches: list[list[int]]) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if self._num_batches == 0:  # raised here, not at build: eval-only jobs build a train loader they never use
            raise DatasetError(too_small_message(len(self.split), self.batch_size, self._world_size))
        if not batches:
            return
        pipe, stream = self._ready_pipe()
        finished = False
        self._pending, self._inflight = deque(batches), deque()
        zero_copy = stream is not None
        try:
            while True:
                try:
                    images, target = pipe.run(stream) if zero_copy else pipe.run()
                except StopIteration:
                    finished = True
                    return
                except Exception as e:  # DALI raises RuntimeError for decode failures; the pipeline is dead
                    self._pipe = None
                    if not (self.leave_out_unreadable and self._requeue_without_unreadable()):
                        raise self._decode_error(e) from None
                    pipe, stream = self._ready_pipe()  # the same kind as before: zero_copy holds
                    continue
                n = len(self._inflight.popleft()[1])
                dali_x = _to_torch(images, self.device, zero_copy)[:n]
                y = _to_torch(target, self.device, zero_copy).view(-1)[:n].long()  # int32 -> int64: a copy
                if self.transform is not None:
                    x = self.transform(dali_x)
                elif self.channels_last:
                    x = dali_x.contiguous(memory_format=torch.channels_last)
                else:
                    x = dali_x
                if zero_copy and self.thread and _same_memory(x, dali_x):
                    # DALI frees a zero-copy buffer in the order of the stream it is bound to, here the thread's,
                    # which does not wait for the consumer's kernels: hand over memory torch owns
                    x = x.clone()
                yield x, y
        finally:
            self._finish(finished)

    def _finish(self, finished: bool) -> None:
        """Leave the pipeline ready for the next epoch: drain what is in flight after an early stop, reset."""
        if self._pipe is None:
            return
        self._pending.clear()
        try:
            while not finished:
                try:
                    self._pipe.run()
                except StopIteration:
                    finished = True
            self._pipe.reset()
        except Exception:
            self._pipe = None  # rebuilt on the next iteration
        self._inflight.clear()

    def _unreadable_in_flight(self, first_only: bool = False) -> list[int]:
        """The in-flight files PIL cannot read either (DALI's error does not say which file failed)."""
        bad = []
        for _, kept in self._inflight:
            for i in kept:
                try:
                    load_rgb(self.split.samples[i][0])
                except Exception:
                    bad.append(i)
                    if first_only:
                        return bad
        return bad

    def _requeue_without_unreadable(self) -> bool:
        """Evaluation after a decode failure: leave the unreadable in-flight files out from now on and put their
        batches back in front of the pending ones (their left-out files are counted again when handed over).
        False when every in-flight file is readable: nothing to leave out."""
        bad = self._unreadable_in_flight()
        if not bad:
            return False
        for i in bad:
            log.warning("leaving out unreadable image %s", self.split.samples[i][0])
        self._unreadable.update(bad)
        for batch, kept in reversed(self._inflight):
            self.skipped -= len(batch) - len(kept)
            self._pending.appendleft(batch)
        self._inflight.clear()
        return True

    def _decode_error(self, err: Exception) -> DatasetError:
        """Name the file DALI could not decode: the first one PIL cannot read among the in-flight batches."""
        bad = self._unreadable_in_flight(first_only=True)
        first_line = _dali_cause(err)
        start = self._inflight[0][1][0] if self._inflight else None
        self._inflight.clear()
        if bad:
            return DatasetError(
                f"DALI could not decode {self.split.samples[bad[0]][0]} ({first_line}); exclude it with "
                f"`python -m mobilemamba.data.check {self.split.root.parent} --write-exclude`"
            )
        where = self.split.samples[start][0] if start is not None else self.split.root
        return DatasetError(f"DALI failed on a batch starting at {where}: {first_line}")


def _same_memory(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()


def _dali_cause(err: Exception) -> str:
    """The informative line of a DALI pipeline error (the one after ``encountered:``)."""
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    if "encountered:" in lines and lines.index("encountered:") + 1 < len(lines):
        return lines[lines.index("encountered:") + 1]
    return lines[0] if lines else type(err).__name__


def _randaug_interpolation(aug: AugParams) -> str:
    """RandAugment's warp filter as timm picks it: bilinear or bicubic at random unless the train interpolation
    names one of them."""
    return aug.train_interpolation if aug.train_interpolation in ("bilinear", "bicubic") else "random"


def default_threads(world_size: int) -> int:
    local = int(os.environ.get("LOCAL_WORLD_SIZE", world_size) or 1)
    return max(1, usable_cpus() // max(1, local))


def auto_thread(device: torch.device, torch_randaug: bool) -> bool:
    """``data.dali_thread=auto``: the prefetch thread on CUDA when the torch tail runs the batched RandAugment.

    Measured side by side on one H200 (224 px, batch 256): with the batched RandAugment's Triton kernels the thread
    gives 18,644 img/s against 12,866 without (docs/results.md#loader; with its torch ops, 11,719 against 10,324,
    docs/results.md#thread); with only normalize + erasing in the tail it costs (16,493 against 19,144), so there the
    tail stays on the consumer's thread."""
    return device.type == "cuda" and torch_randaug


def build_dali_loaders(
    train: FolderSplit,
    val: FolderSplit,
    aug: AugParams,
    *,
    img_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    crop_pct: float,
    interpolation: str,
    batch_size: int,
    eval_batch_size: int,
    rank: int,
    world_size: int,
    device: torch.device,
    seed: int,
    channels_last: bool,
    dali_device: str = "auto",
    num_threads: Optional[int] = None,
    prefetch: int = 4,
    hw_decoder_load: float = DALI_HW_DECODER_LOAD,
    preallocate_hint: tuple[int, int] = PREALLOCATE_HINT,
    roi_decode: bool = True,
    zero_copy: bool = True,
    randaug: str = "torch",
    thread: Optional[bool] = None,
    randaug_kernels: str = "auto",
) -> tuple[DaliLoader, DaliLoader]:
    """Train and val loaders; ``hw_decoder_load`` and ``preallocate_hint`` reach the GPU (``mixed``) decoders
    only, ``roi_decode`` the train pipeline, ``zero_copy`` the GPU outputs, ``randaug`` (torch | dali) says where
    RandAugment runs (see the module docstring), ``randaug_kernels`` how the batched one runs (auto: Triton on CUDA,
    see ``batch_randaug.KERNELS``), ``thread`` (None: see :func:`auto_thread`) whether a background thread runs the
    pipelines' hand-off and the torch tail ahead of the consumer (``prefetch.py``)."""
    require_dali()
    if randaug not in DALI_RANDAUGS:
        raise DatasetError(f"data.dali_randaug must be one of {', '.join(DALI_RANDAUGS)}, got {randaug!r}")
    if not isinstance(img_size, int):
        raise DatasetError(f"the DALI loader needs a square img_size (int), got {img_size!r}")
    if dali_device == "gpu" and device.type != "cuda":
        raise DatasetError(f"data.dali_device=gpu needs a CUDA device, got device={device}")
    use_gpu = device.type == "cuda" and dali_device != "cpu"
    device_id = (device.index if device.index is not None else torch.cuda.current_device()) if use_gpu else None
    threads = num_threads or default_threads(world_size)
    torch_randaug = bool(aug.auto_augment) and randaug == "torch"
    threaded = dict(thread=auto_thread(device, torch_randaug) if thread is None else bool(thread))
    common = dict(
        img_size=img_size, device_id=device_id, num_threads=threads, prefetch=prefetch,
        hw_decoder_load=hw_decoder_load, preallocate_hint=tuple(preallocate_hint),
    )  # fmt: skip
    tail = DeviceTrainTail(
        mean, std, channels_last=channels_last,
        randaug=BatchRandAugment(parse_rand_augment(aug.auto_augment), interpolation=_randaug_interpolation(aug),
                                 img_mean=[min(255, round(255 * m)) for m in mean],  # timm's fill colour
                                 seed=_pipeline_seed(seed, rank, 1), kernels=randaug_kernels)
        if torch_randaug else None,
        erasing=BatchRandomErasing(aug.reprob, aug.remode, aug.recount, seed=_pipeline_seed(seed, rank))
        if aug.reprob > 0 else None,
    )  # fmt: skip
    n_train = len(train)
    n_batches = train_batches_per_epoch(n_train, batch_size, world_size)
    train_loader = DaliLoader(
        train,
        plan=lambda e, s: train_batches(n_train, batch_size, seed, e, rank, world_size, s),
        num_batches=n_batches,
        build=lambda src, sd: train_pipeline(src, batch_size=batch_size, aug=aug, seed=sd, roi_decode=roi_decode,
                                             randaug_in_pipeline=randaug == "dali", **common),
        batch_size=batch_size,
        device=device,
        channels_last=channels_last,
        seed=seed,
        rank=rank,
        world_size=world_size,
        transform=tail,
        zero_copy=zero_copy,
        **threaded,
    )
    val_plan = val_batches(len(val), eval_batch_size, rank, world_size)
    val_loader = DaliLoader(
        val,
        plan=lambda e, s: val_plan[s:],
        num_batches=len(val_plan),
        build=lambda src, sd: val_pipeline(
            src, batch_size=eval_batch_size, crop_pct=crop_pct, interpolation=interpolation, seed=sd, mean=mean,
            std=std, **common
        ),
        batch_size=eval_batch_size,
        device=device,
        channels_last=channels_last,
        seed=seed,
        rank=rank,
        world_size=world_size,
        zero_copy=zero_copy,
        leave_out_unreadable=True,
        **threaded,
    )
    return train_loader, val_loader
