"""PK identity sampler: batch invariants, epoch length, determinism by (seed, epoch), saved state."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from occreid.data.sampler import PKBatchSampler
from occreid.errors import OccreidError


def pids_of(counts: list[int]) -> list[int]:
    return [pid for pid, n in enumerate(counts) for _ in range(n)]


@settings(max_examples=60, deadline=None)
@given(
    counts=st.lists(st.integers(1, 9), min_size=4, max_size=20),
    p=st.integers(2, 4),
    k=st.integers(1, 4),
    seed=st.integers(0, 2**31),
    epoch=st.integers(0, 50),
)
def test_every_batch_has_p_distinct_ids_with_k_images(counts, p, k, seed, epoch):
    pids = pids_of(counts)
    sampler = PKBatchSampler(pids, p, k, seed=seed)
    sampler.set_epoch(epoch)
    batches = list(sampler)
    assert len(batches) == len(sampler)
    used: Counter = Counter()
    for batch in batches:
        assert len(batch) == p * k
        ids = [pids[i] for i in batch]
        per_id = Counter(ids)
        assert len(per_id) == p and set(per_id.values()) == {k}  # P distinct ids, K images each
        for pid in per_id:
            members = [i for i in batch if pids[i] == pid]
            if counts[pid] >= k:
                assert len(set(members)) == k  # without replacement when the id has enough images
        used.update(batch)
    # an image appears at most once per epoch unless its id has fewer than K images
    for idx, n in used.items():
        assert n == 1 or counts[pids[idx]] < k
    # TransReID's epoch length bound: at most sum_i floor(max(n_i, K) / K) chunks, split P at a time
    chunks = sum(max(n, k) // k for n in counts)
    assert len(batches) <= chunks // p
    assert len(batches) >= 1


def test_small_ids_are_sampled_with_replacement():
    pids = [0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3]  # id 0 has a single image
    sampler = PKBatchSampler(pids, 4, 4, seed=0)
    batch = next(iter(sampler))
    assert batch.count(0) == 4  # its only image, four times


def test_deterministic_by_seed_and_epoch_and_resumable():
    pids = pids_of([5, 7, 3, 8, 6, 4, 9, 2])
    a, b = PKBatchSampler(pids, 3, 2, seed=11), PKBatchSampler(pids, 3, 2, seed=11)
    a.set_epoch(4)
    b.set_epoch(4)
    assert list(a) == list(b)
    b.set_epoch(5)
    assert list(a) != list(b)  # another epoch, another order
    c = PKBatchSampler(pids, 3, 2, seed=12)
    c.set_epoch(4)
    assert list(a) != list(c)  # another seed
    fresh = PKBatchSampler(pids, 3, 2, seed=0)
    fresh.load_state_dict(a.state_dict())
    assert list(fresh) == list(a)


def test_too_few_identities_is_a_user_error():
    with pytest.raises(OccreidError, match="fewer than ids_per_batch"):
        PKBatchSampler([0, 0, 1, 1], 3, 2)
    with pytest.raises(OccreidError, match="P=3, K=2"):
        PKBatchSampler(pids_of([4] * 4), 2, 2).load_state_dict({"seed": 0, "epoch": 0, "p": 3, "k": 2})
