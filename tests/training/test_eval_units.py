"""Eval statistics, prompt files and the undoing of the A/B left/right placement."""
from __future__ import annotations

from collections import Counter

import pytest

from photogenic.training.eval import (PROMPTS_FILE, EvalError, load_prompts, outcome, spread, table_by_category, tally,
                           wilson)
from photogenic.training.eval_ab import task_outcome, tuned_side, vote_outcome


def test_wilson_interval_known_values():
    lo, hi = wilson(8, 10)
    assert lo == pytest.approx(0.4902, abs=1e-4) and hi == pytest.approx(0.9433, abs=1e-4)
    assert wilson(0, 0) == (0.0, 1.0)
    lo, hi = wilson(0, 20)
    assert lo == 0.0 and 0.1 < hi < 0.2
    lo, hi = wilson(20, 20)
    assert hi == 1.0 and 0.8 < lo < 0.9


def test_outcome_and_tally():
    assert outcome(0.30, 0.20, 0.05) == "win"
    assert outcome(0.20, 0.30, 0.05) == "loss"
    assert outcome(0.23, 0.20, 0.05) == "tie"
    t = tally(["win", "win", "tie", "loss"])
    assert (t["n"], t["wins"], t["ties"], t["losses"]) == (4, 2, 1, 1)
    assert t["win"] == 0.5 and t["win_ci"] == list(wilson(2, 4))
    rows = [{"category": c, "o": o} for c, o in [("a", "win"), ("a", "loss"), ("b", "tie"), ("b", None)]]
    table = table_by_category(rows, "o")
    assert list(table) == ["all", "a", "b"] and table["all"]["n"] == 3 and table["b"]["ties"] == 1


def test_vote_outcome_undoes_the_placement():
    assert vote_outcome("appeal", "Left", "left") == "win"
    assert vote_outcome("appeal", "Left", "right") == "loss"
    assert vote_outcome("appeal", "Right", "right") == "win"
    assert vote_outcome("appeal", "Right", "left") == "loss"
    assert vote_outcome("appeal", "Tie", "left") == "tie"
    assert vote_outcome("faithfulness", "Both", "right") == "tie"
    assert vote_outcome("faithfulness", "Neither", "left") == "tie"
    assert task_outcome(["win", "win", "loss", "tie", "tie"]) == "win"
    assert task_outcome(["win", "loss", "tie"]) == "tie"
    assert task_outcome(["loss", "tie", "tie"]) == "loss"
    assert task_outcome([]) is None


def test_tuned_side_is_stable_and_balanced():
    sides = [tuned_side(0, f"p{i:04d}-s0", "appeal") for i in range(400)]
    assert sides == [tuned_side(0, f"p{i:04d}-s0", "appeal") for i in range(400)]
    counts = Counter(sides)
    assert 160 < counts["left"] < 240  # ~50% (binomial sd 10)
    # Drawn per task: the two questions of one pair are placed independently.
    other = [tuned_side(0, f"p{i:04d}-s0", "faithfulness") for i in range(400)]
    assert sides != other


def test_shipped_prompts_file():
    prompts = load_prompts(PROMPTS_FILE)
    categories = Counter(p.category for p in prompts)
    assert len(prompts) >= 60 and len(categories) >= 8
    assert len({p.text for p in prompts}) == len(prompts)
    picked = spread(prompts, len(categories))
    assert {p.category for p in picked} == set(categories)


def test_bad_prompt_files(tmp_path):
    path = tmp_path / "p.tsv"
    path.write_text("a\tone\n# comment\n\nb\ttwo\na\tone\n")
    with pytest.raises(EvalError, match=r"p.tsv:5: duplicate"):
        load_prompts(path)
    path.write_text("just a prompt without category\n")
    with pytest.raises(EvalError, match=r"p.tsv:1: expected 'category<TAB>prompt'"):
        load_prompts(path)
    path.write_text("# nothing\n")
    with pytest.raises(EvalError, match="no prompts"):
        load_prompts(path)
    with pytest.raises(EvalError, match="cannot read"):
        load_prompts(tmp_path / "missing.tsv")


def test_simulated_ab_raters_are_seeded_and_mildly_prefer_the_tuned_side():
    from photogenic.annotation.simulate import SimulationError, is_simulated_annotator
    from photogenic.training.eval_simulate import choice, raters

    people = raters(5, seed=1)
    assert people == raters(5, seed=1) and people != raters(5, seed=2)
    assert all(is_simulated_annotator(p.email) for p in people)
    assert all(0 <= p.tie and 0 <= p.win and p.win + p.tie <= 1 for p in people)
    pairs = [f"p{j:04d}" for j in range(400)]
    for question, ties in (("appeal", {"Tie"}), ("faithfulness", {"Both", "Neither"})):
        for side in ("left", "right"):
            answers = [choice(people[0], 0, 1, question, pid, side)[0] for pid in pairs]
            assert answers == [choice(people[0], 0, 1, question, pid, side)[0] for pid in pairs]
            outcomes = Counter(vote_outcome(question, a, side) for a in answers)
            assert abs(outcomes["win"] / 400 - people[0].win) < 0.08
            assert abs(outcomes["tie"] / 400 - people[0].tie) < 0.06
            assert {a for a in answers if a not in ("Left", "Right")} <= ties
    never = raters(1, seed=0, win=0.0, tie=0.0)[0]
    assert never.win == 0.0 and all(choice(never, 0, 0, "appeal", pid, "left")[0] == "Right" for pid in pairs)
    with pytest.raises(SimulationError):
        raters(1, seed=0, win=0.9, tie=0.2)
