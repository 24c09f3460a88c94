"""Which indices each rank reads: exact val sharding, deterministic train shuffles, exact resume."""
from __future__ import annotations

import pytest

from mobilemamba.data import DatasetError
from mobilemamba.data.sampling import train_batches, train_batches_per_epoch, val_batches


@pytest.mark.parametrize("world_size", [1, 2, 3])
@pytest.mark.parametrize("n", [1, 7, 15, 100])
def test_val_sharding_covers_every_index_exactly_once(n, world_size):
    seen = [i for r in range(world_size) for b in val_batches(n, 4, r, world_size) for i in b]
    assert len(seen) == n and sorted(seen) == list(range(n))


@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_train_ranks_get_equal_disjoint_full_batches(world_size):
    n, bs = 50, 4
    per_rank = [train_batches(n, bs, 0, 3, r, world_size) for r in range(world_size)]
    assert all(len(b) == train_batches_per_epoch(n, bs, world_size) for b in per_rank)
    assert all(len(batch) == bs for b in per_rank for batch in b)
    flat = [i for b in per_rank for batch in b for i in batch]
    assert len(flat) == len(set(flat))


def test_train_order_is_a_function_of_seed_and_epoch():
    a = train_batches(40, 4, seed=0, epoch=1, rank=0, world_size=1)
    assert a == train_batches(40, 4, seed=0, epoch=1, rank=0, world_size=1)
    assert a != train_batches(40, 4, seed=0, epoch=2, rank=0, world_size=1)
    assert a != train_batches(40, 4, seed=1, epoch=1, rank=0, world_size=1)


def test_start_batch_gives_the_tail_of_the_uninterrupted_epoch():
    full = train_batches(40, 4, 0, 5, 1, 2)
    assert train_batches(40, 4, 0, 5, 1, 2, start_batch=3) == full[3:]
    assert train_batches(40, 4, 0, 5, 1, 2, start_batch=len(full)) == []
    with pytest.raises(DatasetError, match="start_batch"):
        train_batches(40, 4, 0, 5, 1, 2, start_batch=len(full) + 1)


def test_bad_rank_is_an_error():
    with pytest.raises(DatasetError, match="rank 2"):
        val_batches(10, 4, 2, 2)


def test_an_update_reads_the_same_images_whatever_the_ranks_and_the_batch_split():
    """What a resume under another layout with the same global batch relies on (engine/layout.py): update u reads
    the same 12 images on 1 rank x 12, 2 x 6, 3 x 2 x accum 2, 4 x 3 or 1 x 4 x accum 3."""
    n, seed, epoch = 103, 0, 3
    one_rank = train_batches(n, 12, seed, epoch, 0, 1)
    for world_size, batch, accum in ((2, 6, 1), (3, 2, 2), (4, 3, 1), (1, 4, 3)):
        per_rank = [train_batches(n, batch, seed, epoch, rank, world_size) for rank in range(world_size)]
        assert min(len(b) for b in per_rank) // accum == len(one_rank) == 8
        for u, expected in enumerate(one_rank):
            images = [i for batches in per_rank for b in batches[u * accum:(u + 1) * accum] for i in b]
            assert sorted(images) == sorted(expected), (world_size, batch, accum, u)
