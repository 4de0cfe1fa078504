"""Batch samplers under several processes: disjoint shards, equal step counts, same global batches."""

import itertools

import numpy as np
import pytest
from torch.utils.data import DataLoader, DistributedSampler

from dep_lightning.data.batching import EvalShardSampler, LengthBucketSampler, longest_first


def lengths(n: int, seed: int = 0) -> list[int]:
    return np.random.default_rng(seed).integers(50, 1500, size=n).tolist()


def ranks(n: int, batch_size: int, world: int, epoch: int = 0, **kwargs) -> list[list[list[int]]]:
    out = []
    for rank in range(world):
        sampler = LengthBucketSampler(lengths(n), batch_size, seed=3, num_replicas=world, rank=rank, **kwargs)
        sampler.set_epoch(epoch)
        out.append(list(sampler))
        assert len(out[-1]) == len(sampler)
    return out


@pytest.mark.parametrize("n,batch_size,world", [(24, 1, 2), (25, 2, 2), (30, 2, 3), (7, 1, 4), (101, 4, 2)])
def test_processes_get_disjoint_shards_with_equal_step_counts(n, batch_size, world):
    shards = ranks(n, batch_size, world)
    assert len({len(s) for s in shards}) == 1  # same number of batches on every process
    seen = [i for shard in shards for batch in shard for i in batch]
    assert set(seen) == set(range(n))
    short = n % (batch_size * world)
    # A sample repeats only to give every process a sample of a last global batch shorter than `world`.
    assert len(seen) - n == (world - short if 0 < short < world else 0)
    assert all(batch for shard in shards for batch in shard)


@pytest.mark.parametrize("batch_size,world", [(1, 2), (2, 2), (1, 3)])
def test_each_step_sees_the_global_batch_of_one_process(batch_size, world):
    n = 36
    for epoch in (0, 1):
        one = LengthBucketSampler(lengths(n), batch_size * world, seed=3)
        one.set_epoch(epoch)
        shards = ranks(n, batch_size, world, epoch=epoch)
        for step, batch in enumerate(one):
            assert sorted(i for shard in shards for i in shard[step]) == sorted(batch)


def test_epochs_reorder_and_lengths_stay_bucketed():
    n, world = 400, 2
    first, second = ranks(n, 2, world, epoch=0), ranks(n, 2, world, epoch=1)
    assert first != second
    lens = np.asarray(lengths(n))
    # Within a step, the processes' samples come from one sorted stretch of a pool: close in length.
    spread = [np.ptp(lens[[i for shard in first for i in shard[t]]]) for t in range(len(first[0]))]
    assert np.median(spread) < 0.05 * np.ptp(lens)


def test_one_process_sees_every_sample_once_per_epoch():
    sampler = LengthBucketSampler(lengths(10), 3, seed=1)
    assert sorted(len(b) for b in sampler) == [1, 3, 3, 3] and len(sampler) == 4
    assert sorted(i for b in sampler for i in b) == list(range(10))


def test_a_sampler_in_place_of_lengths_says_what_to_set():
    with pytest.raises(TypeError, match="use_distributed_sampler: false"):
        LengthBucketSampler(DistributedSampler(range(4), num_replicas=2, rank=0), batch_size=1)
    with pytest.raises(ValueError, match="rank"):
        LengthBucketSampler([1, 2], 1, num_replicas=2, rank=2)


def batches_of(sampler: EvalShardSampler, batch_size: int) -> list[list[int]]:
    return [b.tolist() for b in DataLoader(range(10_000), batch_size=batch_size, sampler=sampler)]


@pytest.mark.parametrize("n,batch_size,world", [(16, 8, 2), (17, 8, 2), (5, 2, 2), (3, 4, 2), (23, 4, 3)])
def test_eval_shards_deal_out_whole_batches_once(n, batch_size, world):
    single = [list(range(s, min(s + batch_size, n))) for s in range(0, n, batch_size)]
    shards = [batches_of(EvalShardSampler(n, batch_size, world, rank, pad=False), batch_size) for rank in range(world)]
    assert sorted(itertools.chain.from_iterable(shards)) == single  # the single-process batches, each once
    padded = [batches_of(EvalShardSampler(n, batch_size, world, rank, pad=True), batch_size) for rank in range(world)]
    assert len({len(p) for p in padded}) == 1  # equal step counts for validation
    assert all(set(map(tuple, p)) <= set(map(tuple, single)) for p in padded)
    assert {tuple(b) for p in padded for b in p} == {tuple(b) for b in single}


def test_longest_first_keeps_ties_in_file_order():
    assert longest_first([3, 9, 3, 1, 9]) == [1, 4, 0, 2, 3]
    assert longest_first([]) == []


@pytest.mark.parametrize("n,batch_size,world", [(17, 8, 1), (17, 8, 2), (23, 4, 3)])
def test_eval_shards_cut_a_given_order_into_the_single_process_batches(n, batch_size, world):
    lengths = list(np.random.default_rng(n).integers(10, 500, size=n))
    order = longest_first(lengths)
    single = [order[s:s + batch_size] for s in range(0, n, batch_size)]
    shards = [batches_of(EvalShardSampler(n, batch_size, world, rank, pad=False, order=order), batch_size)
              for rank in range(world)]
    assert sorted(itertools.chain.from_iterable(shards)) == sorted(single)
    assert sorted(i for shard in shards for batch in shard for i in batch) == list(range(n))
    # Each batch spans a narrow band of lengths: no batch's shortest is shorter than a later batch's longest.
    for first, second in zip(single, single[1:]):
        assert min(lengths[i] for i in first) >= max(lengths[i] for i in second)
    with pytest.raises(ValueError, match="permutation"):
        EvalShardSampler(n, batch_size, world, 0, pad=False, order=order[:-1] + order[:1])


def test_lightning_sets_the_epoch_of_the_bucket_sampler():
    """Lightning's epoch hook reaches the batch sampler, so each epoch gets a new order."""
    from lightning.fabric.utilities.data import _set_sampler_epoch

    from dep_lightning.data.resumable import ResumableDataLoader

    lengths = np.random.default_rng(0).integers(5, 200, size=40)
    loader = ResumableDataLoader(list(range(40)), batch_sampler=LengthBucketSampler(lengths, 4, seed=0),
                                 collate_fn=lambda rows: rows)
    first = list(loader)
    _set_sampler_epoch(loader, 1)
    assert loader.batch_sampler.epoch == 1
    second = list(loader)
    assert first != second  # one length pool (40 < 4 x 50): same buckets, new order
    assert sorted(i for b in second for i in b) == list(range(40))
