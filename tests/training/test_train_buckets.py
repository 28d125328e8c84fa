"""Aspect-ratio buckets never drop an image, even when a bucket holds fewer than a batch."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from photogenic.training.data import (
    BatchStream,
    Example,
    assign_buckets,
    epoch_batches,
    make_buckets,
    nearest_bucket,
)


def _examples(sizes):
    return [Example(f"k{i}", Path(f"/x/{i}.jpg"), "", w, h) for i, (w, h) in enumerate(sizes)]


def test_buckets_are_multiples_of_the_step_and_near_the_area():
    buckets = make_buckets(1024, 64, 2.0)
    assert (1024, 1024) in buckets
    for w, h in buckets:
        assert w % 64 == 0 and h % 64 == 0
        assert max(w / h, h / w) <= 2.0
        assert 0.85 * 1024**2 <= w * h <= 1024**2
    assert any(w > h for w, h in buckets) and any(h > w for w, h in buckets)


def test_nearest_bucket_follows_the_aspect():
    buckets = make_buckets(512, 64, 2.0)
    w, h = nearest_bucket(1600, 900, buckets)
    assert abs(w / h - 16 / 9) < 0.15
    assert nearest_bucket(500, 500, buckets) == (512, 512)
    assert nearest_bucket(100, 10_000, buckets)[1] > nearest_bucket(100, 10_000, buckets)[0]


def test_a_bucket_smaller_than_a_batch_still_trains():
    # One tall image among squares: its bucket holds 1 image, the micro-batch is 4.
    examples = _examples([(512, 512)] * 9 + [(300, 600)])
    groups = assign_buckets(examples, make_buckets(512, 64, 2.0))
    assert len(groups) == 2
    batches = epoch_batches(groups, 4, seed=0, epoch=0)
    tall = [b for b in batches if 9 in b]
    assert tall == [[9, 9, 9, 9]]  # padded with repeats of its own bucket, never mixed
    for b in batches:
        assert len(b) == 4
        assert len({next(k for k, m in groups.items() if i in m) for i in b}) == 1


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.tuples(st.integers(16, 4000), st.integers(16, 4000)), min_size=1,
                   max_size=60),
    micro=st.integers(1, 8),
    epoch=st.integers(0, 5),
)
def test_every_image_is_in_every_epoch(sizes, micro, epoch):
    examples = _examples(sizes)
    groups = assign_buckets(examples, make_buckets(512, 64, 2.0))
    assert sorted(i for m in groups.values() for i in m) == list(range(len(examples)))
    batches = epoch_batches(groups, micro, seed=3, epoch=epoch)
    seen = Counter(i for b in batches for i in b)
    assert set(seen) == set(range(len(examples)))  # nothing dropped
    assert all(len(b) == micro for b in batches)
    # Only padding repeats: at most micro-1 extra draws per bucket.
    assert sum(seen.values()) - len(examples) <= (micro - 1) * len(groups)


def test_batch_stream_is_a_pure_function_of_its_index():
    groups = assign_buckets(_examples([(512, 512)] * 7 + [(600, 300)] * 3),
                            make_buckets(512, 64, 2.0))
    a, b = BatchStream(groups, 2, seed=1), BatchStream(groups, 2, seed=1)
    order = [a[j] for j in range(30)]
    assert [b[j] for j in reversed(range(30))] == list(reversed(order))
    assert order[: a.per_epoch] != order[a.per_epoch : 2 * a.per_epoch]  # reshuffled per epoch
