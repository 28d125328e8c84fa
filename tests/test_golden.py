"""Outputs of filter, select and export on the sample pool are the ones recorded before the
issue-12 restructure: row sets, scores, counts and exported bytes (tests/golden.py says how)."""
from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import copy_tree
from tests.golden import fingerprint

BASELINE = Path(__file__).parent / "data" / "golden_sample_pool.json"


def test_filter_select_export_match_the_recorded_outputs(scored_run, tmp_path):
    from photogenic.pipeline.core.config import Config
    from photogenic.pipeline.export.stage import export_run
    from photogenic.pipeline.selection.stage import run_select

    run = copy_tree(scored_run, tmp_path / "run")
    run_select(run, Config())
    export_run(run, None, "candidates", Config())
    got = fingerprint(run, run / "export")
    want = json.loads(BASELINE.read_text())
    for stage in ("filter", "select", "export"):
        assert got[stage] == want[stage], f"{stage} outputs changed"
