"""Selection rules without an engine: quotas, MetaCLIP thresholds, banding, connected components."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from photogenic.pipeline.core.config import ConfigError
from photogenic.pipeline.selection.dedup import band_flips, band_layout, components, hamming, probe_radius
from photogenic.pipeline.selection.plan import allocate_quotas, metaclip_level, metaclip_thresholds
from photogenic.pipeline.selection.sql import HASH_BITS
from tests.pipeline.selection.synthetic import water_level_shares

concept_counts = st.dictionaries(st.sampled_from("abcdefghij"), st.integers(0, 5000), min_size=1, max_size=10)


@settings(max_examples=200, deadline=None)
@given(counts=concept_counts, target=st.integers(0, 20_000), data=st.data())
def test_quotas_are_within_one_row_of_the_water_filled_share(counts, target, data):
    weights = {c: data.draw(st.sampled_from([0.0, 0.5, 1.0, 2.0, 7.0])) for c in counts if data.draw(st.booleans())}
    quota, _ = allocate_quotas(counts, weights, target)
    reference = water_level_shares(counts, weights, target)
    for concept, n in counts.items():
        assert 0 <= quota[concept] <= n
        assert abs(quota[concept] - reference[concept]) < 1.0 + 1e-6, (concept, quota, reference)
    usable = sum(n for c, n in counts.items() if weights.get(c, 1.0) > 0)
    assert sum(quota.values()) == min(target, usable)


def test_leftover_quota_goes_to_concepts_that_still_have_rows():
    quota, _ = allocate_quotas({"rare": 10, "a": 1000, "b": 1000}, {}, 300)
    assert quota == {"rare": 10, "a": 145, "b": 145}


def test_weights_shift_quotas_and_zero_weight_drops_a_concept():
    quota, _ = allocate_quotas({"a": 1000, "b": 1000, "c": 1000}, {"a": 3.0, "c": 0.0}, 400)
    assert quota == {"a": 300, "b": 100, "c": 0}


def test_negative_weight_is_a_config_error():
    with pytest.raises(ConfigError, match="concept_weights"):
        allocate_quotas({"a": 5}, {"a": -1.0}, 3)


def test_target_above_availability_takes_everything():
    assert allocate_quotas({"a": 3, "b": 4}, {}, 100)[0] == {"a": 3, "b": 4}


def test_metaclip_keeps_small_concepts_whole_and_samples_big_ones():
    counts = {"small": 50, "big": 10_000}
    t = metaclip_level(counts, 1050)
    assert t == pytest.approx(1000)
    thresholds = metaclip_thresholds(counts, t)
    assert thresholds["small"] == 1 << HASH_BITS  # every 60-bit hash is below it
    assert thresholds["big"] / (1 << HASH_BITS) == pytest.approx(0.1)


def test_band_layout_covers_all_64_bits_once():
    for bands in (1, 2, 3, 4, 5, 7, 8, 16):
        covered = 0
        for _, offset, mask in band_layout(bands):
            bits = (mask & ((1 << 64) - 1)) << offset
            assert covered & bits == 0
            covered |= bits
        assert covered == (1 << 64) - 1


def _band_values(value: int, bands: int) -> list[int]:
    return [(value >> off) & (mask & ((1 << 64) - 1)) for _, off, mask in band_layout(bands)]


@settings(max_examples=300, deadline=None)
@given(base=st.integers(-(2**63), 2**63 - 1), flips=st.sets(st.integers(0, 63), max_size=7), bands=st.integers(1, 16))
def test_pairs_within_distance_are_within_the_probe_radius_in_some_band(base, flips, bands):
    other = base
    for bit in flips:
        other ^= 1 << bit
    other = (other + 2**63) % 2**64 - 2**63  # back to signed int64
    assert hamming(base, other) == len(flips)
    radius = probe_radius(bands, len(flips))
    assert radius == 0 or bands <= len(flips)  # plain banding whenever bands > distance
    diffs = [(a ^ b).bit_count() for a, b in zip(_band_values(base, bands), _band_values(other, bands))]
    assert min(diffs) <= radius


def test_band_flips_enumerate_every_mask_up_to_the_radius():
    flips = band_flips(2, 3)  # two 32-bit bands, radius 1
    assert probe_radius(2, 3) == 1 and flips.num_rows == 2 * 33
    assert set(flips.column("flip").to_pylist()) == {0} | {1 << b for b in range(32)}
    assert band_flips(4, 3).num_rows == 4  # radius 0: the band value itself
    with pytest.raises(ValueError, match="probes per band"):
        band_flips(1, 5)


def _reference_roots(edges: list[tuple[int, int]]) -> dict[int, int]:
    groups: list[set[int]] = []
    for a, b in edges:
        hit = [g for g in groups if a in g or b in g]
        merged = set().union({a, b}, *hit)
        groups = [g for g in groups if g not in hit] + [merged]
    return {v: min(g) for g in groups for v in g}


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(-50, 50), st.integers(-50, 50)).filter(lambda e: e[0] < e[1]), max_size=60))
def test_components_match_a_reference_union_find(edges):
    table = pa.table({"p1": pa.array([a for a, _ in edges], pa.int64()), "p2": pa.array([b for _, b in edges], pa.int64())})
    got = dict(zip(*(components(table).column(c).to_pylist() for c in ("phash", "root"))))
    assert got == _reference_roots(edges)


def test_components_of_a_long_chain_converge_to_its_smallest_value():
    chain = np.arange(10_000, dtype=np.int64)[::-1]
    got = components(pa.table({"p1": chain[1:], "p2": chain[:-1]}))
    assert set(got.column("root").to_pylist()) == {0}
