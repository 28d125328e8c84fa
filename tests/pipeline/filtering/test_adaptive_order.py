"""The adaptive cascade order: the ordering rule, and verdicts that do not depend on the order."""
import itertools

import pyarrow as pa
import pytest
from PIL import ImageFilter

from photogenic.filters.base import BaseFilter, Need
from photogenic.pipeline.core.config import parse_config
from photogenic.pipeline.filtering.cascade import Cascade, order_by_expected_cost
from tests.pipeline.filtering.test_cascade import CHEAP, PHOTO, batch, encode, hostile_batch


def fake(name: str, need: Need, hint: float, rejects: bool = True) -> BaseFilter:
    cls = type(name, (BaseFilter,), {"name": name, "reject_reason": name if rejects else None, "need": need,
                                      "cost_hint": hint, "rejects": rejects})
    return cls()


def names(filters) -> list[str]:
    return [f.name for f in filters]


def test_order_is_by_cost_per_rejected_row_with_non_rejecting_filters_last():
    a, b, c = fake("a", Need.CAPTION, 1.0), fake("b", Need.CAPTION, 1.0), fake("c", Need.CAPTION, 1.0)
    scores_only = fake("s", Need.CAPTION, 0.0, rejects=False)
    filters = [scores_only, a, b, c]
    # a: 1 ms/row, rejects 10% -> ~10 ms per reject; b: 4 ms/row, rejects 80% -> ~5 ms; c: 0.5 ms, 1% -> ~50 ms
    seconds = {"a": 1.0, "b": 4.0, "c": 0.5, "s": 0.0}
    rows = {"a": 1000, "b": 1000, "c": 1000, "s": 1000}
    rejected = {"a": 100, "b": 800, "c": 10}
    assert names(order_by_expected_cost(filters, seconds, rows, rejected)) == ["b", "a", "c", "s"]
    # nothing measured yet: cost hints and an even reject prior, ties in the given order
    assert names(order_by_expected_cost(filters, {}, {}, {})) == ["a", "b", "c", "s"]


def test_a_stage_is_charged_to_the_first_filter_that_needs_it_only():
    cheap_text = fake("text", Need.CAPTION, 0.0)
    px1, px2 = fake("px1", Need.PIXELS, 0.0), fake("px2", Need.PIXELS, 0.0)
    rows = {"text": 1000, "px1": 1000, "px2": 1000, "header": 1000, "decode": 1000}
    # decode is 10 ms/row; px1 0.1 ms and rejects 50%, px2 0.1 ms and rejects 40%, text 3 ms and rejects 5%
    seconds = {"text": 3.0, "px1": 0.1, "px2": 0.1, "header": 0.0, "decode": 10.0}
    rejected = {"text": 50, "px1": 500, "px2": 400}
    # px1 first costs decode: (0.1 + 10) / 0.5 ~ 20 ms per reject, text ~ 60 ms; once decoded, px2 is
    # ~0.25 ms per reject and runs before text
    assert names(order_by_expected_cost([cheap_text, px1, px2], seconds, rows, rejected)) == ["px1", "px2", "text"]
    # decode at 100 ms/row makes the caption check the cheaper first step
    seconds["decode"] = 100.0
    assert names(order_by_expected_cost([cheap_text, px1, px2], seconds, rows, rejected)) == ["text", "px1", "px2"]


