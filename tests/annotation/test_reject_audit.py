"""The reject audit against a real Spark and Label Studio: a filter planted with a deliberately
bad threshold (technical max_edge_width = 1.6 rejects most sharp photographs) is audited through
the CLI (push, SIMULATED auditors answering from the sample pool's ground truth, pull); the
audit's false-reject rate for it has the true rate, counted over every row it rejected, inside its
interval, and the suggested threshold is looser than the planted one."""
from __future__ import annotations

import json
import subprocess
import tomllib

import duckdb
import pyarrow.parquet as pq
import pytest

from photogenic.annotation.audit import audit_dir, truth_labels
from photogenic.pipeline.core.layout import RunDir
pytest.register_assert_rewrite("tests.annotation.helpers")  # before the import: no rewrite warning
from tests.annotation.helpers import write_config  # noqa: E402
from tests.conftest import CHEAP_CONFIG, PHOTOGENIC, REPO  # noqa: E402

pytest_plugins = ["tests.annotation.helpers"]
pytestmark = pytest.mark.slow

PLANTED = 1.6  # the default is 2.5; sharp sample photos measure 1.1-2.0


def photogenic(*args) -> subprocess.CompletedProcess:
    proc = subprocess.run([*PHOTOGENIC, *map(str, args)], capture_output=True, text=True, cwd=REPO, timeout=900)
    assert proc.returncode == 0, f"photogenic {' '.join(map(str, args))}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def test_audit_estimates_a_planted_false_reject_rate_within_its_interval(sample_pool, tmp_path, ls_server,
                                                                          ls_config):
    run = tmp_path / "run"
    config = write_config(tmp_path / "photogenic.toml", ls_config,
                          f"{CHEAP_CONFIG}\n[filters.technical]\nmax_edge_width = {PLANTED}\n")
    photogenic("filter", "--pool", sample_pool, "--out", run, "--config", config)

    pushed = photogenic("review", "audit", "push", "--run", run, "--config", config)
    assert "reject audit:" in pushed.stdout
    sample = pq.read_table(audit_dir(run) / "sample.parquet").to_pylist()
    by_stratum = {s: [r for r in sample if r["stratum"] == s] for s in {r["stratum"] for r in sample}}
    assert len(by_stratum["technical"]) == 30 and len(by_stratum["passed"]) == 30
    assert "unreadable" not in by_stratum  # nothing to show
    # Pushing again adds nothing: one task per key, ever.
    again = photogenic("review", "audit", "push", "--run", run, "--config", config)
    assert " 0 new task(s)" in again.stdout

    truth = sample_pool / "ground_truth.json"
    sim = photogenic("review", "audit", "simulate", "--run", run, "--config", config, "--truth", truth)
    assert "SIMULATION" in sim.stdout
    pulled = photogenic("review", "audit", "pull", "--run", run, "--config", config, "--json")
    result = json.loads(pulled.stdout)
    assert result["simulated"] and result["notes"][0].startswith("SIMULATION")
    assert result["images_answered"] == len(sample) == result["answers"]

    # The true false-reject rate: of every row the planted filter rejected, the share the pool
    # planted no defect in.
    should_keep = truth_labels(truth)
    rejected = [k for (k,) in duckdb.sql(f"SELECT key FROM read_parquet('{RunDir.of(run).scores}/*.parquet') "
                                         "WHERE reject_reason = 'technical'").fetchall()]
    true_rate = sum(should_keep[k] for k in rejected) / len(rejected)
    technical = result["strata"]["technical"]
    assert technical["population"] == len(rejected) and technical["answered"] == 30
    assert 0.4 < true_rate < 0.95  # the plant works: most of what it rejects is fine
    low, high = technical["ci"]
    assert low <= true_rate <= high, (true_rate, technical)
    # Filters that reject only planted defects have (near) zero false rejects.
    assert result["strata"]["geometry"]["rate"] <= 0.1

    curve = next(c for c in result["curves"] if (c["filter"], c["field"]) == ("technical", "max_edge_width"))
    assert curve["current"] == PLANTED and curve["current_point"]["false_reject_rate"] > 0.4
    assert curve["suggested"]["threshold"] > PLANTED
    assert curve["suggested"]["false_reject_rate"] <= result["target_false_reject"]
    snippet = tomllib.loads((audit_dir(run) / "thresholds.toml").read_text())
    assert snippet["filters"]["technical"]["max_edge_width"] == curve["suggested"]["threshold"]
    answers = pq.read_table(audit_dir(run) / "answers.parquet").to_pylist()
    assert all(a["simulated"] for a in answers)

    # The report shows the estimates and the curves, labelled as simulated.
    photogenic("report", "--run", run)
    html = (RunDir.of(run).report / "index.html").read_text()
    assert 'id="audit"' in html and 'data-audit-stratum="technical"' in html
    assert "SIMULATED" in html and "max_edge_width" in html
