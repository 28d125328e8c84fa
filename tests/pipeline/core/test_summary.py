"""The one `_summary.json` shape: written and read back whole; anything else reads as none."""
from __future__ import annotations

import json

from photogenic.pipeline.core.layout import RunDir
from photogenic.pipeline.core.summary import StageSummary, fingerprint, read_details, read_summary, write_summary


def test_a_summary_round_trips(tmp_path):
    summary = StageSummary("select", fingerprint(["a", 1]), 10, 4, {"over_quota": 6}, None,
                           {"target": 4}, {"selected": 4})
    path = write_summary(tmp_path, summary)
    assert path == RunDir.summary(tmp_path)
    assert json.loads(path.read_text())["counts"] == {"in": 10, "out": 4, "by_reason": {"over_quota": 6}}
    assert read_summary(tmp_path) == summary


def test_missing_old_shaped_or_torn_summaries_read_as_none(tmp_path):
    assert read_summary(tmp_path) is None
    RunDir.summary(tmp_path).write_text(json.dumps({"selected": 3, "duplicates_removed": {}}))
    assert read_summary(tmp_path) is None
    RunDir.summary(tmp_path).write_text('{"stage": "sel')
    assert read_summary(tmp_path) is None


def test_fingerprints_are_stable_and_order_sensitive():
    assert fingerprint({"b": 1, "a": 2}) == fingerprint({"a": 2, "b": 1})
    assert fingerprint([1, 2]) != fingerprint([2, 1])


def test_details_of_the_one_shape_and_of_an_older_summary(tmp_path):
    assert read_details(tmp_path) == {}
    write_summary(tmp_path, StageSummary("select", "f", 2, 1, details={"selected": 1}))
    assert read_details(tmp_path) == {"selected": 1}
    RunDir.summary(tmp_path).write_text(json.dumps({"selected": 3}))
    assert read_details(tmp_path) == {"selected": 3}
