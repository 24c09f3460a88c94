"""The loader prefetch thread (data/prefetch.py): same items in the same order, errors where they happened, and an
early stop that leaves no thread behind and lets the inner iterator clean up."""
from __future__ import annotations

import threading

import pytest
import torch

from mobilemamba.data.prefetch import prefetch_in_thread

CPU = torch.device("cpu")


def prefetch_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "mobilemamba-data-prefetch"]


def test_items_arrive_in_order_from_another_thread_and_the_thread_ends():
    made_in: list[str] = []

    def make():
        made_in.append(threading.current_thread().name)
        for i in range(10):
            yield torch.full((2,), i), torch.tensor(i)

    got = [int(y) for _, y in prefetch_in_thread(make, CPU, depth=3)]
    assert got == list(range(10)) and made_in == ["mobilemamba-data-prefetch"]
    assert not prefetch_threads()


def test_an_error_in_the_thread_is_raised_at_the_item_where_it_happened():
    def make():
        yield 0
        yield 1
        raise KeyError("corrupt.jpg")

    it = prefetch_in_thread(make, CPU)
    assert [next(it), next(it)] == [0, 1]
    with pytest.raises(KeyError, match="corrupt.jpg"):
        next(it)
    assert not prefetch_threads()


def test_stopping_early_closes_the_inner_iterator_in_its_thread_and_joins():
    produced, closed_in = [], []

    def make():
        try:
            for i in range(1000):
                produced.append(i)
                yield i
        finally:
            closed_in.append(threading.current_thread().name)

    it = prefetch_in_thread(make, CPU, depth=2)
    assert [next(it), next(it)] == [0, 1]
    it.close()
    assert closed_in == ["mobilemamba-data-prefetch"] and len(produced) <= 2 + 2 + 1  # taken + queued + one in hand
    assert not prefetch_threads()


def test_depth_must_be_positive():
    with pytest.raises(ValueError, match="prefetch depth must be >= 1, got 0"):
        next(prefetch_in_thread(lambda: iter([1]), CPU, depth=0))
