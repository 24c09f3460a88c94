"""Run a loader's batch iterator in a background thread, a few batches ahead of the training loop.

Why: the DALI loader's main-thread work per 256-image batch is a few ms of host-side planning and kernel launches
for the torch tail (batched RandAugment, normalize, erasing: ~2 ms with the Triton RandAugment, ~7 ms with its torch
ops, docs/results.md#randaug-kernels) plus the wait in ``pipe.run()``. On the training thread both add to
every step; in a thread they overlap the step, whose host side mostly waits for the GPU with the GIL released.

CUDA: the thread issues its work on its own stream. Each batch carries an event that the consumer's stream waits
on (no host sync), and its tensors are marked as used by the consumer's stream (``record_stream``), so the caching
allocator does not give their memory back to the producer's stream while the step still reads it (memory torch
does not own, e.g. a zero-copy view of DALI's buffer, is not protected that way: the DALI loader copies it). The thread
must not draw from the default CUDA generator (the training thread may be capturing a CUDA graph that owns it):
the DALI tail's randomness comes from host generators and a private ``torch.Generator``.
"""
from __future__ import annotations

import contextlib
import queue
import threading
from typing import Any, Callable, Iterator

import torch

_DONE = object()
_POLL_S = 0.05  # how often a blocked producer looks at the stop flag


class _Failure:
    def __init__(self, error: BaseException):
        self.error = error


def _put(q: queue.Queue, item: Any, stop: threading.Event) -> bool:
    """Put ``item`` unless asked to stop first; False when stopped."""
    while not stop.is_set():
        try:
            q.put(item, timeout=_POLL_S)
            return True
        except queue.Full:
            continue
    return False


def _tensors(item: Any) -> list[torch.Tensor]:
    if isinstance(item, torch.Tensor):
        return [item]
    if isinstance(item, (tuple, list)):
        return [t for part in item for t in _tensors(part)]
    return []


def prefetch_in_thread(make_iter: Callable[[], Iterator[Any]], device: torch.device, depth: int = 2) -> Iterator[Any]:
    """The items of ``make_iter()``, produced by a thread up to ``depth`` items ahead.

    The iterator is created, run and closed in the thread (closing it runs its ``finally`` there). An exception in
    the thread is raised here, at the item where it happened. Closing this generator early stops the thread, lets
    the inner iterator clean up, and joins the thread before returning.
    """
    if depth < 1:
        raise ValueError(f"prefetch depth must be >= 1, got {depth}")
    cuda = device.type == "cuda"
    if cuda and device.index is None:  # "cuda" means the current device; the thread must be told which
        device = torch.device("cuda", torch.cuda.current_device())
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    side = torch.cuda.Stream(device) if cuda else None

    def produce() -> None:
        try:
            if cuda:
                torch.cuda.set_device(device)
            with torch.cuda.stream(side) if cuda else contextlib.nullcontext():
                it = make_iter()
                try:
                    for item in it:
                        event = None
                        if cuda:
                            event = torch.cuda.Event()
                            event.record(side)
                        if not _put(q, (item, event), stop):
                            return
                finally:
                    close = getattr(it, "close", None)
                    if close is not None:
                        close()
            _put(q, _DONE, stop)
        except BaseException as e:  # handed to the consumer, raised there
            _put(q, _Failure(e), stop)

    thread = threading.Thread(target=produce, name="mobilemamba-data-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            got = q.get()
            if got is _DONE:
                return
            if isinstance(got, _Failure):
                raise got.error
            item, event = got
            if event is not None:
                stream = torch.cuda.current_stream(device)
                stream.wait_event(event)
                for t in _tensors(item):
                    if t.is_cuda:
                        t.record_stream(stream)
            yield item
    finally:
        stop.set()
        if thread is not threading.current_thread():  # (a finalizer may run this on any thread)
            while thread.is_alive():  # unblock a producer waiting to put, until it sees the flag
                try:
                    q.get(timeout=_POLL_S)
                except queue.Empty:
                    pass
            thread.join()
