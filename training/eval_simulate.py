"""SIMULATED raters for the human A/B evaluation (`photogenic eval simulate`), for demos and tests.

Real Label Studio users (signed up through the invite link, `sim-abrater-N@photogenic.local`),
each in its own thread, take tasks from Label Studio's queue of both A/B projects (appeal, then
faithfulness) and submit through the API, exactly as the review simulator's annotators do
(`annotation.simulate`): the projects' own rater counts (5 and 3 by default) decide how many
answers a task gets.

Nothing here is a human judgement, and nothing here measures the images: no score of any kind is
read. Being a simulation, it reads which side shows the tuned image from OUT/ab/tasks.parquet
(hidden from real raters) and answers "tuned" with probability `win`, a tie with probability `tie`
(faithfulness: "Both" or "Neither", half each), else "base". Each rater's rates are jittered a
little around those (seeded), and every answer is drawn from a generator seeded per (seed,
rater, question, pair), so the answers never depend on which order the queue serves the tasks.
The mild default preference (0.6 win, 0.15 tie) only makes the demo's tallies look like a plausible
human study; every output says SIMULATION.
"""
from __future__ import annotations

import time
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pyarrow.parquet as pq

from photogenic.annotation.lsclient import Client
from photogenic.annotation.simulate import SimulationError, sign_up, simulated_email, work_queues
from photogenic.annotation.users import AnnotatorStore
from photogenic.pipeline.core.runio import write_json_atomic
from photogenic.training.eval_ab import QUESTIONS, TIE_CHOICES, ab_dir, ab_id, find_project

GROUP = "abrater"
WIN, TIE = 0.6, 0.15
JITTER = 0.25  # sd, in logit space, of each rater's own win / tie rates around the configured ones
MEAN_SECONDS = {"appeal": 6.0, "faithfulness": 10.0}


@dataclass
class Rater:
    email: str
    win: float  # probability of answering with the tuned side
    tie: float  # probability of a tie answer (Tie; Both / Neither)
    speed: float  # multiplies the mean seconds per answer


def _jitter(p: float, rng: np.random.Generator) -> float:
    """p moved a little in logit space (0 and 1 stay put)."""
    if p <= 0 or p >= 1:
        return float(p)
    return float(1 / (1 + np.exp(-(np.log(p / (1 - p)) + rng.normal(0, JITTER)))))


def raters(k: int, seed: int, win: float = WIN, tie: float = TIE) -> list[Rater]:
    """k seeded simulated raters; each one's win and tie rates are jittered around win and tie."""
    if not (0 <= win and 0 <= tie and win + tie <= 1):
        raise SimulationError(f"win {win} and tie {tie} must be probabilities with win + tie <= 1")
    share = win / (1 - tie) if tie < 1 else 0.0  # of the answers that are not ties, the tuned side's
    out = []
    for i in range(k):
        rng = np.random.default_rng([seed, 7001, i])
        t = _jitter(tie, rng)
        w = _jitter(share, rng) * (1 - t)
        out.append(Rater(simulated_email(GROUP, i), round(w, 4), round(t, 4), float(rng.uniform(0.7, 1.4))))
    return out


def choice(rater: Rater, i: int, seed: int, question: str, pair_id: str, tuned_side: str) -> tuple[str, float]:
    """(the answer rater i gives this pair, seconds it took): seeded per (seed, rater, question, pair)."""
    rng = np.random.default_rng([seed, i, zlib.crc32(f"{question}:{pair_id}".encode())])
    u = rng.random()
    tuned = tuned_side.capitalize()
    base = "Left" if tuned == "Right" else "Right"
    ties = TIE_CHOICES[question]
    answer = ties[int(rng.integers(len(ties)))] if u < rater.tie else tuned if u < rater.tie + rater.win else base
    seconds = float(rng.lognormal(np.log(MEAN_SECONDS[question] * rater.speed), 0.4))
    return answer, round(seconds, 2)


def simulate(out: str | Path, client: Client, store: AnnotatorStore, n_raters: int = 5, seed: int = 0,
             win: float = WIN, tie: float = TIE, echo: Callable[[str], None] = print) -> dict[str, Any]:
    """SIMULATION: n_raters seeded raters answer both A/B projects of `out` through the queue;
    writes OUT/ab/simulation.json. A rerun submits only what the queue still serves (nothing, once
    every task has its raters)."""
    out = Path(out)
    tasks_path = ab_dir(out) / "tasks.parquet"
    if not tasks_path.exists():
        raise SimulationError(f"{tasks_path} not found: run `photogenic eval push --out {out}` first")
    sides = {(r["question"], r["pair_id"]): r["tuned_side"] for r in pq.read_table(tasks_path).to_pylist()}
    aid = ab_id(out)
    people = raters(n_raters, seed, win, tie)
    accounts = sign_up(client, [p.email for p in people], store)
    echo(f"SIMULATION: {n_raters} simulated raters (seed {seed}) answer the A/B projects through Label "
         f"Studio's task queue, preferring the tuned image with p~{win} (tie p~{tie}); "
         "these are not human judgements")
    summary: dict[str, Any] = {
        "simulated": True,
        "note": (f"SIMULATION: seeded synthetic raters, not human judgements; they know which side is tuned "
                 f"(OUT/ab/tasks.parquet) and prefer it with p~{win}, tie p~{tie}"),
        "seed": seed, "win": win, "tie": tie, "ab_id": aid,
        "via": "Label Studio task queue (/api/projects/ID/next)",
        "raters": [asdict(p) for p in people], "questions": {},
    }
    for question in QUESTIONS:
        project = find_project(client, aid, question)
        if project is None:
            raise SimulationError(f"no {question} project for {out}; run `photogenic eval push` first")

        def answer(i: int, task: dict, question: str = question) -> dict:
            pair_id = str(task["data"].get("pair_id"))
            if (question, pair_id) not in sides:
                raise SimulationError(f"task {task['id']} ({pair_id}) is not in {tasks_path}: push again")
            picked, seconds = choice(people[i], i, seed, question, pair_id, sides[(question, pair_id)])
            return {"choice": picked, "lead_time": seconds,
                    "result": [{"from_name": question, "to_name": "left", "type": "choices",
                                "value": {"choices": [picked]}}]}

        t0 = time.monotonic()
        work = work_queues(client, accounts, project["id"], answer)
        seconds = time.monotonic() - t0
        answers = [a["choice"] for done in work for a in done]
        summary["questions"][question] = {
            "project_id": project["id"], "annotations_submitted": len(answers), "seconds": round(seconds, 2),
            "annotations_per_rater": {people[i].email: len(done) for i, done in enumerate(work)},
            "choices": {c: answers.count(c) for c in sorted(set(answers))},
        }
        echo(f"SIMULATION: {question}: submitted {len(answers)} simulated answer(s) through the queue "
             f"in {seconds:.1f}s")
    summary["annotations_submitted"] = sum(q["annotations_submitted"] for q in summary["questions"].values())
    write_json_atomic(summary, ab_dir(out) / "simulation.json")
    return summary