def pool_batch() -> pa.RecordBatch:
    """Rows that fail at different checks, several at more than one (caption and size, size and blur)."""
    good, blurred = encode(PHOTO), encode(PHOTO.filter(ImageFilter.GaussianBlur(8)))
    tiny, tiny_blur = encode(PHOTO.resize((60, 60))), encode(PHOTO.filter(ImageFilter.GaussianBlur(8)).resize((80, 80)))
    wide = encode(PHOTO.resize((1200, 300)))
    items = [("good", "portrait of an astronaut", good, None), ("blur", "an astronaut", blurred, None),
             ("tiny", "an astronaut", tiny, None), ("tiny_blur", "an astronaut", tiny_blur, None),
             ("tiny_nocap", "", tiny, None), ("blur_nocap", None, blurred, None), ("wide", "banner", wide, None),
             ("truncated_nocap", "", good[: len(good) // 3], None), ("truncated", "ok", good[: len(good) // 3], None)]
    return batch(items)


def failing_checks(data) -> list[set[str]]:
    """Per row, the reason each enabled check records when it runs alone: the reasons any order may
    record for that row."""
    config = parse_config({"filters": CHEAP})
    configurable = {cls.name for cls in config.registry.configurable}
    names = [f.name for f in Cascade(config).filters if f.name in configurable]
    out = [set() for _ in range(data.num_rows)]
    for name in names:
        alone = parse_config({"filters": {**CHEAP, **{n: {"enabled": False} for n in names if n != name}}})
        for i, r in enumerate(Cascade(alone).process(data).to_pylist()):
            if r["reject_reason"]:
                out[i].add(r["reject_reason"])
    return out


def verdicts(rows) -> list[tuple]:
    return [(r["key"], r["passed"]) for r in rows]


@pytest.mark.parametrize("make_batch", [pool_batch, hostile_batch])
def test_every_order_gives_the_static_verdicts_and_a_true_reason(make_batch, monkeypatch):
    config = parse_config({"filters": CHEAP})
    data = make_batch()
    static = Cascade(config, adaptive=False).process(data).to_pylist()
    assert len({r["reject_reason"] for r in static}) >= 3
    possible = failing_checks(data)
    adaptive = Cascade(config, adaptive=True)
    orders = list(itertools.permutations(adaptive.filters))
    assert len(orders) >= 24
    reasons_seen = [set() for _ in static]
    for order in orders:
        monkeypatch.setattr(adaptive, "current_order", lambda order=order: list(order))
        rows = adaptive.process(data).to_pylist()
        assert verdicts(rows) == verdicts(static), [f.name for f in order]
        for i, (r, s) in enumerate(zip(rows, static)):
            if s["passed"]:
                assert r == s  # a passing row ran every check: identical in every column
            else:
                assert r["reject_reason"] in possible[i], (r["key"], r["reject_reason"], possible[i])
                reasons_seen[i].add(r["reject_reason"])
    if make_batch is pool_batch:  # rows that fail several checks record the one their order ran first
        assert any(len(seen) > 1 for seen in reasons_seen)


def test_measured_stats_reorder_a_worker_but_never_its_verdicts():
    config = parse_config({"filters": CHEAP})
    static, adaptive = Cascade(config, adaptive=False), Cascade(config, adaptive=True)
    assert adaptive.adaptive and not static.adaptive
    # as if this worker had seen the technical check reject most rows cheaply and the others none
    adaptive.scored.update({"technical": 10_000, "geometry": 10_000, "caption": 10_000, "decode": 10_000})
    adaptive.rejected.update({"technical": 9_000})
    adaptive.timings.update({"technical": 0.01, "decode": 0.01, "geometry": 50.0, "caption": 50.0})
    assert adaptive.current_order()[0].name == "technical"
    data = pool_batch()
    expected = static.process(data).to_pylist()
    for _ in range(2):  # the second batch runs in the order the first one measured
        rows = adaptive.process(data).to_pylist()
        assert verdicts(rows) == verdicts(expected)
        # blurred and without a caption: static records the caption check, technical-first the blur
        blur_nocap = next(r for r in rows if r["key"] == "blur_nocap")
        assert blur_nocap["reject_reason"] == "technical"
    assert next(r for r in expected if r["key"] == "blur_nocap")["reject_reason"] == "caption"
    assert sum(adaptive.orders.values()) == 2
    assert all(o.startswith("technical") for o in adaptive.orders)


def test_pinned_order_and_score_all_run_statically():
    assert not Cascade(parse_config({"filters": CHEAP, "job": {"order": ["geometry", "caption"]}}), adaptive=True).adaptive
    assert not Cascade(parse_config({"filters": CHEAP}), score_all=True, adaptive=True).adaptive
    assert Cascade(parse_config({"filters": CHEAP, "job": {"adaptive": True}})).adaptive
    assert not Cascade(parse_config({"filters": CHEAP})).adaptive  # static by default


def test_reject_counts_are_kept_per_filter():
    cascade = Cascade(parse_config({"filters": CHEAP}))
    cascade.process(pool_batch())
    assert cascade.rejected["caption"] >= 1 and cascade.rejected["geometry"] >= 1
    assert all(cascade.rejected[n] <= cascade.scored[n] for n in cascade.rejected)


def test_an_adaptive_shard_records_the_orders_it_ran_in(sample_pool, tmp_path):
    """Reasons depend on the order under adaptive: the shard's stats and the run summary say which."""
    from photogenic.pipeline.filtering.job import process_shard, summarise
    from photogenic.pipeline.pool.readers import discover_shards

    config = parse_config({"filters": CHEAP, "job": {"adaptive": True}})
    shard = discover_shards(sample_pool)[0]
    stats = process_shard(shard, Cascade(config), tmp_path / "scores", 16)
    assert sum(stats["orders"].values()) == -(-stats["rows"] // 16)  # one order per batch
    assert summarise(tmp_path / "scores", [shard], config)["cascade_orders"] == stats["orders"]
    static = process_shard(shard, Cascade(parse_config({"filters": CHEAP})), tmp_path / "static", 16)
    assert "orders" not in static
    assert "cascade_orders" not in summarise(tmp_path / "static", [shard], config)
