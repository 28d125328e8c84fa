"""`photogenic select` on DuckDB: the acceptance rules, determinism, resume, bad input, the CLI."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from photogenic.pipeline.core.config import Config, parse_config
from photogenic.pipeline.core.summary import read_summary
from photogenic.pipeline.selection.sql import CANDIDATE_SCHEMA
from photogenic.pipeline.selection.stage import SelectError, run_select
from tests.conftest import run_cli
from tests.pipeline.selection.synthetic import close_pairs, score_rows, synthetic_scores, water_level_shares, write_scores


def _config(**select) -> Config:
    return parse_config({"select": {"threads": 1, "memory_limit": "1GB", **select}})


def _candidates(run: Path):
    return pq.read_table(run / "candidates" / "part-00000.parquet")


def _summary(run: Path) -> dict:
    return read_summary(run / "candidates").details


@pytest.fixture(scope="module")
def synthetic_run(tmp_path_factory) -> Path:
    table = synthetic_scores(20_000, seed=3)
    run = write_scores(tmp_path_factory.mktemp("sel") / "run", [table.slice(0, 12_000), table.slice(12_000)])
    run_select(run, _config(target=8000, seed=5))
    return run


def test_kept_rows_share_no_sha256_and_no_phash_within_the_distance(synthetic_run):
    out = _candidates(synthetic_run)
    summary = _summary(synthetic_run)
    sha = [s for s in out.column("sha256").to_pylist() if s is not None]
    assert len(sha) == len(set(sha))
    phash = out.column("phash").drop_null().to_numpy()
    assert close_pairs(phash, Config().select.near_dup_hamming) == 0
    # The planted duplicates were found, not just absent by luck.
    assert summary["duplicates_removed"]["exact"] > 200 and summary["duplicates_removed"]["near"] > 400
    assert summary["near_dup_search"]["complete"] is True


def test_quotas_are_respected_and_leftover_is_redistributed(synthetic_run):
    summary = _summary(synthetic_run)
    available = {c: v["available"] for c, v in summary["concepts"].items()}
    reference = water_level_shares(available, {}, 8000)
    out = _candidates(synthetic_run)
    counts = dict(zip(*out.group_by("concept").aggregate([("key", "count")]).to_pydict().values()))
    assert out.num_rows == 8000
    assert any(available[c] < reference[c] + 1 for c in available)  # some concept was short
    for concept, n in available.items():
        got = counts.get(concept, 0)
        assert got == n if n <= reference[concept] else abs(got - reference[concept]) < 1.0, concept
        assert summary["concepts"][concept]["selected"] == got


def test_missing_concept_becomes_other_and_ranks_follow_engagement(synthetic_run):
    out = _candidates(synthetic_run)
    assert "other" in set(out.column("concept").to_pylist())
    assert out.schema.equals(CANDIDATE_SCHEMA)
    for concept in set(out.column("concept").to_pylist()):
        rows = out.filter(pc.equal(out.column("concept"), concept))
        assert rows.column("concept_rank").to_pylist() == list(range(1, rows.num_rows + 1))
        engagement = rows.column("engagement").to_numpy()
        assert np.all(np.diff(engagement) <= 0)
        assert _summary(synthetic_run)["engagement_cutoff"][concept] == pytest.approx(engagement.min())


def test_every_passed_row_is_either_selected_or_dropped_with_a_reason(synthetic_run):
    out = _candidates(synthetic_run)
    dropped = pq.read_table(synthetic_run / "candidates" / "_dropped")
    passed = pq.read_table(synthetic_run / "scores", columns=["key", "passed"]).filter(pc.field("passed"))
    kept, gone = set(out.column("key").to_pylist()), dropped.column("key").to_pylist()
    assert len(gone) == len(set(gone)) and not kept & set(gone)
    assert kept | set(gone) == set(passed.column("key").to_pylist())
    reasons = set(dropped.column("reason").to_pylist())
    assert reasons == {"exact_duplicate", "near_duplicate", "over_quota"}
    dups = dropped.filter(pc.is_valid(dropped.column("dup_of")))
    assert dups.num_rows == sum(_summary(synthetic_run)["duplicates_removed"].values())


@pytest.mark.parametrize("bands,hamming", [(2, 3), (4, 3), (3, 5), (8, 6)])
def test_near_dup_search_is_complete_for_any_band_count(tmp_path, bands, hamming):
    table = synthetic_scores(4000, seed=bands, exact_dup=0, near_dup=0.2, near_bits=hamming + 1)
    run = write_scores(tmp_path / "run", [table])
    summary = run_select(run, _config(target=4000, near_dup_bands=bands, near_dup_hamming=hamming))
    assert summary["near_dup_search"]["probe_radius"] == -(-(hamming + 1) // bands) - 1
    assert summary["duplicates_removed"]["near"] > 100
    assert close_pairs(_candidates(run).column("phash").drop_null().to_numpy(), hamming) == 0


def test_duplicate_groups_keep_their_most_engaging_member(tmp_path):
    rows = [
        {"key": "a", "sha256": "s1", "phash": 0, "likes": 10, "views": 1000, "concept": "x"},
        {"key": "b", "sha256": "s1", "phash": 0, "likes": 500, "views": 1000, "concept": "x"},
        {"key": "c", "sha256": "s2", "phash": 0b111, "likes": 20, "views": 1000, "concept": "x"},  # 3 bits from a/b
        {"key": "d", "sha256": "s3", "phash": 0b1111 << 8, "likes": 900, "views": 1000, "concept": "x"},  # 4 bits: kept
        {"key": "e", "sha256": "s4", "phash": None, "likes": 1, "views": 1000, "concept": "x"},
    ]
    run = write_scores(tmp_path / "run", [score_rows(rows)])
    run_select(run, _config(target=10))
    out = _candidates(run)
    assert sorted(out.column("key").to_pylist()) == ["b", "d", "e"]
    by_key = {r["key"]: r for r in out.to_pylist()}
    assert by_key["b"]["dup_group"] == "a" and by_key["b"]["dup_size"] == 3
    assert by_key["d"]["dup_size"] == 1 and by_key["d"]["dup_group"] == "d"


def _engagement_run(tmp_path: Path, background: bool, **select) -> list[str]:
    rows = [
        {"key": "perfect-3-of-3", "likes": 3, "views": 3, "concept": "x"},
        {"key": "solid-9000-of-20000", "likes": 9000, "views": 20_000, "concept": "x"},
    ]
    if background:  # an ordinary pool: like rates of a few per cent
        rng = np.random.default_rng(0)
        for i in range(200):
            views = int(rng.integers(50, 5000))
            rows.append({"key": f"bg{i:03d}", "likes": int(views * rng.uniform(0.01, 0.08)), "views": views, "concept": "x"})
    run = write_scores(tmp_path / f"run-{background}-{select.get('engagement', 'bayes')}", [score_rows(rows)])
    run_select(run, _config(target=500, **select))
    return _candidates(run).column("key").to_pylist()


@pytest.mark.parametrize("engagement", ["bayes", "wilson"])
def test_engagement_ranks_9000_of_20000_above_3_of_3(tmp_path, engagement):
    order = _engagement_run(tmp_path, background=True, engagement=engagement)
    assert order.index("solid-9000-of-20000") == 0
    assert order.index("perfect-3-of-3") > 0


@pytest.mark.parametrize("select", [{"engagement": "wilson"}, {"engagement": "bayes", "bayes_prior_rate": 0.05}])
def test_engagement_order_holds_for_the_pair_alone(tmp_path, select):
    assert _engagement_run(tmp_path, background=False, **select) == ["solid-9000-of-20000", "perfect-3-of-3"]


def test_likes_engagement_is_the_raw_like_count(tmp_path):
    order = _engagement_run(tmp_path, background=True, engagement="likes")
    assert order[0] == "solid-9000-of-20000"
    run = tmp_path / "run-True-likes"
    out = _candidates(run)
    assert out.column("engagement").to_pylist() == [float(x or 0) for x in out.column("likes").to_pylist()]


def test_min_engagement_drops_rows_below_it(tmp_path):
    run = write_scores(tmp_path / "run", [synthetic_scores(3000, seed=9)])
    run_select(run, _config(target=3000, min_engagement=0.05))
    out = _candidates(run)
    assert out.num_rows > 0 and pc.min(out.column("engagement")).as_py() >= 0.05
    dropped = pq.read_table(run / "candidates" / "_dropped")
    assert "below_min_engagement" in set(dropped.column("reason").to_pylist())


def test_same_seed_same_bytes_other_seed_other_sample(tmp_path):
    table = synthetic_scores(4000, seed=11)
    # No views and no likes: every engagement ties, so only the seeded hash orders rows.
    table = table.set_column(table.schema.get_field_index("views"), "views", pc.cast(pc.multiply(table.column("views"), 0), "int64"))
    outputs = []
    for i, seed in enumerate((1, 1, 2)):
        run = write_scores(tmp_path / f"run{i}", [table])
        run_select(run, _config(target=500, seed=seed, engagement="wilson"))
        outputs.append((run / "candidates" / "part-00000.parquet").read_bytes())
    assert outputs[0] == outputs[1]
    assert outputs[0] != outputs[2]


def test_metaclip_balance_keeps_rare_concepts_and_samples_common_ones(tmp_path):
    table = synthetic_scores(20_000, seed=4, exact_dup=0, near_dup=0)
    run = write_scores(tmp_path / "run", [table])
    summary = run_select(run, _config(target=4000, balance="metaclip", seed=2))
    t = summary["balance"]["t"]
    assert summary["balance"]["rule"] == "metaclip"
    for concept, row in summary["concepts"].items():
        if row["available"] <= t:
            assert row["selected"] == row["available"]
        else:  # binomial(available, t/available): mean t, sd < sqrt(t)
            assert abs(row["selected"] - t) < 5 * np.sqrt(t) + 1, concept
    assert abs(summary["selected"] - 4000) < 5 * np.sqrt(4000)
    again = write_scores(tmp_path / "again", [table])
    run_select(again, _config(target=4000, balance="metaclip", seed=2))
    assert _candidates(again).equals(_candidates(run))


def test_rerun_after_a_kill_finishes_with_identical_output(tmp_path):
    table = synthetic_scores(3000, seed=8)
    clean = write_scores(tmp_path / "clean", [table])
    run_select(clean, _config(target=800))
    killed = write_scores(tmp_path / "killed", [table])
    # What a kill leaves: a half-written temp dir and scratch, no published candidates.
    (killed / ".candidates.tmp-dead0000").mkdir()
    (killed / ".candidates.tmp-dead0000" / "part-00000.parquet").write_bytes(b"PAR1 torn")
    (killed / ".select-scratch.tmp-dead0000").mkdir()
    run_select(killed, _config(target=800))
    assert not list(killed.glob(".candidates*")) and not list(killed.glob(".select-scratch*"))
    for name in ("part-00000.parquet", "_summary.json"):
        assert (killed / "candidates" / name).read_bytes() == (clean / "candidates" / name).read_bytes()
    assert run_select(killed, _config(target=800)).get("skipped") is True
    redone = run_select(killed, _config(target=100), force=True)
    assert redone["selected"] == 100 and _candidates(killed).num_rows == 100


def test_cli_selects_the_scored_sample_pool(scored_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(scored_run / "scores", run / "scores")
    proc = run_cli("select", "--run", run, "--target", 50, "--seed", 3)
    assert "selected 50 of" in proc.stdout
    summary = _summary(run)
    assert summary["engine"] == "duckdb" and summary["seed"] == 3 and summary["selected"] == 50
    assert (run / "candidates" / "_SUCCESS").exists()
    again = run_cli("select", "--run", run, "--target", 50)
    assert "is complete" in again.stdout


def test_bad_input_gets_a_clear_error(tmp_path):
    with pytest.raises(SelectError, match="run `photogenic filter` first"):
        run_select(tmp_path / "nothing", _config())
    unfinished = tmp_path / "unfinished"
    (unfinished / "scores").mkdir(parents=True)
    with pytest.raises(SelectError, match="has not finished"):
        run_select(unfinished, _config())
    twice = write_scores(tmp_path / "twice", [score_rows([{"key": "a"}, {"key": "a"}])])
    with pytest.raises(SelectError, match="duplicate keys"):
        run_select(twice, _config())
    proc = run_cli("select", "--run", tmp_path / "nothing", check=False)
    assert proc.returncode != 0 and "photogenic filter" in proc.stderr and "Traceback" not in proc.stderr


def test_a_run_path_with_quotes_and_spaces_works(tmp_path):
    run = write_scores(tmp_path / "it's a run", [synthetic_scores(500, seed=1)])
    assert run_select(run, _config(target=50))["selected"] == 50


def test_empty_and_failed_only_input_selects_nothing(tmp_path):
    rows = [{"key": "a", "passed": False, "reject_reason": "technical"}]
    run = write_scores(tmp_path / "run", [score_rows(rows)])
    summary = run_select(run, _config(target=10))
    assert summary["selected"] == 0 and _candidates(run).num_rows == 0


@pytest.mark.parametrize("bands,hamming", [(2, 3), (4, 5)])
def test_partitioned_band_joins_find_the_same_pairs(tmp_path, monkeypatch, bands, hamming):
    # Large inputs split each band into partitions (plan.PARTITION_ROWS values each); forced
    # here on a small table, the selection, its audit and its summary are those of one join.
    from photogenic.pipeline.selection import plan

    table = synthetic_scores(5000, seed=bands, near_dup=0.2, near_bits=hamming)
    outputs = []
    for rows in (plan.PARTITION_ROWS, 300):
        monkeypatch.setattr(plan, "PARTITION_ROWS", rows)
        run = write_scores(tmp_path / f"run{rows}", [table])
        summary = run_select(run, _config(target=3000, near_dup_bands=bands, near_dup_hamming=hamming))
        dropped = pq.read_table(run / "candidates" / "_dropped").sort_by("key")
        outputs.append((_candidates(run), dropped, {k: v for k, v in summary.items() if k not in ("wall_s", "step_s", "step_cpu_s")}, summary["step_s"]))
    assert any(k.startswith("materialize:band_") for k in outputs[1][3])  # partitioned indeed
    assert outputs[0][0].equals(outputs[1][0]) and outputs[0][1].equals(outputs[1][1])
    assert outputs[0][2] == outputs[1][2] and outputs[0][2]["duplicates_removed"]["near"] > 100
